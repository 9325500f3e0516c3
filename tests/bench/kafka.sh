#!/usr/bin/env bash
# Issue 5's benchmark: produce throughput through a Lua route where every request waits for its delivery report,
# vs `kcat -P` producing the same number of messages of the same size (idempotent, acks=all, like seckilld) to the
# same standalone mock cluster, in one run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
. tests/bench/lib.sh

conns=${BENCH_CONNECTIONS:-64}
size=${BENCH_KAFKA_SIZE:-100}
topic=seckill.bench
tmp=$(mktemp -d)
mock_pid=
cleanup() {
    [ -n "${SK_PID:-}" ] && stop_seckilld
    [ -n "$mock_pid" ] && kill -TERM "$mock_pid" 2>/dev/null && wait "$mock_pid" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT

# a standalone mock shared by both producers; it prints its bootstrap list (the ports are not choosable)
SECKILLD_TOPIC=$topic "${BUILD:-build}/seckilld" --kafka-mock "$tmp/bootstraps" </dev/null >/dev/null 2>"$tmp/mock.log" &
mock_pid=$!
for _ in $(seq 1 100); do [ -s "$tmp/bootstraps" ] && break; sleep 0.05; done
bs=$(cat "$tmp/bootstraps")

printf '\n== kafka: produce through a Lua route (1 delivery report per request) vs kcat -P, %s-byte messages\n' "$size"
SECKILLD_KAFKA=$bs SECKILLD_TOPIC=$topic start_seckilld tests/bench/scripts/kafka "$(nproc)"
body=$(head -c "$size" </dev/zero | tr '\0' x)
cat >"$tmp/post.lua" <<LUA
wrk.method = "POST"
wrk.body = "$body"
LUA
t0=$(date +%s.%N)
read -r rps p50 p99 non2xx < <(wrk_run "http://127.0.0.1:$SK_PORT/one" "$conns" -s "$tmp/post.lua")
t1=$(date +%s.%N)
count=$(curl -s "http://127.0.0.1:$SK_PORT/metrics" | awk '/^seckilld_kafka_produced_total\{result="ok"\}/ { print $2 }')
count=${count%.*}
stop_seckilld
SK_PID=

# the same number of messages of the same size, one per line
head -c "$size" </dev/zero | tr '\0' x | awk -v n="$count" '{ for (i = 0; i < n; i++) print substr($0, 1, length($0) - 1) }' >"$tmp/msgs"
k0=$(date +%s.%N)
kcat -P -b "$bs" -t "$topic" -X enable.idempotence=true -X acks=all -X linger.ms=5 -l "$tmp/msgs" 2>"$tmp/kcat.err" ||
    { echo "kcat failed:"; cat "$tmp/kcat.err"; exit 1; }
k1=$(date +%s.%N)
awk -v n="$count" -v r="$rps" -v p50="$p50" -v p99="$p99" -v bad="$non2xx" -v t0="$t0" -v t1="$t1" -v k0="$k0" -v k1="$k1" \
    -v c="$conns" 'BEGIN {
    printf "%-34s %10s %10s %9s %9s\n", "producer", "messages", "msg/s", "p50_ms", "p99_ms"
    printf "%-34s %10d %10.0f %9s %9s\n", "seckilld Lua route, " c " conns", n, r, p50, p99
    printf "%-34s %10d %10.0f %9s %9s\n", "kcat -P (same count and size)", n, n / (k1 - k0), "-", "-"
    printf "route/kcat ratio: %.2f   (non-2xx answers: %d)\n", r / (n / (k1 - k0)), bad
}'
