"""chorus-bench's all-reduce sweep from Python: the same method and columns, so the two measure the
cost of the Python layer in one run.

    python Benchmarks/python/allreduce.py --local 2 -b 4K -e 64M -f 4 -n 20 -w 5 [--gap-ms 5] [--torch]

Each iteration times one out-of-place float32 sum (back to back, or after a barrier and a gap);
the row shows the slowest rank's median, min and p99, and the busiest rank's CPU seconds per call
(every thread of the process, less what timing an empty call costs, as chorus-bench), with
nccl-tests' bandwidths. Results are checked exactly against
the expected sums (inputs differ per rank and index).
"""
import argparse
import subprocess
import sys
import time

import numpy as np

import chorus


def size(text):
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(text[:-1]) * units[text[-1].upper()] if text[-1].upper() in units else int(text)


def cpu_cost_of_timing(samples, pace):
    """The median CPU seconds charged between the CPU clock reads around an empty timed call paced
    like the timed ones (chorus-bench's cpuCostOfTiming); taken out of each call's CPU time."""
    costs = []
    for _ in range(samples):
        pace()
        cpu_started, started = time.process_time(), time.perf_counter()
        _, cpu_elapsed = time.perf_counter() - started, time.process_time() - cpu_started
        costs.append(cpu_elapsed)
    return sorted(costs)[samples // 2]


def peer(arguments):
    comm = chorus.Communicator(arguments.master)
    while comm.world_size < arguments.local:
        comm.update_topology(arguments.local)
    rank, world = comm.rank, comm.world_size

    def pace():
        if arguments.gap_ms is not None:
            comm.barrier()
            time.sleep(arguments.gap_ms / 1000)

    timing_cpu = cpu_cost_of_timing(arguments.n, pace)
    if rank == 0:
        pacing = f"after a barrier and {arguments.gap_ms} ms idle" if arguments.gap_ms is not None else "back to back"
        kind = "torch tensors" if arguments.torch else "numpy arrays"
        print(f"# python allreduce ({kind}): {world} peers, out of place, {pacing}")
        print(f"# cpu(us): the call's CPU less {timing_cpu * 1e6:.2f} us, what timing an empty call costs on rank 0")
        print("".join(f"{c:>12}" for c in ["size(B)", "count", "time(us)", "min(us)", "p99(us)", "cpu(us)",
                                             "algbw(GB/s)", "busbw(GB/s)", "#wrong"]), flush=True)
    nbytes = size(arguments.b)
    while nbytes <= size(arguments.e):
        count = nbytes // 4
        index = np.arange(count, dtype=np.int64)
        send = ((index % 1000) + rank * 1000).astype(np.float32)
        expected = (world * (index % 1000) + 1000 * world * (world - 1) // 2).astype(np.float32)
        receive = np.empty_like(send)
        if arguments.torch:
            import torch
            send, receive, expected = torch.from_numpy(send), torch.from_numpy(receive), torch.from_numpy(expected)
        times, cpu, wrong = [], [], 0
        for iteration in range(arguments.w + arguments.n):
            pace()
            cpu_started, started = time.process_time(), time.perf_counter()
            comm.all_reduce(send, receive)
            elapsed, cpu_elapsed = time.perf_counter() - started, time.process_time() - cpu_started
            if iteration >= arguments.w:
                times.append(elapsed)
                cpu.append(cpu_elapsed - timing_cpu)
            if arguments.check:
                wrong += int((receive != expected).sum())
                comm.barrier()
        slowest = np.array(times)
        comm.all_reduce(slowest, op="max")
        busiest = np.array(cpu)
        comm.all_reduce(busiest, op="max")
        wrong_everywhere = np.array([wrong], dtype=np.int64)
        comm.all_reduce(wrong_everywhere)
        if rank == 0:
            slowest.sort()
            busiest.sort()
            median = slowest[len(slowest) // 2]
            p99 = slowest[min(len(slowest) - 1, int(np.ceil(len(slowest) * 0.99)) - 1)]
            algbw = nbytes / median / 1e9
            row = [nbytes, count, f"{median * 1e6:.1f}", f"{slowest[0] * 1e6:.1f}", f"{p99 * 1e6:.1f}",
                   f"{busiest[len(busiest) // 2] * 1e6:.1f}", f"{algbw:.3f}", f"{algbw * 2 * (world - 1) / world:.3f}",
                   int(wrong_everywhere[0]) if arguments.check else "N/A"]
            print("".join(f"{c:>12}" for c in row), flush=True)
        nbytes *= arguments.f
    comm.leave()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--local", type=int, required=True, help="peer processes (an embedded master in this one)")
    parser.add_argument("-b", default="4K")
    parser.add_argument("-e", default="64M")
    parser.add_argument("-f", type=int, default=2)
    parser.add_argument("-n", type=int, default=20)
    parser.add_argument("-w", type=int, default=5)
    parser.add_argument("--gap-ms", type=float)
    parser.add_argument("--torch", action="store_true", help="PyTorch tensors instead of NumPy arrays")
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--master", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.master:
        return peer(arguments)
    with chorus.Master() as master:
        peers = [subprocess.Popen([sys.executable, __file__, *sys.argv[1:], "--master", master.endpoint])
                 for _ in range(arguments.local)]
        sys.exit(max(p.wait() for p in peers))


if __name__ == "__main__":
    main()
