#!/usr/bin/env bash
# Chorus over shared memory, Chorus over TCP loopback, and Open MPI over its shared-memory transport
# (--mca btl vader,self), 2-peer all-reduce f32 sum, in one interleaved run: ROUNDS alternating runs
# of each, back to back (barrier, then each timed call; slowest rank). Results are checked apart from
# the timing, as in compare-openmpi.sh: one chorus-bench --check run per transport (checking 256 MiB
# between timed calls takes the cores from both peers), and the MPI program checks its last call.
# Prints the median busbw (GB/s) per size over the rounds, and the wrong counts.
# Usage: compare-shm.sh [ROUNDS]   (default 3). Build first: swift build -c release
set -euo pipefail
rounds=${1:-3}
here=$(cd "$(dirname "$0")" && pwd)
bench=$here/../../.build/release/chorus-bench
[ -x "$bench" ] || { echo "build first: swift build -c release" >&2; exit 1; }
work=$(mktemp -d)
# On a failure, the peers' last words (their stderr, without the warning every run without a secret prints).
trap 'status=$?; [ $status -eq 0 ] || grep -hv "no shared secret" "$work"/*.err 2>/dev/null | tail -20 >&2; rm -rf "$work"' EXIT
mpicc -O2 -o "$work/openmpi_bench" "$here/openmpi_bench.c"
sweep=(-b 1M -e 256M -f 4 -n 10 -w 3)
for r in $(seq "$rounds"); do
    for transport in shm tcp; do
        "$bench" allreduce --local 2 --transport "$transport" "${sweep[@]}" 2>"$work/chorus-$transport.err" | awk -v k="chorus-$transport" \
            '$1 ~ /^[0-9]+$/ { print k, $1, $10, 0 }' >> "$work/rows"
    done
    mpirun --allow-run-as-root --oversubscribe -np 2 --mca btl vader,self "$work/openmpi_bench" "${sweep[@]}" 2>/dev/null |
        awk '$1 ~ /^[0-9]+$/ { print "openmpi-vader", $1, $5, $6 }' >> "$work/rows"
done
for transport in shm tcp; do
    "$bench" allreduce --local 2 --transport "$transport" -b 1M -e 256M -f 4 -n 2 -w 0 --check 2>"$work/check-$transport.err" |
        awk -v k="chorus-$transport" '$1 ~ /^[0-9]+$/ { print k, $1, "nan", $11 }' >> "$work/rows"
done
python3 - "$work/rows" "$rounds" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
print(f"2-peer all-reduce f32 sum, busbw GB/s, median of {sys.argv[2]} interleaved rounds; checked: wrong results in brackets if any")
kinds = ["chorus-shm", "chorus-tcp", "openmpi-vader"]
sizes = sorted({int(r[1]) for r in rows})
print(f"{'bytes':>10} " + " ".join(f"{k:>14}" for k in kinds) + f" {'shm/vader':>10} {'shm/tcp':>8}")
for size in sizes:
    med = {}
    for k in kinds:
        values = [float(r[2]) for r in rows if r[0] == k and int(r[1]) == size and r[2] != "nan"]
        wrong = sum(int(r[3]) for r in rows if r[0] == k and int(r[1]) == size)
        med[k] = (statistics.median(values) if values else float("nan"), wrong)
    cells = " ".join(f"{med[k][0]:>14.3f}" + (f"[{med[k][1]}]" if med[k][1] else "") for k in kinds)
    print(f"{size:>10} {cells} {med['chorus-shm'][0] / med['openmpi-vader'][0]:>10.2f} {med['chorus-shm'][0] / med['chorus-tcp'][0]:>8.2f}")
PY
