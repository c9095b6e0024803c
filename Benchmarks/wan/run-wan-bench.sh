#!/usr/bin/env bash
# WAN behaviour on one machine: two network namespaces joined by a link with DELAY_MS of one-way
# delay (a userspace delay line between two TUN devices; this kernel has no netem) and RATE of
# bandwidth (tbf), then chorus-bench across them, peers alternating between the namespaces.
# Only addresses inside the namespaces this script creates are used. Needs root.
#
# Usage: Benchmarks/wan/run-wan-bench.sh [PEERS] [chorus-bench options...]
# Environment: DELAY_MS (25), RATE (1gbit), JSON (results/wan.json), KEEP=1 leaves the namespaces,
# SOCKET_BUFFER_BYTES (default: the library's; 0: the kernel's auto-tuning).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
peers=${1:-2}
shift || true
bench_args=("$@")
[ ${#bench_args[@]} -eq 0 ] && bench_args=(-b 64K -e 64M -f 4 -n 5 -w 1)
json=${JSON:-$root/results/wan.json}
mkdir -p "$(dirname "$json")"
# shellcheck source=wan-link.sh
. "$root/Benchmarks/wan/wan-link.sh"

cleanup() {
    [ -n "${master_pid:-}" ] && kill "$master_pid" 2>/dev/null || true
    wan_down
}
trap cleanup EXIT

(cd "$root" && swift build -c release --product chorus-bench >/dev/null && swift build -c release --product chorus-master >/dev/null)
wan_up "$root"
ns=("${WAN_NS[@]}") addr=("${WAN_ADDR[@]}")

port=28148
ip netns exec "${ns[0]}" "$root/.build/release/chorus-master" --host "${addr[0]}" --port "$port" --log-level warning &
master_pid=$!
sleep 0.5
pids=()
for ((p = 0; p < peers; p++)); do
    i=$((p % 2))
    # The library's socket buffers (4 MiB asked, 8 MiB granted) carry this link's 6 MB in flight;
    # SOCKET_BUFFER_BYTES=0 hands them to the kernel's auto-tuning (capped at tcp_wmem's 4 MiB here).
    ip netns exec "${ns[$i]}" env CHORUS_BIND="${addr[$i]}" ${SOCKET_BUFFER_BYTES:+CHORUS_SOCKET_BUFFER_BYTES=$SOCKET_BUFFER_BYTES} \
        "$root/.build/release/chorus-bench" allreduce --master "${addr[0]}:$port" --world "$peers" \
        "${bench_args[@]}" --json "$json" &
    pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
exit $status
