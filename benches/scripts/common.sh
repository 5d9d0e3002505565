# Shared helpers for benches/run.sh and its sections (sourced, not run).
#
# Every server a section starts goes through `start_bg`, which records its PID; the EXIT trap stops
# exactly those PIDs (never anything by name). Every file a section writes lives under $BENCH_TMP,
# which the trap removes (KEEP_TMP=1 keeps it, to read the servers' logs after a failure). Figures
# go into benches/RESULTS.md between markers, one block per section, so a section can be rerun
# alone without touching the others.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
RESULTS="$ROOT/benches/RESULTS.md"
BENCH_TMP="$(mktemp -d -t ticketrush-bench.XXXXXX)"
STARTED_PIDS=()
INSTALL="${INSTALL:-0}"
QUICK="${QUICK:-0}"
# Load generator and system under test on separate cores where the machine has two or more.
NCPU="$(nproc)"
if [ "$NCPU" -eq 2 ]; then
    LOADGEN_CPUS="0"
    SUT_CPUS="1"
elif [ "$NCPU" -gt 2 ]; then
    LOADGEN_CPUS="0"
    SUT_CPUS="1-$((NCPU - 1))"
else
    LOADGEN_CPUS="0"
    SUT_CPUS="0"
fi

log() { printf '[bench %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

cleanup() {
    local pid
    for pid in "${STARTED_PIDS[@]:-}"; do
        [ -n "$pid" ] || continue
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${STARTED_PIDS[@]:-}"; do
        [ -n "$pid" ] || continue
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    if [ "${KEEP_TMP:-0}" = 1 ]; then
        log "kept the temp dir (KEEP_TMP=1): $BENCH_TMP"
    else
        rm -rf "$BENCH_TMP"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_bg NAME CMD... : start CMD in the background, output to $BENCH_TMP/NAME.log; sets LAST_PID.
start_bg() {
    local name="$1"; shift
    "$@" >"$BENCH_TMP/$name.log" 2>&1 &
    LAST_PID=$!
    STARTED_PIDS+=("$LAST_PID")
}

# stop_pid PID : stop one process this script started (TERM, then KILL after 5 s).
stop_pid() {
    local pid="$1"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# need CMD DEBIAN_PACKAGE : check that CMD exists; install the package with --install, else fail.
need() {
    local cmd="$1" pkg="$2"
    command -v "$cmd" >/dev/null 2>&1 && return 0
    if [ "$INSTALL" = 1 ]; then
        log "installing $pkg (apt) for $cmd"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$pkg" >"$BENCH_TMP/apt-$pkg.log" 2>&1 \
            || die "apt-get install $pkg failed; see its output above"
        command -v "$cmd" >/dev/null 2>&1 || die "$pkg installed but $cmd is still missing"
    else
        die "$cmd not found: install $pkg (apt-get install $pkg) or rerun with --install"
    fi
}

# free_port : print a TCP port on 127.0.0.1 that is free right now.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# wait_port PORT [SECONDS] : wait until 127.0.0.1:PORT accepts a connection.
wait_port() {
    local port="$1" secs="${2:-20}" i
    for i in $(seq 1 $((secs * 10))); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.1
    done
    die "nothing answered on 127.0.0.1:$port within ${secs}s"
}

# rss_kib PID : resident set size of PID and all its descendants, in KiB.
rss_kib() {
    local pid="$1" total=0 p
    for p in $pid $(pgrep -P "$pid" 2>/dev/null || true); do
        total=$((total + $(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)))
    done
    echo "$total"
}

# stats VALUES... : print "median min max" of numeric values.
stats() {
    printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {
        if (NR == 0) { print "- - -"; exit }
        m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        printf "%g %g %g\n", m, v[1], v[NR] }'
}

# alternate_rounds N FN BIN [BASELINE_BIN] : N rounds of `FN build BIN`, each followed by
# `FN baseline BASELINE_BIN` when given; FN sees the round's number as $r.
alternate_rounds() {
    local n="$1" fn="$2" r
    shift 2
    for r in $(seq 1 "$n"); do
        "$fn" build "$1"
        if [ $# -eq 2 ]; then "$fn" baseline "$2"; fi
    done
}

# run_stats LABEL COLUMN : "median min max" of COLUMN over the lines of $BENCH_TMP/runs whose
# first field is LABEL.
run_stats() {
    # shellcheck disable=SC2046 # one argument per value
    stats $(awk -v l="$1" -v c="$2" '$1 == l {print $c}' "$BENCH_TMP/runs")
}

# ratio A B : A / B with two decimals ("-" when B is zero or missing).
ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print "-"; else printf "%.2f\n", a / b }'
}

# machine_line : one line naming the machine, for every results block.
machine_line() {
    local model
    model="$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
    printf '%s vCPU %s, kernel %s, %s' "$NCPU" "$model" "$(uname -r)" "$(date -u '+%Y-%m-%d %H:%M UTC')"
}

# results_block NAME FILE : replace the block between <!-- bench:NAME:begin --> and
# <!-- bench:NAME:end --> in benches/RESULTS.md with FILE's contents (appended if absent).
results_block() {
    local name="$1" file="$2" begin end
    begin="<!-- bench:$name:begin -->"
    end="<!-- bench:$name:end -->"
    if grep -qF "$begin" "$RESULTS"; then
        awk -v b="$begin" -v e="$end" -v f="$file" '
            $0 == b { print; while ((getline line < f) > 0) print line; skip = 1; next }
            $0 == e { skip = 0 }
            !skip { print }' "$RESULTS" >"$BENCH_TMP/results.new"
        cat "$BENCH_TMP/results.new" >"$RESULTS"
    else
        { printf '\n%s\n' "$begin"; cat "$file"; printf '%s\n' "$end"; } >>"$RESULTS"
    fi
    log "wrote the $name block of benches/RESULTS.md"
}

# build_release : build every binary the benchmarks run, once.
build_release() {
    log "cargo build --release (broker, balancer, ticket-svc, benches)"
    (cd "$ROOT" && cargo build --release -q -p broker -p balancer -p ticket-stack -p benches --features benches/peers --bins)
    BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
}
