#!/usr/bin/env bash
# benches/scripts/spof.sh — issue 24's benchmark: what taking the single points of failure out
# costs, and what the kills cost, side by side on this machine.
#
#   benches/scripts/spof.sh [--rounds N] [--buyers N] [--shard-events N] --db URL BIN [INPROC_BIN]
#
# BIN is a release `ticket-svc`; INPROC_BIN, if given, the release `inproc_rush` example (the
# same stack in one process on PostgreSQL with a real broker: the fair single-process baseline
# for the cluster, since `demo` without --cluster runs on SQLite). URL is a PostgreSQL database
# the cluster may write to (events and purchases accumulate in it) on a server where this user
# may CREATE DATABASE (the shard rounds make and drop their own).
#
# 1. Rounds, alternating: `demo` (one process, SQLite), `demo --cluster` (two balancers, three
#    APIs, three brokers, two workers as processes, PostgreSQL), the same with
#    `--chaos-every 5s` (a random process SIGKILLed every 5 s), and INPROC_BIN. Prints accepted/s,
#    p99 and the failures absorbed / seen by buyers per run, then medians.
# 2. Shards: for 1, 2 and 3 fresh databases, `up --cluster` with one --db each, N events (6)
#    created through the balancer, and one verifying `rush` per event at once; prints the
#    purchases decided per second over the whole run (every rush's last purchase final).
#
# Everything listens on 127.0.0.1; processes are stopped by PID; writes nothing to RESULTS.md.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=common.sh
. "$HERE/common.sh"

ROUNDS=3
BUYERS=50000
EVENTS=6
DB=""
BINS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS="$2"; shift 2 ;;
        --buyers) BUYERS="$2"; shift 2 ;;
        --shard-events) EVENTS="$2"; shift 2 ;;
        --db) DB="$2"; shift 2 ;;
        -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) die "unknown option $1 (try --help)" ;;
        *) BINS+=("$1"); shift ;;
    esac
done
[ -n "$DB" ] || die "give --db postgres://... (try --help)"
[ "${#BINS[@]}" -ge 1 ] && [ "${#BINS[@]}" -le 2 ] || die "give BIN [INPROC_BIN] (try --help)"
TSVC="${BINS[0]}"
INPROC="${BINS[1]:-}"
need psql postgresql-client
need curl curl
TICKETS=$((BUYERS / 10))

# one_demo LABEL ARGS... : one demo; appends "label tput p99 absorbed seen" to the runs file.
one_demo() {
    local label="$1" out tput p99 absorbed seen
    shift
    out="$("$TSVC" demo --buyers "$BUYERS" --tickets "$TICKETS" "$@" --report "$BENCH_TMP/report.html" 2>&1)" \
        || die "demo $* failed: $(grep -v ' INFO ' <<<"$out" | tail -20)"
    tput="$(awk '/^  throughput/ {print $2}' <<<"$out")"
    p99="$(awk '/^  latency/ {print $9}' <<<"$out")"
    read -r absorbed seen <<<"$(awk '/^  failures/ {print $2, $6}' <<<"$out")"
    log "round $r $label: $tput accepted/s, p99 $p99 ms, $absorbed failures absorbed, $seen seen by buyers$(awk '/^  killed/ {$1 = ""; print "; killed" $0}' <<<"$out")"
    echo "$label $tput $p99 $absorbed $seen" >>"$BENCH_TMP/runs"
}

one_inproc() {
    local out tput p99
    out="$("$INPROC" "$BUYERS" "$TICKETS" 64 "$DB" broker 2>&1)" || die "inproc_rush failed: $(tail -20 <<<"$out")"
    tput="$(awk '/^  throughput/ {print $2}' <<<"$out")"
    p99="$(awk '/^  latency/ {print $9}' <<<"$out")"
    log "round $r inproc: $tput accepted/s, p99 $p99 ms"
    echo "inproc $tput $p99 0 0" >>"$BENCH_TMP/runs"
}

log "$(machine_line); $ROUNDS rounds of $BUYERS buyers"
for r in $(seq 1 "$ROUNDS"); do
    one_demo single
    one_demo cluster --cluster --db "$DB"
    one_demo chaos --cluster --db "$DB" --chaos-every 5s --chaos-seed "$r"
    if [ -n "$INPROC" ]; then one_inproc; fi
done
printf '\n%-8s %14s %12s %10s %10s\n' run "accepted/s" "p99 ms" absorbed seen
for label in single cluster chaos inproc; do
    grep -q "^$label " "$BENCH_TMP/runs" || continue
    printf '%-8s %14s %12s %10s %10s\n' "$label" "$(run_stats "$label" 2)" "$(run_stats "$label" 3)" \
        "$(run_stats "$label" 4)" "$(run_stats "$label" 5)"
done

# with_database URL NAME : URL naming database NAME instead of its own.
with_database() {
    local url="$1" name="$2" base query=""
    case "$url" in *\?*) query="?${url#*\?}"; url="${url%%\?*}" ;; esac
    base="${url%/*}"
    case "$base" in *://) base="$url" ;; esac
    printf '%s/%s%s' "$base" "$name" "$query"
}

# shard_round N : the cluster on N fresh databases, EVENTS rushes at once; prints decided/s.
shard_round() {
    local n="$1" dbs=() args=() i name url log up_pid b1 b2 start end decided=0 pids=() id
    for i in $(seq 1 "$n"); do
        name="ticket_bench_shard_$$_${n}_$i"
        psql -q "$DB" -c "CREATE DATABASE $name" >/dev/null
        dbs+=("$name")
        args+=(--db "$(with_database "$DB" "$name")")
    done
    log="$BENCH_TMP/up-$n.log"
    # One mailbox for every crowd: the APIs deliver login codes to it, each rush reads its own.
    local mailbox
    mailbox="$(free_port)"
    start_bg "mailbox-$n" "$TSVC" mailbox --listen "127.0.0.1:$mailbox"
    local mailbox_pid="$LAST_PID"
    wait_port "$mailbox"
    start_bg "up-$n" "$TSVC" up --cluster "${args[@]}" --data-dir "$BENCH_TMP/data-$n" \
        --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --status-listen 127.0.0.1:0 \
        --login-sender "http://127.0.0.1:$mailbox/codes"
    up_pid="$LAST_PID"
    for _ in $(seq 1 600); do grep -q 'Ctrl-C to stop' "$BENCH_TMP/up-$n.log" && break; sleep 0.1; done
    grep -q 'Ctrl-C to stop' "$BENCH_TMP/up-$n.log" || die "up --cluster did not start: $(tail -20 "$BENCH_TMP/up-$n.log")"
    b1="$(awk '/buyers \(balancer 1\)/ {print $NF}' "$BENCH_TMP/up-$n.log")"
    b2="$(awk '/buyers \(balancer 2\)/ {print $NF}' "$BENCH_TMP/up-$n.log")"
    start="$(date +%s.%N)"
    for i in $(seq 1 "$EVENTS"); do
        id="$(curl -s -H 'content-type: application/json' \
            -H "authorization: Bearer $(cat "$BENCH_TMP/data-$n/organizer-token")" \
            -d "{\"name\":\"bench $i\",\"tickets\":$((TICKETS / EVENTS)),\"max_per_buyer\":4}" \
            "$b1/events" | sed -n 's/.*"id":\([0-9]*\).*/\1/p')"
        [ -n "$id" ] || die "creating an event through $b1 failed"
        "$TSVC" rush --target "$b1" --target "$b2" --mailbox "http://127.0.0.1:$mailbox" --event "$id" --buyers $((BUYERS / EVENTS)) \
            --concurrency 16 --verify --verify-timeout-s 300 --seed "$i" >"$BENCH_TMP/rush-$n-$i.log" 2>&1 &
        pids+=($!)
    done
    for i in "${!pids[@]}"; do
        wait "${pids[$i]}" || die "rush $((i + 1)) on $n shards failed: $(tail -20 "$BENCH_TMP/rush-$n-$((i + 1)).log")"
    done
    end="$(date +%s.%N)"
    # Every crowd logs its buyers in before its rush, all at once at the start: the longest
    # login phase is taken off the run's time, so decided/s counts the rushes only.
    local login_s=0
    for i in $(seq 1 "$EVENTS"); do
        decided=$((decided + $(awk '/^  requests/ {print $4}' "$BENCH_TMP/rush-$n-$i.log")))
        login_s="$(awk -v m="$login_s" '/^  logins/ { if ($4 > m) m = $4 } END { print m }' "$BENCH_TMP/rush-$n-$i.log")"
    done
    start="$(awk -v s="$start" -v l="$login_s" 'BEGIN { printf "%.3f", s + l }')"
    stop_pid "$up_pid"
    stop_pid "$mailbox_pid"
    for name in "${dbs[@]}"; do psql -q "$DB" -c "DROP DATABASE IF EXISTS $name WITH (FORCE)" >/dev/null; done
    awk -v d="$decided" -v s="$start" -v e="$end" -v n="$n" \
        'BEGIN { printf "%d shard(s): %d purchases decided in %.1f s: %.0f decided/s\n", n, d, e - s, d / (e - s) }'
}

echo
for n in 1 2 3; do shard_round "$n"; done
