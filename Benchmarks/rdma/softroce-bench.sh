#!/usr/bin/env bash
# Chorus all-reduce over RDMA next to raw verbs bandwidth, inside the Soft-RoCE VM:
#   swift build -c release && ../shared/tools/run-in-softroce-vm.sh Benchmarks/rdma/softroce-bench.sh [OUT]
# Runs, one after another on the VM's rxe0 (10.99.0.1): perftest's ib_write_bw (RC, 1 MiB
# messages; one way, then both ways at once, as a 2-peer all-reduce moves data), then chorus-bench
# allreduce for 2 peers over --transport rdma and over tcp on the same address, and in place over
# rdma with and without registered buffers (zero-copy sends). Prints the tables and writes them to
# OUT (default results/softroce).
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-results/softroce}
host=${SOFTROCE_VM_IP:-10.99.0.1/24}
host=${host%/*}
mkdir -p "$out"
bench=.build/release/chorus-bench
sweep=(-b 64K -e 16M -f 4 -n 5 -w 1)

for way in "" "-b"; do
    echo "# ib_write_bw -d rxe0 -s 1048576 -n 200 $way (RC, RDMA WRITE)" | tee -a "$out/ib_write_bw.txt"
    ib_write_bw -d rxe0 -s 1048576 -n 200 -F $way > "$out/ib_write_bw-server.txt" 2>&1 &
    server=$!
    sleep 1
    ib_write_bw -d rxe0 -s 1048576 -n 200 -F $way "$host" 2>&1 | tee -a "$out/ib_write_bw.txt" | tail -3
    wait "$server" || true
done

echo "# chorus-bench allreduce --local 2 --transport rdma --bind $host ${sweep[*]} --check" | tee "$out/chorus-rdma.txt"
"$bench" allreduce --local 2 --transport rdma --bind "$host" "${sweep[@]}" --check --json "$out/chorus.jsonl" 2>&1 | tee -a "$out/chorus-rdma.txt"
echo "# chorus-bench allreduce --local 2 --transport tcp --bind $host ${sweep[*]} --check" | tee "$out/chorus-tcp.txt"
"$bench" allreduce --local 2 --transport tcp --bind "$host" "${sweep[@]}" --check --json "$out/chorus.jsonl" 2>&1 | tee -a "$out/chorus-tcp.txt"
for register in "" "--register"; do
    echo "# chorus-bench allreduce --local 2 --transport rdma --bind $host -b 16M -e 16M -n 5 -w 1 --check --in-place $register" | tee -a "$out/chorus-register.txt"
    "$bench" allreduce --local 2 --transport rdma --bind "$host" -b 16M -e 16M -n 5 -w 1 --check --in-place $register 2>&1 | tee -a "$out/chorus-register.txt"
done
