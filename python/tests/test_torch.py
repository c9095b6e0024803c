"""The `chorus` torch.distributed backend over real processes: every collective against a reference,
DDP matching gloo step for step, and a peer SIGKILLed mid-step under DDP."""
import os
import signal
import subprocess
import sys
import time

from conftest import ENVIRONMENT, finish, free_port

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_worker.py")


def start(world, *arguments, **environment):
    """`world` torch_worker.py processes with torch's usual rendezvous variables."""
    port = free_port()
    return [subprocess.Popen([sys.executable, WORKER, *map(str, arguments)], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True,
                             env=dict(ENVIRONMENT, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                                      WORLD_SIZE=str(world), **environment))
            for rank in range(world)]


def lines_starting(lines, prefix):
    return [line for line in lines if line.startswith(prefix)]


def test_every_collective_through_torch_distributed_matches_a_reference():
    for code, lines in finish(start(3, "collectives", "chorus")):
        assert code == 0, lines
        passed = lines_starting(lines, "PASS")
        assert len(passed) == 1 and int(passed[0].split("checks=")[1]) >= 25, lines


def losses_and_parameters(backend, world, steps):
    results = finish(start(world, "ddp", backend, steps))
    for code, lines in results:
        assert code == 0, (backend, lines)
    losses = [[float(line.split("value=")[1]) for line in lines_starting(lines, "LOSS")] for _, lines in results]
    parameters = [lines_starting(lines, "PARAMS")[0] for _, lines in results]
    return losses, parameters


def test_ddp_over_chorus_matches_gloo_step_for_step():
    steps = 12
    for world in (2, 3):
        chorus_losses, chorus_parameters = losses_and_parameters("chorus", world, steps)
        gloo_losses, gloo_parameters = losses_and_parameters("gloo", world, steps)
        assert len(set(chorus_parameters)) == 1, "DDP keeps the replicas identical"
        for mine, theirs in zip(chorus_losses, gloo_losses):
            assert len(mine) == steps
            for a, b in zip(mine, theirs):
                assert abs(a - b) <= 1e-5 * max(1.0, abs(b)), (world, mine, theirs)
        if world == 2:
            # Two summands are added in one order by any ring: the runs agree bit for bit.
            assert chorus_parameters == gloo_parameters


def test_ddp_with_the_quantized_hook_keeps_replicas_identical_and_close_to_exact_training():
    results = finish(start(3, "ddp-quantized", "chorus", 12))
    for code, lines in results:
        assert code == 0, lines
    parameters = [lines_starting(lines, "PARAMS")[0] for _, lines in results]
    drifts = [float(lines_starting(lines, "DRIFT")[0].split()[1]) for _, lines in results]
    assert len(set(parameters)) == 1, "every replica holds the same bits"
    # Quantized gradients move the weights a little off the exact run's path, and only a little.
    assert all(0 < drift < 1e-2 for drift in drifts), drifts


def test_a_peer_killed_mid_step_under_ddp_is_survived_with_the_documented_pattern(master):
    steps = 10
    workers = start(3, "faulty-ddp", "chorus", steps, CHORUS_MASTER=master.endpoint, VICTIM_RANK="2", VICTIM_STEP="4")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = workers[2].stdout.readline()
        if not line or line.startswith("HOLD"):
            break
    workers[2].send_signal(signal.SIGKILL)
    results = finish(workers[:2])
    workers[2].wait()
    aborts, parameters = [], []
    for code, lines in results:
        assert code == 0, lines
        aborted = lines_starting(lines, "ABORT")
        assert len(aborted) == 1 and aborted[0].startswith("ABORT code=aborted retryable=True"), lines
        aborts.append(aborted[0])
        assert len(lines_starting(lines, "REFORMED")) == 1 and "world=2" in lines_starting(lines, "REFORMED")[0], lines
        assert len(lines_starting(lines, "LOSS")) == steps, lines
        parameters.append(lines_starting(lines, "PARAMS")[0])
    assert len(set(aborts)) == 1, aborts
    assert parameters[0] == parameters[1], "the survivors' replicas stay identical"
