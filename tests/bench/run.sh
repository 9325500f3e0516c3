#!/usr/bin/env bash
# tests/bench/run.sh: `make bench`. Brings up the same private services as the tests, runs every
# benchmark part (each prints its figures beside a baseline measured in the same run), stops them again.
# BENCH_PARTS="core redis" runs a subset; BENCH_SECONDS sets each wrk run's length.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

BUILD=${BUILD:-build}
SVC=${SVC:-$BUILD/services}
services=tests/harness/services.sh

# The kernel's group scheduling of sessions (kernel.sched_autogroup_enabled: one group per session, and the services
# run in sessions of their own) was seen here to leave redis-server, mariadbd and even ksoftirqd runnable but not run
# for up to a second while seckilld and wrk filled both cores: the ladder's 1 s tail (README, "The stall"). The
# bench measures seckilld, so while it runs it turns that grouping off when it may, says so, and turns it back on
# at the end. BENCH_AUTOGROUP=keep leaves it as it is (the ladder's redis_max column then shows the stall).
autogroup=/proc/sys/kernel/sched_autogroup_enabled
autogroup_was=
if [ "${BENCH_AUTOGROUP:-off}" != keep ] && [ -w "$autogroup" ] && [ "$(cat "$autogroup")" = 1 ]; then
    echo 0 >"$autogroup" && autogroup_was=1 &&
        echo "(bench: kernel.sched_autogroup_enabled turned off while the bench runs; BENCH_AUTOGROUP=keep leaves it on)"
fi
trap 'bash "$services" stop "$SVC" || true; [ -z "$autogroup_was" ] || echo "$autogroup_was" >"$autogroup"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

bash "$services" start "$SVC"
# shellcheck source=/dev/null
. "$SVC/env"

for part in ${BENCH_PARTS:-core redis mysql kafka sale admission lifecycle queue cluster ladder instructions}; do
    if [ -f "tests/bench/$part.sh" ]; then
        bash "tests/bench/$part.sh"
    else
        echo "(bench part $part not present)"
    fi
done
