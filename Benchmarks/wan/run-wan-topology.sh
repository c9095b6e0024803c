#!/usr/bin/env bash
# Chorus on an emulated WAN of unequal links (wan-mesh.sh): SITES namespaces (default 4), every pair
# at RATE except the SLOW pairs (default "0-1 2-3" at SLOW_RATE, 100mbit), DELAY_MS each way; one
# peer per site, an f32 all-reduce of SIZE across all of them. The ring follows the order in which
# the peers joined, so the script runs it three times: joined in site order (0, 1, 2, 3: the ring
# crosses both slow links), in an order whose ring avoids them (0, 2, 1, 3), and in site order
# followed by optimizeTopology() (chorus-bench --optimize-topology: the peers measure their links and
# re-form in the order they solve; the time it took and the ring are printed); gloo (torch.distributed)
# and Open MPI (MPI_Allreduce, its daemons started in the sites' namespaces by ns-agent.sh), ranks in
# the same orders, beside the first two.
# Usage: Benchmarks/wan/run-wan-topology.sh   Environment: SITES, SLOW, SLOW_RATE, RATE, DELAY_MS, SIZE (16M).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
sites=${SITES:-4} size=${SIZE:-16M}
export SLOW=${SLOW:-0-1 2-3}
# shellcheck source=wan-mesh.sh
. "$root/Benchmarks/wan/wan-mesh.sh"
trap mesh_down EXIT
(cd "$root" && swift build -c release --product chorus-bench >/dev/null && swift build -c release --product chorus-master >/dev/null)
mpicc -O2 -o "$mesh_build/openmpi_bench" "$root/Benchmarks/peers/openmpi_bench.c"
mesh_up "$root" "$sites"
export CHORUS_LOG_LEVEL=error
port=28300

# run ORDER...: peers join one at a time in this order of sites; prints the time row. Extra
# chorus-bench options come from $BENCH_OPTIONS.
run() {
    port=$((port + 1))
    ip netns exec "${MESH_NS[0]}" "$root/.build/release/chorus-master" --host "${MESH_ADDR[0]}" --port "$port" --log-level error &
    local master=$! pids=() site
    sleep 0.3
    for site in "$@"; do
        ip netns exec "${MESH_NS[site]}" env CHORUS_BIND="${MESH_ADDR[site]}" "$root/.build/release/chorus-bench" allreduce \
            --master "${MESH_ADDR[0]}:$port" --world "$sites" -b "$size" -e "$size" -n 5 -w 1 --check ${BENCH_OPTIONS:-} > "$mesh_build/out-$site" 2>&1 &
        pids+=($!)
        sleep 0.5 # registered before the next one: the ring takes the order of registration
    done
    wait "${pids[@]}" || true
    kill "$master" 2>/dev/null; wait "$master" 2>/dev/null || true
    local row
    row=$(cat "$mesh_build"/out-* | awk '$1 ~ /^[0-9]+$/ { print $5 / 1e6 " s, wrong " $11 }')
    echo "ring in site order $*${BENCH_OPTIONS:+ then $BENCH_OPTIONS}: ${row:-no result (see $mesh_build/out-*)}"
    grep -h '^# optimizeTopology' "$mesh_build"/out-* || true
}

# gloo ORDER...: rank r on site ORDER[r] (rank 0 hosts torch's store at site 0).
gloo() {
    port=$((port + 1))
    local pids=() rank=0 site other
    for site in "$@"; do
        other=$(( site == 0 ? 1 : 0 ))
        ip netns exec "${MESH_NS[site]}" env GLOO_SOCKET_IFNAME="cw$site-$other" python3 "$root/Benchmarks/wan/gloo_allreduce.py" \
            --rank "$rank" --world "$sites" --addr "${MESH_ADDR[$1]}" --port "$port" --size "$size" > "$mesh_build/gloo-$rank" 2>&1 &
        pids+=($!)
        rank=$((rank + 1))
    done
    wait "${pids[@]}" || true
    local row
    row=$(awk '$1 ~ /^[0-9]+$/ { print $2 / 1e6 " s, wrong " $5 }' "$mesh_build/gloo-0")
    echo "gloo, ranks in site order $*: ${row:-no result (see $mesh_build/gloo-*)}"
}

# openmpi ORDER...: rank r on site ORDER[r]; mpirun runs at site 0 and reaches each site by its end
# of the link to site 0 (each link's own /30: Open MPI pairs addresses by subnet).
openmpi() {
    local site
    : > "$mesh_build/hosts"
    for site in "$@"; do
        if [ "$site" = 0 ]; then mesh_pair_addr 0 1; else mesh_pair_addr "$site" 0; fi | sed 's/$/ slots=1/' >> "$mesh_build/hosts"
    done
    ip netns exec "${MESH_NS[0]}" mpirun --allow-run-as-root -np "$sites" --hostfile "$mesh_build/hosts" \
        --mca plm_rsh_agent "$root/Benchmarks/wan/ns-agent.sh" --mca btl tcp,self \
        --mca btl_tcp_if_include 10.198.0.0/16 --mca oob_tcp_if_include 10.198.0.0/16 \
        "$mesh_build/openmpi_bench" -b "$size" -e "$size" -n 5 -w 1 > "$mesh_build/mpi" 2>&1 || true
    local row
    row=$(awk '$1 ~ /^[0-9]+$/ { print $2 / 1e6 " s, wrong " $6 }' "$mesh_build/mpi")
    echo "Open MPI, ranks in site order $*: ${row:-no result (see $mesh_build/mpi)}"
}

orders=("$(seq -s ' ' 0 $((sites - 1)))")
if [ "$sites" = 4 ]; then orders+=("0 2 1 3"); fi
for order in "${orders[@]}"; do
    # shellcheck disable=SC2086
    run $order
    # shellcheck disable=SC2086
    gloo $order
    # shellcheck disable=SC2086
    openmpi $order
done
# shellcheck disable=SC2046
BENCH_OPTIONS=--optimize-topology run $(seq 0 $((sites - 1)))
