#!/usr/bin/env bash
# tests/bench/run.sh: `make bench`. A placeholder for now: it brings up the same private
# services as the tests, so the benchmarks have somewhere to start from, and stops them again.
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

echo "no benchmarks yet"
