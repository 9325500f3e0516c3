#!/usr/bin/env bash
# tests/soak/run.sh: `make soak` (not in CI). Starts private services of its own ($BUILD/services-soak, so a test
# or bench run beside it keeps its own), runs tests/soak/soak.py against them, stops them again.
# SOAK_SECONDS (default 1800) and the other SOAK_* knobs are soak.py's (see its docstring).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

BUILD=${BUILD:-build}
SOAK_SVC=${SOAK_SVC:-$BUILD/services-soak}
services=tests/harness/services.sh

trap 'bash "$services" stop "$SOAK_SVC" || true' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

bash "$services" start "$SOAK_SVC"
# shellcheck source=/dev/null
. "$SOAK_SVC/env"
SK_BUILD_DIR=$(realpath "$BUILD") python3 tests/soak/soak.py
