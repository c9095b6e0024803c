#!/usr/bin/env bash
# Two builds of chorus-bench side by side: alternating runs of the same all-reduce sweep, optionally
# beside busy-looping processes that compete for the cores, and the medians of each build's median
# time and CPU per call.
# Usage: Benchmarks/compare-builds.sh OLD_BENCH NEW_BENCH [PEERS] [HOGS] [ROUNDS] [GAP_MS]
#   OLD_BENCH/NEW_BENCH: chorus-bench binaries (copy .build/release/chorus-bench aside per build)
#   PEERS (2), HOGS: busy-looping shells for the whole comparison (0), ROUNDS per build (5),
#   GAP_MS: a barrier and this idle gap before every timed call (none: back to back).
#   BENCH_ARGS (environment): more chorus-bench options for both builds, e.g. "--transport shm".
set -euo pipefail
old=$1 new=$2 peers=${3:-2} hogs=${4:-0} rounds=${5:-5} gap=${6:-}
results=$(mktemp)
hog_pids=()
cleanup() {
    for pid in "${hog_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -f "$results"
}
trap cleanup EXIT
for _ in $(seq 1 "$hogs"); do sh -c 'while :; do :; done' & hog_pids+=($!); done
for _ in $(seq 1 "$rounds"); do
    for build in old new; do
        bench=$old
        [ "$build" = new ] && bench=$new
        # Columns: size, count, type, redop, time(us), min, p99, cpu(us), ...
        "$bench" allreduce --local "$peers" -b 4K -e 1M -f 16 -n 100 -w 10 ${gap:+--gap-ms "$gap"} ${BENCH_ARGS:-} 2>/dev/null |
            awk -v build="$build" '/^ +[0-9]/ { print build, $1, $5, $8 }' >> "$results"
    done
done
python3 - "$results" <<'EOF'
import collections, statistics, sys
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    build, size, time_us, cpu_us = line.split()
    runs[(build, int(size))].append((float(time_us), float(cpu_us)))
for size in sorted({size for _, size in runs}):
    def median(build, column): return statistics.median(run[column] for run in runs[(build, size)])
    print(f"{size:>9} B: old {median('old', 0):9.1f} us (cpu {median('old', 1):8.1f})"
          f"   new {median('new', 0):9.1f} us (cpu {median('new', 1):8.1f})")
EOF
