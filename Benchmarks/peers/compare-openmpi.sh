#!/usr/bin/env bash
# Chorus against Open MPI (TCP, loopback), a collective (f32 sum), in one interleaved run: for each world
# size, ROUNDS alternating runs of chorus-bench and of MPI_Allreduce, after a barrier and a gap before
# each call and back to back; prints the median over rounds of each run's median time and CPU per call.
# Results are checked apart from the timing: one chorus-bench --check run per world size (checking
# every call between timed calls slows the next call of both builds of Chorus 2-3x at 4 peers, 64 KiB
# and up, likely the cache the check sweeps), and the MPI program checks the last call of each size.
# Both launchers bind each rank to a core when the ranks fit in the cores (mpirun's default,
# chorus-bench's --bind-to core): on this 2-core machine 2 peers are bound, 4 are not.
# Usage: compare-openmpi.sh [ROUNDS] [GAP_MS] [PEERS...]   (defaults: 3 rounds, 5 ms, 2 and 4 peers)
#   COLLECTIVE (environment): allreduce (default), reducescatter, allgather, broadcast, allscan
#   (against MPI_Scan) or barrier, with chorus-bench's size conventions on both sides.
# Build first: swift build -c release
set -euo pipefail
rounds=${1:-3} gap=${2:-5} collective=${COLLECTIVE:-allreduce}
shift $(( $# > 2 ? 2 : $# ))
peers=("$@"); [ ${#peers[@]} -gt 0 ] || peers=(2 4)
here=$(cd "$(dirname "$0")" && pwd)
bench=$here/../../.build/release/chorus-bench
[ -x "$bench" ] || { echo "build first: swift build -c release" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mpicc -O2 -o "$work/openmpi_bench" "$here/openmpi_bench.c"
sweep=(-b 4K -e 1M -f 16 -n 200 -w 20)
for p in "${peers[@]}"; do
    for r in $(seq "$rounds"); do
        for pacing in gap b2b; do
            if [ $pacing = gap ]; then cb=(--gap-ms "$gap"); mp=(-g "$gap"); else cb=(); mp=(); fi
            "$bench" "$collective" --local "$p" "${sweep[@]}" "${cb[@]}" 2>/dev/null | awk -v p="$p" -v k="chorus $pacing" \
                '$1 ~ /^[0-9]+$/ { print k, p, $1, $5, $8, "unchecked" }' >> "$work/rows"
            mpirun --allow-run-as-root --oversubscribe -np "$p" --mca btl tcp,self --mca btl_tcp_if_include lo \
                --mca oob_tcp_if_include lo "$work/openmpi_bench" -c "$collective" "${sweep[@]}" "${mp[@]}" 2>/dev/null | awk -v p="$p" -v k="openmpi $pacing" \
                '$1 ~ /^[0-9]+$/ { print k, p, $1, $2, $3, $6 }' >> "$work/rows"
        done
    done
    "$bench" "$collective" --local "$p" "${sweep[@]}" --gap-ms "$gap" --check 2>/dev/null | awk -v p="$p" \
        '$1 ~ /^[0-9]+$/ { print "chorus check", p, $1, "nan", "nan", $11 }' >> "$work/rows"
done
python3 - "$work/rows" "$rounds" "$gap" "$collective" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
print(f"{sys.argv[4]} f32 sum, loopback; medians over {sys.argv[2]} rounds of each run's median (slowest rank), "
      f"CPU per call (busiest rank); gap = barrier + {sys.argv[3]} ms idle before each call")
print(f"{'peers':>5} {'pacing':>6} {'bytes':>8} | {'chorus us':>9} {'cpu':>6} | {'openmpi us':>10} {'cpu':>6} | {'ratio':>5} | wrong")
keys = sorted({(int(r[2]), r[1], int(r[3])) for r in rows if r[1] != "check"}, key=lambda k: (k[0], k[1] != "gap", k[2]))
for peers, pacing, size in keys:
    def pick(lib, col):
        vals = [float(r[col]) for r in rows if r[0] == lib and r[1] == pacing and int(r[2]) == peers and int(r[3]) == size]
        return statistics.median(vals) if vals else float("nan")
    wrong = {r[0] + ":" + r[6] for r in rows if r[1] in (pacing, "check") and int(r[2]) == peers and int(r[3]) == size
             and r[6] not in ("0", "N/A", "unchecked")}
    c, cc, m, mc = pick("chorus", 4), pick("chorus", 5), pick("openmpi", 4), pick("openmpi", 5)
    print(f"{peers:>5} {pacing:>6} {size:>8} | {c:>9.1f} {cc:>6.1f} | {m:>10.1f} {mc:>6.1f} | {c / m:>5.2f} | {' '.join(sorted(wrong)) or 'none'}")
PY
