#!/usr/bin/env bash
# benches/scripts/stack-cost.sh — CPU per buyer of the whole stack (`ticket-svc up`: broker,
# 3 APIs, balancer, workers, SQLite) under a crowd run as a separate process, for one build or
# two builds alternating.
#
#   benches/scripts/stack-cost.sh [--rounds N] [--buyers N] [--concurrency C] BIN [BASELINE_BIN]
#
# Each round starts a fresh `BIN up` on free loopback ports with its data in a temp dir. It then
# creates one event with a ticket for every buyer, so every purchase is confirmed, and runs
# `BIN rush` without --verify (its buyers log in first, their codes delivered to the rush's
# mailbox). It reports:
#   - accepted/s and p99, as the crowd saw them;
#   - the stack's CPU per buyer: utime+stime of the `up` process from the crowd's start (its
#     logins included) until the workers have decided every purchase (the event's `sold` still
#     for 200 ms), from /proc. Builds from before buyer logins cannot run this crowd;
#   - the crowd's own CPU per buyer.
# On a shared 2-core VM, accepted/s between back-to-back runs of one binary moved by up to 40%.
# CPU per buyer moved less, so compare builds with this, alternating (give BASELINE_BIN).
# Defaults: 5 rounds, 20,000 buyers, 64 in flight. Prints one line per run and a summary; writes
# nothing to RESULTS.md.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=common.sh
. "$HERE/common.sh"

ROUNDS=5
BUYERS=20000
CONCURRENCY=64
BINS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS="$2"; shift 2 ;;
        --buyers) BUYERS="$2"; shift 2 ;;
        --concurrency) CONCURRENCY="$2"; shift 2 ;;
        -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) die "unknown option $1 (try --help)" ;;
        *) BINS+=("$1"); shift ;;
    esac
done
[ "${#BINS[@]}" -ge 1 ] && [ "${#BINS[@]}" -le 2 ] || die "give one or two ticket-svc binaries (try --help)"
for b in "${BINS[@]}"; do [ -x "$b" ] || die "$b is not an executable"; done
TCK="$(getconf CLK_TCK)"

# cpu_ticks PID : utime + stime of PID so far, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# http METHOD URL [JSON [AUTHORIZATION]] : the response body, failing on a non-2xx status.
http() {
    python3 - "$@" <<'PY'
import sys, urllib.request
method, url = sys.argv[1], sys.argv[2]
data = sys.argv[3].encode() if len(sys.argv) > 3 else None
headers = {"content-type": "application/json"}
if len(sys.argv) > 4:
    headers["authorization"] = sys.argv[4]
req = urllib.request.Request(url, data=data, method=method, headers=headers)
print(urllib.request.urlopen(req, timeout=5).read().decode())
PY
}

# one_run LABEL BIN : one fresh stack and one rush; appends "label tput p99 stack_us crowd_us".
one_run() {
    local label="$1" bin="$2" dir port admin mailbox up event t0 t1 out crowd_us tput p99 stack_us
    dir="$(mktemp -d "$BENCH_TMP/run.XXXX")"
    port="$(free_port)"
    admin="$(free_port)"
    mailbox="$(free_port)"
    start_bg "up-$label" "$bin" up --data-dir "$dir" --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" \
        --login-sender "http://127.0.0.1:$mailbox/codes"
    up="$LAST_PID"
    wait_port "$port" 30
    for _ in $(seq 1 100); do http GET "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
    event="$(http POST "http://127.0.0.1:$port/events" \
        "{\"name\":\"cost\",\"tickets\":$((BUYERS * 4)),\"max_per_buyer\":4}" "Bearer $(cat "$dir/organizer-token")" \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')"
    t0="$(cpu_ticks "$up")"
    out="$(python3 - "$bin" "$port" "$event" "$mailbox" <<PY
import resource, subprocess, sys
bin, port, event, mailbox = sys.argv[1:5]
r = subprocess.run([bin, "rush", "--target", f"http://127.0.0.1:{port}", "--event", event,
                    "--mailbox-listen", f"127.0.0.1:{mailbox}",
                    "--buyers", "$BUYERS", "--concurrency", "$CONCURRENCY"],
                   capture_output=True, text=True)
u = resource.getrusage(resource.RUSAGE_CHILDREN)
print(r.stdout + r.stderr)
print("crowd_cpu_s", u.ru_utime + u.ru_stime)
sys.exit(r.returncode)
PY
)" || die "the rush against $bin failed: $out"
    # The workers' share counts too: wait until the event's `sold` has not moved for 200 ms
    # (a worker lingers 20 ms between small batches), at most 5 s.
    python3 - "http://127.0.0.1:$port/events/$event" <<'PY'
import json, sys, time, urllib.request
url, last, still, deadline = sys.argv[1], None, 0, time.time() + 5
while time.time() < deadline and still < 4:
    sold = json.load(urllib.request.urlopen(url, timeout=5))["sold"]
    still = still + 1 if sold == last else 0
    last = sold
    time.sleep(0.05)
PY
    t1="$(cpu_ticks "$up")"
    stop_pid "$up"
    tput="$(awk '/throughput/ {print $2}' <<<"$out")"
    p99="$(awk '/latency/ {print $9}' <<<"$out")"
    crowd_us="$(awk -v n="$BUYERS" '/crowd_cpu_s/ {printf "%d", $2 * 1e6 / n}' <<<"$out")"
    stack_us="$(awk -v a="$t0" -v b="$t1" -v t="$TCK" -v n="$BUYERS" 'BEGIN {printf "%d", (b - a) / t * 1e6 / n}')"
    log "round $r $label: $tput accepted/s, p99 $p99 ms, stack $stack_us µs/buyer, crowd $crowd_us µs/buyer"
    echo "$label $tput $p99 $stack_us $crowd_us" >>"$BENCH_TMP/runs"
}

log "$(machine_line); $ROUNDS rounds of $BUYERS buyers, $CONCURRENCY in flight"
alternate_rounds "$ROUNDS" one_run "${BINS[@]}"

echo "| build | accepted/s median (min–max) | p99 ms median | stack µs/buyer median (min–max) | crowd µs/buyer median |"
echo "|---|---|---:|---|---:|"
for label in build baseline; do
    grep -q "^$label " "$BENCH_TMP/runs" || continue
    read -r tm tn tx <<<"$(run_stats "$label" 2)"
    read -r pm _ _ <<<"$(run_stats "$label" 3)"
    read -r sm sn sx <<<"$(run_stats "$label" 4)"
    read -r cm _ _ <<<"$(run_stats "$label" 5)"
    echo "| $label | $tm ($tn–$tx) | $pm | $sm ($sn–$sx) | $cm |"
done
