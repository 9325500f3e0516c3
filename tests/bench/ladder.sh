#!/usr/bin/env bash
# Issue 24's benchmark: the ladder. What each kind of answer costs seckilld, in one run, against the real server
# (build/seckilld, the shipped scripts and config, the private services of run.sh), at 16 and 256 connections:
#   c_hello     GET /_c/hello, a static answer in C (h2o and the core's own handling: the floor)    200
#   healthz     GET /healthz, answered in C (renders the health document, counted in /metrics)      200
#   lua_route   GET /time, the shipped scripts' cheapest route: what entering Lua costs (the request     200
#               object, a coroutine, the JSON answer), before any of the application's work
#   unknown     POST /seckill/add of a made-up item id, a new one per request (a bot guessing ids)  404 unknown_item
#   sold_out    an item set up with stock 0 (one buy first, so the process has marked it)          409 sold_out
#   limited     an item whose own max_rps is 0.001 (its one token spent before the run)            429 busy
#   bad_token   an item with require_token, a well-formed token with a forged MAC                  403 bad_token
#   malformed   a JSON body cut short                                                              400 bad_request
#   buy         a distinct user per buy, stock that cannot run out (the consumer and the embedded  200
#               Kafka mock in the process, as the sale part runs them)
#   buy+idem    the same with a distinct Idempotency-Key per buy                                   200
# Columns: answers/s (wrk), seckilld CPU (user + system, /proc/PID/stat) per answer over the wrk run, that CPU over
# /healthz's in the same block, wrk's p50/p99, Redis commands (INFO commandstats, every client's, the server's
# background tasks included) per answer, redis_max (the longest a PING to Redis waited for its answer during the run,
# one every 10 ms: tests/bench/redis_probe.py; a tail in p99 beside a long one here is Redis, or the kernel not
# scheduling it: README "The stall"), and others_% (the machine's busy CPU during the run that was neither
# seckilld's, wrk's, Redis's nor MariaDB's, in % of one core: other work sharing the cores, and kernel work charged to
# no process (some of the loopback's network processing); well above the quiet rows' 10-20 % the row is disturbed). Every answer's status is counted in wrk (tests/bench/ladder.lua); a rung
# whose answers were not all the expected status is marked "!" and named below the table. Under it, for each buy
# rung, seckilld's CPU per buy from the run's start until MySQL has every order, by thread (lib.sh cpu_by_thread):
# the workers, the Kafka consumer, librdkafka's client threads, the embedded mock broker, the rest. One fresh seckilld per
# connection count (the embedded mock slows as its topic grows). Before each wrk run no other wrk may be running on
# the machine (another benchmark would share the cores): the part waits for it (BENCH_WAIT_MAX seconds at most).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
. tests/bench/lib.sh

token=bench-token
secret=bench-secret-0123456789abcdef
conns_list=${BENCH_LADDER_CONNECTIONS:-16 256}
probe_out=$(mktemp)
trap 'rm -f "$probe_out"' EXIT
wait_max=${BENCH_WAIT_MAX:-900}
rungs=(c_hello healthz lua_route unknown sold_out limited bad_token malformed buy buy+idem)

setup_item() { # ITEM BODY
    curl -s -o /dev/null -w '%{http_code}' -X PUT -H "Authorization: Bearer $token" \
        "http://127.0.0.1:$SK_PORT/admin/items/$1" -d "$2"
}
buy_once() { # ITEM USER: the status of one buy
    curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$SK_PORT/seckill/add" \
        -d "{\"item_id\":\"$1\",\"user_id\":\"$2\"}"
}
mysql_count() {
    mariadb -h127.0.0.1 -P"$SK_MYSQL_PORT" -useckill -pseckill seckill -N -B \
        -e "SELECT COUNT(*) FROM orders WHERE item_id = '$1'"
}
persisted() { [ "$(mysql_count "$1")" -ge "$2" ]; }
# the machine's busy CPU so far, in clock ticks (/proc/stat: user nice system irq softirq steal)
machine_ticks() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }
# CPU of the private services, in clock ticks
services_ticks() {
    local t=0 f pid
    for f in "$SK_SERVICES_DIR/redis/redis.pid" "$SK_SERVICES_DIR/mysql.pid"; do
        pid=$(cat "$f" 2>/dev/null) && [ -r "/proc/$pid/stat" ] && t=$((t + $(cpu_ticks "$pid")))
    done
    echo "$t"
}
# seckilld's books are settled: the epoch is this Redis's run_id and no item waits for a rebuild. A fresh Redis beside a
# MariaDB that keeps earlier runs' items is a data loss to seckilld (books/loss.lua): it pauses those items and, after
# sale.rebuild_grace_ms, rebuilds them from MySQL; that burst of work must not land in a measured run.
settled() {
    local run_id
    run_id=$(redis-cli -p "$SK_REDIS_PORT" INFO server | tr -d '\r' | awk -F: '$1 == "run_id" { print $2 }')
    [ "$(redis-cli -p "$SK_REDIS_PORT" GET seckill:epoch)" = "$run_id" ] &&
        [ "$(redis-cli -p "$SK_REDIS_PORT" SCARD seckill:rebuilding)" = 0 ]
}
rss_mib() { awk -v k="$2:" '$1 == k { printf "%.0f", $2 / 1024 }' "/proc/$1/status"; }
ms() { awk 'function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; return v * 1000 }
            $1 == "'"$1"'" { printf "%.2f", ms($2) }'; }

# no other benchmark on the machine while we measure
wait_no_wrk() {
    local waited=0
    while pgrep -x wrk >/dev/null; do
        if [ "$waited" = 0 ]; then
            echo "   (another wrk is running, pid $(pgrep -x wrk | tr '\n' ' '): waiting for it to end)"
        fi
        if [ "$waited" -ge "$wait_max" ]; then
            echo "!! another wrk still runs after ${wait_max}s: measuring beside it, the figures are not this part's alone"
            return 0
        fi
        sleep 1
        waited=$((waited + 1))
    done
    [ "$waited" = 0 ] || echo "   (waited ${waited}s for another wrk to end)"
}

declare -A row    # "conns rung" → the table's row
notes=()          # lines printed under the table
hz_us=            # /healthz's CPU per answer in the current block

# measure CONNS NAME RUNG EXPECT ITEM: one wrk run of ladder.lua, its row in `row`
measure() {
    local conns=$1 name=$2 rung=$3 expect=$4 item=$5
    local sk0 sk1 n0 n1 m0 m1 s0 s1 t0 t1 out total good bad rps p50 p99 us ratio cmds flag="" errs overlap wrk_t others
    local probe redis_max
    wait_no_wrk
    LAST_SPLIT=$(cpu_by_thread "$SK_PID")
    python3 tests/bench/redis_probe.py "$SK_REDIS_PORT" >"$probe_out" &
    probe=$!
    sk0=$(cpu_ticks "$SK_PID") n0=$(redis_calls) m0=$(machine_ticks) s0=$(services_ticks) t0=$(date +%s.%N)
    # `times` after wrk: the CPU of this subshell's children, i.e. wrk's
    out=$(RUNG=$rung ITEM=$item RUN=$run EXPECT=$expect wrk -t"$BENCH_THREADS" -c"$conns" -d"${BENCH_SECONDS}s" \
        --latency -s tests/bench/ladder.lua "http://127.0.0.1:$SK_PORT" 2>&1; echo TIMES; times)
    sk1=$(cpu_ticks "$SK_PID") n1=$(redis_calls) m1=$(machine_ticks) s1=$(services_ticks) t1=$(date +%s.%N)
    kill -TERM "$probe" 2>/dev/null || true
    wait "$probe" 2>/dev/null || true
    redis_max=$(cat "$probe_out" 2>/dev/null)
    wrk_t=$(awk -v hz="$(getconf CLK_TCK)" 'function s(v) { split(v, a, "m"); return a[1] * 60 + a[2] }
                /^TIMES$/ { at = NR } at && NR == at + 2 { printf "%.0f", (s($1) + s($2)) * hz }' <<<"$out")
    others=$(awk -v t=$((m1 - m0 - (sk1 - sk0) - (s1 - s0) - ${wrk_t:-0})) -v a="$t0" -v b="$t1" -v hz="$(getconf CLK_TCK)" \
        'BEGIN { o = t * 100 / hz / (b - a); printf "%.0f", o < 0 ? 0 : o }')
    overlap=$(pgrep -x wrk | tr '\n' ' ' || true)
    read -r total good bad < <(awk '/^LADDER/ { print $2, $3, $4 }' <<<"$out")
    total=${total:-0} good=${good:-0} bad=${bad:-0}
    rps=$(awk '/Requests\/sec:/ { printf "%.0f", $2 }' <<<"$out")
    p50=$(ms 50% <<<"$out") p99=$(ms 99% <<<"$out")
    us=$(us_per $((sk1 - sk0)) "$total")
    [ "$rung" = healthz ] && hz_us=$us
    ratio=$(awk -v a="$us" -v b="$hz_us" 'BEGIN { if (b + 0 > 0 && a != "-") printf "%.1f", a / b; else print "-" }')
    cmds=$(awk -v c=$((n1 - n0)) -v n="$total" 'BEGIN { if (n > 0) printf "%.2f", c / n; else print "-" }')
    if [ "$total" = 0 ] || [ "$bad" != 0 ]; then
        flag="!"
        notes+=("!! $name at $conns connections: $bad of $total answers were not $expect ($(awk '/^UNEXPECTED/ {
            printf "%s%s: %s", sep, $2, $3; sep = ", " }' <<<"$out")); this rung does not measure what it claims")
    fi
    errs=$(grep -E '^ +Socket errors:' <<<"$out" || true)
    if [ -n "$errs" ]; then
        flag="!"
        notes+=("!! $name at $conns connections: wrk ${errs#"${errs%%[! ]*}"}")
    fi
    if [ -n "$overlap" ]; then
        flag="!"
        notes+=("!! $name at $conns connections: another wrk (pid $overlap) was running when this run ended")
    fi
    row["$conns $name"]=$(printf '%-10s %6s %10s %9s %9s %8s %8s %10s %10s %8s %s' "$name" "$conns" "${rps:--}" "$us" "$ratio" \
        "${p50:--}" "${p99:--}" "$cmds" "${redis_max:--}" "$others" "$flag")
    LAST_GOOD=$good LAST_SK=$sk1
}
LAST_SPLIT=""

# after a buy rung: let the consumer put every accepted order in MySQL before the next rung, and say what that cost
catch_up() {
    local conns=$1 name=$2 item=$3 ok=$LAST_GOOD sk0=$LAST_SK t0 t1 sk1
    t0=$(date +%s.%N)
    wait_for 180 "MySQL to hold the $ok orders of $name" persisted "$item" "$ok" || true
    t1=$(date +%s.%N) sk1=$(cpu_ticks "$SK_PID")
    notes+=("$(printf '%s at %s connections: the consumer caught up %.1f s after the run, %s µs more of seckilld CPU per buy' \
        "$name" "$conns" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" "$(us_per $((sk1 - sk0)) "$ok")")")
    # the whole of it (the run and the catching up) by thread: what a buy costs the server's own threads, apart from
    # the embedded mock broker, which a real deployment runs elsewhere
    notes+=("$(awk -v a="$LAST_SPLIT" -v b="$(cpu_by_thread "$SK_PID")" -v n="$ok" -v hz="$(getconf CLK_TCK)" \
        -v what="$name at $conns connections" 'BEGIN {
            split(a, x, " "); split(b, y, " "); split("workers consumer librdkafka_clients mock_broker other", k, " ")
            for (i = 1; i <= 5; ++i) { d[i] = n > 0 ? (y[i] - x[i]) * 1e6 / hz / n : 0; all += d[i] }
            printf "%s, seckilld CPU per buy by thread, run and catch-up: %s %.1f µs", what, k[1], d[1]
            for (i = 2; i <= 5; ++i) printf ", %s %.1f", k[i], d[i]
            printf " (all %.1f; without the mock broker %.1f)", all, all - d[4] }')")
}

printf '\n== ladder: what each answer costs seckilld (shipped scripts and config, wrk %ss runs, %s threads)\n' \
    "$BENCH_SECONDS" "$BENCH_THREADS"
echo "   $(nproc) cores, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo); load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for conns in $conns_list; do
    run=l$conns-$$
    start_seckilld scripts "$(nproc)" SECKILLD_ADMIN_TOKEN=$token SECKILLD_TOKEN_SECRET=$secret
    t0=$(date +%s)
    wait_for 120 "seckilld's books to settle" settled || true
    [ $(($(date +%s) - t0)) -lt 2 ] ||
        notes+=("(at $conns connections seckilld first rebuilt earlier runs' items from MySQL: $(($(date +%s) - t0)) s)")
    so=so-$run lim=lim-$run tok=tok-$run buy=buy-$run idem=idem-$run
    for spec in "$so"'|{"stock": 0}' "$lim"'|{"stock": 0, "max_rps": 0.001}' \
        "$tok"'|{"stock": 1000000000, "require_token": true}' "$buy"'|{"stock": 1000000000}' \
        "$idem"'|{"stock": 1000000000}'; do
        [ "$(setup_item "${spec%%|*}" "${spec#*|}")" = 200 ] || { echo "bench: item set-up failed" >&2; exit 1; }
    done
    # the sold-out mark, and the limited item's one token spent (its burst is 1, it refills in 1,000 s)
    [ "$(buy_once "$so" first)" = 409 ] || echo "!! the sold-out item's first buy was not 409"
    buy_once "$lim" first >/dev/null
    [ "$(buy_once "$lim" second)" = 429 ] || echo "!! the limited item's second buy was not 429"

    # the background (seckilld's tasks, the consumer's polls, the embedded mock): two idle seconds
    n0=$(redis_calls) sk0=$(cpu_ticks "$SK_PID")
    sleep 2
    notes+=("$(printf 'idle, the seckilld of the %s-connection rows: %s ms of CPU and %s Redis commands per second (background tasks)' \
        "$conns" "$(awk -v t=$(($(cpu_ticks "$SK_PID") - sk0)) -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.0f", t * 500 / hz }')" \
        "$((($(redis_calls) - n0 - 1) / 2))")")

    measure "$conns" c_hello c_hello 200 -
    measure "$conns" healthz healthz 200 -
    measure "$conns" lua_route time 200 -
    rss0=$(rss_mib "$SK_PID" VmRSS)
    measure "$conns" unknown unknown 404 -
    rss1=$(rss_mib "$SK_PID" VmRSS)
    measure "$conns" sold_out soldout 409 "$so"
    measure "$conns" limited limited 429 "$lim"
    measure "$conns" bad_token badtoken 403 "$tok"
    measure "$conns" malformed malformed 400 -
    measure "$conns" buy buy 200 "$buy"
    catch_up "$conns" buy "$buy"
    measure "$conns" buy+idem idem 200 "$idem"
    catch_up "$conns" buy+idem "$idem"
    notes+=("seckilld RSS at $conns connections: ${rss0} MiB before the unknown-item flood, ${rss1} MiB after it, $(rss_mib "$SK_PID" VmRSS) MiB at the end (peak $(rss_mib "$SK_PID" VmHWM) MiB)")
    stop_seckilld
done

printf '%-10s %6s %10s %9s %9s %8s %8s %10s %10s %8s\n' rung conns answers/s cpu_us x_healthz p50_ms p99_ms redis/ans redis_max others_%
for conns in $conns_list; do
    for name in "${rungs[@]}"; do
        echo "${row["$conns $name"]}"
    done
done
for line in "${notes[@]}"; do
    echo "$line"
done
echo "   load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
