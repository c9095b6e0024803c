#!/usr/bin/env bash
# Chorus next to Gloo and Open MPI on the emulated WAN link (wan-link.sh: DELAY_MS each way, RATE):
# a 2-peer f32 all-reduce of SIZE, one peer on each side, in ROUNDS interleaved rounds of: Chorus
# (the library's socket buffers; two connections per neighbour; the lanes chosen by measuring the
# link first, chorus-bench --optimize-topology; the kernel's auto-tuning; 4 all-reduces in flight
# together, with one connection and with the measured lanes), Chorus quantized to int8 and to int4, gloo (torch.distributed) and MPI_Allreduce. Every run takes a barrier, then one timed call,
# the slowest rank's time, 5 calls after 1 warm-up; the table shows the median over rounds of each
# run's median, and whether every result was right (Chorus quantized: within its error bound).
# Usage: Benchmarks/wan/compare-wan.sh [ROUNDS]   Environment: DELAY_MS (25), RATE (1gbit), SIZE (64M).
# Needs root, torch (CPU) and Open MPI (mpicc, mpirun).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
rounds=${1:-3} size=${SIZE:-64M}
# shellcheck source=wan-link.sh
. "$root/Benchmarks/wan/wan-link.sh"
work=$(mktemp -d)
cleanup() {
    [ -n "${master_pid:-}" ] && kill "$master_pid" 2>/dev/null || true
    wan_down
    rm -rf "$work"
}
trap cleanup EXIT
(cd "$root" && swift build -c release --product chorus-bench >/dev/null && swift build -c release --product chorus-master >/dev/null)
mpicc -O2 -o "$work/openmpi_bench" "$root/Benchmarks/peers/openmpi_bench.c"
wan_up "$root"
export CHORUS_LOG_LEVEL=error
port=28148

# chorus NAME BUFFER_BYTES [chorus-bench options]: one run, one row "NAME time wrong".
chorus() {
    local name=$1 buffers=$2
    shift 2
    port=$((port + 1))
    ip netns exec "${WAN_NS[0]}" "$root/.build/release/chorus-master" --host "${WAN_ADDR[0]}" --port "$port" --log-level error &
    master_pid=$!
    sleep 0.3
    local pids=()
    for i in 0 1; do
        ip netns exec "${WAN_NS[$i]}" env CHORUS_BIND="${WAN_ADDR[$i]}" ${buffers:+CHORUS_SOCKET_BUFFER_BYTES=$buffers} \
            "$root/.build/release/chorus-bench" allreduce --master "${WAN_ADDR[0]}:$port" --world 2 \
            -b "$size" -e "$size" -n 5 -w 1 --check "$@" > "$work/out$i" 2>&1 &
        pids+=($!)
    done
    wait "${pids[@]}" || true
    kill "$master_pid" 2>/dev/null; wait "$master_pid" 2>/dev/null || true
    awk -v k="$name" '$1 ~ /^[0-9]+$/ { print k, $5, $11 }' "$work/out0" "$work/out1" >> "$work/rows"
}

gloo() {
    port=$((port + 1))
    local pids=()
    for i in 0 1; do
        ip netns exec "${WAN_NS[$i]}" env GLOO_SOCKET_IFNAME="${WAN_DEV[$i]}" python3 "$root/Benchmarks/wan/gloo_allreduce.py" \
            --rank "$i" --world 2 --addr "${WAN_ADDR[0]}" --port "$port" --size "$size" > "$work/gloo$i" 2>&1 &
        pids+=($!)
    done
    wait "${pids[@]}" || true
    awk '$1 ~ /^[0-9]+$/ { print "gloo", $2, $5 }' "$work/gloo0" >> "$work/rows"
}

openmpi() {
    printf '%s slots=1\n%s slots=1\n' "${WAN_ADDR[0]}" "${WAN_ADDR[1]}" > "$work/hosts"
    ip netns exec "${WAN_NS[0]}" mpirun --allow-run-as-root -np 2 --hostfile "$work/hosts" \
        --mca plm_rsh_agent "$root/Benchmarks/wan/ns-agent.sh" --mca btl tcp,self \
        --mca btl_tcp_if_include 10.199.1.0/24 --mca oob_tcp_if_include 10.199.1.0/24 \
        "$work/openmpi_bench" -b "$size" -e "$size" -n 5 -w 1 > "$work/mpi" 2>&1 || true
    awk '$1 ~ /^[0-9]+$/ { print "openmpi", $2, $6 }' "$work/mpi" >> "$work/rows"
}

for _ in $(seq "$rounds"); do
    chorus "chorus" ""
    chorus "chorus-2-lanes" "" --connections 2
    chorus "chorus-measured" "" --optimize-topology
    chorus "chorus-autotuned" 0
    chorus "chorus-4-in-flight" "" --in-flight 4
    chorus "chorus-measured-4-in-flight" "" --optimize-topology --in-flight 4
    chorus "chorus-int8" "" --quantize int8
    chorus "chorus-int4" "" --quantize int4
    gloo
    openmpi
done
python3 - "$work/rows" "$rounds" "$size" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
print(f"2 peers, f32 sum of {sys.argv[3]} across the emulated link; median over {sys.argv[2]} rounds of each run's median (slowest rank)")
for name in ["chorus", "chorus-2-lanes", "chorus-measured", "chorus-autotuned", "chorus-4-in-flight", "chorus-measured-4-in-flight", "chorus-int8", "chorus-int4", "gloo", "openmpi"]:
    got = [r for r in rows if r[0] == name]
    if not got:
        print(f"{name:>27}: no result")
        continue
    times = [float(r[1]) / 1e6 for r in got]
    wrong = sum(int(r[2]) for r in got if r[2].lstrip("-").isdigit())
    print(f"{name:>27}: {statistics.median(times):6.3f} s  (runs: {', '.join(f'{t:.3f}' for t in times)}; wrong elements: {wrong})")
PY
