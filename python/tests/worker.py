"""A peer process for the Python tests: `worker.py MODE MASTER WORLD [ROUNDS]`.

collectives: every collective (the quantized all-reduce too) on NumPy arrays and PyTorch tensors of
  several dtypes, checked exactly against references computed here from (rank, index); prints
  "PASS rank=R checks=N".
rounds: in-place float32 all-reduces of 1 Mi elements in a loop; prints OK/ABORT/TOPOLOGY lines
  (the fault test kills one worker while they run).
state: a shared state of a NumPy array and a torch tensor; rank 0 holds revision 3, the others are
  outdated; prints "SYNCED outdated=B hash=H".
"""
import sys
import time

import numpy as np
import torch

import chorus
from checks import Checks

mode, master, world = sys.argv[1], sys.argv[2], int(sys.argv[3])
rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 4
checks = Checks()
expect = checks.expect


comm = chorus.Communicator(master)
while comm.world_size < world:
    comm.update_topology(world)
rank, n = comm.rank, comm.world_size

if mode == "collectives":
    index = np.arange(1000)
    for dtype in (np.float32, np.float64, np.int32, np.int64):
        values = (rank + index % 7).astype(dtype)
        comm.all_reduce(values)
        expect(np.array_equal(values, (n * (n - 1) // 2 + n * (index % 7)).astype(dtype)), f"numpy {dtype.__name__} sum")
        out = np.empty_like(values)
        comm.all_reduce(values, out, op="max")
        expect(np.array_equal(out, values), f"numpy {dtype.__name__} max out of place")
    for dtype in (torch.float32, torch.bfloat16, torch.float16, torch.int64, torch.uint8):
        tensor = (torch.arange(1000) % 5 + rank).to(dtype)
        comm.all_reduce(tensor, op="sum")
        expected = (torch.arange(1000) % 5 * n + n * (n - 1) // 2).to(dtype)
        expect(torch.equal(tensor, expected), f"torch {dtype} sum")
    averaged = torch.full((64,), float(rank * 2), dtype=torch.float64)
    comm.all_reduce(averaged, op="avg")
    expect(torch.equal(averaged, torch.full((64,), float(n - 1), dtype=torch.float64)), "avg")
    # Reduce-scatter and all-gather.
    blocks = (np.arange(100 * n) + rank).astype(np.int64)
    mine = np.empty(100, dtype=np.int64)
    comm.reduce_scatter(blocks, mine)
    expect(np.array_equal(mine, np.arange(rank * 100, rank * 100 + 100) * n + n * (n - 1) // 2), "reduce_scatter")
    gathered = torch.empty(50 * n, dtype=torch.float32)
    comm.all_gather(torch.full((50,), float(rank)), gathered)
    expect(torch.equal(gathered, torch.arange(n).repeat_interleave(50).float()), "all_gather")
    # Broadcast from the last rank, and the async forms in flight together.
    payload = np.full(300, rank, dtype=np.uint8)
    comm.broadcast(payload, root=n - 1)
    expect(np.all(payload == n - 1), "broadcast")
    first = torch.ones(1000, dtype=torch.float32) * (rank + 1)
    second = np.full(10, rank, dtype=np.int32)
    requests = [comm.all_reduce_async(first), comm.broadcast_async(second, root=0), comm.barrier_async()]
    for request in requests:
        request.wait()
    expect(torch.equal(first, torch.full((1000,), float(n * (n + 1) // 2))) and np.all(second == 0), "async forms")
    # All-reduces in flight together (their verdicts overlap the next one's data), waited for in
    # reverse order after polling the last with test().
    sizes = [1, 1000, 4099, 70000, 12, 300001]
    burst = [(np.arange(size) % 101 + 1000 * rank + 37 * k).astype(np.float32) for k, size in enumerate(sizes)]
    requests = [comm.all_reduce_async(values) for values in burst]
    while not requests[-1].test():
        time.sleep(0.001)
    for request in reversed(requests):
        request.wait()
    expect(all(np.array_equal(values, (n * (np.arange(size) % 101 + 37 * k) + 1000 * n * (n - 1) // 2).astype(np.float32))
               for k, (size, values) in enumerate(zip(sizes, burst))), "all-reduces in flight")
    # All-Scan: inclusive prefix sums and the affine operator with one decay per element.
    state = np.full(20, rank + 1, dtype=np.float32)
    exclusive, inclusive = np.empty_like(state), np.empty_like(state)
    comm.all_scan(state, exclusive, inclusive)
    expect(np.all(exclusive == rank * (rank + 1) / 2) and np.all(inclusive == (rank + 1) * (rank + 2) / 2), "all_scan sum")
    decay = torch.full((4,), 0.5, dtype=torch.float64)
    affine_state = torch.full((4,), float(rank + 1), dtype=torch.float64)
    affine_out = torch.empty_like(affine_state)
    comm.all_scan(affine_state, inclusive=affine_out, op="affine", decay=decay)
    expected = 0.0
    for r in range(rank + 1):
        expected = 0.5 * expected + (r + 1)
    expect(torch.equal(affine_out, torch.full((4,), expected, dtype=torch.float64)), "all_scan affine")
    comm.barrier()
    # Quantized: every member holds the sequential reference's bits (each rank's contribution
    # quantized as the format says, read back and summed in rank order in float32), with feedback.
    def quantized_reference(inputs, feedbacks, levels, block):
        total, new_feedbacks = None, []
        for x, feedback in zip(inputs, feedbacks):
            sent = x + feedback
            read = np.empty_like(sent)
            for start in range(0, len(sent), block):
                piece = sent[start:start + block]
                scale = np.float32(np.abs(piece).max()) / np.float32(levels)
                q = np.zeros_like(piece) if scale == 0 else \
                    np.rint(np.clip((piece - np.float32(0)) * (np.float32(1) / scale), -levels, levels))
                read[start:start + block] = np.float32(0) + q.astype(np.float32) * scale
            total = read if total is None else total + read
            new_feedbacks.append(sent - read)
        return total, new_feedbacks

    def quantized_input(r, step):
        return (np.sin(np.arange(1000, dtype=np.float32) * np.float32(0.37 + r) + np.float32(step)) * np.float32(2)).astype(np.float32)

    feedbacks = [np.zeros(1000, dtype=np.float32) for _ in range(n)]
    mine = np.zeros(1000, dtype=np.float32)
    for step, (quantize, levels, block) in enumerate((("int8", 127, 64), ("int4", 7, 33))):
        expected, feedbacks = quantized_reference([quantized_input(r, step) for r in range(n)], feedbacks, levels, block)
        values = torch.from_numpy(quantized_input(rank, step))
        comm.all_reduce(values, quantize=quantize, block=block, error_feedback=mine)
        expect(np.array_equal(values.numpy().view(np.uint32), expected.view(np.uint32)), f"quantized {quantize} sum")
        expect(np.array_equal(mine.view(np.uint32), feedbacks[rank].view(np.uint32)), f"quantized {quantize} feedback")
    # optimize_topology: the first call measures every pair, the second none and
    # keeps the order; the ring it formed computes.
    first = comm.optimize_topology(measure_ms=5)
    second = comm.optimize_topology(measure_ms=5)
    expect(first.measured_pairs == n - 1 and second.measured_pairs == 0 and not second.reordered and 1 <= second.right_lanes <= 4,
           f"optimize_topology measured each pair once: {first!r} {second!r}")
    values = (rank + index % 7).astype(np.float32)
    comm.all_reduce(values)
    expect(np.array_equal(values, (n * (n - 1) // 2 + n * (index % 7)).astype(np.float32)), "sum after optimize_topology")
    # Errors: a precise exception, nothing else.
    for call, text in ((lambda: comm.optimize_topology(measure_ms=0), "outside 1 ms ... 10 s"),
                       (lambda: comm.all_reduce(np.zeros(4, dtype=np.float32), quantize="int3"), "unknown quantize 'int3'"),
                       (lambda: comm.all_reduce(np.zeros(4, dtype=np.float32), quantize="int8", error_feedback=np.zeros(4)),
                        "error_feedback must be float32 with 4 elements, not float64 with 4"),
                       (lambda: comm.all_reduce(np.zeros(4, dtype=np.int32), quantize="int8"), "takes f32, f16 or bf16 data"),
                       (lambda: comm.all_reduce(np.zeros(3, dtype=np.complex64)), "dtype complex64"),
                       (lambda: comm.all_reduce(np.zeros(4), np.zeros(4, dtype=np.float32)), "different dtypes"),
                       (lambda: comm.broadcast(np.zeros(4), root=n + 5), f"root {n + 5}"),
                       (lambda: comm.all_reduce(np.zeros(4), op="mean"), "unknown op 'mean'")):
        try:
            call()
            expect(False, f"no error for {text}")
        except chorus.ChorusError as error:
            expect(error.code == "invalid_argument" and not error.retryable and text in str(error), f"{text}: {error!r}")
    print(f"PASS rank={rank} checks={checks.count}", flush=True)

elif mode == "rounds":
    for round in range(rounds):
        while True:
            size, epoch = comm.world_size, comm.epoch
            values = np.arange(1 << 20, dtype=np.float32) % 13 + comm.rank + round
            original = values.copy()
            try:
                comm.all_reduce(values)
            except chorus.ChorusError as error:
                print(f"ABORT round={round} epoch={epoch} retryable={error.retryable} "
                      f"restored={np.array_equal(values, original)} code={error.code} error={error}", flush=True)
                if not error.retryable:
                    sys.exit(3)
                comm.update_topology()
                print(f"TOPOLOGY world={comm.world_size}", flush=True)
                continue
            expected = (np.arange(1 << 20, dtype=np.float32) % 13 + round) * size + size * (size - 1) // 2
            print(f"OK round={round} world={size} correct={np.array_equal(values, expected)}", flush=True)
            break

elif mode == "state":
    shared = chorus.SharedState(revision=3 if rank == 0 else 1)
    weights = shared.add("weights", np.arange(5000, dtype=np.float32) if rank == 0 else np.zeros(5000, dtype=np.float32))
    moments = shared.add("moments", torch.arange(300, dtype=torch.float64) * 0.25 if rank == 0 else torch.zeros(300, dtype=torch.float64))
    shared.add("loss", np.full(1, rank, dtype=np.float32), allowed_to_differ=True)
    info = comm.synchronize(shared)
    expect(info.revision == 3 and shared.revision == 3 and info.was_outdated == (rank != 0), f"sync info {info}")
    expect(np.array_equal(weights, np.arange(5000, dtype=np.float32)), "weights in place")
    expect(torch.equal(moments, torch.arange(300, dtype=torch.float64) * 0.25), "moments in place")
    expect(shared["loss"][0] == rank, "per-peer tensor untouched")
    print(f"SYNCED outdated={info.was_outdated} hash={shared.content_hash}", flush=True)

comm.leave()
comm.close()
