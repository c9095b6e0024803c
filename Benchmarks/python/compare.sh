#!/usr/bin/env bash
# Python against Swift, one run: per-call cost (a world of one), 4 KiB and 64 MiB all-reduce of two
# peers (back to back and after a gap, alternating the two so drift hits both), and a DDP step with
# backend chorus against gloo at 2 and 4 processes. Needs the package installed (pip install ./python)
# or CHORUS_LIBRARY and PYTHONPATH pointing at a build. Usage: Benchmarks/python/compare.sh [ROUNDS]
# Both sides use the same transport: CHORUS_TRANSPORT, default shm (the library's default on one host).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
rounds=${1:-3}
export CHORUS_LOG_LEVEL=error
export CHORUS_TRANSPORT=${CHORUS_TRANSPORT:-shm}
(cd "$root" && swift build -c release --product chorus-bench >/dev/null)
# Unbound, like the Python launcher's peers: the rows compare the languages, not the placement.
bench() { "$root/.build/release/chorus-bench" "$@" --transport "$CHORUS_TRANSPORT" --bind-to none; }
python_bench=$root/Benchmarks/python/allreduce.py
row() { tail -1 | awk -v name="$1" -v t="$2" -v c="$3" '{printf "%-8s time %8s us   cpu %8s us\n", name, $t, $c}'; }

echo "== per call, a world of one, 4 KiB (20000 calls)"
bench allreduce --local 1 -b 4K -e 4K -n 20000 -w 1000 | row swift 5 8
python3 "$python_bench" --local 1 -b 4K -e 4K -n 20000 -w 1000 | row numpy 3 6
python3 "$python_bench" --local 1 -b 4K -e 4K -n 20000 -w 1000 --torch | row torch 3 6
for size in 4K 64M; do
    if [ "$size" = 4K ]; then n=2000; w=100; else n=10; w=2; fi
    for pacing in "" "--gap-ms 5"; do
        [ "$size" = 64M ] && [ -n "$pacing" ] && continue
        echo "== two peers, $size, ${pacing:-back to back}"
        for _ in $(seq "$rounds"); do
            # shellcheck disable=SC2086
            bench allreduce --local 2 -b $size -e $size -n $n -w $w $pacing | row swift 5 8
            # shellcheck disable=SC2086
            python3 "$python_bench" --local 2 -b $size -e $size -n $n -w $w $pacing | row numpy 3 6
            # shellcheck disable=SC2086
            python3 "$python_bench" --local 2 -b $size -e $size -n $n -w $w $pacing --torch | row torch 3 6
        done
    done
done
for batch in 32 1; do
    for procs in 2 4; do
        python3 "$root/Benchmarks/python/ddp_step.py" --procs "$procs" --batch "$batch" --steps 40 --backends chorus gloo chorus gloo \
            2>&1 | grep -v Warning
    done
done
