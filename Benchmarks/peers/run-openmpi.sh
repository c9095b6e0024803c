#!/usr/bin/env bash
# Open MPI over TCP on loopback (openmpi_bench.c), the same collectives, sweep and JSON fields as chorus-bench.
# Usage: run-openmpi.sh PEERS JSON_FILE [-c allreduce|reducescatter|allgather|broadcast|allscan|exscan|barrier] [-b MIN] [-e MAX] [-f FACTOR] [-n ITERS] [-w WARMUP] [-g GAP_MS]
set -euo pipefail
peers=$1 json=$2
shift 2
here=$(cd "$(dirname "$0")" && pwd)
if ! command -v mpicc >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends openmpi-bin libopenmpi-dev
fi
build=${TMPDIR:-/tmp}/chorus-peers
mkdir -p "$build"
mpicc -O2 -o "$build/openmpi_bench" "$here/openmpi_bench.c"
# Root is allowed here because the machines of this project run everything as root.
mpirun --allow-run-as-root --oversubscribe -np "$peers" \
    --mca btl tcp,self --mca btl_tcp_if_include lo --mca oob_tcp_if_include lo \
    "$build/openmpi_bench" "$@" --json "$json"
