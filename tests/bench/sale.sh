#!/usr/bin/env bash
# Issue 6's benchmark: a standard sale, per strategy and connection count, in one table.
#   buys/s, p50/p99   wrk for BENCH_SECONDS on an item with ample stock (every answer is a real buy)
#   conflicts/order   redis.optimistic conflicts per accepted order in that run (watch only)
#   sk_us, redis_us   CPU (user + system, from /proc) of seckilld and of redis-server per accepted buy in that run;
#                     seckilld's includes the embedded Kafka mock (its broker threads run in the process)
#   cmds/buy          Redis commands executed per accepted buy (INFO commandstats)
#   sellout_s         time to sell 100,000 units to distinct users
#   mysql_lag_s       from the last 200 (stock 0) until MySQL holds every order of the sell-out (the consumer
#                     has caught up with the throughput run before the sell-out starts)
#   produce_p50/p99   (16 connections) the bare Kafka produce round trip in the same process: a test-only route
#                     (tests/bench/scripts/probe) producing one order-sized message per request through the same
#                     producer to the same embedded mock, answered at its delivery report; beside the buy's p50 it
#                     shows what a buy adds over the broker's own latency
# and the sold-out path separately (every answer 409 from the process-wide mark).
# Everything (wrk, seckilld, Redis, MariaDB, the embedded Kafka) shares this machine.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
. tests/bench/lib.sh

units=${BENCH_SELLOUT_UNITS:-100000}
token=bench-token
redis() { redis-cli -p "$SK_REDIS_PORT" "$@"; }
mysql_count() {
    mariadb -h127.0.0.1 -P"$SK_MYSQL_PORT" -useckill -pseckill seckill -N -B \
        -e "SELECT COUNT(*) FROM orders WHERE item_id = '$1'"
}
setup_item() {
    curl -s -o /dev/null -w '%{http_code}' -X PUT -H "Authorization: Bearer $token" \
        "http://127.0.0.1:$SK_PORT/admin/items/$1" -d "{\"stock\": $2, \"limit_per_user\": 1}"
}
persisted() { [ "$(mysql_count "$1")" -ge "$2" ]; }
sold_out() { [ "$(redis GET "seckill:{$1}:stock")" = 0 ]; }
metric() {
    curl -s "http://127.0.0.1:$SK_PORT/metrics" | awk -v m="$1" 'index($0, m) == 1 { s += $NF } END { printf "%d\n", s }'
}

# the shipped scripts plus the produce probe's route
scripts=$(mktemp -d)
trap 'rm -rf "$scripts"' EXIT
cp -r scripts/. "$scripts/"
cp tests/bench/scripts/probe/produce_probe.lua "$scripts/"
printf '\nrequire "produce_probe"\n' >>"$scripts/app.lua"
# an order's size: {"order_id":"<uuid>","item_id":…,"user_id":…,"quantity":1,"status":"queued","created_at":<ms>}
probe_body=$(printf '{"order_id":"%s","item_id":"%s","user_id":"%s","quantity":1,"status":"queued","created_at":%s}' \
    "$(cat /proc/sys/kernel/random/uuid)" ample-probe-0000000000 probe-user-0000000000 "$(date +%s000)")
cat >"$scripts/probe_wrk.lua" <<LUA
wrk.method = "POST"
wrk.body = '$probe_body'
LUA

printf '\n== sale: %s units, all backends on this machine (wrk %ss runs)\n' "$units" "$BENCH_SECONDS"
redis_pid=$(cat "$SK_SERVICES_DIR/redis/redis.pid")
printf '%-9s %6s %10s %8s %8s %16s %8s %9s %9s %10s %12s %12s %12s\n' strategy conns buys/s p50_ms p99_ms conflicts/order \
    sk_us redis_us cmds/buy sellout_s mysql_lag_s produce_p50 produce_p99
for strategy in watch eval; do
    for conns in 16 256; do
        start_seckilld "$scripts" "$(nproc)" SECKILLD_STRATEGY=$strategy SECKILLD_ADMIN_TOKEN=$token
        run=$strategy-$conns-$$

        # throughput of real buys: stock that cannot run out in the run
        ample=ample-$run
        [ "$(setup_item "$ample" 1000000000)" = 200 ] || { echo "bench: item set-up failed" >&2; exit 1; }
        c0=$(metric seckilld_redis_tx_conflicts_total)
        sk0=$(cpu_ticks "$SK_PID") r0=$(cpu_ticks "$redis_pid") n0=$(redis_calls)
        out=$(ITEM=$ample RUN=a$run wrk -t"$BENCH_THREADS" -c"$conns" -d"${BENCH_SECONDS}s" --latency -s tests/bench/buy.lua \
            "http://127.0.0.1:$SK_PORT" 2>&1)
        c1=$(metric seckilld_redis_tx_conflicts_total)
        sk1=$(cpu_ticks "$SK_PID") r1=$(cpu_ticks "$redis_pid") n1=$(redis_calls)
        read -r ok _ other < <(awk '/^COUNTS/ { print $2, $3, $4 }' <<<"$out")
        rps=$(awk -v ok="$ok" -v s="$BENCH_SECONDS" 'BEGIN { printf "%.0f", ok / s }')
        p50=$(awk 'function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; return v * 1000 }
                   /^ +50%/ { printf "%.2f", ms($2) }' <<<"$out")
        p99=$(awk 'function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; return v * 1000 }
                   /^ +99%/ { printf "%.2f", ms($2) }' <<<"$out")
        cpo=$(awk -v c=$((c1 - c0)) -v ok="$ok" 'BEGIN { printf "%.3f", ok ? c / ok : 0 }')
        [ "$other" = 0 ] || echo "   ($other answers were neither 200 nor 409)"
        # let the consumer catch up first, so the sell-out's MySQL lag is its own
        wait_for 180 "MySQL to hold the $ok orders of the throughput run" persisted "$ample" "$ok" || true

        # at 16 connections: the bare produce round trip, same process, producer and mock, now that it is idle
        pp50=- pp99=-
        if [ "$conns" = 16 ]; then
            curl -s -o /dev/null -X POST "http://127.0.0.1:$SK_PORT/_bench/produce" -d "$probe_body" # topic metadata
            read -r _ pp50 pp99 pbad < <(wrk_run "http://127.0.0.1:$SK_PORT/_bench/produce" 16 -s "$scripts/probe_wrk.lua")
            [ "$pbad" = 0 ] || echo "   ($pbad produce probe answers were not 200)"
        fi

        # time to sell out, then until MySQL holds every order
        item=sellout-$run
        [ "$(setup_item "$item" "$units")" = 200 ] || { echo "bench: item set-up failed" >&2; exit 1; }
        ITEM=$item RUN=s$run wrk -t"$BENCH_THREADS" -c"$conns" -d120s -s tests/bench/buy.lua \
            "http://127.0.0.1:$SK_PORT" >/dev/null 2>&1 &
        wrk_pid=$!
        t0=$(date +%s.%N)
        wait_for 120 "the sell-out" sold_out "$item" || true
        t1=$(date +%s.%N)
        kill "$wrk_pid" 2>/dev/null || true
        wait "$wrk_pid" 2>/dev/null || true
        wait_for 180 "MySQL to hold the sell-out's $units orders" persisted "$item" "$units" || true
        t2=$(date +%s.%N)
        resets=$(metric seckilld_kafka_consumer_offset_resets_total)
        [ "$resets" = 0 ] || echo "   (the embedded mock dropped unread orders: $resets offset resets; see README)"
        sold=$(redis GET "seckill:{$item}:sold")
        [ "$sold" = "$units" ] || echo "   (sold $sold, expected $units)"
        printf '%-9s %6s %10s %8s %8s %16s %8s %9s %9s %10.2f %12.2f %12s %12s\n' "$strategy" "$conns" "$rps" "$p50" "$p99" \
            "$([ $strategy = watch ] && echo "$cpo" || echo -)" "$(us_per $((sk1 - sk0)) "$ok")" \
            "$(us_per $((r1 - r0)) "$ok")" "$(awk -v c=$((n1 - n0)) -v ok="$ok" 'BEGIN { printf "%.2f", ok ? c / ok : 0 }')" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" "$(awk -v a="$t1" -v b="$t2" 'BEGIN { print b - a }')" \
            "$pp50" "$pp99"

        if [ "$conns" = 256 ] && [ "$strategy" = watch ]; then
            # the sold-out path: every answer comes from the process-wide mark, without Redis
            read -r so_rps so_p50 so_p99 _ < <(ITEM=$item wrk_run "http://127.0.0.1:$SK_PORT/seckill/add" 256 \
                -s tests/bench/soldout.lua)
            soldout_line=$(printf 'sold-out path (watch, 256 connections): %s answers/s, p50 %s ms, p99 %s ms' \
                "$so_rps" "$so_p50" "$so_p99")
        fi
        stop_seckilld
    done
done
echo "$soldout_line"
# the ceiling for comparison, same machine, same run: Redis alone
printf 'baseline: redis-benchmark INCR at 16 connections: %s\n' \
    "$(redis-benchmark -p "$SK_REDIS_PORT" -t incr -n 200000 -c 16 -q 2>/dev/null | tr -d '\r' | grep -o '[0-9.]* requests per second' | tail -1)"
