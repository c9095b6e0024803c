#!/usr/bin/env bash
# Chorus over shared memory, Chorus over TCP loopback, and Open MPI over its shared-memory transport
# (--mca btl vader,self), 2-peer all-reduce f32 sum, in one interleaved run: ROUNDS alternating runs
# of each, back to back (barrier, then each timed call; slowest rank), every result checked by the
# programs themselves. Prints the median busbw (GB/s) per size over the rounds.
# Usage: compare-shm.sh [ROUNDS]   (default 3). Build first: swift build -c release
set -euo pipefail
rounds=${1:-3}
here=$(cd "$(dirname "$0")" && pwd)
bench=$here/../../.build/release/chorus-bench
[ -x "$bench" ] || { echo "build first: swift build -c release" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mpicc -O2 -o "$work/openmpi_allreduce" "$here/openmpi_allreduce.c"
sweep=(-b 1M -e 256M -f 4 -n 10 -w 3)
for r in $(seq "$rounds"); do
    for transport in shm tcp; do
        "$bench" allreduce --local 2 --transport "$transport" "${sweep[@]}" --check 2>/dev/null | awk -v k="chorus-$transport" \
            '$1 ~ /^[0-9]+$/ { print k, $1, $10, $11 }' >> "$work/rows"
    done
    mpirun --allow-run-as-root --oversubscribe -np 2 --mca btl vader,self "$work/openmpi_allreduce" "${sweep[@]}" 2>/dev/null |
        awk '$1 ~ /^[0-9]+$/ { print "openmpi-vader", $1, $5, $6 }' >> "$work/rows"
done
python3 - "$work/rows" "$rounds" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
print(f"2-peer all-reduce f32 sum, busbw GB/s, median of {sys.argv[2]} interleaved rounds (wrong results in brackets if any)")
kinds = ["chorus-shm", "chorus-tcp", "openmpi-vader"]
sizes = sorted({int(r[1]) for r in rows})
print(f"{'bytes':>10} " + " ".join(f"{k:>14}" for k in kinds) + f" {'shm/vader':>10} {'shm/tcp':>8}")
for size in sizes:
    med = {}
    for k in kinds:
        values = [float(r[2]) for r in rows if r[0] == k and int(r[1]) == size]
        wrong = sum(int(r[3]) for r in rows if r[0] == k and int(r[1]) == size)
        med[k] = (statistics.median(values) if values else float("nan"), wrong)
    cells = " ".join(f"{med[k][0]:>14.3f}" + (f"[{med[k][1]}]" if med[k][1] else "") for k in kinds)
    print(f"{size:>10} {cells} {med['chorus-shm'][0] / med['openmpi-vader'][0]:>10.2f} {med['chorus-shm'][0] / med['chorus-tcp'][0]:>8.2f}")
PY
