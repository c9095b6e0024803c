"""A peer written the way PCCL programs are, against `chorus.pccl` only: `pccl_worker.py MASTER STEPS`.

The loop of PCCL's examples: update_topology when peers are pending, wait for a second peer,
sync_shared_state, stop at the last revision, all-reduce the gradient with a retry loop (async
handles on even revisions, all_reduce_multiple_with_retry on odd ones), apply it, bump the revision.
The gradient depends on (revision, index) only, so the weights after R revisions are known exactly
(the reference below), whoever took part; one extra element counts the peers that contributed.
Prints "STEP rev=R world=W hash=H" after each applied step, "HOLD" before the all-reduce of
revision HOLD_AT (if set; the test kills it there), and "DONE rev=R exact=B hash=H". WAIT_FOR_WORLD="R:W,..."
makes it wait at revision R until W peers are members (the start, a late joiner's admission).
"""
import hashlib
import os
import sys
import time

import torch

from chorus.pccl import (Communicator, PCCLError, ReduceDescriptor, ReduceOp, ReduceOperandDescriptor, ReduceOpDescriptor,
                         QuantizationAlgorithm, QuantizationOptions, SharedState, TensorInfo, DataType, Attribute)

master, steps = sys.argv[1], int(sys.argv[2])
hold_at = int(os.environ.get("HOLD_AT", "-1"))
# "R:W,...": at revision R, wait (looping back to update_topology) until the world has W peers.
wait_for_world = {int(r): int(w) for r, w in (pair.split(":") for pair in os.environ.get("WAIT_FOR_WORLD", "").split(",") if pair)}
N, LR = 4096, 0.125


def gradient(revision):
    return ((torch.arange(N) * 7 + revision * 13) % 17).to(torch.float32) - 8


def reference(revision):
    weights = torch.zeros(N)
    for r in range(revision):
        weights -= LR * gradient(r)
    return weights


weights = torch.zeros(N)
momentum = torch.zeros(N, dtype=torch.float64)
state = SharedState([TensorInfo.from_torch(weights, "weights"), TensorInfo.from_torch(momentum, "momentum")])
communicator = Communicator(master, 0)
communicator.connect(n_attempts=10)

i = 0
while True:
    i += 1
    if i > 1 and communicator.are_peers_pending():
        communicator.update_topology()
    world = communicator.get_attribute(Attribute.GLOBAL_WORLD_SIZE)
    if world < max(2, wait_for_world.get(state.revision, 0)):
        time.sleep(0.05)
        continue
    communicator.sync_shared_state(state)
    if state.revision >= steps:
        break
    time.sleep(0.02)  # the step's compute
    summed = torch.cat([gradient(state.revision), torch.ones(1)])
    if state.revision == hold_at:
        print("HOLD", flush=True)
        time.sleep(120)
    while True:
        contribution = summed.clone()
        if state.revision % 2 == 0:
            is_success, status, info = communicator.all_reduce_async(contribution, contribution, op=ReduceOp.SUM).wait()
            if not is_success:
                continue
            contributors = info.local_world_size
        else:
            chunks = contribution.chunk(4)
            descriptors = [ReduceOpDescriptor.from_torch(c, c, ReduceDescriptor(
                c.numel(), ReduceOp.SUM, tag, ReduceOperandDescriptor(DataType.FLOAT),
                QuantizationOptions(algorithm=QuantizationAlgorithm.NONE)))
                for tag, c in enumerate(chunks)]
            contributors = communicator.all_reduce_multiple_with_retry(descriptors, max_in_flight=2).local_world_size
        break
    if int(contribution[-1]) != contributors:
        print(f"FAIL the sum counted {contribution[-1]} peers, the world is {contributors}", flush=True)
        sys.exit(1)
    weights -= LR * (contribution[:-1] / contributors)
    momentum += state.revision
    state.revision += 1
    digest = hashlib.sha256(weights.numpy().tobytes() + momentum.numpy().tobytes()).hexdigest()[:16]
    print(f"STEP rev={state.revision} world={contributors} hash={digest}", flush=True)

exact = torch.equal(weights, reference(state.revision)) and float(momentum[0]) == sum(range(state.revision))
print(f"DONE rev={state.revision} exact={exact} hash={hashlib.sha256(weights.numpy().tobytes()).hexdigest()[:16]}", flush=True)
try:
    communicator.all_reduce(torch.zeros(2), torch.zeros(3), op=ReduceOp.SUM)
except PCCLError as error:
    print(f"REFUSED {error.result.name}", flush=True)
