#!/usr/bin/env bash
# Issue 3's benchmark, in one run against the harness's redis-server:
#   1. a Lua route doing one redis.call("INCR") vs `redis-benchmark -t incr` at the same concurrency;
#   2. redis.optimistic decrement of one hot key (WATCH/GET -> Lua -> MULTI/DECR/EXEC, retried in C), ungated and
#      with gate = true (one transaction per worker thread on the key, the rest queue FIFO), vs a Redis-side EVALSHA
#      decrement, at 1, 16 and 256 connections: req/s, p99, conflicts per success.
# BENCH_REDIS_TABLES="hot" runs only the second table.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
. tests/bench/lib.sh

: "${SK_REDIS_PORT:?run through tests/bench/run.sh (it starts the services)}"
conns=${BENCH_CONNECTIONS:-64}
workers=${BENCH_WORKERS:-$(nproc)}
scripts=tests/e2e/scripts/redis
rcli() { redis-cli -p "$SK_REDIS_PORT" "$@"; }
metric() { curl -s "http://127.0.0.1:$SK_PORT/metrics" | awk -v m="$1" 'index($0, m " ") == 1 { print $2 }'; }
trap '[ -n "${SK_PID:-}" ] && stop_seckilld' EXIT

start_seckilld "$scripts" "$workers"
tables=${BENCH_REDIS_TABLES:-incr hot}

if [[ " $tables " == *" incr "* ]]; then
printf '\n== redis: one INCR per request through a Lua route vs redis-benchmark -t incr, %d connections\n' "$conns"
read -r rps p50 p99 bad < <(wrk_run "http://127.0.0.1:$SK_PORT/incr1/bench:incr" "$conns")
rb=$(redis-benchmark -p "$SK_REDIS_PORT" -t incr -c "$conns" -n 200000 --csv 2>/dev/null | awk -F'"' '/INCR/ { print $4, $10, $14 }')
read -r rb_rps rb_p50 rb_p99 <<<"$rb"
printf '%-40s %10s %9s %9s\n' "client" "req/s" "p50_ms" "p99_ms"
printf '%-40s %10s %9s %9s\n' "seckilld route (HTTP + Lua + INCR)" "$rps" "$p50" "$p99"
printf '%-40s %10.0f %9s %9s\n' "redis-benchmark -t incr" "$rb_rps" "$rb_p50" "$rb_p99"
awk -v a="$rps" -v b="$rb_rps" -v bad="$bad" 'BEGIN { printf "route/redis-benchmark ratio: %.2f   (non-2xx answers: %d)\n", a / b, bad }'
fi

[[ " $tables " == *" hot "* ]] || exit 0

printf '\n== redis: decrement one hot key: redis.optimistic (WATCH/GET, Lua, MULTI/DECR/EXEC) vs EVALSHA\n'
printf '%-12s %6s %10s %9s %14s %10s\n' "strategy" "conns" "req/s" "p99_ms" "conflicts/ok" "non-2xx"
for c in 1 16 256; do
    for strategy in optimistic gated; do
        query=
        [ "$strategy" = gated ] && query='?gate=1'
        rcli SET bench:hot 1000000000 >/dev/null
        c0=$(metric seckilld_redis_tx_conflicts_total) o0=$(metric 'seckilld_redis_tx_total{result="ok"}')
        read -r rps p50 p99 bad < <(wrk_run "http://127.0.0.1:$SK_PORT/dec/bench:hot$query" "$c")
        c1=$(metric seckilld_redis_tx_conflicts_total) o1=$(metric 'seckilld_redis_tx_total{result="ok"}')
        awk -v s="$strategy" -v c="$c" -v r="$rps" -v p="$p99" -v b="$bad" -v dc="$((${c1%.*} - ${c0%.*}))" \
            -v dk="$((${o1%.*} - ${o0%.*}))" 'BEGIN { printf "%-12s %6d %10d %9.2f %14.3f %10d\n", s, c, r, p, dk ? dc / dk : 0, b }'
    done
    rcli SET bench:hot 1000000000 >/dev/null
    read -r rps p50 p99 bad < <(wrk_run "http://127.0.0.1:$SK_PORT/evaldec/bench:hot" "$c")
    awk -v c="$c" -v r="$rps" -v p="$p99" -v b="$bad" 'BEGIN { printf "%-12s %6d %10d %9.2f %14s %10d\n", "evalsha", c, r, p, "-", b }'
done
