#!/usr/bin/env bash
# benches/scripts/demo-rounds.sh — issue 4's benchmark, `ticket-svc demo` (100,000 buyers, 10,000
# tickets, 64 in flight, everything in one process), run several times for one build or two
# builds alternating, with medians.
#
#   benches/scripts/demo-rounds.sh [--rounds N] [--buyers N] [--concurrency C] BIN [BASELINE_BIN]
#
# Each run is a whole demo on a fresh temp data dir (its report goes to a temp file). Prints one
# line per run (accepted/s, accept p99 / p99.9 / max, how long after the rush's last answer the
# purchase last in line was final, whether every invariant held) and a table of medians. On a
# shared 2-core VM accepted/s moves by ±15% between back-to-back runs of one build, so compare
# builds only alternating, and read single runs as noise. Fails if any demo fails. Writes
# nothing to RESULTS.md. Defaults: 5 rounds, the demo's own buyers and concurrency.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=common.sh
. "$HERE/common.sh"

ROUNDS=5
EXTRA=()
BINS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS="$2"; shift 2 ;;
        --buyers) EXTRA+=(--buyers "$2"); shift 2 ;;
        --concurrency) EXTRA+=(--concurrency "$2"); shift 2 ;;
        -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) die "unknown option $1 (try --help)" ;;
        *) BINS+=("$1"); shift ;;
    esac
done
[ "${#BINS[@]}" -ge 1 ] && [ "${#BINS[@]}" -le 2 ] || die "give one or two ticket-svc binaries (try --help)"
for b in "${BINS[@]}"; do [ -x "$b" ] || die "$b is not an executable"; done

# one_run LABEL BIN : one demo; appends "label tput p99 p999 max last_in_line" to the runs file.
one_run() {
    local label="$1" bin="$2" out tput p99 p999 max last
    out="$("$bin" demo "${EXTRA[@]}" --report "$BENCH_TMP/report.html" 2>&1)" \
        || die "the demo of $bin failed: $(grep -v ' INFO ' <<<"$out" | tail -20)"
    tput="$(awk '/^  throughput/ {print $2}' <<<"$out")"
    read -r p99 p999 max <<<"$(awk '/^  latency/ {print $9, $12, $15}' <<<"$out")"
    last="$(sed -n 's/.*the last in line was final after \([0-9.]*\) s.*/\1/p' <<<"$out")"
    [ -n "$tput" ] && [ -n "$max" ] && [ -n "$last" ] || die "could not read the demo's report: $out"
    log "round $r $label: $tput accepted/s, p99 $p99 ms, p99.9 $p999 ms, max $max ms, last in line final after $last s, every invariant held"
    echo "$label $tput $p99 $p999 $max $last" >>"$BENCH_TMP/runs"
}

log "$(machine_line); $ROUNDS rounds of \`ticket-svc demo ${EXTRA[*]}\`"
alternate_rounds "$ROUNDS" one_run "${BINS[@]}"

echo "| build | accepted/s median (min–max) | p99 ms | p99.9 ms | max ms | last in line final after, s |"
echo "|---|---|---:|---:|---:|---:|"
for label in build baseline; do
    grep -q "^$label " "$BENCH_TMP/runs" || continue
    read -r tm tn tx <<<"$(run_stats "$label" 2)"
    read -r pm _ _ <<<"$(run_stats "$label" 3)"
    read -r qm _ _ <<<"$(run_stats "$label" 4)"
    read -r mm _ _ <<<"$(run_stats "$label" 5)"
    read -r lm _ _ <<<"$(run_stats "$label" 6)"
    echo "| $label | $tm ($tn–$tx) | $pm | $qm | $mm | $lm |"
done
echo "(medians of $ROUNDS runs each; every demo held every invariant)"
