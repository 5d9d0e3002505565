# The `micro` section of benches/run.sh (sourced, not run): every criterion bench target of the
# `benches` package, with short warm-up and measurement times, summarised into one table.
#
# The bench targets come from `cargo metadata`, so a new file in benches/benches/ (with its
# `[[bench]]` entry) is picked up without touching this script. Each target writes its criterion
# output under $BENCH_TMP (CRITERION_HOME), so the table holds this run's figures only, never a
# stale result left in target/criterion.
#
# Knobs (environment): MICRO_WARMUP and MICRO_MEASURE (seconds, default 1 and 2).
# QUICK=1: 0.2 s warm-up, 0.5 s measurement, 10 samples.

# micro_targets : the names of the benches package's bench targets, one per line.
micro_targets() {
    (cd "$ROOT" && cargo metadata --no-deps --format-version 1) | python3 -c '
import json, sys
meta = json.load(sys.stdin)
for pkg in meta["packages"]:
    if pkg["name"] != "benches":
        continue
    for t in sorted(pkg["targets"], key=lambda t: t["name"]):
        if "bench" in t["kind"]:
            print(t["name"])'
}

bench_micro() {
    need python3 python3
    local warm="${MICRO_WARMUP:-1}" measure="${MICRO_MEASURE:-2}" samples=100
    if [ "$QUICK" = 1 ]; then warm=0.2; measure=0.5; samples=10; fi
    local targets=() t
    while IFS= read -r t; do [ -n "$t" ] && targets+=("$t"); done < <(micro_targets)
    [ "${#targets[@]}" -gt 0 ] || die "no bench targets found in the benches package"
    log "micro: bench targets ${targets[*]}"

    log "cargo bench -p benches --no-run (compiling, not timed)"
    (cd "$ROOT" && cargo bench -q -p benches --no-run) >"$BENCH_TMP/micro-build.log" 2>&1 \
        || { cat "$BENCH_TMP/micro-build.log" >&2; die "building the bench targets failed"; }

    local started=$SECONDS crit="$BENCH_TMP/criterion"
    local args=(--warm-up-time "$warm" --measurement-time "$measure" --sample-size "$samples" --noplot)
    for t in "${targets[@]}"; do
        log "micro: $t"
        (cd "$ROOT" && CRITERION_HOME="$crit/$t" cargo bench -q -p benches --bench "$t" -- "${args[@]}") \
            >"$BENCH_TMP/micro-$t.log" 2>&1 \
            || { cat "$BENCH_TMP/micro-$t.log" >&2; die "bench target $t failed"; }
    done
    local elapsed=$((SECONDS - started))

    local block="$BENCH_TMP/micro.md"
    {
        echo "## Micro-benchmarks (criterion)"
        echo
        echo "Machine: $(machine_line)."
        if [ "$QUICK" = 1 ]; then
            echo "**Smoke run (\`--quick\`): 10 samples of 0.5 s — checks the script, not for quoting.**"
        fi
        echo
        echo '```sh'
        echo "benches/run.sh micro$([ "$QUICK" = 1 ] && echo ' --quick')   # took ${elapsed} s after compiling; for each bench target T:"
        echo "cargo bench -p benches --bench T -- ${args[*]}"
        echo '```'
        echo
        echo "Time is criterion's median per iteration; the interval is its 95% confidence interval of"
        echo "the mean. Per element divides by the elements one iteration handles, where the bench says."
        echo
        python3 - "$crit" "${targets[@]}" <<'PY'
import json, os, sys

root, targets = sys.argv[1], sys.argv[2:]

def human(ns):
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.3g} {unit}"
    return f"{ns:.3g} ns"

print("| bench target | benchmark | time | 95% CI of the mean | per element |")
print("|---|---|---:|---:|---:|")
for target in targets:
    rows = []
    for dirpath, _, files in os.walk(os.path.join(root, target)):
        if os.path.basename(dirpath) != "new" or "estimates.json" not in files:
            continue
        bench = json.load(open(os.path.join(dirpath, "benchmark.json")))
        est = json.load(open(os.path.join(dirpath, "estimates.json")))
        median = est["median"]["point_estimate"]
        ci = est["mean"]["confidence_interval"]
        per = ""
        tp = bench.get("throughput") or {}
        n = tp.get("Elements") or tp.get("ElementsAndBytes", {}).get("elements")
        if n:
            per = human(median / n)
        rows.append((bench["full_id"], median, ci["lower_bound"], ci["upper_bound"], per))
    if not rows:
        print(f"| {target} | (no results) | | | |")
    # Natural order: pick/p2c/3 before pick/p2c/100.
    def key(row):
        return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in row[0].split("/")]
    for full_id, median, lo, hi, per in sorted(rows, key=key):
        print(f"| {target} | `{full_id}` | {human(median)} | {human(lo)} – {human(hi)} | {per} |")
PY
    } >"$block"
    results_block micro "$block"
    log "micro section took ${elapsed}s (plus compiling)"
}
