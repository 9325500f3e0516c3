#!/usr/bin/env bash
# tests/bench/run.sh: `make bench`. Brings up the same private services as the tests, runs every
# benchmark part (each prints its figures beside a baseline measured in the same run), stops them again.
# BENCH_PARTS="core redis" runs a subset; BENCH_SECONDS sets each wrk run's length.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

BUILD=${BUILD:-build}
SVC=${SVC:-$BUILD/services}
services=tests/harness/services.sh

trap 'bash "$services" stop "$SVC" || true' EXIT
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
