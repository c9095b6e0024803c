"""chorus.pccl used the way a PCCL program uses pccl: a MasterNode, peers that connect, update the
topology, all-reduce with a retry loop (async handles and all_reduce_multiple_with_retry) and sync
shared state, while one peer is SIGKILLed inside an all-reduce and another joins late."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from chorus import pccl
from conftest import ENVIRONMENT, finish, free_port

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pccl_worker.py")


def start(master, steps, **environment):
    return subprocess.Popen([sys.executable, WORKER, master, str(steps)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=dict(ENVIRONMENT, **environment))


def read_until(worker, prefix, deadline):
    """Lines up to and including the first that starts with `prefix`."""
    lines = []
    while time.monotonic() < deadline:
        line = worker.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if line.startswith(prefix):
            return lines
    raise AssertionError(f"no {prefix!r} line: {lines[-5:]}")


def test_a_pccl_program_survives_a_kill_and_a_joiner_by_changing_only_its_import():
    steps = 80
    address = f"127.0.0.1:{free_port()}"
    master = pccl.MasterNode(address)
    master.run()
    # Three start together; the members wait at revision 40 until the joiner is in.
    workers = [start(address, steps, WAIT_FOR_WORLD="0:3,40:3"), start(address, steps, WAIT_FOR_WORLD="0:3,40:3"),
               start(address, steps, WAIT_FOR_WORLD="0:3", HOLD_AT="15")]
    deadline = time.monotonic() + 120
    read_until(workers[2], "HOLD", deadline)
    workers[2].send_signal(signal.SIGKILL)
    early = read_until(workers[0], "STEP rev=25 ", deadline)
    joiner = start(address, steps)
    results = finish([workers[0], joiner] + workers[1:2])
    workers[2].wait()
    master.interrupt()

    finals = []
    for code, lines in results:
        assert code == 0, lines
        done = [line for line in lines if line.startswith("DONE")]
        assert done and done[0].startswith(f"DONE rev={steps} exact=True"), lines[-5:]
        assert "REFUSED INVALID_ARGUMENT" in lines, lines[-3:]
        finals.append(done[0])
    assert len(set(finals)) == 1, finals
    first = early + results[0][1]
    worlds = [int(line.split("world=")[1].split()[0]) for line in first if line.startswith("STEP")]
    assert worlds == [3] * 15 + [2] * 25 + [3] * 40, worlds
    # Every revision the joiner applied hashes the same at a member that was there from the start.
    member = {line.split()[1]: line.split()[3] for line in first if line.startswith("STEP")}
    joined = [line for line in results[1][1] if line.startswith("STEP")]
    assert joined and all(member[line.split()[1]] == line.split()[3] for line in joined), joined[:3]


QUANTIZED_PEER = """
import hashlib, sys, torch
from chorus.pccl import Attribute, Communicator, QuantizationOptions, ReduceOp
master, seed, saved = sys.argv[1], int(sys.argv[2]), sys.argv[3]
communicator = Communicator(master, 0)
communicator.connect(n_attempts=10)
while communicator.get_attribute(Attribute.GLOBAL_WORLD_SIZE) < 2:
    communicator.update_topology()
values = torch.sin(torch.arange(5000, dtype=torch.float32) * (0.3 + seed))
summed = torch.empty_like(values)
communicator.all_reduce(values, summed, op=ReduceOp.SUM, quantization_options=QuantizationOptions())
print("SUM", hashlib.sha256(summed.numpy().tobytes()).hexdigest()[:16], flush=True)
torch.save(summed, saved)
counts = torch.arange(10, dtype=torch.int64) + seed
totals = torch.empty_like(counts)
communicator.all_reduce(counts, totals, op=ReduceOp.SUM, quantization_options=QuantizationOptions())
print("INTS", totals.tolist(), flush=True)
"""


def test_pccl_quantization_options_quantize_and_every_peer_gets_the_same_bits(tmp_path):
    """PCCL's default QuantizationOptions (8-bit min-max) sends float data quantized: both peers hold
    the same bits, which differ from the exact sum by at most the documented bound. Integer data
    under the same options is summed exactly."""
    port = free_port()
    master = pccl.MasterNode(f"127.0.0.1:{port}")
    master.run()
    try:
        peers = [subprocess.Popen([sys.executable, "-c", QUANTIZED_PEER, f"127.0.0.1:{port}", str(seed), str(tmp_path / f"{seed}.pt")],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENVIRONMENT) for seed in range(2)]
        outputs = [peer.communicate(timeout=120)[0] for peer in peers]
    finally:
        master.interrupt()
    assert all(peer.returncode == 0 for peer in peers), outputs
    sums = [line for output in outputs for line in output.splitlines() if line.startswith("SUM")]
    assert len(sums) == 2 and sums[0] == sums[1], outputs
    # Integer data ignores the options: nothing to scale, the sum is exact.
    ints = [line for output in outputs for line in output.splitlines() if line.startswith("INTS")]
    assert ints == [f"INTS {[2 * i + 1 for i in range(10)]}"] * 2, outputs
    summed = torch.load(tmp_path / "0.pt")
    exact = sum(torch.sin(torch.arange(5000, dtype=torch.float32) * (0.3 + seed)) for seed in range(2))
    error = (summed - exact).abs().max().item()
    # Each contribution is off by at most half a step of its 256-element block: (max - min) / 255 / 2 <= 2 / 510.
    assert 0 < error <= 2 * 2 / 510 + 1e-5, error


OPTIMIZING_PEER = """
import sys, torch
from chorus.pccl import Attribute, Communicator, QuantizationAlgorithm, QuantizationOptions, ReduceOp
communicator = Communicator(sys.argv[1], 0)
communicator.connect(n_attempts=10)
while communicator.get_attribute(Attribute.GLOBAL_WORLD_SIZE) < 3:
    communicator.update_topology()
communicator.optimize_topology()
values = torch.arange(1000, dtype=torch.float32) % 11 + int(sys.argv[2])
summed = torch.empty_like(values)
communicator.all_reduce(values, summed, op=ReduceOp.SUM,
                        quantization_options=QuantizationOptions(algorithm=QuantizationAlgorithm.NONE))
exact = torch.equal(summed, (torch.arange(1000, dtype=torch.float32) % 11) * 3 + 3)
print("OPTIMIZED world", communicator.get_attribute(Attribute.GLOBAL_WORLD_SIZE), "exact", exact, flush=True)
"""


def test_pccl_optimize_topology_measures_and_the_ring_it_forms_computes():
    """Three PCCL peers call optimize_topology() (the links are measured: three members) and
    all-reduce exactly in the ring it formed."""
    port = free_port()
    master = pccl.MasterNode(f"127.0.0.1:{port}")
    master.run()
    try:
        peers = [subprocess.Popen([sys.executable, "-c", OPTIMIZING_PEER, f"127.0.0.1:{port}", str(seed)],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENVIRONMENT) for seed in range(3)]
        outputs = [peer.communicate(timeout=120)[0] for peer in peers]
    finally:
        master.interrupt()
    assert all(peer.returncode == 0 for peer in peers), outputs
    assert [line for output in outputs for line in output.splitlines() if line.startswith("OPTIMIZED")] == \
        ["OPTIMIZED world 3 exact True"] * 3, outputs


def test_pccl_errors_and_limits_are_stated_not_faked():
    with pytest.raises(pccl.PCCLError) as error:
        pccl.Communicator("127.0.0.1:1", peer_group=-1)
    assert error.value.result is pccl.Result.INVALID_ARGUMENT and "peer group" in str(error.value)
    communicator = pccl.Communicator("127.0.0.1:1")
    with pytest.raises(pccl.PCCLError) as error:
        communicator.update_topology()
    assert error.value.result is pccl.Result.INVALID_USAGE
    with pytest.raises(pccl.PCCLError) as error:
        communicator.connect(n_attempts=1)
    assert error.value.result is pccl.Result.MASTER_CONNECTION_FAILED and "Connection refused" in str(error.value)
    small = torch.zeros(4, dtype=torch.int8)
    with pytest.raises(pccl.PCCLError) as error:
        pccl.SharedState([pccl.TensorInfo(name="w", data_ptr=small.data_ptr(), numel=4,
                                          dtype=pccl.DataType.INT8, device_type=pccl.DeviceType.CPU,
                                          allow_content_inequality=False)])
    assert error.value.result is pccl.Result.INVALID_ARGUMENT and "INT8" in str(error.value)
