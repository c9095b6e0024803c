# An emulated WAN of several sites with unequal links, sourced by run-wan-topology.sh: COUNT network
# namespaces, every pair joined by its own delay line (delayline.c) with DELAY_MS each way and tbf
# at RATE, except the pairs named in SLOW ("0-1 2-3": at SLOW_RATE). Site i has the address
# 10.199.1.(i+1) on each of its links, routed to each other site over their own link (with
# MESH_SUBNET=1 and two sites, one /24 instead: Open MPI wants its peers on a subnet of an
# interface). Each link also carries a /30 of its own, 10.198.(16a+b).0 (site a .1, site b .2;
# `mesh_pair_addr A B` names A's end), for Open MPI, which finds its peers by subnet. Only addresses
# inside the namespaces made here are used. Needs root. After `mesh_up`: MESH_NS and MESH_ADDR
# (per site). `mesh_down` removes everything (KEEP=1 leaves the namespaces).

MESH_NS=() MESH_ADDR=() mesh_line_pids=()
mesh_build=${TMPDIR:-/tmp}/chorus-wan

mesh_down() {
    for pid in "${mesh_line_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    if [ "${KEEP:-0}" != 1 ]; then for n in "${MESH_NS[@]}"; do ip netns del "$n" 2>/dev/null || true; done; fi
}

# The address of site A's end of its link to site B (its /30).
mesh_pair_addr() {
    local a=$1 b=$2
    if ((a < b)); then echo "10.198.$((a * 16 + b)).1"; else echo "10.198.$((b * 16 + a)).2"; fi
}

# The rate of the link between sites a < b.
mesh_rate() {
    local pair
    for pair in ${SLOW:-}; do [ "$pair" = "$1-$2" ] && { echo "${SLOW_RATE:-100mbit}"; return; }; done
    echo "${RATE:-1gbit}"
}

mesh_up() {
    local root=$1 count=$2 delay=${DELAY_MS:-25}
    mkdir -p "$mesh_build"
    command -v ip >/dev/null || { apt-get update -qq && apt-get install -y -qq iproute2; }
    cc -O2 -Wall -o "$mesh_build/delayline" "$root/Benchmarks/wan/delayline.c"
    for ((i = 0; i < count; i++)); do
        MESH_NS[i]=chorus-site-$i MESH_ADDR[i]=10.199.1.$((i + 1))
        ip netns del "${MESH_NS[i]}" 2>/dev/null || true
        ip netns add "${MESH_NS[i]}"
        ip -n "${MESH_NS[i]}" link set lo up
        ip netns exec "${MESH_NS[i]}" sysctl -qw net.ipv4.tcp_slow_start_after_idle=0
    done
    for ((a = 0; a < count; a++)); do
        for ((b = a + 1; b < count; b++)); do
            local devs=("cw$a-$b" "cw$b-$a") ends=("$a" "$b") rate
            rate=$(mesh_rate "$a" "$b")
            "$mesh_build/delayline" "${devs[0]}" "${devs[1]}" "$delay" > "$mesh_build/line-$a-$b.out" &
            mesh_line_pids+=($!)
            for _ in $(seq 100); do grep -q ready "$mesh_build/line-$a-$b.out" 2>/dev/null && break; sleep 0.05; done
            for k in 0 1; do
                local me=${ends[k]} other=${ends[$((1 - k))]}
                ip link set "${devs[k]}" netns "${MESH_NS[me]}"
                if [ "${MESH_SUBNET:-0}" = 1 ]; then
                    ip -n "${MESH_NS[me]}" addr add "${MESH_ADDR[me]}/24" dev "${devs[k]}"
                else
                    ip -n "${MESH_NS[me]}" addr add "${MESH_ADDR[me]}/32" peer "${MESH_ADDR[other]}/32" dev "${devs[k]}"
                    ip -n "${MESH_NS[me]}" addr add "$(mesh_pair_addr "$me" "$other")/30" dev "${devs[k]}"
                fi
                ip -n "${MESH_NS[me]}" link set "${devs[k]}" up mtu 1500
                ip netns exec "${MESH_NS[me]}" tc qdisc add dev "${devs[k]}" root tbf rate "$rate" burst 256kb latency 400ms
            done
            echo "link: site $a <-> site $b, ${delay} ms each way, $rate"
        done
    done
}
