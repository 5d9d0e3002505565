# benches/scripts/stack.sh — the seed's thesis, measured (sourced by benches/run.sh; defines bench_stack).
#
# The same crowd (`ticket-svc rush --verify`, same seed, buyers, tickets and concurrency) against:
#   stack      the full stack as separate processes: our balancer → 3× `ticket-svc api` →
#              `broker serve` (fsync always) → 2× `ticket-svc worker` → the store
#   nginx      the same stack with nginx (1 worker, upstream keepalive) in place of our balancer
#   naive      3× `naive_api` (benches/src/bin): the same router, but each purchase is decided in
#              its own database transaction before the 202 — no broker, no workers — behind
#              the same balancer, on the same store
#   demo       `ticket-svc demo` (everything, crowd included, in one process), for reference
# on SQLite and on PostgreSQL (127.0.0.1:5432, user postgres: a private database per round,
# dropped afterwards even on failure; the PostgreSQL rows are skipped, with the reason, when the
# server does not answer).
#
# The crowd is pinned to $LOADGEN_CPUS and the system under test to $SUT_CPUS with taskset
# (`demo` carries its own crowd, so it runs on every core). Each round starts every row from an
# empty store; rounds interleave the rows so that machine noise spreads over all of them.
#
# Knobs (environment): STACK_BUYERS, STACK_TICKETS, STACK_CONCURRENCY, STACK_ROUNDS,
# STACK_PG_PORT, STACK_BUDGET_S (no round starts that would, at the average pace so far, end past it; at least
# one round always runs). Defaults: 15,000 buyers (4,000 with --quick), a quarter as many
# tickets, 64 connections, 3 rounds (1), 480 s (120 s).

STACK_PG_HOST=127.0.0.1
STACK_PG_PORT="${STACK_PG_PORT:-5432}"
STACK_PG_DB=""

# stack_psql SQL... : run SQL as postgres on the maintenance database `test`.
stack_psql() {
    psql -X -q -v ON_ERROR_STOP=1 -h "$STACK_PG_HOST" -p "$STACK_PG_PORT" -U postgres -d test "$@"
}

stack_drop_db() {
    [ -n "$STACK_PG_DB" ] || return 0
    stack_psql -c "DROP DATABASE IF EXISTS $STACK_PG_DB WITH (FORCE)" >/dev/null 2>&1 || true
}

# stack_fresh_db : (re)create this run's private database; prints its URL.
stack_fresh_db() {
    stack_drop_db
    stack_psql -c "CREATE DATABASE $STACK_PG_DB" >/dev/null
    printf 'postgres://postgres@%s:%s/%s' "$STACK_PG_HOST" "$STACK_PG_PORT" "$STACK_PG_DB"
}

# stack_sut NAME CMD... : start a process of the system under test, pinned to $SUT_CPUS.
stack_sut() {
    local name="$1"; shift
    start_bg "$name" taskset -c "$SUT_CPUS" "$@"
    STACK_PIDS+=("$LAST_PID")
}

# stack_stop : stop every process of the current row, front first (so nothing accepted is lost).
stack_stop() {
    local i
    for ((i = 0; i < ${#STACK_PIDS[@]}; i++)); do
        stop_pid "${STACK_PIDS[$i]}"
    done
    STACK_PIDS=()
}

# stack_nginx_conf PORT BACKEND... : write an nginx config proxying PORT to the backends.
stack_nginx_conf() {
    local port="$1"; shift
    local conf="$BENCH_TMP/nginx.conf" b
    mkdir -p "$BENCH_TMP/nginx"
    {
        echo "daemon off;"
        echo "worker_processes 1;"
        echo "pid $BENCH_TMP/nginx/nginx.pid;"
        echo "error_log $BENCH_TMP/nginx/error.log warn;"
        echo "events { worker_connections 4096; }"
        echo "http {"
        echo "    access_log off;"
        echo "    client_body_temp_path $BENCH_TMP/nginx/body;"
        echo "    proxy_temp_path $BENCH_TMP/nginx/proxy;"
        echo "    fastcgi_temp_path $BENCH_TMP/nginx/fastcgi;"
        echo "    uwsgi_temp_path $BENCH_TMP/nginx/uwsgi;"
        echo "    scgi_temp_path $BENCH_TMP/nginx/scgi;"
        echo "    client_body_buffer_size 16k;"
        echo "    keepalive_requests 1000000;"
        echo "    upstream apis {"
        echo "        least_conn;"
        for b in "$@"; do echo "        server $b;"; done
        echo "        keepalive 64;"
        echo "        keepalive_requests 1000000;"
        echo "    }"
        echo "    server {"
        echo "        listen 127.0.0.1:$port;"
        echo "        location / {"
        echo "            proxy_pass http://apis;"
        echo "            proxy_http_version 1.1;"
        echo "            proxy_set_header Connection \"\";"
        echo "            proxy_set_header Host \$host;"
        echo "        }"
        echo "    }"
        echo "}"
    } >"$conf"
    echo "$conf"
}

# The APIs' credentials (every instance the same) and the crowd's mailbox, which the APIs send
# login codes to: the crowd logs every buyer in before its rush.
STACK_SIGNING_KEY="bench:$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
STACK_ORGANIZER="bench-organizer-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
STACK_MAILBOX="$(free_port)"

# stack_create_event PORT : create the crowd's event through the front; prints its id.
stack_create_event() {
    local port="$1" body i
    for i in $(seq 1 100); do
        body="$(curl -s -f -X POST -H 'content-type: application/json' \
            -H "authorization: Bearer $STACK_ORGANIZER" \
            -d "{\"name\":\"bench\",\"tickets\":$STACK_TICKETS,\"max_per_buyer\":4}" \
            "http://127.0.0.1:$port/events" 2>/dev/null)" && {
            python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])' <<<"$body"
            return 0
        }
        sleep 0.2
    done
    return 1
}

# stack_start SYSTEM STORE_URL : start SYSTEM (stack|nginx|naive); sets STACK_FRONT (its port).
# Not run in a subshell: the PIDs it starts must reach STACK_PIDS and the EXIT trap.
stack_start() {
    local system="$1" db="$2" front broker bmetrics admin i port apis=()
    front="$(free_port)"
    if [ "$system" != naive ]; then
        broker="$(free_port)"
        bmetrics="$(free_port)"
        stack_sut broker "$BIN/broker" serve --listen "127.0.0.1:$broker" \
            --data-dir "$STACK_DIR/broker" --metrics-listen "127.0.0.1:$bmetrics" --fsync always
        wait_port "$broker"
    fi
    for i in 1 2 3; do
        port="$(free_port)"
        apis+=("127.0.0.1:$port")
        if [ "$system" = naive ]; then
            stack_sut "naive-api-$i" env TICKET_DB="$db" TICKET_SIGNING_KEYS="$STACK_SIGNING_KEY" \
                TICKET_ORGANIZER_TOKENS="$STACK_ORGANIZER" "$BIN/naive_api" --listen "127.0.0.1:$port" \
                --login-sender "http://127.0.0.1:$STACK_MAILBOX/codes"
        else
            stack_sut "api-$i" env TICKET_DB="$db" TICKET_SIGNING_KEYS="$STACK_SIGNING_KEY" \
                TICKET_ORGANIZER_TOKENS="$STACK_ORGANIZER" "$BIN/ticket-svc" api \
                --listen "127.0.0.1:$port" --broker "127.0.0.1:$broker" \
                --login-sender "http://127.0.0.1:$STACK_MAILBOX/codes"
        fi
        # The first instance creates the schema alone; the others open it after.
        if [ "$i" = 1 ]; then wait_port "$port" 30; fi
    done
    for a in "${apis[@]}"; do wait_port "${a##*:}" 30; done
    if [ "$system" != naive ]; then
        for i in 1 2; do
            stack_sut "worker-$i" env TICKET_DB="$db" "$BIN/ticket-svc" worker \
                --broker "127.0.0.1:$broker" --workers 1
        done
    fi
    if [ "$system" = nginx ]; then
        stack_sut nginx nginx -p "$BENCH_TMP/nginx" -e "$BENCH_TMP/nginx/error.log" \
            -c "$(stack_nginx_conf "$front" "${apis[@]}")"
    else
        admin="$(free_port)"
        local backends=()
        for a in "${apis[@]}"; do backends+=(--backend "$a"); done
        stack_sut balancer "$BIN/balancer" --listen "127.0.0.1:$front" "${backends[@]}" \
            --strategy least-conn --health-interval 500ms --admin-listen "127.0.0.1:$admin"
    fi
    wait_port "$front"
    STACK_FRONT="$front"
}

# stack_parse REPORT : print "accepted_per_s p99_ms errors invariants last_final_s" from a rush
# report (last_final_s: when the purchase last in line was final, after the rush's last answer).
stack_parse() {
    awk '
        /^  throughput/ { acc = $2 }
        /^  latency/ { for (i = 1; i <= NF; i++) if ($i == "p99") p99 = $(i + 1) }
        /transport errors/ { for (i = 1; i <= NF; i++) if ($i == "transport") te = $(i - 1) }
        /^  statuses/ { for (i = 2; i <= NF; i += 2) { s = $i; sub(":", "", s); if (s != "202" && s != "400" && s != "401") other += $(i + 1) } }
        /the last in line was final after/ { for (i = 1; i <= NF; i++) if ($i == "after" && $(i + 2) ~ /^s/) last = $(i + 1) }
        /^  invariants  all hold/ { inv = "held" }
        /^  invariants  BROKEN/ { inv = "BROKEN" }
        END {
            if (acc == "") acc = 0
            if (p99 == "") p99 = "-"
            if (inv == "") inv = "not checked"
            if (last == "") last = "-"
            printf "%s %s %d %s %s\n", acc, p99, te + other, inv, last
        }' "$1"
}

# stack_round SYSTEM STORE ROUND : one run; appends stack_parse's line to the row's file.
stack_round() {
    local system="$1" store="$2" round="$3" db front event out rc=0
    local key="$system-$store"
    out="$BENCH_TMP/stack-$key-$round.txt"
    STACK_DIR="$BENCH_TMP/stack-data"
    rm -rf "$STACK_DIR"
    mkdir -p "$STACK_DIR"
    if [ "$store" = postgres ]; then
        db="$(stack_fresh_db)" || { log "stack: $key round $round: cannot create the database"; return 0; }
    else
        db="sqlite://$STACK_DIR/tickets.db"
    fi
    if [ "$system" = demo ]; then
        "$BIN/ticket-svc" demo --buyers "$STACK_BUYERS" --tickets "$STACK_TICKETS" \
            --data-dir "$STACK_DIR" --report "$BENCH_TMP/demo-report.html" >"$out" 2>"$out.err" || rc=$?
    else
        stack_start "$system" "$db"
        front="$STACK_FRONT"
        if event="$(stack_create_event "$front")"; then
            taskset -c "$LOADGEN_CPUS" "$BIN/ticket-svc" rush --target "http://127.0.0.1:$front" \
                --mailbox-listen "127.0.0.1:$STACK_MAILBOX" --event "$event" --buyers "$STACK_BUYERS" --concurrency "$STACK_CONCURRENCY" \
                --seed 1 --verify --verify-timeout-s 60 >"$out" 2>"$out.err" || rc=$?
        else
            echo "could not create the event through the front" >"$out"
            rc=1
        fi
        stack_stop
    fi
    if [ "$store" = postgres ]; then stack_drop_db; fi
    rm -rf "$STACK_DIR"
    local parsed
    parsed="$(stack_parse "$out")"
    log "stack: $key round $round: $parsed (exit $rc)"
    [ "$rc" = 0 ] || { sed -n '1,40p' "$out" >&2; tail -n 5 "$out.err" >&2 || true; }
    echo "$parsed" >>"$BENCH_TMP/stack-$key.rows"
}

# stack_row_cells KEY : print "| accepted/s | p99 | last final | errors | invariants" cells for a
# row, and set ROW_MEDIAN.
stack_row_cells() {
    local key="$1" file="$BENCH_TMP/stack-$1.rows" errs inv med_acc min max med_p99 med_last
    ROW_MEDIAN=0
    if [ ! -s "$file" ]; then
        printf '| - | - | - | - | not run'
        return
    fi
    read -r med_acc min max <<<"$(stats $(awk '{print $1}' "$file"))"
    read -r med_p99 _ _ <<<"$(stats $(awk '$2 != "-" {print $2}' "$file"))"
    read -r med_last _ _ <<<"$(stats $(awk '$5 != "-" {print $5}' "$file"))"
    errs="$(awk '{s += $3} END {print s + 0}' "$file")"
    if awk '$4 != "held" {bad = 1} END {exit bad}' "$file"; then
        inv="held ($(wc -l <"$file")/$(wc -l <"$file"))"
    else
        inv="**broken** in $(awk '$4 != "held"' "$file" | wc -l) of $(wc -l <"$file")"
    fi
    ROW_MEDIAN="$med_acc"
    # Medians of an even number of rounds fall between two runs: round them for the table.
    med_acc="$(awk -v v="$med_acc" 'BEGIN { printf "%.0f", v }')"
    [ "$med_p99" = - ] || med_p99="$(awk -v v="$med_p99" 'BEGIN { printf "%.1f", v }')"
    [ "$med_last" = - ] || med_last="$(awk -v v="$med_last" 'BEGIN { printf "%.2f", v }')"
    printf '| %s (%s–%s) | %s | %s | %s | %s' "$med_acc" "$min" "$max" "$med_p99" "$med_last" "$errs" "$inv"
}

bench_stack() {
    need nginx nginx-light
    # Without psql the PostgreSQL rows are skipped (below), unless --install may add it.
    if [ "$INSTALL" = 1 ]; then need psql postgresql-client; fi
    need curl curl
    need taskset util-linux
    local started rounds round budget pg_ok=1 pg_reason="" pg_version="-"
    started="$(date +%s)"
    local load_start
    load_start="$(cut -d' ' -f1-3 /proc/loadavg)"
    STACK_BUYERS="${STACK_BUYERS:-$([ "$QUICK" = 1 ] && echo 4000 || echo 15000)}"
    STACK_TICKETS="${STACK_TICKETS:-$((STACK_BUYERS / 4))}"
    STACK_CONCURRENCY="${STACK_CONCURRENCY:-64}"
    rounds="${STACK_ROUNDS:-$([ "$QUICK" = 1 ] && echo 1 || echo 3)}"
    budget="${STACK_BUDGET_S:-$([ "$QUICK" = 1 ] && echo 120 || echo 480)}"
    STACK_PIDS=()
    STACK_PG_DB="ticketrush_bench_$$"
    # The private database goes away however the script ends (run.sh's cleanup runs after).
    trap 'stack_stop; stack_drop_db; cleanup' EXIT

    if ! command -v psql >/dev/null 2>&1; then
        pg_ok=0
        pg_reason="psql is not installed (apt-get install postgresql-client, or rerun with --install)"
        log "stack: skipping the PostgreSQL rows: $pg_reason"
    elif ! pg_version="$(stack_psql -At -c 'SHOW server_version' 2>"$BENCH_TMP/psql.err")"; then
        pg_ok=0
        pg_reason="PostgreSQL at $STACK_PG_HOST:$STACK_PG_PORT did not answer ($(head -n 1 "$BENCH_TMP/psql.err"))"
        pg_version="-"
        log "stack: skipping the PostgreSQL rows: $pg_reason"
    fi

    local rows=(stack:sqlite nginx:sqlite naive:sqlite demo:sqlite)
    [ "$pg_ok" = 1 ] && rows+=(stack:postgres nginx:postgres naive:postgres)
    log "stack: ${#rows[@]} rows × $rounds rounds, $STACK_BUYERS buyers, $STACK_TICKETS tickets, concurrency $STACK_CONCURRENCY; crowd on CPU $LOADGEN_CPUS, system under test on CPU $SUT_CPUS"
    # The bound: after the first round (which always runs whole), a row is run again only if
    # its slowest run so far still fits in what is left of the budget.
    local done_rounds=0 r t0 spent skipped=0
    declare -A row_secs=()
    for round in $(seq 1 "$rounds"); do
        for r in "${rows[@]}"; do
            spent=$(($(date +%s) - started))
            if [ "$round" -gt 1 ] && [ $((spent + ${row_secs[$r]:-0})) -gt "$budget" ]; then
                log "stack: skipping $r round $round: its last run took ${row_secs[$r]}s, ${spent}s of ${budget}s spent"
                skipped=$((skipped + 1))
                continue
            fi
            t0="$(date +%s)"
            stack_round "${r%%:*}" "${r##*:}" "$round"
            t0=$(($(date +%s) - t0))
            if [ "$t0" -gt "${row_secs[$r]:-0}" ]; then row_secs[$r]="$t0"; fi
        done
        done_rounds="$round"
    done
    local took=$(($(date +%s) - started))

    local out="$BENCH_TMP/stack-results.md" s key base name
    {
        echo "## The seed's thesis, measured: queue-based stack vs one transaction per request (\`benches/run.sh stack\`)"
        echo
        echo "Machine: $(machine_line). Versions: $(nginx -v 2>&1 | sed 's/^nginx version: //'), PostgreSQL server $pg_version, ticketrush $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)."
        echo "Crowd: \`taskset -c $LOADGEN_CPUS ticket-svc rush --target http://127.0.0.1:PORT --event ID --buyers $STACK_BUYERS --concurrency $STACK_CONCURRENCY --seed 1 --verify\` against an event of $STACK_TICKETS tickets (at most 4 per buyer); the system under test pinned to CPU $SUT_CPUS (\`demo\` runs its own crowd, in process, on every core)."
        echo "Processes: \`broker serve --fsync always\`; 3× \`ticket-svc api --broker B\` (or 3× \`naive_api\`), \`TICKET_DB\` = the store; 2× \`ticket-svc worker --workers 1\`; in front \`balancer --strategy least-conn --health-interval 500ms\` or nginx (\`worker_processes 1\`, \`least_conn\`, upstream \`keepalive 64\`, HTTP/1.1 upstream)."
        echo "Rounds: $done_rounds$([ "$skipped" -gt 0 ] && echo " ($skipped of the runs skipped to stay within the ${budget} s bound: see the (n/n) after each row's invariants)"), each row from an empty store, rows interleaved; section time ${took} s; load average ${load_start} at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end.$([ "$QUICK" = 1 ] && echo " **--quick: one short round, figures not for quoting.**")"
        [ "$pg_ok" = 1 ] || echo "PostgreSQL rows skipped: $pg_reason."
        echo
        echo "| system | store | accepted/s median (min–max) | p99 ms | last in line final after, s | errors | invariants | accepted/s vs full stack |"
        echo "|---|---|---|---:|---:|---:|---|---:|"
        for s in sqlite postgres; do
            [ "$s" = postgres ] && [ "$pg_ok" = 0 ] && continue
            stack_row_cells "stack-$s" >/dev/null
            base="$ROW_MEDIAN"
            for key in stack nginx naive demo; do
                [ "$key" = demo ] && [ "$s" = postgres ] && continue
                case "$key" in
                    stack) name="full stack: balancer → 3 APIs → broker → 2 workers" ;;
                    nginx) name="full stack behind nginx (1 worker, keepalive 64)" ;;
                    naive) name="naive: balancer → 3 APIs, one transaction per purchase" ;;
                    demo) name="\`ticket-svc demo\` (in process, crowd included)" ;;
                esac
                local cells
                cells="$(stack_row_cells "$key-$s")"
                stack_row_cells "$key-$s" >/dev/null
                echo "| $name | $s $cells | $(ratio "$ROW_MEDIAN" "$base") |"
            done
        done
        echo
        echo "accepted/s: 202 answers per second of the rush (for the full stack a 202 means durably queued, for the naive design decided); p99 (median over rounds): of every answer the crowd got (202s, and the 400s of the 2% malformed buyers); last in line final after (median): when the purchase last in line was seen decided, counted from the rush's last answer (the workers' remaining lag; about 0 for the naive design, whose 202 is final); errors: transport errors plus answers other than 202 and the expected 400, summed over the rounds; invariants: every docs/DESIGN.md invariant, checked by \`rush --verify\` after every purchase was final."
    } >"$out"
    results_block stack "$out"
    log "stack: section took ${took}s"
}
