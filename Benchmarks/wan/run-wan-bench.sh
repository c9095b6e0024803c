#!/usr/bin/env bash
# WAN behaviour on one machine: two network namespaces joined by a link with DELAY_MS of one-way
# delay (a userspace delay line between two TUN devices; this kernel has no netem) and RATE of
# bandwidth (tbf), then chorus-bench across them, peers alternating between the namespaces.
# Only addresses inside the namespaces this script creates are used. Needs root.
#
# Usage: Benchmarks/wan/run-wan-bench.sh [PEERS] [chorus-bench options...]
# Environment: DELAY_MS (25), RATE (1gbit), JSON (results/wan.json), KEEP=1 leaves the namespaces.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
peers=${1:-2}
shift || true
bench_args=("$@")
[ ${#bench_args[@]} -eq 0 ] && bench_args=(-b 64K -e 64M -f 4 -n 5 -w 1)
delay=${DELAY_MS:-25} rate=${RATE:-1gbit}
json=${JSON:-$root/results/wan.json}
ns=(chorus-wan-a chorus-wan-b)
addr=(10.199.0.1 10.199.0.2)
build=${TMPDIR:-/tmp}/chorus-wan
mkdir -p "$build" "$(dirname "$json")"

cleanup() {
    [ -n "${line_pid:-}" ] && kill "$line_pid" 2>/dev/null || true
    [ -n "${master_pid:-}" ] && kill "$master_pid" 2>/dev/null || true
    if [ "${KEEP:-0}" != 1 ]; then for n in "${ns[@]}"; do ip netns del "$n" 2>/dev/null || true; done; fi
}
trap cleanup EXIT

command -v ip >/dev/null || { apt-get update -qq && apt-get install -y -qq iproute2; }
cc -O2 -Wall -o "$build/delayline" "$root/Benchmarks/wan/delayline.c"
(cd "$root" && swift build -c release --product chorus-bench >/dev/null && swift build -c release --product chorus-master >/dev/null)

for n in "${ns[@]}"; do
    ip netns del "$n" 2>/dev/null || true
    ip netns add "$n"
    ip -n "$n" link set lo up
    # A collective pauses between operations; restarting slow start after each pause would measure TCP, not us.
    ip netns exec "$n" sysctl -qw net.ipv4.tcp_slow_start_after_idle=0
done
"$build/delayline" chorus-wan0 chorus-wan1 "$delay" > "$build/delayline.out" &
line_pid=$!
for _ in $(seq 100); do grep -q ready "$build/delayline.out" 2>/dev/null && break; sleep 0.05; done
for i in 0 1; do
    ip link set "chorus-wan$i" netns "${ns[$i]}"
    ip -n "${ns[$i]}" addr add "${addr[$i]}/32" peer "${addr[$((1 - i))]}/32" dev "chorus-wan$i"
    ip -n "${ns[$i]}" link set "chorus-wan$i" up mtu 1500
    ip netns exec "${ns[$i]}" tc qdisc add dev "chorus-wan$i" root tbf rate "$rate" burst 256kb latency 400ms
done
echo "link: ${addr[0]} <-> ${addr[1]}, ${delay} ms each way, $rate"
if command -v ping >/dev/null; then ip netns exec "${ns[0]}" ping -c 3 -q "${addr[1]}" | tail -1; fi

port=28148
ip netns exec "${ns[0]}" "$root/.build/release/chorus-master" --host "${addr[0]}" --port "$port" --log-level warning &
master_pid=$!
sleep 0.5
pids=()
for ((p = 0; p < peers; p++)); do
    i=$((p % 2))
    # Long-fat-pipe runs need TCP auto-tuning (buffers past 4 MiB); heartbeats tolerate the delay.
    ip netns exec "${ns[$i]}" env CHORUS_BIND="${addr[$i]}" CHORUS_SOCKET_BUFFER_BYTES=0 \
        "$root/.build/release/chorus-bench" allreduce --master "${addr[0]}:$port" --world "$peers" \
        "${bench_args[@]}" --json "$json" &
    pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
exit $status
