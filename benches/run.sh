#!/usr/bin/env bash
# benches/run.sh — every headline figure of the README, side by side with the peers, in one run.
#
#   benches/run.sh [proxy|broker|stack|micro|all] [--install] [--quick]
#
#   proxy   balancer vs nginx vs HAProxy (and the direct-to-backend ceiling) under wrk and h2load
#   broker  broker vs Redis Streams vs NATS JetStream vs RabbitMQ (durable and fast settings)
#   stack   the ticket crowd against the full stack, a naive one-transaction-per-request API,
#           and the stack behind nginx
#   micro   criterion micro-benchmarks (codec, log, balancer pick)
#   all     every section above (bounded to about 30 minutes on a 2-core machine)
#
#   --install  install missing peers from apt (nginx-light, haproxy, wrk, nghttp2-client)
#   --quick    one short round per case: checks the script works; figures are not for quoting
#
# Each section rewrites only its own block of benches/RESULTS.md. Everything runs on 127.0.0.1;
# every process started is stopped by PID when the script exits, however it exits.
set -euo pipefail

SECTION="all"
for arg in "$@"; do
    case "$arg" in
        proxy|broker|stack|micro|all) SECTION="$arg" ;;
        --install) export INSTALL=1 ;;
        --quick) export QUICK=1 ;;
        -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "run.sh: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
    esac
done

HERE="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=scripts/common.sh
. "$HERE/scripts/common.sh"

build_release
case "$SECTION" in
    proxy|broker|stack|micro)
        # shellcheck source=/dev/null
        . "$HERE/scripts/$SECTION.sh"
        "bench_$SECTION"
        ;;
    all)
        for s in micro proxy broker stack; do
            # shellcheck source=/dev/null
            . "$HERE/scripts/$s.sh"
            "bench_$s"
        done
        ;;
esac
log "done; see benches/RESULTS.md"
