# The emulated WAN link, sourced by run-wan-bench.sh and compare-wan.sh: two sites of wan-mesh.sh
# joined by one link with DELAY_MS of one-way delay and RATE of bandwidth, addressed as one /24.
# After `wan_up ROOT`: WAN_NS (the namespaces), WAN_ADDR (their addresses), WAN_DEV (their devices).
# `wan_down` removes everything (KEEP=1 leaves the namespaces).

# shellcheck source=wan-mesh.sh
. "$(dirname "${BASH_SOURCE[0]}")/wan-mesh.sh"

wan_up() {
    MESH_SUBNET=1 SLOW="" mesh_up "$1" 2
    WAN_NS=("${MESH_NS[@]}") WAN_ADDR=("${MESH_ADDR[@]}") WAN_DEV=(cw0-1 cw1-0)
}

wan_down() { mesh_down; }
