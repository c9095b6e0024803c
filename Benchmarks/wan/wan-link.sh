# The emulated WAN link, sourced by the WAN scripts: two network namespaces joined by a link with
# DELAY_MS of one-way delay (a userspace delay line between two TUN devices; this kernel has no
# netem) and RATE of bandwidth (tbf). Only addresses inside the namespaces made here are used. Needs
# root. After `wan_up`: WAN_NS (the namespaces), WAN_ADDR (their addresses), WAN_DEV (their devices).
# `wan_down` removes everything (KEEP=1 leaves the namespaces).

WAN_NS=(chorus-wan-a chorus-wan-b)
WAN_ADDR=(10.199.0.1 10.199.0.2)
WAN_DEV=(chorus-wan0 chorus-wan1)
wan_build=${TMPDIR:-/tmp}/chorus-wan

wan_down() {
    [ -n "${wan_line_pid:-}" ] && kill "$wan_line_pid" 2>/dev/null || true
    if [ "${KEEP:-0}" != 1 ]; then for n in "${WAN_NS[@]}"; do ip netns del "$n" 2>/dev/null || true; done; fi
}

wan_up() {
    local root=$1 delay=${DELAY_MS:-25} rate=${RATE:-1gbit}
    mkdir -p "$wan_build"
    command -v ip >/dev/null || { apt-get update -qq && apt-get install -y -qq iproute2; }
    cc -O2 -Wall -o "$wan_build/delayline" "$root/Benchmarks/wan/delayline.c"
    for n in "${WAN_NS[@]}"; do
        ip netns del "$n" 2>/dev/null || true
        ip netns add "$n"
        ip -n "$n" link set lo up
        # A collective pauses between operations; restarting slow start after each pause would measure TCP, not us.
        ip netns exec "$n" sysctl -qw net.ipv4.tcp_slow_start_after_idle=0
    done
    "$wan_build/delayline" "${WAN_DEV[0]}" "${WAN_DEV[1]}" "$delay" > "$wan_build/delayline.out" &
    wan_line_pid=$!
    for _ in $(seq 100); do grep -q ready "$wan_build/delayline.out" 2>/dev/null && break; sleep 0.05; done
    for i in 0 1; do
        ip link set "${WAN_DEV[$i]}" netns "${WAN_NS[$i]}"
        ip -n "${WAN_NS[$i]}" addr add "${WAN_ADDR[$i]}/24" dev "${WAN_DEV[$i]}" # one /24 (Open MPI wants its peers on a subnet of an interface)
        ip -n "${WAN_NS[$i]}" link set "${WAN_DEV[$i]}" up mtu 1500
        ip netns exec "${WAN_NS[$i]}" tc qdisc add dev "${WAN_DEV[$i]}" root tbf rate "$rate" burst 256kb latency 400ms
    done
    echo "link: ${WAN_ADDR[0]} <-> ${WAN_ADDR[1]}, ${delay} ms each way, $rate"
    if command -v ping >/dev/null; then ip netns exec "${WAN_NS[0]}" ping -c 3 -q "${WAN_ADDR[1]}" | tail -1; fi
}
