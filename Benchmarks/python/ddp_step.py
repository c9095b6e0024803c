"""A DistributedDataParallel training step with one backend against another, same model, same data:

    python Benchmarks/python/ddp_step.py --procs 2 --backends chorus gloo [--steps 30] [--width 1024]

Each backend gets its own run of `--procs` processes on loopback (torch's usual MASTER_ADDR /
MASTER_PORT rendezvous; chorus hosts its master in rank 0). A step is forward, backward (DDP
all-reduces the gradient buckets while it runs) and the optimizer; each timed step starts after a
barrier, and the row shows the slowest rank's median step time and the busiest rank's CPU seconds
per step, after `--warmup` steps. The final parameters' hash shows the replicas agree.
"""
import argparse
import hashlib
import os
import socket
import subprocess
import sys
import time

import torch
import torch.distributed as dist


def worker(arguments):
    import chorus.torch  # noqa: F401  registers the backend
    torch.set_num_threads(1)  # the processes share the cores
    dist.init_process_group(arguments.backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    layers = []
    for _ in range(arguments.depth):
        layers += [torch.nn.Linear(arguments.width, arguments.width), torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers, torch.nn.Linear(arguments.width, 1))
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(rank)
    times, cpu = [], []
    for step in range(arguments.warmup + arguments.steps):
        x = torch.randn(arguments.batch, arguments.width, generator=generator)
        dist.barrier()
        cpu_started, started = time.process_time(), time.perf_counter()
        loss = torch.nn.functional.mse_loss(ddp(x), x[:, :1])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        elapsed, cpu_elapsed = time.perf_counter() - started, time.process_time() - cpu_started
        if step >= arguments.warmup:
            times.append(elapsed)
            cpu.append(cpu_elapsed)
    slowest, busiest = torch.tensor(times, dtype=torch.float64), torch.tensor(cpu, dtype=torch.float64)
    dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
    dist.all_reduce(busiest, op=dist.ReduceOp.MAX)
    if rank == 0:
        parameters = sum(p.numel() for p in model.parameters())
        digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.parameters())).hexdigest()[:12]
        print(f"{arguments.backend:>8} {world:>6} {parameters:>10} {slowest.median().item() * 1e3:>12.2f} "
              f"{slowest.min().item() * 1e3:>10.2f} {busiest.median().item() * 1e3:>10.2f}   {digest}", flush=True)
    dist.destroy_process_group()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--backends", nargs="+", default=["chorus", "gloo"])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--backend", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.backend:
        return worker(arguments)
    print(f"# DDP step: MLP {arguments.depth}x{arguments.width}, batch {arguments.batch}, {arguments.steps} timed steps")
    print(f"{'backend':>8} {'procs':>6} {'params':>10} {'step(ms)':>12} {'min(ms)':>10} {'cpu(ms)':>10}   params hash")
    for backend in arguments.backends:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        environment = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(arguments.procs),
                           CHORUS_LOG_LEVEL=os.environ.get("CHORUS_LOG_LEVEL", "error"))
        processes = [subprocess.Popen([sys.executable, __file__, *sys.argv[1:], "--backend", backend],
                                      env=dict(environment, RANK=str(rank))) for rank in range(arguments.procs)]
        if max(p.wait() for p in processes) != 0:
            sys.exit(f"the {backend} run failed")


if __name__ == "__main__":
    main()
