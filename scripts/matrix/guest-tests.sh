#!/usr/bin/env bash
# Runs inside a matrix VM (chrooted into the host's root): each test of tests.tsv, one at a
# time, as the host would. Writes results.tsv (mode, test, result, seconds) and one log per test
# into the results folder given as $1; bins.tsv there maps test binaries to their executables.
set -u
out=${1:?usage: guest-tests.sh RESULTS_DIR}
here=$(dirname "$(realpath "$0")")
declare -A bin=()
while IFS=$'\t' read -r name exe; do bin[$name]=$exe; done <"$out/bins.tsv"
: >"$out/results.tsv"
echo "kernel $(uname -r), $(nproc) CPUs"
while IFS=$'\t' read -r mode binary test; do
    case "$mode" in '#'* | '') continue ;; esac
    exe=${bin[$binary]:-}
    log=$out/$binary.$test.log
    start=$(date +%s)
    if [ -z "$exe" ]; then
        result="fail (test binary $binary not built)"
    elif timeout -k 5 "${RSEQ_TRACE_MATRIX_TEST_TIMEOUT:-240}" "$exe" --exact "$test" \
        --test-threads=1 --nocapture >"$log" 2>&1; then
        if grep -q "skipped: " "$log"; then
            result="skip ($(grep -m1 -o 'skipped: .*' "$log" | cut -c10-130))"
        elif grep -q "test result: ok. 1 passed" "$log"; then
            result=pass
        else
            result="fail (test not found)"
        fi
    else
        status=$?
        why=$(grep -m1 -A1 "panicked at" "$log" | tail -1 | cut -c1-140)
        [ "$status" -ne 124 ] || why="timed out"
        result="fail (${why:-exit $status})"
    fi
    secs=$(($(date +%s) - start))
    printf '%s\t%s::%s\t%s\t%s\n' "$mode" "$binary" "$test" "$result" "$secs" >>"$out/results.tsv"
    echo "$mode $binary::$test: $result (${secs}s)"
done <"$here/tests.tsv"
