#!/usr/bin/env bash
# Issue 23's benchmark: the waiting room (API-v1.2.md "Waiting room"), in one run on this machine, one seckilld
# (the shipped config, SECKILLD_TOKEN_SECRET set: a waiting room needs it), BENCH_QUEUE_CONNS connections (256).
# Rows, each one wrk run of BENCH_SECONDS:
#   buy                 baseline: POST /seckill/add, a distinct user per buy, on an item with ample stock and no
#                       waiting room (tests/bench/buy.lua; every answer a real buy)
#   buy, sold out       baseline: POST /seckill/add on a sold-out item (every answer 409 from the process-wide mark,
#                       no Redis: the cheapest answer the buy path has)
#   GET /time           baseline: the cheapest route the scripts serve (a handler returning the clock): what any
#                       answer through Lua costs here, the ceiling of a poll
#   GET /healthz        baseline: an answer from C without Lua (the server's HTTP alone)
#   join, pre-start     POST /queue/join, a distinct user per request (tests/bench/join.lua), on an item whose
#                       starts_at is an hour ahead: every joiner goes into the draw (redis/queue_join.lua: ZADD)
#   join, started       the same on an item already started (no starts_at): every joiner takes the next place
#                       from the counter (HSET of the late joiners' hash; MySQL's reservation of the places moves
#                       up a block at a time: admission/queue.lua)
#   poll, started       GET /queue/status?ticket=T (tests/bench/status.lua) cycling over the tickets of
#                       BENCH_QUEUE_POLL_USERS (10,000) users who joined a started item admitting one a second (joined
#                       with join.lua first, their tickets written by it): all waiting, each answered from the ticket
#                       (no Redis but a per-process cache's refresh)
#   poll, pre-start     the same for users who joined the pre-start item (before its draw: such a poll enters the
#                       draw again, a Redis round trip by design)
# The join rows' items admit BENCH_QUEUE_RATE (1,000) a second, as do the memory rows'.
# Columns: ok/s (answers of the row's kind: 200 buys, 409s, 200 joins, polls answered "waiting"), p50/p99 (wrk),
# sk_us and redis_us (CPU of seckilld and of redis-server per answer, /proc), sent/op (Redis commands seckilld sent
# per answer, seckilld_redis_commands_total: its round trips, a pipeline's commands counted each), cmds/op (commands
# Redis executed per answer, INFO commandstats: a script's own commands counted too), sql/op (MySQL statements per
# answer, seckilld_mysql_queries_total), and the issue's target. Each counts everything the process did in the run
# (its background tasks too: the buy row's orders are in MySQL before the next row starts).
# Then memory: BENCH_QUEUE_USERS (1,000,000) distinct users join one item with wrk (the real path), per mode in
# BENCH_QUEUE_MEMORY ("draw started"; empty: skip): Redis's used_memory before and after (INFO memory), and the
# item's queue keys (seckill:{item}:queue:*, MEMORY USAGE … SAMPLES 0 each), in MB (10^6 bytes) against the target of
# 200 MB; beside it the baseline of the buy row: Redis's used_memory growth per accepted buy. The keys are deleted
# after each mode.
# The user ids are those of join.lua: "m<run>-<thread>-<n>", about 20 characters.
# Everything (wrk, seckilld, Redis, MariaDB, the embedded Kafka) shares this machine.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
. tests/bench/lib.sh

token=bench-token
secret=bench-queue-secret-0123456789abcdef
conns=${BENCH_QUEUE_CONNS:-256}
pollers=${BENCH_QUEUE_POLL_USERS:-10000}
rate=${BENCH_QUEUE_RATE:-1000}
users=${BENCH_QUEUE_USERS:-1000000}
memory_modes=${BENCH_QUEUE_MEMORY-draw started}
work=$(mktemp -d)
SK_PID=
wrk_pid=
cleanup() {
    [ -z "$wrk_pid" ] || kill "$wrk_pid" 2>/dev/null || true
    [ -z "$SK_PID" ] || stop_seckilld
    rm -rf "$work"
}
trap cleanup EXIT

redis() { redis-cli -p "$SK_REDIS_PORT" "$@"; }
persisted() {
    [ "$(mariadb -h127.0.0.1 -P"$SK_MYSQL_PORT" -useckill -pseckill seckill -N -B \
        -e "SELECT COUNT(*) FROM orders WHERE item_id = '$1'")" -ge "$2" ]
}
redis_pid=$(cat "$SK_SERVICES_DIR/redis/redis.pid")
used_memory() { redis INFO memory | tr -d '\r' | awk -F: '$1 == "used_memory" { print $2 }'; }
setup_item() { # ITEM BODY
    curl -s -o /dev/null -w '%{http_code}' -X PUT -H "Authorization: Bearer $token" \
        "http://127.0.0.1:$SK_PORT/admin/items/$1" -d "$2"
}
must_setup() { [ "$(setup_item "$1" "$2")" = 200 ] || { echo "bench: item set-up failed: $1 $2" >&2; exit 1; }; }
waiting_polls='seckilld_queue_polls_total{state="waiting"}'
metric() { # NAME: the sum of a /metrics series over its labels (or of the series NAME{LABELS} names)
    curl -s "http://127.0.0.1:$SK_PORT/metrics" | awk -v m="$1" 'index($0, m) == 1 { s += $NF } END { printf "%d\n", s }'
}
per() { awk -v c="$1" -v n="$2" 'BEGIN { printf "%.2f", n ? c / n : 0 }'; }
ms() { awk 'function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; return v * 1000 }
            $1 == "'"$1"'" { printf "%.2f", ms($2) }'; }
mb() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1e6 }'; }
# wait_files PREFIX N: true once PREFIX.1 .. PREFIX.N all exist
wait_files() { local t; for t in $(seq 1 "$2"); do [ -e "$1.$t" ] || return 1; done; }
now_ms() { date +%s%3N; }

# measure NAME TARGET KIND WRK-ARGS...: one wrk run of BENCH_SECONDS (at URL_PATH, if set) with per-answer CPU and
# Redis commands; KIND says what an answer of the row is: "counts" (the script's COUNTS line: 200s), "states"
# (polls answered waiting: the server's seckilld_queue_polls_total), "all" (every answer wrk counted)
measure() {
    local name=$1 target=$2 kind=$3
    shift 3
    local sk0 sk1 r0 r1 n0 n1 s0 s1 q0 q1 w0 w1 out ok all rps verdict=-
    s0=$(metric seckilld_redis_commands_total) q0=$(metric seckilld_mysql_queries_total) w0=$(metric "$waiting_polls")
    sk0=$(cpu_ticks "$SK_PID") r0=$(cpu_ticks "$redis_pid") n0=$(redis_calls)
    out=$(wrk -t"$BENCH_THREADS" -c"$conns" -d"${BENCH_SECONDS}s" --latency "$@" \
        "http://127.0.0.1:$SK_PORT${URL_PATH:-}" 2>&1)
    sk1=$(cpu_ticks "$SK_PID") r1=$(cpu_ticks "$redis_pid") n1=$(redis_calls)
    s1=$(metric seckilld_redis_commands_total) q1=$(metric seckilld_mysql_queries_total) w1=$(metric "$waiting_polls")
    all=$(awk '/^ +[0-9]+ requests in/ { print $1 }' <<<"$out")
    case $kind in
    counts)
        read -r ok other < <(awk '/^COUNTS/ { print $2, $NF }' <<<"$out")
        [ "$other" = 0 ] || echo "   ($name: $other answers were not 200)"
        ;;
    states)
        # the server counts what it answered, wrk what it read before -d ended (up to one a connection fewer)
        ok=$((w1 - w0 < all ? w1 - w0 : all))
        [ "$ok" = "$all" ] || echo "   ($name: $((all - ok)) of $all answers were not \"waiting\")"
        ;;
    all)
        ok=$all
        ;;
    esac
    ok=${ok:-0}
    rps=$(awk -v ok="$ok" -v s="$BENCH_SECONDS" 'BEGIN { printf "%.0f", ok / s }')
    [ "$target" = - ] || verdict=$(awk -v r="$rps" -v t="$target" 'BEGIN { print (r >= t) ? "holds" : "misses" }')
    rows+=("$(printf '%-16s %8s %7s %7s %6s %8s %7s %7s %6s %8s %s' "$name" "$rps" "$(ms 50% <<<"$out")" \
        "$(ms 99% <<<"$out")" "$(us_per $((sk1 - sk0)) "$ok")" "$(us_per $((r1 - r0)) "$ok")" \
        "$(per $((s1 - s0)) "$ok")" "$(per $((n1 - n0)) "$ok")" \
        "$(awk -v c=$((q1 - q0)) -v n="$ok" 'BEGIN { printf "%.4f", n ? c / n : 0 }')" \
        "$([ "$target" = - ] && echo - || echo ">=$target")" "$verdict")")
    last_ok=$ok
}

# join_all ITEM RUN N CONNS [TICKETS]: N distinct users join ITEM through wrk (join.lua with USERS=N: each thread
# stops at its share; wrk itself is stopped once every thread has); with TICKETS, their tickets end up in that file
join_all() {
    local item=$1 run=$2 n=$3 c=$4 tickets=${5:-} done_at=$work/done-$1
    ITEM=$item RUN=$run USERS=$n THREADS=$BENCH_THREADS TICKETS=${tickets:+$work/t-$item} DONE=$done_at \
        wrk -t"$BENCH_THREADS" -c"$c" -d600s -s tests/bench/join.lua "http://127.0.0.1:$SK_PORT" \
        >"$work/join-$item.out" 2>&1 &
    wrk_pid=$!
    wait_for 600 "$n joins to $item" wait_files "$done_at" "$BENCH_THREADS" || true
    kill -INT "$wrk_pid" 2>/dev/null || true
    wait "$wrk_pid" 2>/dev/null || true
    wrk_pid=
    if [ -n "$tickets" ]; then
        cat "$work/t-$item".* | sort -u >"$tickets"
        [ "$(wc -l <"$tickets")" = "$n" ] || echo "   ($(wc -l <"$tickets") tickets for $n joins to $item)"
    fi
}

start_seckilld scripts "$(nproc)" SECKILLD_ADMIN_TOKEN=$token SECKILLD_TOKEN_SECRET=$secret
rows=()
printf '\n== queue: the waiting room beside the plain buy path (%s connections, wrk %ss runs)\n' "$conns" "$BENCH_SECONDS"
header=$(printf '%-16s %8s %7s %7s %6s %8s %7s %7s %6s %8s %s' what ok/s p50_ms p99_ms sk_us redis_us sent/op cmds/op \
    sql/op target verdict)
run=$$-$RANDOM
room='"waiting_room": {"admit_per_s": '$rate', "pass_ttl_s": 300}'
later=$(($(now_ms) + 3600000))

# a warm-up, not shown: the order consumer joins its group some seconds after the start, and a fresh process's first
# second is slower
warm_item=q-warm-$run
must_setup "$warm_item" '{"stock": 1000000000}'
out=$(ITEM=$warm_item RUN=w$run wrk -t"$BENCH_THREADS" -c"$conns" -d2s -s tests/bench/buy.lua \
    "http://127.0.0.1:$SK_PORT" 2>&1)
wait_for 180 "MySQL to hold the warm-up's orders" persisted "$warm_item" "$(awk '/^COUNTS/ { print $2 }' <<<"$out")" ||
    true

# baselines: the plain buy, and its sold-out answer
buy_item=q-buy-$run
must_setup "$buy_item" '{"stock": 1000000000}'
m0=$(used_memory)
ITEM=$buy_item RUN=b$run measure buy - counts -s tests/bench/buy.lua
buy_bytes=$(awk -v a="$m0" -v b="$(used_memory)" -v n="$last_ok" 'BEGIN { printf "%.0f", n ? (b - a) / n : 0 }')
# the consumer's inserts of those orders must not fall into the next rows
wait_for 180 "MySQL to hold the buy row's $last_ok orders" persisted "$buy_item" "$last_ok" || true
so_item=q-soldout-$run
must_setup "$so_item" '{"stock": 0}'
curl -s -o /dev/null -X POST "http://127.0.0.1:$SK_PORT/seckill/add" -d "{\"item_id\":\"$so_item\",\"user_id\":\"first\"}"
ITEM=$so_item measure "buy, sold out" - all -s tests/bench/soldout.lua
# what any answer costs here: the cheapest route in Lua (GET /time), and one answered in C without Lua (GET /healthz)
URL_PATH=/time measure "GET /time" - all
URL_PATH=/healthz measure "GET /healthz" - all

# joins
pre_item=q-pre-$run
must_setup "$pre_item" "{\"stock\": 1000000000, \"starts_at\": $later, $room}"
ITEM=$pre_item RUN=j$run THREADS=$BENCH_THREADS measure "join, pre-start" 20000 counts -s tests/bench/join.lua
started_item=q-started-$run
must_setup "$started_item" "{\"stock\": 1000000000, $room}"
ITEM=$started_item RUN=j$run THREADS=$BENCH_THREADS measure "join, started" 20000 counts -s tests/bench/join.lua

# polls: the tickets of users who joined (with wrk), then wrk polling with them. The started pollers' item admits one
# a second, so that all but a few (one a second since its set-up) wait through the run whatever the machine's speed
# (the rate changes nothing in what a waiting poll does); they join at 16 connections: at 256, every join that finds
# the places reserved in MySQL used up reserves the next block itself, and this item's blocks are small (100 places)
poll_item=q-poll-$run
must_setup "$poll_item" '{"stock": 1000000000, "waiting_room": {"admit_per_s": 1, "pass_ttl_s": 300}}'
join_all "$poll_item" p$run "$pollers" 16 "$work/tickets-started"
TICKETS=$work/tickets-started THREADS=$BENCH_THREADS measure "poll, started" 60000 states -s tests/bench/status.lua
join_all "$pre_item" p$run "$pollers" 16 "$work/tickets-pre"
TICKETS=$work/tickets-pre THREADS=$BENCH_THREADS measure "poll, pre-start" 60000 states -s tests/bench/status.lua

echo "$header"
printf '%s\n' "${rows[@]}"

# memory: a million waiting users in one Redis
[ -n "$memory_modes" ] || exit 0
printf '\n== queue: %s waiting users of one item in one Redis (joined with wrk, %s connections; target 200 MB)\n' \
    "$users" "$conns"
printf '%-8s %7s %8s %12s %8s %10s %-7s %s\n' mode join_s joins/s used_mem_MB keys_MB bytes/user verdict \
    "keys (type, members, MEMORY USAGE)"
for mode in $memory_modes; do
    item=q-mem-$mode-$run
    case $mode in
    draw) must_setup "$item" "{\"stock\": 1000000000, \"starts_at\": $(($(now_ms) + 3600000)), $room}" ;;
    started) must_setup "$item" "{\"stock\": 1000000000, $room}" ;;
    *) echo "bench: unknown memory mode $mode" >&2; exit 1 ;;
    esac
    m0=$(used_memory)
    t0=$(now_ms)
    join_all "$item" m$run "$users" "$conns"
    t1=$(now_ms)
    m1=$(used_memory)
    keys_bytes=0 keys= most=0
    while read -r key; do
        [ -n "$key" ] || continue
        type=$(redis TYPE "$key")
        case $type in
        zset) n=$(redis ZCARD "$key") ;;
        hash) n=$(redis HLEN "$key") ;;
        set) n=$(redis SCARD "$key") ;;
        *) n=1 ;;
        esac
        b=$(redis MEMORY USAGE "$key" SAMPLES 0)
        keys_bytes=$((keys_bytes + b))
        name=${key#"seckill:{$item}:"}
        keys+="$(sed -E 's/:[0-9]+//' <<<"$name") $type $n $(mb "$b") MB; "
        [ "$n" -le "$most" ] || most=$n
    done < <(redis --scan --pattern "seckill:{$item}:queue:*")
    [ "$most" = "$users" ] || echo "   ($mode: the biggest queue key holds $most users, for $users joined)"
    grew=$((m1 - m0))
    verdict=$(awk -v m="$grew" -v k="$keys_bytes" \
        'BEGIN { print (m <= 200e6 && k <= 200e6) ? "holds" : "misses" }')
    printf '%-8s %7s %8s %12s %8s %10s %-7s %s\n' "$mode" \
        "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", (b - a) / 1000 }')" \
        "$(awk -v a="$t0" -v b="$t1" -v n="$users" 'BEGIN { printf "%.0f", n * 1000 / (b - a) }')" "$(mb "$grew")" \
        "$(mb "$keys_bytes")" "$(awk -v m="$grew" -v n="$most" 'BEGIN { printf "%.0f", n ? m / n : 0 }')" "$verdict" \
        "${keys%; }"
    # DEL, not UNLINK: the memory is free before the next mode measures from it
    redis --scan --pattern "seckill:{$item}:queue:*" | while read -r key; do redis DEL "$key" >/dev/null; done
done
printf 'baseline, same run: the buy row grew used_memory by %s bytes per accepted buy\n' "$buy_bytes"
stop_seckilld && SK_PID=
