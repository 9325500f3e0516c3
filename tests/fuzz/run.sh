#!/usr/bin/env bash
# tests/fuzz/run.sh BINARY NAME SECONDS: runs one libFuzzer target (tests/fuzz/NAME.c, built as BINARY in the build-fuzz
# tree) over its seeds (tests/fuzz/corpus/NAME) and its regressions (tests/fuzz/regressions/NAME: every crash found
# so far, kept), then mutates for SECONDS under ASan/UBSan. New inputs that reach new code go to a working corpus
# beside the binary (corpus/NAME in the build tree, kept between runs); the tree's seeds are never written.
# Prints one line, "fuzz/NAME: ok, R runs in S s (E exec/s), cov C, ft F, corpus K", or the crash and the file holding
# its input, and exits non-zero on a crash.
# FUZZ_ARTIFACTS: where a crash's input is written (default: the build tree's artifacts/NAME; `make fuzz` names
# tests/fuzz/regressions/NAME, so that a crash found is kept as a regression case once its bug is fixed).
set -uo pipefail
bin=$1 name=$2 seconds=$3
src=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
build=$(cd "$(dirname "$bin")" && pwd)
work=$build/corpus/$name
artifacts=${FUZZ_ARTIFACTS:-$build/artifacts/$name}
mkdir -p "$work" "$artifacts"
dirs=("$work")
for d in "$src/corpus/$name" "$src/regressions/$name"; do
    [ ! -d "$d" ] || dirs+=("$d")
done
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# -timeout: an input running 10 s is a hang (reported as a crash); -rss_limit_mb: 2 GiB is a leak or a bomb
ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0} UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
    "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$artifacts/" \
    "${dirs[@]}" >"$log" 2>&1
rc=$?
stat() { sed -nE "s/^stat::$1: *([0-9]+).*/\1/p" "$log" | tail -n 1; }
last=$(grep -E '^#[0-9]+' "$log" | tail -n 1)
field() { sed -nE "s/.* $1: ([0-9]+).*/\1/p" <<<"$last"; }
if [ "$rc" -eq 0 ]; then
    echo "fuzz/$name: ok, $(stat number_of_executed_units) runs in ${seconds}s" \
        "($(stat average_exec_per_sec) exec/s), cov $(field cov), ft $(field ft), corpus $(field corp | head -n 1)," \
        "peak rss $(stat peak_rss_mb) MB"
    exit 0
fi
# the sanitizer's or libFuzzer's report, and where the input went
# (the stack without libFuzzer's and libc's frames)
grep -E '^(==[0-9]+==ERROR|SUMMARY|fuzz:|.*runtime error:|    #[0-9]+ |[[:space:]].*\.lua:)' "$log" | grep -vE 'fuzzer::|libc\.so|libc-start|sanitizer_|/nptl/|raise\.c|abort\.c| in _start' | head -n 40
crash=$(sed -nE 's/.*Test unit written to (.*)$/\1/p' "$log" | tail -n 1)
echo "fuzz/$name: FAILED (exit $rc)${crash:+, input in $crash}"
exit 1
