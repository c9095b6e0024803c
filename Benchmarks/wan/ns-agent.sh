#!/usr/bin/env bash
# mpirun's "rsh agent" for the emulated WAN: instead of logging in to HOST, runs the command in the
# network namespace that owns HOST's address (mpirun starts its daemon on the far side this way).
# Usage (by mpirun): ns-agent.sh [options] HOST COMMAND...
while [[ $# -gt 0 && $1 == -* ]]; do shift; done
host=$1
shift
for ns in $(ip netns list | awk '{print $1}'); do
    if ip -n "$ns" -o addr show | grep -q "inet $host/"; then exec ip netns exec "$ns" /bin/sh -c "$*"; fi
done
echo "ns-agent: no namespace has $host" >&2
exit 1
