#!/usr/bin/env bash
# tests/run.sh: run every registered test (the normal build, then the ASan build) against a
# private redis-server, a 3-master Redis Cluster and mariadbd. `make test` (and so CI) calls it after building both trees.
#
# Tests find the services through the environment that tests/harness/services.sh writes
# (SECKILLD_REDIS, SECKILLD_MYSQL, SK_*), and the build tree under test through SK_BUILD_DIR.
# The last line is always "N passed, M failed", summed over both ctest runs. The exit status
# is non-zero if any test failed or a ctest run could not complete.
# `tests/run.sh long` (make test-long) runs only the outage scenarios: at full length on the normal build, and
# under ASan.
#
# Knobs (environment): BUILD, ASAN_BUILD, SVC (services dir), SK_TEST_TIMEOUT (per-test default,
# seconds; a test's own TIMEOUT property wins), CTEST_PARALLEL_LEVEL (read by ctest itself).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

BUILD=${BUILD:-build}
ASAN_BUILD=${ASAN_BUILD:-build-asan}
SVC=${SVC:-$BUILD/services}
TEST_TIMEOUT=${SK_TEST_TIMEOUT:-600}
services=tests/harness/services.sh

# Stop the services however we leave: pass, fail, error, Ctrl-C or SIGTERM from CI.
logs=$(mktemp -d)
trap 'bash "$services" stop "$SVC" || true; rm -rf "$logs"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

passed=0 failed=0 skipped=0 broken=0
CTEST_ARGS=()

# run_ctest DIR: run DIR's tests and add its counts to the totals.
run_ctest() {
    local dir=$1 log rc=0 summary total nfail nskip
    log=$logs/$(basename "$dir").log
    echo "=== ctest in $dir"
    if [ ! -f "$dir/CTestTestfile.cmake" ]; then
        echo "tests/run.sh: $dir has no CTestTestfile.cmake; was it built?" >&2
        broken=1
        return
    fi
    # (Re)start before each run: reuses live services, and revives any that a fault-injection
    # test left down. The env is re-read because a dead service may come back on another port.
    # The Redis Cluster too: e2e/35_redis_cluster and the *_cluster runs of the sale suites use it.
    if ! bash "$services" start "$SVC" || ! bash "$services" cluster-start "$SVC"; then
        echo "tests/run.sh: could not start the test services; no tests were run in $dir" >&2
        broken=1
        return
    fi
    # shellcheck source=/dev/null
    . "$SVC/env"

    SK_BUILD_DIR=$(realpath "$dir") ctest --test-dir "$dir" --output-on-failure \
        --timeout "$TEST_TIMEOUT" "${CTEST_ARGS[@]}" 2>&1 </dev/null | tee "$log" || rc=$?

    # "100% tests passed, 0 tests failed out of 12" (colour codes stripped in case CLICOLOR_FORCE is set).
    summary=$(sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -E '[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' | tail -n 1 || true)
    if [ -n "$summary" ]; then
        total=$(sed -E 's/.* out of ([0-9]+).*/\1/' <<<"$summary")
        nfail=$(sed -E 's/.* ([0-9]+) tests? failed.*/\1/' <<<"$summary")
        # ctest counts a skipped test (SKIP_RETURN_CODE, or a skipped fixture) as passed; we don't.
        nskip=$(grep -cE '^\s*[0-9]+ - .*\(Skipped\)\s*$' "$log" || true)
        passed=$((passed + total - nfail - nskip))
        failed=$((failed + nfail))
        skipped=$((skipped + nskip))
        if [ "$rc" -ne 0 ] && [ "$nfail" -eq 0 ]; then
            echo "tests/run.sh: ctest in $dir exited with status $rc" >&2
            broken=1
        fi
    elif grep -q 'No tests were found' "$log"; then
        echo "tests/run.sh: no tests are registered in $dir"
    else
        echo "tests/run.sh: ctest in $dir exited with status $rc and printed no summary" >&2
        broken=1
    fi
}

# The outage scenarios (e2e/70_books) wait out real outages: `make test` runs them once, on the normal build;
# `make test-long` runs them at full length (SK_LONG=1) on the normal build and at the short length under ASan.
OUTAGES='^e2e/70_books$'
if [ "${1:-}" = long ]; then
    CTEST_ARGS=(-R "$OUTAGES")
    SK_LONG=1 run_ctest "$BUILD"
    SK_LONG=0 run_ctest "$ASAN_BUILD"
else
    run_ctest "$BUILD"
    # the sale's cluster runs (label "cluster") once, on the normal build: under ASan the cluster's C is covered by
    # e2e/35_redis_cluster, and the sale's Lua is the same on both builds
    CTEST_ARGS=(-E "$OUTAGES" -LE '^cluster$')
    run_ctest "$ASAN_BUILD"
fi

# Stop now rather than in the EXIT trap, so that the summary really is the last line.
bash "$services" stop "$SVC" || true
[ "$skipped" -eq 0 ] || echo "$skipped skipped (see 'The following tests did not run' above)"
[ "$broken" -eq 0 ] || echo "tests/run.sh: at least one ctest run did not complete (see above)"
echo "$passed passed, $failed failed"
if [ "$failed" -ne 0 ] || [ "$broken" -ne 0 ]; then
    exit 1
fi
