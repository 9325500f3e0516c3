#!/usr/bin/env bash
# Issue 4's benchmark, in one run against the harness's mariadbd: one primary-key SELECT per request through a Lua
# route (HTTP + Lua + the pooled non-blocking driver) vs `mariadb-slap` sending the same statement from as many
# client connections as wrk has: queries/s of each and the ratio.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
. tests/bench/lib.sh

: "${SK_MYSQL_PORT:?run through tests/bench/run.sh (it starts the services)}"
conns=${BENCH_CONNECTIONS:-16}
workers=${BENCH_WORKERS:-$(nproc)}
pool=$(((conns + workers - 1) / workers)) # per worker, so MariaDB sees as many sessions as mariadb-slap opens
queries=${BENCH_SLAP_QUERIES:-200000}
scripts=tests/e2e/scripts/mysql
db() { mariadb --no-defaults -h127.0.0.1 -P"$SK_MYSQL_PORT" -useckill -pseckill seckill "$@"; }

db -e "CREATE TABLE IF NOT EXISTS t_bench (id INT PRIMARY KEY, v VARCHAR(64)) ENGINE=InnoDB;
       INSERT IGNORE INTO t_bench SELECT seq, CONCAT('value-', seq) FROM seq_1_to_1000;"

conf=$(mktemp --suffix=.conf)
trap 'rm -f "$conf"; [ -n "${SK_PID:-}" ] && stop_seckilld' EXIT
printf 'return { mysql = { pool_size = %d, schema = "%s/conf/schema.sql" } }\n' "$pool" "$PWD" >"$conf"
SK_PORT=$(free_port)
env SECKILLD_LISTEN=127.0.0.1:$SK_PORT SECKILLD_WORKERS="$workers" SECKILLD_SCRIPTS="$scripts" \
    SECKILLD_KAFKA=${SECKILLD_KAFKA:-embedded} SECKILLD_LOG_LEVEL=warn \
    "${BUILD:-build}/seckilld" -c "$conf" >"${BENCH_LOG:-/dev/null}" 2>&1 &
SK_PID=$!
for _ in $(seq 1 200); do
    curl -s -o /dev/null "http://127.0.0.1:$SK_PORT/ping" && break
    sleep 0.05
done
curl -sf "http://127.0.0.1:$SK_PORT/bench/42" | grep -q 'value-42' || { echo "bench: /bench/42 does not answer" >&2; exit 1; }

printf '\n== mysql: one primary-key SELECT per request through a Lua route vs mariadb-slap, %d connections\n' "$conns"
printf '   (%d workers x pool_size %d)\n' "$workers" "$pool"
read -r rps p50 p99 bad < <(wrk_run "http://127.0.0.1:$SK_PORT/bench/42" "$conns")
# mariadb-slap reports the average seconds to run all the queries of one iteration
slap_s=$(mariadb-slap --no-defaults -h127.0.0.1 -P"$SK_MYSQL_PORT" -useckill -pseckill --create-schema=seckill --no-drop \
    --concurrency="$conns" --iterations=1 --number-of-queries="$queries" \
    --query="SELECT id, v FROM t_bench WHERE id = 42" 2>/dev/null |
    awk '/Average number of seconds to run all queries/ { print $(NF-1) }')
printf '%-44s %10s %9s %9s\n' "client" "queries/s" "p50_ms" "p99_ms"
printf '%-44s %10s %9s %9s\n' "seckilld route (HTTP + Lua + SELECT)" "$rps" "$p50" "$p99"
awk -v q="$queries" -v s="$slap_s" 'BEGIN { printf "%-44s %10.0f %9s %9s\n", "mariadb-slap (blocking C client)", q / s, "-", "-" }'
awk -v a="$rps" -v q="$queries" -v s="$slap_s" -v bad="$bad" \
    'BEGIN { printf "route/mariadb-slap ratio: %.2f   (non-2xx answers: %d)\n", a / (q / s), bad }'
