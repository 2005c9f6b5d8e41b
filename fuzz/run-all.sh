#!/usr/bin/env bash
# Runs every fuzz target, one after the other, for a number of executions
# or a time budget, whichever ends first, and prints a table: target,
# executions, seconds, executions per second. Fails on the first crash
# (the input is kept in fuzz/artifacts/TARGET/).
#
#   fuzz/run-all.sh [RUNS] [SECONDS_PER_TARGET]     defaults: 10000000 600
#   TARGETS="connection group_open" fuzz/run-all.sh ...   only these targets
#
# New inputs go to a scratch directory; the committed seed corpus in
# fuzz/corpus/TARGET is only read, unless SEEDS=N is set: then the N
# smallest new inputs of each target are added to it (how the committed
# seeds were made).
set -euo pipefail
cd "$(dirname "$0")"
runs="${1:-10000000}"
seconds="${2:-600}"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cargo fuzz build --sanitizer none >/dev/null
printf '%-22s %12s %8s %10s\n' target executions seconds exec/s
for target in ${TARGETS:-$(cargo fuzz list)}; do
    mkdir -p "corpus/$target" "$scratch/$target"
    start=$SECONDS
    if ! cargo fuzz run --sanitizer none "$target" "$scratch/$target" "corpus/$target" -- \
        -runs="$runs" -max_total_time="$seconds" -print_final_stats=1 \
        >"$scratch/$target.log" 2>&1; then
        tail -n 40 "$scratch/$target.log"
        echo "fuzz target $target FAILED"
        exit 1
    fi
    took=$((SECONDS - start))
    if [ -n "${SEEDS:-}" ]; then
        # The smallest inputs that found new coverage, as committed seeds.
        # (awk reads all its input: `head` would make `sort` die of SIGPIPE,
        # which pipefail turns into the end of this script.)
        find "$scratch/$target" -type f -size -4k -printf '%s %p\n' | sort -n |
            awk -v n="$SEEDS" 'NR <= n { print $2 }' | while read -r f; do cp "$f" "corpus/$target/"; done
    fi
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$scratch/$target.log" | grep -o '[0-9]*$')
    printf '%-22s %12s %8s %10s\n' "$target" "$execs" "$took" "$((execs / (took > 0 ? took : 1)))"
done
