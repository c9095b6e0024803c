"""torch.distributed's gloo all-reduce timed the way chorus-bench times Chorus: per iteration a
barrier, then one timed out-of-place-equivalent f32 sum, the slowest rank's time; prints the median,
min and p99 in microseconds and the number of wrong elements (inputs differ per rank and index).

    python gloo_allreduce.py --rank R --world N --addr HOST --port P [--size 64M] [-n 5] [-w 1]

Set GLOO_SOCKET_IFNAME to the interface the ranks reach each other on.
"""
import argparse
import statistics
import time

import torch
import torch.distributed as dist


def size(text):
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(text[:-1]) * units[text[-1].upper()] if text[-1].upper() in units else int(text)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rank", type=int, required=True)
    parser.add_argument("--world", type=int, required=True)
    parser.add_argument("--addr", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--size", default="64M")
    parser.add_argument("-n", type=int, default=5)
    parser.add_argument("-w", type=int, default=1)
    arguments = parser.parse_args()
    dist.init_process_group("gloo", init_method=f"tcp://{arguments.addr}:{arguments.port}",
                            rank=arguments.rank, world_size=arguments.world)
    rank, world = arguments.rank, arguments.world
    count = size(arguments.size) // 4
    index = torch.arange(count, dtype=torch.int64)
    send = ((index % 1000) + rank * 1000).to(torch.float32)
    expected = (world * (index % 1000) + 1000 * world * (world - 1) // 2).to(torch.float32)
    times, wrong = [], 0
    for iteration in range(arguments.w + arguments.n):
        buffer = send.clone()  # gloo reduces in place; the copy is outside the timed call
        dist.barrier()
        started = time.perf_counter()
        dist.all_reduce(buffer)
        elapsed = time.perf_counter() - started
        wrong += int((buffer != expected).sum())
        if iteration >= arguments.w:
            times.append(elapsed)
    slowest = torch.tensor(times, dtype=torch.float64)
    dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
    wrong_everywhere = torch.tensor([wrong])
    dist.all_reduce(wrong_everywhere)
    if rank == 0:
        us = sorted(t * 1e6 for t in slowest.tolist())
        p99 = us[min(len(us) - 1, int(0.99 * len(us)))]
        print(f"{size(arguments.size)} {statistics.median(us):.1f} {us[0]:.1f} {p99:.1f} {int(wrong_everywhere)}", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
