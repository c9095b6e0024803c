#!/usr/bin/env bash
# One command: Chorus, Open MPI (TCP) and MLX's ring backend, same sweep, same machine, one chart.
# Usage: Benchmarks/compare.sh [OUT_DIR] [PEERS...]   (defaults: results/compare, 2 4)
# Environment: SWEEP (default "-b 4K -e 64M -f 4 -n 20 -w 5").
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/results/compare}
shift || true
if [ $# -gt 0 ]; then peer_counts=("$@"); else peer_counts=(2 4); fi
sweep=${SWEEP:-"-b 4K -e 64M -f 4 -n 20 -w 5"}
venv=${CHORUS_PEERS_VENV:-${TMPDIR:-/tmp}/chorus-peers-venv}
mkdir -p "$out"
rm -f "$out"/*.json

(cd "$root" && swift build -c release --product chorus-bench >/dev/null)
if [ ! -x "$venv/bin/mlx.launch" ] || ! "$venv/bin/python" -c "import matplotlib" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "mlx[cpu]" matplotlib
fi
export CHORUS_PEERS_VENV=$venv

for n in "${peer_counts[@]}"; do
    echo "== $n peers: chorus"
    # shellcheck disable=SC2086
    "$root/.build/release/chorus-bench" allreduce --local "$n" $sweep --json "$out/chorus-$n.json"
    echo "== $n peers: Open MPI (tcp)"
    # shellcheck disable=SC2086
    "$root/Benchmarks/peers/run-openmpi.sh" "$n" "$out/openmpi-$n.json" $sweep
    echo "== $n peers: MLX ring"
    # shellcheck disable=SC2086
    "$root/Benchmarks/peers/run-mlx.sh" "$n" "$out/mlx-$n.json" $sweep
done
"$venv/bin/python" "$root/Benchmarks/plot.py" "$out/busbw.png" "$out"/*.json
