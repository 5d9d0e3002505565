# benches/scripts/broker.sh — broker vs Redis Streams vs NATS JetStream vs RabbitMQ, sourced by
# benches/run.sh, which calls `bench_broker`.
#
# One load generator (target/release/peer_load) runs the same workload against each system:
# 100-byte records; produce with 1 and with 64 producers (each waits for its acknowledgement);
# consume-and-ack with 4 group members; produce→delivery latency at 10,000 records/s from each
# record's intended send time. Each system runs at its durable setting, then at its fast one:
#
#   system     durable                                        fast
#   broker     --fsync always (private, pinned)               --fsync never (private, pinned)
#   Redis      private redis-server, appendfsync always       private redis-server, no AOF, no RDB
#   NATS       private nats-server, JetStream file storage    the same server, memory storage
#   RabbitMQ   system service, quorum queue, persistent       system service, transient classic queue,
#              messages, publisher confirms                   transient messages, publisher confirms
#
# nats-server 2.9 has no `sync_interval: always` (2.10 added it): file storage fsyncs every
# 2 minutes, so its "durable" row is not power-cut durable; the table says so.
# Servers this script starts run on $SUT_CPUS and the load generator on $LOADGEN_CPUS (taskset);
# RabbitMQ is the machine's service on 5672 and cannot be pinned from here.
# Rounds interleave the systems (3 rounds, 1 with QUICK=1); tables give median (min–max).

# bench_broker : run every case, write the `broker` block of benches/RESULTS.md.
bench_broker() {
    need redis-server redis-server
    need nats-server nats-server
    need taskset util-linux
    local rounds=3 secs=3 rate=10000
    if [ "$QUICK" = 1 ]; then rounds=1; secs=1; fi
    local amqp_url="${BENCH_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
    local out="$BENCH_TMP/broker-results.md" raw="$BENCH_TMP/broker-raw"
    mkdir -p "$raw"

    log "broker: starting our broker (always, never), Redis (AOF always, memory) and NATS on CPUs $SUT_CPUS"
    local p_bd p_bf p_rd p_rf p_n
    p_bd="$(free_port)"
    local servers=()
    broker_start broker-durable "$p_bd" always
    servers+=("broker-durable:$LAST_PID")
    p_bf="$(free_port)"
    broker_start broker-fast "$p_bf" never
    servers+=("broker-fast:$LAST_PID")
    p_rd="$(free_port)"
    mkdir -p "$BENCH_TMP/redis-durable" "$BENCH_TMP/redis-fast" "$BENCH_TMP/nats"
    start_bg redis-durable taskset -c "$SUT_CPUS" redis-server --bind 127.0.0.1 --port "$p_rd" \
        --dir "$BENCH_TMP/redis-durable" --save "" --appendonly yes --appendfsync always
    servers+=("redis-durable:$LAST_PID")
    p_rf="$(free_port)"
    start_bg redis-fast taskset -c "$SUT_CPUS" redis-server --bind 127.0.0.1 --port "$p_rf" \
        --dir "$BENCH_TMP/redis-fast" --save "" --appendonly no
    servers+=("redis-fast:$LAST_PID")
    p_n="$(free_port)"
    start_bg nats taskset -c "$SUT_CPUS" nats-server -a 127.0.0.1 -p "$p_n" -js -sd "$BENCH_TMP/nats"
    servers+=("nats:$LAST_PID")
    local port
    for port in "$p_bd" "$p_bf" "$p_rd" "$p_rf" "$p_n"; do wait_port "$port"; done
    (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null \
        || log "broker: nothing on 127.0.0.1:5672; the RabbitMQ rows will be empty"

    local syncs
    syncs="$(dd_syncs_per_s)"
    local round setting system url
    for round in $(seq 1 "$rounds"); do
        for setting in durable fast; do
            for system in broker redis nats rabbitmq; do
                case "$system/$setting" in
                    broker/durable) url="127.0.0.1:$p_bd" ;;
                    broker/fast) url="127.0.0.1:$p_bf" ;;
                    redis/durable) url="redis://127.0.0.1:$p_rd" ;;
                    redis/fast) url="redis://127.0.0.1:$p_rf" ;;
                    nats/*) url="nats://127.0.0.1:$p_n" ;;
                    rabbitmq/*) url="$amqp_url" ;;
                esac
                log "broker: round $round/$rounds, $system $setting"
                if ! RUST_BACKTRACE=0 taskset -c "$LOADGEN_CPUS" "$BIN/peer_load" --system "$system" \
                    --url "$url" --setting "$setting" --mode all --seconds "$secs" --rate "$rate" \
                    --producers 64 --consumers 4 --payload 100 \
                    >>"$raw/$system-$setting.txt" 2>"$raw/stderr.txt"; then
                    log "broker: $system $setting failed in round $round: $(tail -n 1 "$raw/stderr.txt")"
                fi
                if [ -s "$raw/stderr.txt" ]; then
                    sed "s|^|$system $setting, round $round: |" "$raw/stderr.txt" >>"$raw/errors.txt"
                fi
            done
        done
    done

    # Stop our servers one by one, so that the log names any that needs longer than 5 s.
    local s t0
    for s in "${servers[@]}"; do
        t0="$(date +%s)"
        stop_pid "${s#*:}"
        [ $(($(date +%s) - t0)) -lt 5 ] || log "broker: ${s%%:*} took $(($(date +%s) - t0)) s to stop on SIGTERM"
    done

    {
        printf '## Broker vs peers (`benches/run.sh broker%s`)\n\n' "$([ "$QUICK" = 1 ] && echo ' --quick')"
        printf 'Machine: %s. `dd bs=4k oflag=dsync`: %s syncs/s. %s round(s), %s s per phase.\n' \
            "$(machine_line)" "$syncs" "$rounds" "$secs"
        printf 'Peers: %s; %s; RabbitMQ %s. Ours: commit %s.\n\n' \
            "$(redis-server --version | awk '{print $1, $3}' | sed 's/v=//')" \
            "$(nats-server --version)" "$(rabbitmq_version)" \
            "$(cd "$ROOT" && git rev-parse --short HEAD)"
        printf 'Each run, per system and setting (load generator on CPU %s, servers we start on CPU %s; RabbitMQ is\n' "$LOADGEN_CPUS" "$SUT_CPUS"
        printf 'the machine'"'"'s service and is not pinned):\n\n```sh\n'
        printf 'taskset -c %s target/release/peer_load --system SYSTEM --url URL --setting durable|fast --mode all \\\n' "$LOADGEN_CPUS"
        printf '    --seconds %s --rate %s --producers 64 --consumers 4 --payload 100\n```\n\n' "$secs" "$rate"
        printf 'Cells: median of the rounds (min–max), then ×: the row'"'"'s median ÷ our broker'"'"'s in the same table\n'
        printf '(throughput: above 1 means the peer is faster; latency: above 1 means the peer is slower).\n'
        printf 'Produce counts acknowledged records; consume drains what the 64 producers wrote; e2e latency\n'
        printf 'is intended send time → delivery at %s records/s (64 producers, 4 consumers).\n\n' "$rate"
        broker_table durable "$raw" "$rate" "$secs"
        broker_table fast "$raw" "$rate" "$secs"
        printf 'Settings. Durable: broker `--fsync always` (4 partitions); Redis `appendonly yes, appendfsync always`\n'
        printf '(private instance); NATS JetStream file storage (private nats-server; **2.9 fsyncs every 2 min, not per\n'
        printf 'message**: this row is not power-cut durable); RabbitMQ quorum queue, persistent messages,\n'
        printf 'publisher confirms. Fast: broker `--fsync never`; Redis without AOF or RDB (private instance);\n'
        printf 'NATS memory storage; RabbitMQ transient classic queue, transient messages, publisher confirms on.\n'
        if [ -s "$raw/errors.txt" ]; then
            printf '\nWhat the load generator said on stderr (a failed run has no figures above; first lines):\n\n```text\n'
            head -n 10 "$raw/errors.txt"
            printf '```\n'
        fi
    } >"$out"
    results_block broker "$out"
}

# broker_start NAME PORT FSYNC : our broker on a temp dir, pinned to $SUT_CPUS.
broker_start() {
    local name="$1" port="$2" fsync="$3"
    # --drain-timeout 1s: after group members have come and gone, SIGTERM waits out the whole
    # drain timeout (10 s by default) although no client is connected any more.
    start_bg "$name" taskset -c "$SUT_CPUS" "$BIN/broker" serve --no-metrics --drain-timeout 1s \
        --listen "127.0.0.1:$port" --fsync "$fsync" --data-dir "$BENCH_TMP/$name"
}

# dd_syncs_per_s : 4 KiB synchronous writes per second into a growing file under $BENCH_TMP.
dd_syncs_per_s() {
    local t0 t1
    t0="$(date +%s.%N)"
    dd if=/dev/zero of="$BENCH_TMP/dd-sync" bs=4k count=1000 oflag=dsync 2>/dev/null
    t1="$(date +%s.%N)"
    rm -f "$BENCH_TMP/dd-sync"
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f\n", 1000 / (b - a) }'
}

# rabbitmq_version : the RabbitMQ server's version, or "unknown".
rabbitmq_version() {
    timeout 20 rabbitmqctl version 2>/dev/null | tail -n 1 || echo unknown
}

# broker_values FILE MODE_FILTER KEY : KEY's value in every line of FILE matching the filter.
broker_values() {
    [ -f "$1" ] || return 0
    grep -F -- "$2" "$1" | tr ' ' '\n' | awk -F= -v k="$3" '$1 == k { print $2 }'
}

# broker_cell VALUES_OF_THIS_ROW -- VALUES_OF_OUR_BROKER : "median (min–max) ×ratio".
broker_cell() {
    local mine=() ours=() seen=0 v
    for v in "$@"; do
        if [ "$v" = "--" ]; then seen=1; continue; fi
        if [ "$seen" = 0 ]; then mine+=("$v"); else ours+=("$v"); fi
    done
    [ "${#mine[@]}" -gt 0 ] || { printf -- '–'; return; }
    local m lo hi om
    read -r m lo hi <<<"$(stats "${mine[@]}")"
    read -r om _ _ <<<"$(stats "${ours[@]:-}")"
    if [ "$lo" = "$hi" ]; then
        printf '%s ×%s' "$(human "$m")" "$(ratio "$m" "$om")"
    else
        printf '%s (%s–%s) ×%s' "$(human "$m")" "$(human "$lo")" "$(human "$hi")" "$(ratio "$m" "$om")"
    fi
}

# human N : a short figure (12.3k for thousands, 3 significant digits below).
human() {
    awk -v n="$1" 'BEGIN { if (n >= 10000) printf "%.1fk", n / 1000; else if (n >= 100) printf "%.0f", n; else printf "%.3g", n }'
}

# broker_table SETTING RAW_DIR RATE SECS : one Markdown table for a setting.
broker_table() {
    local setting="$1" raw="$2" rate="$3" secs="$4" system f o
    printf '### %s setting\n\n' "$setting"
    printf '| system | produce, 1 producer (rec/s) | produce, 64 producers (rec/s) | consume+ack, 4 consumers (rec/s) | e2e p50 (ms) | e2e p99 (ms) | e2e sent of %s |\n' "$((rate * secs))"
    printf '|---|---|---|---|---|---|---|\n'
    o="$raw/broker-$setting.txt"
    # The value lists are split into words on purpose: one argument per round.
    # shellcheck disable=SC2046
    for system in broker redis nats rabbitmq; do
        f="$raw/$system-$setting.txt"
        printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$(broker_row_name "$system" "$setting")" \
            "$(broker_cell $(broker_values "$f" 'mode=produce producers=1 ' records_per_s) -- $(broker_values "$o" 'mode=produce producers=1 ' records_per_s))" \
            "$(broker_cell $(broker_values "$f" 'mode=produce producers=64 ' records_per_s) -- $(broker_values "$o" 'mode=produce producers=64 ' records_per_s))" \
            "$(broker_cell $(broker_values "$f" 'mode=consume' records_per_s) -- $(broker_values "$o" 'mode=consume' records_per_s))" \
            "$(broker_cell $(broker_values "$f" 'mode=e2e' p50_ms) -- $(broker_values "$o" 'mode=e2e' p50_ms))" \
            "$(broker_cell $(broker_values "$f" 'mode=e2e' p99_ms) -- $(broker_values "$o" 'mode=e2e' p99_ms))" \
            "$(broker_least "$(broker_values "$f" 'mode=e2e' sent)")"
    done
    printf '\n'
}

# broker_least VALUES : the smallest of newline-separated values, or "–".
broker_least() {
    printf '%s\n' "$1" | sort -n | awk 'NF { print; found = 1; exit } END { if (!found) print "–" }'
}

# broker_row_name SYSTEM SETTING : the row's label, naming the setting.
broker_row_name() {
    case "$1/$2" in
        broker/durable) echo 'ticketrush broker, `--fsync always`' ;;
        broker/fast) echo 'ticketrush broker, `--fsync never`' ;;
        redis/durable) echo 'Redis Streams, AOF `appendfsync always`' ;;
        redis/fast) echo 'Redis Streams, no persistence' ;;
        nats/durable) echo 'NATS JetStream, file storage (fsync every 2 min)' ;;
        nats/fast) echo 'NATS JetStream, memory storage' ;;
        rabbitmq/durable) echo 'RabbitMQ quorum queue, persistent, confirms' ;;
        rabbitmq/fast) echo 'RabbitMQ classic transient queue, confirms' ;;
    esac
}
