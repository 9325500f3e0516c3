#!/bin/bash
# tests/bench/scale/scale.sh: the many-core scaling run, from a bundle made by bundle.sh beside it (the machine
# needs nothing installed). For each strategy and worker count: a fresh redis-server and a fresh seckilld
# (`--role api`, embedded Kafka, the bundled mariadbd for the books) sell one item with 10^9 stock to distinct
# buyers at 256 connections; then the sold-out path; then redis-benchmark's INCR and a buy-like EVAL.
# Pinning: redis-server on the last core, wrk on the five before it, seckilld and mariadbd on the rest.
# Per run: buys/s, p50/p99, answers by status, CPU µs per request of seckilld and of Redis (/proc), and Redis
# commands per 200 (INFO commandstats). This is ../shared/tools/scale.sh with MySQL added and commands counted.
# PERF=1 (a bundle made with PERF=1): perf records seckilld during each buy run, its report goes to
# $OUT/perf-LABEL.txt.
# MALLOCS="glibc jemalloc": each buy and sold-out run once per allocator (jemalloc preloaded into seckilld; its
# label gets "-jemalloc").
# env: DUR (s, default 8), WORKERS ("1 2 4 8 12"), STRATS ("eval watch"), SOLDOUT (1), OUT; VARIANTS (say
# "eval-process watch-worker": a strategy with the other sale.coalesce) run at VWORKERS ("2 8 12"); CLUSTER (say
# "3 6": one hot item in that many stock buckets on a 3-master Redis Cluster, one core per master, beside the same
# sale on one redis-server with the same cores for seckilld and wrk) at each of CWORKERS ("8") for each of CSTRATS ("eval").
set -u
B=$(cd "$(dirname "$0")" && pwd)
L=$B/lib
OUT=${OUT:-/tmp/scale-out}
mkdir -p "$OUT"
cd "$B" || exit 1
DUR=${DUR:-8}
WORKERS=${WORKERS-1 2 4 8 12}
STRATS=${STRATS-eval watch}
SOLDOUT=${SOLDOUT:-1}
N=$(nproc)
echo "nproc $N"; head -2 /etc/os-release 2>/dev/null; grep -m1 'model name' /proc/cpuinfo
have_taskset=0; command -v taskset >/dev/null && have_taskset=1
pin() { local cpus=$1; shift; if [ $have_taskset = 1 ] && [ "$N" -ge 16 ]; then exec taskset -c "$cpus" "$@"; else exec "$@"; fi; }
RCPU=$((N - 1)); WCPU="$((N - 6))-$((N - 2))"; SCPU="0-$((N - 7))"
[ "$N" -ge 16 ] || { RCPU=0; WCPU=0; SCPU=0; }
ld() { "$L/ld-linux-x86-64.so.2" --library-path "$L" "$@"; }

# ---- mariadbd (the books: an item is set up through MySQL), from the packed datadir
MY=/tmp/scale-mysql
rm -rf "$MY"; mkdir -p "$MY"; tar -C "$MY" -xzf "$B/mysql-data.tar.gz"
(pin "$SCPU" "$L/ld-linux-x86-64.so.2" --library-path "$L" "$B/bin/mariadbd" --no-defaults --user=root \
    --datadir="$MY/data" --socket="$MY/sock" --pid-file="$MY/pid" --log-error="$OUT/mysql.log" \
    --lc-messages-dir="$B/share" --character-sets-dir="$B/share/charsets" \
    --bind-address=127.0.0.1 --port=13306 --skip-name-resolve --max-connections=500 \
    --innodb-log-file-size=16M --innodb-buffer-pool-size=64M --innodb-flush-log-at-trx-commit=2 --skip-log-bin) &
MPID=$!
trap 'kill $MPID 2>/dev/null' EXIT
for _ in $(seq 1 100); do { exec 3<>/dev/tcp/127.0.0.1/13306; } 2>/dev/null && { exec 3>&-; break; }; sleep 0.2; done

cat >"$OUT/scale.conf" <<'CONF'
return {
    listen = "127.0.0.1:18990", workers = 0, scripts = "scripts", admin_token = "t", log_level = "warn",
    redis = { url = "redis://127.0.0.1:16390/0", pool_size = 4, tries = 16 },
    mysql = { url = "mysql://seckill:seckill@127.0.0.1:13306/seckill", schema = "SCHEMA" },
    kafka = { brokers = "embedded", topic = "seckill.orders", partitions = 6 },
    items = { { id = "hot", stock = 1000000000, limit_per_user = 1 }, { id = "gone", stock = 0, limit_per_user = 1 } },
    sale = { COALESCE },
}
CONF
sed -i "s|SCHEMA|$B/schema.sql|" "$OUT/scale.conf"
conf_for() { # strategy[-coalesce] -> a config file
    local c=${1#*-}
    if [ "$c" = "$1" ]; then sed 's|COALESCE||' "$OUT/scale.conf"; else sed "s|COALESCE|coalesce = \"$c\"|" "$OUT/scale.conf"; fi >"$OUT/scale-$1.conf"
    echo "$OUT/scale-$1.conf"
}

HZ=$(getconf CLK_TCK 2>/dev/null || echo 100)
cpu_ticks() { awk '{print $14 + $15}' /proc/$1/stat 2>/dev/null || echo 0; }
rcli() { ld "$B/bin/redis-cli" -p 16390 "$@"; }
redis_calls() { rcli info commandstats | awk -F'[=,:]' '/^cmdstat_/ {s += $3} END {print s + 0}'; }

redis_up() {
    (pin $RCPU "$L/ld-linux-x86-64.so.2" --library-path "$L" "$B/bin/redis-server" --port 16390 --bind 127.0.0.1 \
        --save "" --appendonly no >"$OUT/redis.log" 2>&1) &
    RPID=$!
    for _ in $(seq 1 50); do rcli ping >/dev/null 2>&1 && break; sleep 0.1; done
}
redis_down() { kill $RPID 2>/dev/null; wait $RPID 2>/dev/null; }

item_ready() { # the item's meta is in Redis: app.init has set it up through the books
    [ "$(rcli exists "seckill:{$1}:meta" 2>/dev/null)" = 1 ]
}

fresh_db() { # each run is a fresh sale: items already in MySQL with an empty Redis would be a loss to rebuild
    ld "$B/bin/mariadb" --no-defaults -uroot --socket="$MY/sock" -e 'DROP DATABASE IF EXISTS seckill; CREATE DATABASE seckill'
}

bench() { # label workers strategy item
    local label=$1 w=$2 s=$3 item=$4 conf
    conf=$(conf_for "$s")
    fresh_db
    redis_up
    local preload=()
    [ "${MALLOC:-glibc}" = jemalloc ] && preload=(--preload "$L/libjemalloc.so.2")
    (SECKILLD_WORKERS=$w SECKILLD_STRATEGY=${s%%-*} pin $SCPU "$L/ld-linux-x86-64.so.2" --library-path "$L" \
        "${preload[@]}" "$B/bin/seckilld" -c "$conf" --role api >"$OUT/seckilld-$label.log" 2>&1) &
    local spid=$! # pin execs: this is seckilld itself
    local t0=$SECONDS
    while ! item_ready "$item" && [ $((SECONDS - t0)) -lt 30 ]; do sleep 0.1; done
    sleep 0.5
    local s0 r0 c0 s1 r1 c1 n ok
    s0=$(cpu_ticks "$spid"); r0=$(cpu_ticks $RPID); c0=$(redis_calls)
    local ppid=""
    if [ -n "${PERF:-}" ] && [ -x "$B/bin/perf" ]; then
        (sleep 1; ld "$B/bin/perf" record -F 499 -g -p "$spid" -o "$OUT/perf-$label.data" -- sleep $((DUR - 2)) \
            >/dev/null 2>"$OUT/perf-$label.err") &
        ppid=$!
    fi
    (ITEM=$item RUN=$label$RANDOM pin $WCPU "$L/ld-linux-x86-64.so.2" --library-path "$L" "$B/bin/wrk" -t5 -c256 \
        -d${DUR}s --timeout 10s -s "$B/buy.lua" http://127.0.0.1:18990 >"$OUT/wrk-$label.txt" 2>&1)
    if [ -n "$ppid" ]; then
        wait "$ppid"
        { ld "$B/bin/perf" report -i "$OUT/perf-$label.data" --no-children --sort dso -g none 2>/dev/null | grep -v '^#' | head -20
          ld "$B/bin/perf" report -i "$OUT/perf-$label.data" --no-children --sort comm -g none 2>/dev/null | grep -v '^#' | head -20
          ld "$B/bin/perf" report -i "$OUT/perf-$label.data" --no-children --sort dso,sym -g none 2>/dev/null |
              grep -v '^#' | head -70
          ld "$B/bin/perf" report -i "$OUT/perf-$label.data" --children --sort sym -g none 2>/dev/null |
              grep -v '^#' | head -70; } >"$OUT/perf-$label.txt" 2>&1
        rm -f "$OUT/perf-$label.data"
    fi
    s1=$(cpu_ticks "$spid"); r1=$(cpu_ticks $RPID); c1=$(redis_calls)
    n=$(grep -E '^status' "$OUT/wrk-$label.txt" | awk '{s+=$3} END{print s+0}')
    ok=$(awk '/^status 200:/ {print $3}' "$OUT/wrk-$label.txt"); ok=${ok:-0}
    printf '%-16s w=%-2s %s | %s| cpu_us/req seckilld %s redis %s | redis cmds/200 %s\n' "$label" "$w" \
        "$(grep '^p50_ms' "$OUT/wrk-$label.txt")" "$(grep -E '^status' "$OUT/wrk-$label.txt" | tr '\n' ' ')" \
        "$(awk -v a=$s0 -v b=$s1 -v n=$n -v hz=$HZ 'BEGIN{printf "%.1f", (b-a)/hz*1e6/(n>0?n:1)}')" \
        "$(awk -v a=$r0 -v b=$r1 -v n=$n -v hz=$HZ 'BEGIN{printf "%.1f", (b-a)/hz*1e6/(n>0?n:1)}')" \
        "$(awk -v a=$c0 -v b=$c1 -v n=$ok 'BEGIN{if (n > 0) printf "%.2f", (b-a)/n; else print "-"}')" |
        tee -a "$OUT/results.txt"
    kill -TERM $spid 2>/dev/null
    for _ in $(seq 1 50); do kill -0 $spid 2>/dev/null || break; sleep 0.1; done
    kill -9 $spid 2>/dev/null; wait $spid 2>/dev/null
    redis_down
}

: >"$OUT/results.txt"
for MALLOC in ${MALLOCS:-glibc}; do
    m=""; [ "$MALLOC" = glibc ] || m=-$MALLOC
    for s in $STRATS; do
        for w in $WORKERS; do bench "buy-$s-w$w$m" "$w" "$s" hot; done
    done
    if [ "$SOLDOUT" = 1 ]; then for w in $WORKERS; do bench "soldout-w$w$m" "$w" eval gone; done; fi
done
MALLOC=glibc
for s in ${VARIANTS:-}; do
    for w in ${VWORKERS:-2 8 12}; do bench "buy-$s-w$w" "$w" "$s" hot; done
done

# ---- one hot item over K buckets on a 3-master cluster (a core per master) against one redis-server
http_put() { # path json: the status code of an admin PUT, through bash's /dev/tcp
    { exec 4<>/dev/tcp/127.0.0.1/18990; } 2>/dev/null || { echo 000; return; }
    printf 'PUT %s HTTP/1.0\r\nAuthorization: Bearer t\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s' \
        "$1" "${#2}" "$2" >&4
    local first; read -r -t 5 first <&4; exec 4>&-
    awk '{print $2}' <<<"$first"
}
cluster_up() {
    CPIDS=()
    local i p
    for i in 0 1 2; do
        p=$((16400 + i)); rm -rf "/tmp/scale-cluster/$p"; mkdir -p "/tmp/scale-cluster/$p"
        (cd "/tmp/scale-cluster/$p" && pin $((N - 1 - i)) "$L/ld-linux-x86-64.so.2" --library-path "$L" "$B/bin/redis-server" \
            --port $p --bind 127.0.0.1 --save "" --appendonly no --cluster-enabled yes --cluster-config-file nodes.conf \
            >"$OUT/redis-$p.log" 2>&1) &
        CPIDS+=($!)
    done
    for p in 16400 16401 16402; do
        for _ in $(seq 1 50); do ld "$B/bin/redis-cli" -p $p ping >/dev/null 2>&1 && break; sleep 0.1; done
    done
    ld "$B/bin/redis-cli" --cluster create 127.0.0.1:16400 127.0.0.1:16401 127.0.0.1:16402 --cluster-replicas 0 \
        --cluster-yes >"$OUT/cluster-create.log" 2>&1
    for _ in $(seq 1 100); do
        ld "$B/bin/redis-cli" -p 16400 cluster info 2>/dev/null | grep -q 'cluster_state:ok' && break; sleep 0.1
    done
}
cluster_down() { kill "${CPIDS[@]}" 2>/dev/null; wait "${CPIDS[@]}" 2>/dev/null; }

# The item is "hot3" because its buckets spread evenly over the three masters that `redis-cli --cluster create`
# makes (slots 0-5460, 5461-10922, 10923-16383): {hot3} {hot3#1} {hot3#2} are on masters 2, 1 and 3, and buckets
# 3-5 again one per master. An item's buckets are hash tags, so where they land depends on its name.
cbench() { # label workers strategy buckets ("single": one redis-server on the same pinning)
    local label=$1 w=$2 s=$3 k=$4 url ports conf spid t0 i n ok code
    conf=$(conf_for "$s")
    fresh_db
    if [ "$k" = single ]; then
        redis_up; url=redis://127.0.0.1:16390/0; ports=16390
    else
        cluster_up; url=redis+cluster://127.0.0.1:16400,127.0.0.1:16401,127.0.0.1:16402; ports="16400 16401 16402"
    fi
    (SECKILLD_WORKERS=$w SECKILLD_STRATEGY=${s%%-*} SECKILLD_REDIS=$url pin $CSCPU "$L/ld-linux-x86-64.so.2" \
        --library-path "$L" "$B/bin/seckilld" -c "$conf" --role api >"$OUT/seckilld-$label.log" 2>&1) &
    spid=$!
    t0=$SECONDS; code=000
    while [ "$code" != 200 ] && [ $((SECONDS - t0)) -lt 30 ]; do
        sleep 0.2
        code=$(http_put /admin/items/hot3 "{\"stock\": 1000000000, \"limit_per_user\": 1, \"buckets\": ${k/single/1}}")
    done
    local -a c0 c1 p0 p1
    local pp
    for pp in $ports; do
        p0+=("$(cpu_ticks "$(ld "$B/bin/redis-cli" -p $pp info server | tr -d '\r' | awk -F: '/^process_id:/ {print $2}')")")
        c0+=("$(ld "$B/bin/redis-cli" -p $pp info commandstats | awk -F'[=,:]' '/^cmdstat_/ {s += $3} END {print s + 0}')")
    done
    local s0; s0=$(cpu_ticks "$spid")
    (ITEM=hot3 RUN=$label$RANDOM pin $CWCPU "$L/ld-linux-x86-64.so.2" --library-path "$L" "$B/bin/wrk" -t5 -c256 \
        -d${DUR}s --timeout 10s -s "$B/buy.lua" http://127.0.0.1:18990 >"$OUT/wrk-$label.txt" 2>&1)
    local s1; s1=$(cpu_ticks "$spid")
    for pp in $ports; do
        p1+=("$(cpu_ticks "$(ld "$B/bin/redis-cli" -p $pp info server | tr -d '\r' | awk -F: '/^process_id:/ {print $2}')")")
        c1+=("$(ld "$B/bin/redis-cli" -p $pp info commandstats | awk -F'[=,:]' '/^cmdstat_/ {s += $3} END {print s + 0}')")
    done
    n=$(grep -E '^status' "$OUT/wrk-$label.txt" | awk '{s+=$3} END{print s+0}')
    ok=$(awk '/^status 200:/ {print $3}' "$OUT/wrk-$label.txt"); ok=${ok:-0}
    local per="" tot=0 cmds=0
    for i in "${!p0[@]}"; do
        per+=" $(awk -v a=${p0[$i]} -v b=${p1[$i]} -v n=$ok -v hz=$HZ 'BEGIN{printf "%.1f", (b-a)/hz*1e6/(n>0?n:1)}')"
        tot=$((tot + p1[i] - p0[i])); cmds=$((cmds + c1[i] - c0[i]))
    done
    printf '%-16s w=%-2s %s | %s| cpu_us/200 seckilld %s redis all %s per node%s | redis cmds/200 %s\n' "$label" "$w" \
        "$(grep '^p50_ms' "$OUT/wrk-$label.txt")" "$(grep -E '^status' "$OUT/wrk-$label.txt" | tr '\n' ' ')" \
        "$(awk -v a=$s0 -v b=$s1 -v n=$ok -v hz=$HZ 'BEGIN{printf "%.1f", (b-a)/hz*1e6/(n>0?n:1)}')" \
        "$(awk -v t=$tot -v n=$ok -v hz=$HZ 'BEGIN{printf "%.1f", t/hz*1e6/(n>0?n:1)}')" "$per" \
        "$(awk -v c=$cmds -v n=$ok 'BEGIN{if (n > 0) printf "%.2f", c/n; else print "-"}')" | tee -a "$OUT/results.txt"
    kill -TERM $spid 2>/dev/null
    for _ in $(seq 1 50); do kill -0 $spid 2>/dev/null || break; sleep 0.1; done
    kill -9 $spid 2>/dev/null; wait $spid 2>/dev/null
    if [ "$k" = single ]; then redis_down; else cluster_down; fi
}
if [ -n "${CLUSTER:-}" ]; then
    CSCPU="0-$((N - 9))"; CWCPU="$((N - 8))-$((N - 4))" # masters on the last three cores, wrk on the five before
    [ "$N" -ge 16 ] || { CSCPU=0; CWCPU=0; }
    for s in ${CSTRATS:-eval}; do
        for w in ${CWORKERS:-8}; do
            cbench "hot-$s-w$w-single" "$w" "$s" single
            for k in $CLUSTER; do cbench "hot-$s-w$w-k$k" "$w" "$s" "$k"; done
        done
    done
fi

# Redis's own ceiling on this machine, same pinning (REDIS_BENCH=0 skips it)
if [ "${REDIS_BENCH:-1}" = 1 ]; then
    redis_up
    (pin $WCPU "$L/ld-linux-x86-64.so.2" --library-path "$L" "$B/bin/redis-benchmark" -p 16390 -c 256 -n 1000000 -q \
        -t incr --threads 4 2>&1) | tr '\r' '\n' | grep 'requests per second' | tail -n 1 | tee -a "$OUT/results.txt"
    (pin $WCPU "$L/ld-linux-x86-64.so.2" --library-path "$L" "$B/bin/redis-benchmark" -p 16390 -c 256 -n 500000 -q \
        --threads 4 eval "local s=tonumber(redis.call('GET',KEYS[1]) or '1000000000'); redis.call('SET',KEYS[1],s-1); redis.call('HINCRBY',KEYS[2],ARGV[1],1); redis.call('INCR',KEYS[3]); redis.call('HSET',KEYS[4],'a',ARGV[1]); return s" 4 st us so __rand_int__ __rand_int__ 2>&1) | tr '\r' '\n' | grep 'requests per second' | tail -n 1 | sed 's/^.*return s .* __rand_int__: /EVAL buy-like script: /' | tee -a "$OUT/results.txt"
    redis_down
fi
echo "done"
