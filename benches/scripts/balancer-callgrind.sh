#!/usr/bin/env bash
# benches/scripts/balancer-callgrind.sh — user-space instructions per proxied request, for the
# balancer (--workers 1) and, for scale, nginx as a proxy, both in front of three nginx
# `return 200` backends. Instruction counts under callgrind repeat to within ~0.5% run to run
# even on a busy shared machine, where wall-clock req/s moves by ±30%: compare builds with
# this, then confirm with a side-by-side wrk run.
#
#   benches/scripts/balancer-callgrind.sh [REQUESTS] [BALANCER_BINARY]
#
# REQUESTS (default 20000) keep-alive GETs are sent with h2load (-c64, one thread) after a
# 2000-request warm-up; only the measured requests are counted (callgrind starts with
# instrumentation off and is switched on around them). The kernel's share is not counted.
# Needs valgrind, nginx and h2load (nghttp2-client). Prints one line per proxy.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=common.sh
. "$HERE/common.sh"

REQUESTS="${1:-20000}"
BALANCER="${2:-}"
need valgrind valgrind
need callgrind_control valgrind
need nginx nginx-light
need h2load nghttp2-client

if [ -z "$BALANCER" ]; then
    log "cargo build --release -p balancer"
    (cd "$ROOT" && cargo build --release -q -p balancer)
    BALANCER="${CARGO_TARGET_DIR:-$ROOT/target}/release/balancer"
fi

BODY='{"id":1,"name":"seat","tickets":100,"sold":42,"remaining":58,"status":"ok","pad":"xxxxxxxxxxxx"}'

# nginx_conf DIR BODY_DIRECTIVES : a foreground, single-process nginx config in DIR.
nginx_conf() {
    local dir="$1" server="$2"
    mkdir -p "$dir"
    cat >"$dir/nginx.conf" <<EOF
daemon off; master_process off; worker_processes 1; pid $dir/nginx.pid; error_log $dir/error.log;
events { worker_connections 4096; }
http {
  access_log off; keepalive_requests 1000000;
  client_body_temp_path $dir; proxy_temp_path $dir; fastcgi_temp_path $dir;
  uwsgi_temp_path $dir; scgi_temp_path $dir;
  $server
}
EOF
}

BACKENDS=()
UPSTREAM=""
for i in 1 2 3; do
    port="$(free_port)"
    nginx_conf "$BENCH_TMP/backend$i" "server { listen 127.0.0.1:$port; location / {
        default_type application/json; return 200 '$BODY'; } }"
    start_bg "backend$i" nginx -p "$BENCH_TMP/backend$i" -c "$BENCH_TMP/backend$i/nginx.conf"
    wait_port "$port"
    BACKENDS+=(--backend "127.0.0.1:$port")
    UPSTREAM="$UPSTREAM server 127.0.0.1:$port;"
done

# control PID PORT ARGS... : send a callgrind_control command. Valgrind reads commands only
# while the program runs, so one extra request wakes an idle proxy (nginx blocks in
# epoll_wait); it adds well under 0.1% to the counts.
control() {
    local pid="$1" port="$2"
    shift 2
    callgrind_control "$@" "$pid" >/dev/null 2>&1 &
    local ctl=$!
    sleep 0.3
    h2load --h1 -n 1 -c 1 "http://127.0.0.1:$port/" >/dev/null 2>&1 || true
    wait "$ctl"
}

# measure NAME PORT CMD... : run CMD under callgrind and print its instructions per request.
measure() {
    local name="$1" port="$2" out pid ir
    shift 2
    out="$BENCH_TMP/callgrind.$name"
    start_bg "$name" valgrind --tool=callgrind --instr-atstart=no \
        --callgrind-out-file="$out" "$@"
    pid="$LAST_PID"
    wait_port "$port" 60
    h2load --h1 -n 2000 -c 64 -t 1 "http://127.0.0.1:$port/" >/dev/null 2>&1
    control "$pid" "$port" -i on
    h2load --h1 -n "$REQUESTS" -c 64 -t 1 "http://127.0.0.1:$port/" >"$BENCH_TMP/$name.h2load" 2>&1
    control "$pid" "$port" -d
    stop_pid "$pid"
    grep -q "$REQUESTS succeeded" "$BENCH_TMP/$name.h2load" \
        || die "$name: not every request succeeded: $(grep '^requests:' "$BENCH_TMP/$name.h2load")"
    ir="$(awk '/^summary:/ {print $2}' "$out.1")"
    printf '%-8s %s requests  %s instructions  %s per request\n' \
        "$name" "$REQUESTS" "$ir" "$((ir / REQUESTS))"
}

port="$(free_port)"
measure balancer "$port" "$BALANCER" --listen "127.0.0.1:$port" "${BACKENDS[@]}" \
    --workers 1 --no-admin

port="$(free_port)"
nginx_conf "$BENCH_TMP/proxy" "upstream be { $UPSTREAM keepalive 64; keepalive_requests 1000000; }
  server { listen 127.0.0.1:$port; location / { proxy_pass http://be;
    proxy_http_version 1.1; proxy_set_header Connection \"\"; } }"
measure nginx "$port" nginx -p "$BENCH_TMP/proxy" -c "$BENCH_TMP/proxy/nginx.conf"
