#!/usr/bin/env bash
# MLX's ring backend (pip "mlx[cpu]") on loopback, same sweep and JSON fields as chorus-bench.
# Usage: run-mlx.sh PEERS JSON_FILE [-b MIN] [-e MAX] [-f FACTOR] [-n ITERS] [-w WARMUP]
set -euo pipefail
peers=$1 json=$2
shift 2
here=$(cd "$(dirname "$0")" && pwd)
venv=${CHORUS_PEERS_VENV:-${TMPDIR:-/tmp}/chorus-peers-venv}
if [ ! -x "$venv/bin/mlx.launch" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "mlx[cpu]"
fi
# The ring backend listens on consecutive ports from a starting port; pick one that is free now.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
CHORUS_SWEEP="$* --json $json" "$venv/bin/mlx.launch" --backend ring -n "$peers" --hosts 127.0.0.1 \
    --starting-port "$port" "$venv/bin/python" "$here/mlx_allreduce.py"
