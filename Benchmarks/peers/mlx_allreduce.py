"""MLX's ring backend all-reduce (CPU), same sweep and JSON fields as chorus-bench.

Started by run-mlx.sh through `mlx.launch --backend ring`.
"""
import argparse
import json
import os
import shlex
import time

import mlx.core as mx


def size(text):
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(text[:-1]) * units[text[-1].upper()] if text[-1].upper() in units else int(text)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("-b", type=size, default=4096)
    parser.add_argument("-e", type=size, default=64 << 20)
    parser.add_argument("-f", type=int, default=2)
    parser.add_argument("-n", type=int, default=20)
    parser.add_argument("-w", type=int, default=5)
    parser.add_argument("--json")
    # mlx.launch keeps options like -n for itself, so run-mlx.sh passes the sweep in the environment.
    args = parser.parse_args(shlex.split(os.environ.get("CHORUS_SWEEP", "")))
    group = mx.distributed.init(backend="ring", strict=True)
    rank, world = group.rank(), group.size()
    mx.set_default_device(mx.cpu)
    if rank == 0:
        print(f"# MLX ring all_sum f32, {world} ranks")
    nbytes = args.b
    while nbytes <= args.e:
        count = nbytes // 4
        x = (mx.arange(count, dtype=mx.float32) + rank * 7) % 4
        mx.eval(x)
        times = []
        for it in range(args.w + args.n):
            started = time.perf_counter()
            y = mx.distributed.all_sum(x)
            mx.eval(y)
            if it >= args.w:
                times.append(time.perf_counter() - started)
        slowest = mx.distributed.all_max(mx.array(times, dtype=mx.float32))
        slowest = sorted(float(t) for t in slowest.tolist())
        median = slowest[len(slowest) // 2]
        algbw = nbytes / median / 1e9
        busbw = algbw * 2 * (world - 1) / world
        if rank == 0:
            print(f"{nbytes:12d} {median * 1e6:12.1f} {algbw:12.3f} {busbw:12.3f}", flush=True)
            if args.json:
                with open(args.json, "a") as out:
                    out.write(json.dumps({
                        "collective": "allreduce", "algorithm": "ring", "transport": "tcp", "library": "mlx",
                        "peers": world, "dtype": "f32", "op": "sum", "bytes": nbytes, "count": count,
                        "in_place": False, "time_us_median": round(median * 1e6, 2),
                        "time_us_min": round(slowest[0] * 1e6, 2), "algbw_GBps": round(algbw, 4),
                        "busbw_GBps": round(busbw, 4), "wrong": 0, "checked": False}) + "\n")
        nbytes *= args.f


if __name__ == "__main__":
    main()
