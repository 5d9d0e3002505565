#!/usr/bin/env bash
# benches/scripts/cluster.sh — a replicated cluster of three of our brokers vs a three-node NATS
# JetStream cluster (streams with 3 replicas, file storage) and a three-node RabbitMQ cluster
# (quorum queues, 3 replicas, persistent messages), side by side on loopback.
#
#   cargo build --release -p broker -p benches --features peers --bins
#   benches/scripts/cluster.sh [ROUNDS]            # default 2; prints one line per phase
#
# Each round runs `peer_load --mode all` (1 and 64 producers of 100-byte records, consume + ack
# with 4 consumers, produce→delivery at 10,000 records/s) against our cluster, then against
# JetStream R3, then against RabbitMQ (skipped when rabbitmq-server is not installed; its nodes
# run as the rabbitmq user when this runs as root, on their own ports and data directories, so a
# RabbitMQ already running here is left alone). A quorum queue fsyncs its Raft log before it
# confirms a message, so RabbitMQ's confirms mean "on a majority's disk", as ours do. Our brokers run `--fsync always`; nats-server 2.9 has no fsync-always setting
# (2.10 added `sync_interval: always`), so its file storage syncs every 2 minutes and a
# JetStream acknowledgement means "on a majority's page cache", not on a majority's disk.
# Everything (six servers and the load generator) shares this machine's cores and disk: compare
# the two side by side, not with figures from elsewhere. It stops only what it started.

set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=${BIN:-$ROOT/target/release}
ROUNDS=${1:-2}
TMP=$(mktemp -d)
PIDS=()
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_brokers() {
    local ports=() peers=() i
    for i in 1 2 3; do ports+=("$(free_port)"); done
    for i in 1 2 3; do peers+=("$i=127.0.0.1:${ports[$((i - 1))]}"); done
    local list
    list=$(IFS=,; echo "${peers[*]}")
    for i in 1 2 3; do
        RUST_LOG=error "$BIN/broker" serve --no-metrics --listen "127.0.0.1:${ports[$((i - 1))]}" \
            --data-dir "$TMP/broker-$i" --node-id "$i" --peers "$list" >"$TMP/broker-$i.log" 2>&1 &
        PIDS+=($!)
    done
    BROKERS="127.0.0.1:${ports[0]},127.0.0.1:${ports[1]},127.0.0.1:${ports[2]}"
}

start_nats() {
    local client=() route=() i
    for i in 1 2 3; do client+=("$(free_port)"); route+=("$(free_port)"); done
    local routes="nats-route://127.0.0.1:${route[0]},nats-route://127.0.0.1:${route[1]},nats-route://127.0.0.1:${route[2]}"
    for i in 1 2 3; do
        nats-server -a 127.0.0.1 -p "${client[$((i - 1))]}" -js -sd "$TMP/nats-$i" \
            --name "n$i" --cluster_name bench --cluster "nats://127.0.0.1:${route[$((i - 1))]}" \
            --routes "$routes" >"$TMP/nats-$i.log" 2>&1 &
        PIDS+=($!)
    done
    # One seed is enough: a NATS client learns the other servers from it.
    NATS="nats://127.0.0.1:${client[0]}"
}

RABBIT=
start_rabbit() {
    command -v rabbitmq-server >/dev/null || return 0
    local i ctl=(env RABBITMQ_CTL_ERL_ARGS="-setcookie ticketrush-bench" rabbitmqctl)
    for i in 1 2 3; do
        local dir="$TMP/rabbit-$i" amqp dist
        amqp=$(free_port)
        dist=$(free_port)
        mkdir -p "$dir"
        echo "[]." >"$dir/plugins"
        # Its own configuration: the system's (if any) would name the system node's listener.
        echo "listeners.tcp.default = 127.0.0.1:$amqp" >"$dir/rabbitmq.conf"
        [ "$(id -u)" = 0 ] && chown -R rabbitmq: "$dir" && chmod 755 "$TMP"
        RABBITMQ_NODENAME="bench$i@localhost" RABBITMQ_NODE_PORT=$amqp RABBITMQ_DIST_PORT=$dist \
            RABBITMQ_MNESIA_BASE="$dir/mnesia" RABBITMQ_LOG_BASE="$dir/log" \
            RABBITMQ_PID_FILE="$dir/pid" RABBITMQ_ENABLED_PLUGINS_FILE="$dir/plugins" \
            RABBITMQ_CONFIG_FILE="$dir/rabbitmq" \
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-setcookie ticketrush-bench" \
            rabbitmq-server >"$TMP/rabbit-$i.log" 2>&1 &
        PIDS+=($!)
        [ "$i" = 1 ] && RABBIT="amqp://guest:guest@127.0.0.1:$amqp/%2f"
    done
    for i in 1 2 3; do
        local tries=0
        until "${ctl[@]}" -n "bench$i@localhost" await_startup >/dev/null 2>&1; do
            tries=$((tries + 1))
            [ "$tries" -lt 60 ] || { echo "RabbitMQ node $i did not start: $TMP/rabbit-$i.log" >&2; return 1; }
            sleep 1
        done
    done
    for i in 2 3; do
        "${ctl[@]}" -n "bench$i@localhost" stop_app >/dev/null
        "${ctl[@]}" -n "bench$i@localhost" join_cluster bench1@localhost >/dev/null
        "${ctl[@]}" -n "bench$i@localhost" start_app >/dev/null
    done
}
stop_rabbit() {
    [ -n "$RABBIT" ] || return 0
    local i
    for i in 1 2 3; do
        env RABBITMQ_CTL_ERL_ARGS="-setcookie ticketrush-bench" \
            rabbitmqctl -n "bench$i@localhost" stop >/dev/null 2>&1 || true
    done
}
cleanup() {
    stop_rabbit
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$TMP"
}

start_brokers
start_nats
start_rabbit
sleep 5
for r in $(seq 1 "$ROUNDS"); do
    "$BIN/peer_load" --system broker --url "$BROKERS" --mode all --seconds 3 --producers 64 \
        --consumers 4 --payload 100 | sed "s/^/round=$r cluster=broker-x3 /"
    "$BIN/peer_load" --system nats --url "$NATS" --replicas 3 --mode all --seconds 3 \
        --producers 64 --consumers 4 --payload 100 | sed "s/^/round=$r cluster=jetstream-r3 /"
    if [ -n "$RABBIT" ]; then
        "$BIN/peer_load" --system rabbitmq --url "$RABBIT" --setting durable --mode all \
            --seconds 3 --producers 64 --consumers 4 --payload 100 \
            | sed "s/^/round=$r cluster=rabbitmq-quorum-x3 /"
    fi
done
