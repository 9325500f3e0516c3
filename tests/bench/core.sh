#!/usr/bin/env bash
# Issue 2's benchmark: a trivial Lua route vs the same answer from a C-only route in the same binary, in one run,
# at 1 worker and at one worker per core.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
. tests/bench/lib.sh

conns=${BENCH_CONNECTIONS:-64}
printf '\n== core: Lua route vs C route (wrk, %s connections, %ss each)\n' "$conns" "$BENCH_SECONDS"
printf '%-8s %-10s %12s %9s %9s\n' workers route req/s p50_ms p99_ms
for workers in 1 "$(nproc)"; do
    start_seckilld tests/bench/scripts/hello "$workers"
    read -r c_rps c_p50 c_p99 _ < <(wrk_run "http://127.0.0.1:$SK_PORT/_c/hello" "$conns")
    read -r l_rps l_p50 l_p99 _ < <(wrk_run "http://127.0.0.1:$SK_PORT/hello" "$conns")
    stop_seckilld
    printf '%-8s %-10s %12s %9s %9s\n' "$workers" "C" "$c_rps" "$c_p50" "$c_p99"
    printf '%-8s %-10s %12s %9s %9s\n' "$workers" "Lua" "$l_rps" "$l_p50" "$l_p99"
    awk -v l="$l_rps" -v c="$c_rps" -v w="$workers" 'BEGIN { printf "%-8s Lua/C ratio: %.2f\n", w, l / c }'
done
