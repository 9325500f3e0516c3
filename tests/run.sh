#!/usr/bin/env bash
# tests/run.sh: run every registered test (the normal build, then the ASan build) against a
# private redis-server, a 3-master Redis Cluster and mariadbd. `make test` (and so CI) calls it after building both trees.
#
# Tests find the services through the environment that tests/harness/services.sh writes
# (SECKILLD_REDIS, SECKILLD_MYSQL, SK_*), and the build tree under test through SK_BUILD_DIR.
# The last line is always "N passed, M failed", summed over the ctest runs (the fuzz targets' short runs in FUZZ_BUILD,
# tests/fuzz, included). The exit status
# is non-zero if any test failed or a ctest run could not complete.
# `tests/run.sh long` (make test-long) runs only the outage scenarios: at full length on the normal build, and
# under ASan.
#
# Knobs (environment): BUILD, ASAN_BUILD, SVC (services dir), SVC_OUTAGES (the outage scenarios' own services dir),
# SK_TEST_PARALLEL (1, the default: the normal build's run, the ASan run and the outage scenarios at once, each on
# services of its own: SVC, SVC_ASAN, SVC_OUTAGES; 0: one after the other on SVC),
# SK_TEST_TIMEOUT (per-test default, seconds; a test's own TIMEOUT property wins), CTEST_PARALLEL_LEVEL (read by
# ctest itself).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

BUILD=${BUILD:-build}
ASAN_BUILD=${ASAN_BUILD:-build-asan}
FUZZ_BUILD=${FUZZ_BUILD:-build-fuzz}
SVC=${SVC:-$BUILD/services}
SVC_OUTAGES=${SVC_OUTAGES:-$SVC-outages}
SVC_ASAN=${SVC_ASAN:-$SVC-asan}
PARALLEL=${SK_TEST_PARALLEL:-1}
TEST_TIMEOUT=${SK_TEST_TIMEOUT:-600}
services=tests/harness/services.sh

# Stop the services however we leave: pass, fail, error, Ctrl-C or SIGTERM from CI (and a ctest run still going in
# the background: our own job).
logs=$(mktemp -d)
bg=
stop_all() {
    local d
    for d in "$SVC" "$SVC_OUTAGES" "$SVC_ASAN"; do
        [ ! -d "$d" ] || bash "$services" stop "$d" || true
    done
}
cleanup() {
    [ -z "$bg" ] || kill $bg 2>/dev/null || true
    stop_all
    rm -rf "$logs"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

passed=0 failed=0 skipped=0 broken=0

# run_ctest NAME DIR SVCDIR [ctest args...]: (re)starts the services in SVCDIR and runs DIR's tests against them;
# the output goes to stdout and to $logs/NAME.log, ctest's status to $logs/NAME.rc. `tally NAME DIR` counts it.
run_ctest() {
    local name=$1 dir=$2 svc=$3 rc=0
    shift 3
    echo "=== ctest in $dir${*:+ ($*)}"
    if [ ! -f "$dir/CTestTestfile.cmake" ]; then
        echo "tests/run.sh: $dir has no CTestTestfile.cmake; was it built?" >&2
        echo broken >"$logs/$name.rc"
        return
    fi
    # (Re)start before each run: reuses live services, and revives any that a fault-injection
    # test left down. The env is re-read because a dead service may come back on another port.
    # The Redis Cluster too (e2e/35_redis_cluster and the *_cluster runs of the sale suites use it), except for the
    # outage scenarios' own services (CLUSTER=0): they use the single redis-server only.
    if ! bash "$services" start "$svc" || { [ "${CLUSTER:-1}" = 1 ] && ! bash "$services" cluster-start "$svc"; }; then
        echo "tests/run.sh: could not start the test services in $svc; no tests were run in $dir" >&2
        echo broken >"$logs/$name.rc"
        return
    fi
    # shellcheck source=/dev/null
    (. "$svc/env" && SK_BUILD_DIR=$(realpath "$dir") ctest --test-dir "$dir" --output-on-failure \
        --timeout "$TEST_TIMEOUT" "$@" 2>&1 </dev/null) | tee "$logs/$name.log" || rc=$?
    echo "$rc" >"$logs/$name.rc"
}

# run_fuzz NAME DIR: the fuzz targets' short runs (tests/fuzz/fuzz.cmake: seeds, regressions, a few seconds of
# mutation each), two at a time; no services. Same log and status files as run_ctest, for tally.
run_fuzz() {
    local name=$1 dir=$2 rc=0
    echo "=== ctest in $dir (the fuzz targets, a few seconds each)"
    if [ ! -f "$dir/CTestTestfile.cmake" ]; then
        echo "tests/run.sh: $dir has no CTestTestfile.cmake; was it built (make fuzz-build)?" >&2
        echo broken >"$logs/$name.rc"
        return
    fi
    ctest --test-dir "$dir" --output-on-failure -j2 --timeout "$TEST_TIMEOUT" 2>&1 </dev/null | tee "$logs/$name.log" || rc=$?
    echo "$rc" >"$logs/$name.rc"
}

tally() {
    local name=$1 dir=$2 log=$logs/$1.log rc summary total nfail nskip
    rc=$(cat "$logs/$name.rc" 2>/dev/null || echo broken)
    if [ "$rc" = broken ]; then
        broken=1
        return
    fi
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

# The outage scenarios (e2e/70_books, e2e/71_life_faults, e2e/73_queue_faults) wait out real outages: `make test` runs them once, on the normal build;
# `make test-long` runs them at full length (SK_LONG=1) on the normal build and at the short length under ASan.
# They stop and restart MySQL and Redis, so beside another run they get services of their own (SVC_OUTAGES); most of
# their time is spent waiting, which the ASan run uses.
# Tests labelled normal-only (tests/tests.cmake: what they check is script behaviour, packaging or documents, and the C
# paths they pass through run under ASan in other tests) run on the normal build only; so do the sale's cluster runs
# (label "cluster"): under ASan the cluster's C is covered by e2e/35_redis_cluster, and the sale's Lua is the same on
# both builds.
OUTAGES='^e2e/(70_books|71_life_faults|73_queue_faults)$'
# beside the outage scenarios, in their run (one after the other on their services), the normal build's cluster tests:
# the three runs then take about as long as each other (the normal run alone was the longest by ~5 minutes)
SECOND='^e2e/(70_books|71_life_faults|73_queue_faults|35_redis_cluster|36_cluster_failover|66_cluster_reshard|[0-9]+_[a-z_]+_cluster)$'
NOT_UNDER_ASAN='^(cluster|normal-only)$'
if [ "${1:-}" = long ] && [ "$PARALLEL" = 1 ]; then
    # the two at once, each on services of its own (they stop and restart them)
    bash "$services" start "$SVC" >/dev/null && bash "$services" start "$SVC_ASAN" >/dev/null ||
        echo "tests/run.sh: starting the services failed; the runs below say which" >&2
    CLUSTER=0 SK_LONG=0 run_ctest long-asan "$ASAN_BUILD" "$SVC_ASAN" -j1 -R "$OUTAGES" >"$logs/long-asan.out" 2>&1 &
    bg=$!
    CLUSTER=0 SK_LONG=1 run_ctest long "$BUILD" "$SVC" -j1 -R "$OUTAGES"
    echo "=== waiting for the outage scenarios under ASan (services in $SVC_ASAN)"
    wait $bg || true
    bg=
    cat "$logs/long-asan.out"
    tally long "$BUILD"
    tally long-asan "$ASAN_BUILD"
elif [ "${1:-}" = long ]; then
    SK_LONG=1 run_ctest long "$BUILD" "$SVC" -R "$OUTAGES"
    tally long "$BUILD"
    SK_LONG=0 run_ctest long-asan "$ASAN_BUILD" "$SVC" -R "$OUTAGES"
    tally long-asan "$ASAN_BUILD"
elif [ "$PARALLEL" = 1 ]; then
    # The three runs at once, each on services of its own: most of an e2e test's time is spent waiting (outages,
    # timeouts, a consumer catching up), which the others use; the tests wait for states, not for the clock, so a
    # loaded machine only makes them slower. The services are started one dir at a time first (each start picks
    # free ports), then each run reuses its own.
    bash "$services" start "$SVC" >/dev/null && bash "$services" cluster-start "$SVC" >/dev/null &&
        bash "$services" start "$SVC_ASAN" >/dev/null && bash "$services" cluster-start "$SVC_ASAN" >/dev/null &&
        bash "$services" start "$SVC_OUTAGES" >/dev/null && bash "$services" cluster-start "$SVC_OUTAGES" >/dev/null ||
        echo "tests/run.sh: starting the services failed; the runs below say which" >&2
    run_ctest normal "$BUILD" "$SVC" -E "$SECOND" >"$logs/normal.out" 2>&1 &
    bg=$!
    # -j1 whatever CTEST_PARALLEL_LEVEL says: the outage scenarios stop the services the others use
    run_ctest outages "$BUILD" "$SVC_OUTAGES" -j1 -R "$SECOND" >"$logs/outages.out" 2>&1 &
    bg="$bg $!"
    run_ctest asan "$ASAN_BUILD" "$SVC_ASAN" -E "$OUTAGES" -LE "$NOT_UNDER_ASAN"
    echo "=== waiting for the normal build's run (services in $SVC) and the outage scenarios with the cluster tests" \
        "(in $SVC_OUTAGES)"
    wait $bg || true
    bg=
    cat "$logs/normal.out" "$logs/outages.out"
    run_fuzz fuzz "$FUZZ_BUILD" # alone: nothing else runs now
    tally normal "$BUILD"
    tally outages "$BUILD"
    tally asan "$ASAN_BUILD"
    tally fuzz "$FUZZ_BUILD"
else
    run_ctest normal "$BUILD" "$SVC"
    tally normal "$BUILD"
    run_ctest asan "$ASAN_BUILD" "$SVC" -E "$OUTAGES" -LE "$NOT_UNDER_ASAN"
    tally asan "$ASAN_BUILD"
    run_fuzz fuzz "$FUZZ_BUILD"
    tally fuzz "$FUZZ_BUILD"
fi

# Stop now rather than in the EXIT trap, so that the summary really is the last line.
stop_all
[ "$skipped" -eq 0 ] || echo "$skipped skipped (see 'The following tests did not run' above)"
[ "$broken" -eq 0 ] || echo "tests/run.sh: at least one ctest run did not complete (see above)"
echo "$passed passed, $failed failed"
if [ "$failed" -ne 0 ] || [ "$broken" -ne 0 ]; then
    exit 1
fi
