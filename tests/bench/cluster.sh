#!/usr/bin/env bash
# Issue 13's benchmark: one hot item on a 3-master Redis Cluster, its stock in K = 1, 4 and 16 buckets
# (common/buckets.lua), beside the same sale on the single redis-server, in one run, per strategy at 256 connections
# (an item with ample stock: every answer is a real buy).
#   buys/s, p50/p99    wrk for BENCH_SECONDS
#   redis_us           CPU (user + system, from /proc) of every redis-server of that setup per accepted buy
#   busiest_us         the same for the busiest node alone: what bounds the item's rate when each node has its own
#                      machine (on this machine the nodes share its cores with everything else)
#   cmds/buy           commands executed per accepted buy, summed over the nodes (INFO commandstats)
# Everything (wrk, seckilld, the nodes, MariaDB, the embedded Kafka) shares this machine.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
. tests/bench/lib.sh

token=bench-token
bash tests/harness/services.sh cluster-start "$SK_SERVICES_DIR" >/dev/null
# shellcheck source=/dev/null
. "$SK_SERVICES_DIR/env"

setup_item() {
    curl -s -o /dev/null -w '%{http_code}' -X PUT -H "Authorization: Bearer $token" \
        "http://127.0.0.1:$SK_PORT/admin/items/$1" -d "{\"stock\": $2, \"limit_per_user\": 1, \"buckets\": $3}"
}
# calls PORT...: commands executed so far, summed over the given redis-servers
calls() {
    local p
    for p in "$@"; do redis-cli -p "$p" INFO commandstats; done | tr -d '\r' |
        awk -F'[=,:]' '/^cmdstat_/ { s += $3 } END { print s + 0 }'
}
# ticks PORT...: CPU ticks of each given redis-server, one per line
ticks() {
    local p
    for p in "$@"; do cpu_ticks "$(redis-cli -p "$p" INFO server | tr -d '\r' | awk -F: '/^process_id:/ { print $2 }')"; done
}

printf '\n== one hot item, single Redis vs a 3-master cluster (256 connections, wrk %ss runs)\n' "$BENCH_SECONDS"
printf '%-9s %-8s %7s %10s %8s %8s %9s %11s %9s\n' strategy redis buckets buys/s p50_ms p99_ms redis_us busiest_us \
    cmds/buy
for strategy in watch eval; do
    for setup in single:1 cluster:1 cluster:4 cluster:16; do
        k=${setup#*:} setup=${setup%:*}
        if [ "$setup" = single ]; then
            url=$SECKILLD_REDIS ports=$SK_REDIS_PORT
        else
            url=$SK_REDIS_CLUSTER_URL ports=$SK_REDIS_CLUSTER_PORTS
        fi
        # shellcheck disable=SC2086
        set -- $ports
        start_seckilld scripts "$(nproc)" SECKILLD_STRATEGY=$strategy SECKILLD_ADMIN_TOKEN=$token SECKILLD_REDIS="$url"
        item=hot-$strategy-$setup-$k-$$
        [ "$(setup_item "$item" 1000000000 "$k")" = 200 ] || { echo "bench: item set-up failed" >&2; exit 1; }
        mapfile -t t0 < <(ticks "$@")
        n0=$(calls "$@")
        out=$(ITEM=$item RUN=c$item wrk -t"$BENCH_THREADS" -c256 -d"${BENCH_SECONDS}s" --latency -s tests/bench/buy.lua \
            "http://127.0.0.1:$SK_PORT" 2>&1)
        mapfile -t t1 < <(ticks "$@")
        n1=$(calls "$@")
        read -r ok _ other < <(awk '/^COUNTS/ { print $2, $3, $4 }' <<<"$out")
        [ "$other" = 0 ] || echo "   ($other answers were neither 200 nor 409)"
        total=0 busiest=0
        for i in "${!t0[@]}"; do
            d=$((t1[i] - t0[i]))
            total=$((total + d))
            [ "$d" -gt "$busiest" ] && busiest=$d
        done
        p50=$(awk 'function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; return v * 1000 }
                   /^ +50%/ { printf "%.2f", ms($2) }' <<<"$out")
        p99=$(awk 'function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; return v * 1000 }
                   /^ +99%/ { printf "%.2f", ms($2) }' <<<"$out")
        printf '%-9s %-8s %7s %10s %8s %8s %9s %11s %9s\n' "$strategy" "$setup" "$k" \
            "$(awk -v ok="$ok" -v s="$BENCH_SECONDS" 'BEGIN { printf "%.0f", ok / s }')" "$p50" "$p99" \
            "$(us_per "$total" "$ok")" "$(us_per "$busiest" "$ok")" \
            "$(awk -v c=$((n1 - n0)) -v ok="$ok" 'BEGIN { printf "%.2f", ok ? c / ok : 0 }')"
        stop_seckilld
    done
done
