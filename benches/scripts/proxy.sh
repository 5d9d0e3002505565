# The `proxy` section of benches/run.sh (sourced, not run): the balancer against nginx and
# HAProxy in front of the same three backends, with one backend hit directly as the ceiling.
#
# Every process runs as the current user, is started through start_bg (so the EXIT trap stops it
# by PID) and keeps every file it writes (config, pid, logs, temp paths, certificate) in
# $BENCH_TMP. nginx runs with `daemon off; master_process off`, HAProxy with `-db`, so the PID
# start_bg records is the process that serves.
#
# Knobs (environment): PROXY_SECONDS (seconds per run, default 7), PROXY_ROUNDS (default 3),
# PROXY_IDLE_CONNS (default 10000). QUICK=1: one round of 2 s per case, 2,000 idle connections.

# The small response every backend returns for GET / (100 bytes of JSON).
PROXY_SMALL_BODY='{"id":"7f3c","name":"DJ night","tickets":10000,"sold":1234,"remaining":8766,"note":"xxxxxxxxxxxxxx"}'

# proxy_cpu_ticks PID : user+system CPU time of PID (all its threads), in clock ticks.
proxy_cpu_ticks() {
    awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0
}

# proxy_wrk_parse FILE : "req/s p50_ms p99_ms requests errors" from wrk --latency output.
proxy_wrk_parse() {
    awk '
        function ms(v) {
            if (v ~ /us$/) { sub(/us$/, "", v); return v / 1000 }
            if (v ~ /ms$/) { sub(/ms$/, "", v); return v + 0 }
            if (v ~ /s$/)  { sub(/s$/, "", v);  return v * 1000 }
            return v + 0
        }
        $1 == "50%" { p50 = ms($2) }
        $1 == "99%" { p99 = ms($2) }
        $2 == "requests" && $3 == "in" { reqs = $1 }
        /^Requests\/sec:/ { rps = $2 }
        /Socket errors:/ { gsub(/,/, ""); err += $4 + $6 + $8 + $10 }
        /Non-2xx or 3xx responses:/ { err += $NF }
        END { printf "%s %s %s %s %d\n", rps + 0, p50 + 0, p99 + 0, reqs + 0, err }' "$1"
}

# proxy_h2load_parse OUT LOG : "req/s p50_ms p99_ms requests errors" from h2load's summary
# and its per-request log (third column: microseconds until the end of the response).
proxy_h2load_parse() {
    local out="$1" reqlog="$2" pct
    pct="$(cut -f3 "$reqlog" | sort -n | awk '{v[NR] = $1} END {
        if (NR == 0) { print "0 0"; exit }
        i50 = int(NR * 0.50); if (i50 < 1) i50 = 1
        i99 = int(NR * 0.99); if (i99 < 1) i99 = 1
        printf "%.3f %.3f\n", v[i50] / 1000, v[i99] / 1000 }')"
    awk -v pct="$pct" '
        /^finished in/ { gsub(/,/, ""); rps = $4 }
        /^requests:/ { gsub(/,/, ""); reqs = $2; ok = $8 }
        END { split(pct, p, " "); printf "%s %s %s %s %d\n", rps + 0, p[1], p[2], reqs + 0, reqs - ok }' "$out"
}

# proxy_nginx_temps DIR : an nginx instance's temp paths, all under DIR.
proxy_nginx_temps() {
    local d="$1"
    printf '    client_body_temp_path %s/body;\n    proxy_temp_path %s/proxy;\n' "$d" "$d"
    printf '    fastcgi_temp_path %s/fastcgi;\n    uwsgi_temp_path %s/uwsgi;\n' "$d" "$d"
    printf '    scgi_temp_path %s/scgi;\n' "$d"
}

# proxy_backend_server PORT EXTRA_LISTEN : one backend server block of the backends' nginx.
proxy_backend_server() {
    cat <<EOF
server {
    listen 127.0.0.1:$1;$2
    location / { return 200 '$PROXY_SMALL_BODY'; }
    location = /big { root $BENCH_TMP/www; default_type application/octet-stream; }
}
EOF
}

# proxy_write_configs : certificate, backend and proxy configs into $BENCH_TMP.
proxy_write_configs() {
    local t="$BENCH_TMP"
    mkdir -p "$t/www" "$t/ngb" "$t/ngp"
    head -c $((1024 * 1024)) /dev/zero | tr '\0' 'x' >"$t/www/big"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1,DNS:localhost \
        -keyout "$t/key.pem" -out "$t/cert.pem" >"$t/openssl.log" 2>&1 \
        || die "openssl could not make a self-signed certificate; see its log"
    cat "$t/cert.pem" "$t/key.pem" >"$t/haproxy.pem"

    cat >"$t/ngb/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile $PROXY_FD_LIMIT;
pid $t/ngb/nginx.pid;
error_log $t/ngb/error.log warn;
events { worker_connections 16384; }
http {
    access_log off;
$(proxy_nginx_temps "$t/ngb")
    default_type application/json;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 60s;
    keepalive_requests 1000000;
$(proxy_backend_server "$P_B1" "
        listen 127.0.0.1:$P_B1_H2 http2;")
$(proxy_backend_server "$P_B2" "")
$(proxy_backend_server "$P_B3" "")
}
EOF

    local proxy_location='
        location / {
            proxy_pass http://backends;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Request-Id $request_id;
            proxy_max_temp_file_size 0;
        }'
    cat >"$t/ngp/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile $PROXY_FD_LIMIT;
pid $t/ngp/nginx.pid;
error_log $t/ngp/error.log warn;
events { worker_connections 16384; }
http {
    access_log off;
$(proxy_nginx_temps "$t/ngp")
    keepalive_timeout 60s;
    keepalive_requests 1000000;
    upstream backends {
        server 127.0.0.1:$P_B1;
        server 127.0.0.1:$P_B2;
        server 127.0.0.1:$P_B3;
        keepalive 64;
        keepalive_requests 1000000;
        keepalive_timeout 60s;
    }
    server {
        listen 127.0.0.1:$P_NG;$proxy_location
    }
    server {
        listen 127.0.0.1:$P_NG_TLS ssl http2;
        ssl_certificate $t/cert.pem;
        ssl_certificate_key $t/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;$proxy_location
    }
    server {
        listen 127.0.0.1:$P_NG_H2 http2;$proxy_location
    }
}
EOF

    cat >"$t/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn $PROXY_MAXCONN
    pidfile $t/haproxy.pid
defaults
    mode http
    option http-keep-alive
    option forwardfor
    http-reuse always
    timeout connect 3s
    timeout client 60s
    timeout server 30s
    timeout http-request 15s
    timeout http-keep-alive 60s
    maxconn $PROXY_MAXCONN
frontend plain
    bind 127.0.0.1:$P_HA
    default_backend backends
frontend tls
    bind 127.0.0.1:$P_HA_TLS ssl crt $t/haproxy.pem alpn h2,http/1.1
    default_backend backends
frontend h2c
    bind 127.0.0.1:$P_HA_H2 proto h2
    default_backend backends
backend backends
    balance roundrobin
    http-request set-header X-Forwarded-Proto https if { ssl_fc }
    http-request set-header X-Forwarded-Proto http if !{ ssl_fc }
    http-request set-header X-Request-Id %[uuid]
    server b1 127.0.0.1:$P_B1
    server b2 127.0.0.1:$P_B2
    server b3 127.0.0.1:$P_B3
EOF
}

# proxy_probe PORT : one GET / over HTTP/1.1 must answer 2xx.
proxy_probe() {
    "$BIN/idle_conns" --addr "127.0.0.1:$1" --conns 1 --hold-secs 0 >"$BENCH_TMP/probe.log" 2>&1 \
        && grep -q '^opened=1 ' "$BENCH_TMP/probe.log" \
        || die "127.0.0.1:$1 did not answer GET / with a 2xx: $(cat "$BENCH_TMP/probe.log")"
}

# proxy_start : backends and the three proxies; sets PID_* and P_*.
proxy_start() {
    P_B1="$(free_port)"; P_B2="$(free_port)"; P_B3="$(free_port)"; P_B1_H2="$(free_port)"
    P_NG="$(free_port)"; P_NG_TLS="$(free_port)"; P_NG_H2="$(free_port)"
    P_HA="$(free_port)"; P_HA_TLS="$(free_port)"; P_HA_H2="$(free_port)"
    P_LB="$(free_port)"; P_LB_TLS="$(free_port)"
    proxy_write_configs
    proxy_lb_args
    local t="$BENCH_TMP" sut=(taskset -c "$SUT_CPUS")

    start_bg nginx-backends "${sut[@]}" nginx -p "$t/ngb" -e "$t/ngb/error.log" -c "$t/ngb/nginx.conf"
    PID_BACKENDS="$LAST_PID"
    wait_port "$P_B1"; wait_port "$P_B2"; wait_port "$P_B3"; wait_port "$P_B1_H2"

    proxy_probe "$P_B1"
    start_bg balancer-tls "${sut[@]}" "$BIN/balancer" --listen "127.0.0.1:$P_LB_TLS" \
        --tls-cert "$t/cert.pem" --tls-key "$t/key.pem" "${PROXY_LB_ARGS[@]}"
    PID_LB_TLS="$LAST_PID"
    wait_port "$P_LB_TLS"
    proxy_run nginx
    proxy_run haproxy
    proxy_run balancer
}

# Same settings as nginx's and HAProxy's: one worker, no admin listener, room for the idle
# connections, a 60 s keep-alive idle limit (the header timeout is also the idle limit).
proxy_lb_args() {
    PROXY_LB_ARGS=(--backend "127.0.0.1:$P_B1" --backend "127.0.0.1:$P_B2"
        --backend "127.0.0.1:$P_B3" --workers 1 --no-admin --strategy round-robin
        --max-connections "$PROXY_MAXCONN" --header-timeout 60s)
}

# proxy_run TARGET : start nginx, haproxy or balancer (plain listener; the TLS balancer is its
# own process), wait for its ports and check it answers; sets PID_NG, PID_HA or PID_LB.
proxy_run() {
    local t="$BENCH_TMP" sut=(taskset -c "$SUT_CPUS") p
    PROXY_STARTS=$((${PROXY_STARTS:-0} + 1))
    case "$1" in
        nginx)
            start_bg "nginx-proxy-$PROXY_STARTS" "${sut[@]}" nginx -p "$t/ngp" -e "$t/ngp/error.log" \
                -c "$t/ngp/nginx.conf"
            PID_NG="$LAST_PID"
            for p in "$P_NG" "$P_NG_TLS" "$P_NG_H2"; do wait_port "$p"; done
            proxy_probe "$P_NG"
            ;;
        haproxy)
            start_bg "haproxy-$PROXY_STARTS" "${sut[@]}" haproxy -db -f "$t/haproxy.cfg"
            PID_HA="$LAST_PID"
            for p in "$P_HA" "$P_HA_TLS" "$P_HA_H2"; do wait_port "$p"; done
            proxy_probe "$P_HA"
            ;;
        balancer)
            start_bg "balancer-$PROXY_STARTS" "${sut[@]}" "$BIN/balancer" --listen "127.0.0.1:$P_LB" \
                "${PROXY_LB_ARGS[@]}"
            PID_LB="$LAST_PID"
            wait_port "$P_LB"
            proxy_probe "$P_LB"
            ;;
    esac
}

# proxy_restart TARGET : stop TARGET's process (by its PID) and start a fresh one.
proxy_restart() {
    case "$1" in
        nginx) stop_pid "$PID_NG" ;;
        haproxy) stop_pid "$PID_HA" ;;
        balancer) stop_pid "$PID_LB" ;;
    esac
    proxy_run "$1"
}

# proxy_target CASE TARGET : "PID URL" for one target in one case ("" when not run).
proxy_target() {
    local case="$1" target="$2"
    case "$case:$target" in
        tls:direct|tlsclose:direct|idle:direct) echo "" ;;
        h2:direct) echo "$PID_BACKENDS http://127.0.0.1:$P_B1_H2/" ;;
        h2:nginx) echo "$PID_NG http://127.0.0.1:$P_NG_H2/" ;;
        h2:haproxy) echo "$PID_HA http://127.0.0.1:$P_HA_H2/" ;;
        h2:balancer) echo "$PID_LB http://127.0.0.1:$P_LB/" ;;
        tls*:nginx) echo "$PID_NG https://127.0.0.1:$P_NG_TLS/" ;;
        tls*:haproxy) echo "$PID_HA https://127.0.0.1:$P_HA_TLS/" ;;
        tls*:balancer) echo "$PID_LB_TLS https://127.0.0.1:$P_LB_TLS/" ;;
        *:direct) echo "$PID_BACKENDS http://127.0.0.1:$P_B1/" ;;
        *:nginx) echo "$PID_NG http://127.0.0.1:$P_NG/" ;;
        *:haproxy) echo "$PID_HA http://127.0.0.1:$P_HA/" ;;
        *:balancer) echo "$PID_LB http://127.0.0.1:$P_LB/" ;;
    esac
}

# proxy_load CASE URL SECONDS OUT : run the load generator of CASE; print the parsed figures.
proxy_load() {
    local case="$1" url="$2" secs="$3" out="$4" lg=(taskset -c "$LOADGEN_CPUS")
    case "$case" in
        ka|tls) "${lg[@]}" wrk -t1 -c64 -d"${secs}s" --latency "$url" >"$out" 2>&1 || true ;;
        close|tlsclose) "${lg[@]}" wrk -t1 -c64 -d"${secs}s" --latency -H 'Connection: close' "$url" \
            >"$out" 2>&1 || true ;;
        big) "${lg[@]}" wrk -t1 -c64 -d"${secs}s" --latency "${url}big" >"$out" 2>&1 || true ;;
        h2) "${lg[@]}" h2load -t1 -c64 -m4 -D "$secs" --log-file="$out.reqs" "$url" \
            >"$out" 2>&1 || true ;;
    esac
    if [ "$case" = h2 ]; then
        proxy_h2load_parse "$out" "$out.reqs"
        rm -f "$out.reqs"
    else
        proxy_wrk_parse "$out"
    fi
}

# proxy_idle TARGET N OUT : hold N idle connections through a fresh TARGET process; sets
# IDLE_FIG to "opened rss_fresh_kib rss_holding_kib rss_after_close_kib". The process is
# restarted before (so the figure is first-touch memory, not memory an earlier round left) and
# after (so the load cases never see memory the idle case left). Not run in a $(...) subshell,
# so the holder's PID lands in STARTED_PIDS of the shell whose EXIT trap stops it.
proxy_idle() {
    local target="$1" n="$2" out="$3" pid port before with after ready="$BENCH_TMP/idle.ready"
    proxy_restart "$target"
    case "$target" in
        nginx) pid="$PID_NG"; port="$P_NG" ;;
        haproxy) pid="$PID_HA"; port="$P_HA" ;;
        balancer) pid="$PID_LB"; port="$P_LB" ;;
    esac
    rm -f "$ready"
    sleep 1
    before="$(rss_kib "$pid")"
    start_bg "idle-$target" taskset -c "$LOADGEN_CPUS" "$BIN/idle_conns" --addr "127.0.0.1:$port" \
        --conns "$n" --hold-secs 120 --ready-file "$ready"
    local holder="$LAST_PID" i
    for i in $(seq 1 600); do [ -s "$ready" ] && break; sleep 0.1; done
    [ -s "$ready" ] || { stop_pid "$holder"; die "idle_conns did not open $n connections to $target in 60 s"; }
    sleep 1
    with="$(rss_kib "$pid")"
    cat "$ready" >"$out"
    stop_pid "$holder"
    sleep 1
    after="$(rss_kib "$pid")"
    proxy_restart "$target"
    IDLE_FIG="$(sed -n 's/^opened=\([0-9]*\).*/\1/p' "$ready") $before $with $after"
}

bench_proxy() {
    need nginx nginx-light
    need haproxy haproxy
    need wrk wrk
    need h2load nghttp2-client
    need openssl openssl
    need taskset util-linux
    need python3 python3

    local secs="${PROXY_SECONDS:-7}" rounds="${PROXY_ROUNDS:-3}" idle_n="${PROXY_IDLE_CONNS:-10000}"
    if [ "$QUICK" = 1 ]; then secs=2; rounds=1; idle_n=2000; fi
    # Each idle connection costs the holder one descriptor, and HAProxy reserves two per
    # connection it may accept (maxsock = 2 × maxconn + 16; it refuses to start above the limit).
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    PROXY_FD_LIMIT="$(ulimit -n)"
    [ "$PROXY_FD_LIMIT" != unlimited ] || PROXY_FD_LIMIT=1048576
    local cap=$(((PROXY_FD_LIMIT - 200) / 2))
    if [ "$idle_n" -gt "$cap" ]; then
        log "open-file limit is $PROXY_FD_LIMIT: holding $cap idle connections, not $idle_n"
        idle_n="$cap"
    fi
    PROXY_MAXCONN=$((idle_n + 50))

    local started=$SECONDS
    log "proxy: $rounds round(s) of ${secs}s per case and target; loadgen on CPU $LOADGEN_CPUS, proxies and backends on CPU $SUT_CPUS"
    proxy_start

    local raw="$BENCH_TMP/proxy.raw" idle_raw="$BENCH_TMP/proxy-idle.raw"
    : >"$raw"; : >"$idle_raw"
    local targets=(direct nginx haproxy balancer) cases=(ka close big tls tlsclose h2)
    local clk pid url t0 t1 fig case target r k n
    clk="$(getconf CLK_TCK)"

    # Warm every pool and page once before the first measured round.
    for target in "${targets[@]}"; do
        read -r pid url <<<"$(proxy_target ka "$target")"
        proxy_load ka "$url" 1 "$BENCH_TMP/warm.out" >/dev/null
    done

    n=${#targets[@]}
    for r in $(seq 1 "$rounds"); do
        # Idle first: RSS is then least disturbed by buffers the heavier cases leave behind.
        for k in 1 2 3; do
            target="${targets[$(((k + r - 2) % 3 + 1))]}"
            proxy_idle "$target" "$idle_n" "$BENCH_TMP/idle-$target-$r.out"
            printf '%s %s %s\n' "$target" "$r" "$IDLE_FIG" >>"$idle_raw"
            log "round $r idle $target: held, RSS KiB fresh, holding, after close = $IDLE_FIG"
        done
        for case in "${cases[@]}"; do
            # Alternate: each round starts one target further along.
            for k in $(seq 0 $((n - 1))); do
                target="${targets[$(((k + r - 1) % n))]}"
                read -r pid url <<<"$(proxy_target "$case" "$target")" || true
                [ -n "${pid:-}" ] || continue
                t0="$(proxy_cpu_ticks "$pid")"
                fig="$(proxy_load "$case" "$url" "$secs" "$BENCH_TMP/$case-$target-$r.out")"
                t1="$(proxy_cpu_ticks "$pid")"
                printf '%s %s %s %s %s %s %s\n' "$case" "$target" "$r" "$fig" \
                    "$((t1 - t0))" "$(rss_kib "$pid")" >>"$raw"
                log "round $r $case $target: $fig"
            done
        done
    done
    local elapsed=$((SECONDS - started))

    local versions block="$BENCH_TMP/proxy.md" rev
    versions="$(nginx -v 2>&1 | sed 's/^nginx version: //'); $(haproxy -v 2>&1 | head -1 | awk '{print "HAProxy " $3}'); $(wrk -v 2>&1 | head -1 | awk '{print "wrk " $2}'); $(h2load --version 2>&1 | head -1 | sed 's/^h2load //'); $(openssl version | awk '{print "OpenSSL " $2}')"
    rev="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    python3 - "$raw" "$idle_raw" "$clk" >"$BENCH_TMP/proxy-tables.md" <<'PY'
import sys
from statistics import median

raw, idle_raw, clk = sys.argv[1], sys.argv[2], int(sys.argv[3])
runs = {}
for line in open(raw):
    f = line.split()
    if len(f) != 10:
        continue
    case, target = f[0], f[1]
    rps, p50, p99, reqs, errs, ticks, rss = map(float, f[3:10])
    runs.setdefault((case, target), []).append(
        dict(rps=rps, p50=p50, p99=p99, reqs=reqs, errs=errs, ticks=ticks, rss=rss))

names = {
    "ka": "small GET, keep-alive",
    "close": "new connection per request",
    "big": "1 MiB response",
    "tls": "TLS, keep-alive",
    "tlsclose": "TLS, new connection per request",
    "h2": "HTTP/2 (h2c), 64 conns × 4 streams",
}
label = {"direct": "backend direct (ceiling)", "nginx": "nginx", "haproxy": "HAProxy",
         "balancer": "**balancer**"}

def fmt(v, digits=0):
    return f"{v:,.{digits}f}"

print("| case | target | req/s median (min–max) | vs nginx | p50 ms | p99 ms | CPU µs/req | RSS MiB | errors |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
for case in ["ka", "close", "big", "tls", "tlsclose", "h2"]:
    base = runs.get((case, "nginx"))
    base_rps = median(r["rps"] for r in base) if base else 0
    for target in ["direct", "nginx", "haproxy", "balancer"]:
        rs = runs.get((case, target))
        if not rs:
            continue
        rps = [r["rps"] for r in rs]
        m = median(rps)
        ratio = f"{m / base_rps:.2f}" if base_rps else "-"
        cpu = [r["ticks"] / clk * 1e6 / r["reqs"] for r in rs if r["reqs"]]
        rng = f"{fmt(m)} ({fmt(min(rps))}–{fmt(max(rps))})" if len(rs) > 1 else fmt(m)
        print(f"| {names[case]} | {label[target]} | {rng} | {ratio} "
              f"| {median(r['p50'] for r in rs):.2f} | {median(r['p99'] for r in rs):.2f} "
              f"| {median(cpu):.1f} | {median(r['rss'] for r in rs) / 1024:.1f} "
              f"| {int(sum(r['errs'] for r in rs))} |")

idle = {}
for line in open(idle_raw):
    f = line.split()
    if len(f) != 6:
        continue
    idle.setdefault(f[0], []).append(tuple(map(float, f[2:6])))
print()
print("| idle keep-alive connections | held | RSS fresh MiB | RSS holding MiB | KiB per connection (min–max) | RSS after they close MiB |")
print("|---|---:|---:|---:|---:|---:|")
for target in ["nginx", "haproxy", "balancer"]:
    rs = idle.get(target)
    if not rs:
        continue
    per = [(w - b) / o for o, b, w, _ in rs if o]
    if not per:
        print(f"| {label[target]} | 0 | - | - | - | - |")
        continue
    rng = f" ({min(per):.1f}–{max(per):.1f})" if len(per) > 1 else ""
    print(f"| {label[target]} | {fmt(median(r[0] for r in rs))} "
          f"| {median(r[1] for r in rs) / 1024:.1f} | {median(r[2] for r in rs) / 1024:.1f} "
          f"| {median(per):.1f}{rng} | {median(r[3] for r in rs) / 1024:.1f} |")
PY

    {
        echo "## L7 proxies: balancer vs nginx vs HAProxy"
        echo
        echo "Machine: $(machine_line). Peers: $versions; balancer at $rev."
        if [ "$QUICK" = 1 ]; then
            echo "**Smoke run (\`--quick\`): one round of 2 s per case — checks the script, not for quoting.**"
        fi
        echo
        echo '```sh'
        echo "benches/run.sh proxy$([ "$QUICK" = 1 ] && echo ' --quick')   # $rounds round(s) × ${secs} s per case and target; took ${elapsed} s"
        echo "wrk -t1 -c64 -d${secs}s --latency URL                       # small GET / and TLS (https://)"
        echo "wrk -t1 -c64 -d${secs}s --latency -H 'Connection: close' URL   # new connection per request (plain and TLS)"
        echo "wrk -t1 -c64 -d${secs}s --latency URL/big                    # 1 MiB body"
        echo "h2load -t1 -c64 -m4 -D $secs --log-file=F URL              # HTTP/2, h2c prior knowledge"
        echo "idle_conns --addr ADDR --conns $idle_n                     # one GET each, then held idle"
        echo '```'
        echo
        echo "- Cores: the load generator (wrk, h2load, idle_conns) on CPU $LOADGEN_CPUS; every proxy and the"
        echo "  backends on CPU $SUT_CPUS (\`taskset\`), so a proxy shares its core with the backends."
        echo "- Backends: one nginx process (\`master_process off\`) with three \`server\` blocks answering"
        echo "  \`return 200\` with 100 bytes of JSON, and \`/big\` a 1 MiB static file; the same for every proxy."
        echo "- One worker each: balancer \`--workers 1 --no-admin --max-connections $PROXY_MAXCONN --header-timeout 60s\`"
        echo "  (round-robin, health checks on as by default); nginx \`master_process off\` (one process,"
        echo "  upstream \`keepalive 64\`, \`proxy_max_temp_file_size 0\`); HAProxy \`nbthread 1\`,"
        echo "  \`http-reuse always\`, \`maxconn $PROXY_MAXCONN\`. Each proxy adds X-Forwarded-For, X-Forwarded-Proto and X-Request-Id."
        echo "- Idle connections held: $idle_n (open-file hard limit $PROXY_FD_LIMIT; HAProxy needs two descriptors per connection)."
        echo "- TLS: ECDSA P-256 self-signed certificate; wrk (OpenSSL) negotiates TLS 1.3 with"
        echo "  TLS_AES_256_GCM_SHA384 on all three (nginx 1.22 needs \`ssl_protocols TLSv1.2 TLSv1.3\` for"
        echo "  that: its default stops at 1.2); rustls (balancer) vs OpenSSL (nginx, HAProxy)."
        echo "- HTTP/2 is h2c with prior knowledge (no TLS); every proxy speaks HTTP/1.1 to the backends."
        echo "- Rows: median over the rounds, (min–max) of req/s; \`vs nginx\` = median req/s ÷ nginx's."
        echo "  CPU µs/req = the serving process's utime+stime over the run ÷ requests (for the ceiling,"
        echo "  the backend nginx). RSS = the serving process after the run. errors = socket errors plus"
        echo "  non-2xx, summed over rounds. Idle: each round restarts the proxy, sends it one request,"
        echo "  then holds the connections; KiB per connection = (RSS holding − RSS fresh) ÷ held. The"
        echo "  proxy is restarted again afterwards, so the load cases never carry that memory."
        echo
        cat "$BENCH_TMP/proxy-tables.md"
    } >"$block"
    results_block proxy "$block"
    log "proxy section took ${elapsed}s"
}
