#!/usr/bin/env bash
# benches/scripts/cluster.sh — a replicated cluster of three of our brokers vs a three-node NATS
# JetStream cluster (streams with 3 replicas, file storage), side by side on loopback.
#
#   cargo build --release -p broker -p benches --features peers --bins
#   benches/scripts/cluster.sh [ROUNDS]            # default 2; prints one line per phase
#
# Each round runs `peer_load --mode all` (1 and 64 producers of 100-byte records, consume + ack
# with 4 consumers, produce→delivery at 10,000 records/s) against our cluster, then against
# JetStream R3. Our brokers run `--fsync always`; nats-server 2.9 has no fsync-always setting
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
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
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

start_brokers
start_nats
sleep 5
for r in $(seq 1 "$ROUNDS"); do
    "$BIN/peer_load" --system broker --url "$BROKERS" --mode all --seconds 3 --producers 64 \
        --consumers 4 --payload 100 | sed "s/^/round=$r cluster=broker-x3 /"
    "$BIN/peer_load" --system nats --url "$NATS" --replicas 3 --mode all --seconds 3 \
        --producers 64 --consumers 4 --payload 100 | sed "s/^/round=$r cluster=jetstream-r3 /"
done
