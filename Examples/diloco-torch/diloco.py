"""Elastic DiLoCo with PyTorch over Chorus: peers train a small model on generated data while one
joins, one leaves and one is SIGKILLed; the global parameters stay bit-identical by shared-state sync.

    python Examples/diloco-torch/diloco.py                 # the whole run: a master and the peers
    python Examples/diloco-torch/diloco.py --help

DiLoCo (Douillard et al., 2023): every peer copies the global parameters, takes `--inner-steps`
AdamW steps on its own data, and the outer gradient (global minus local, averaged over the peers
by an all-reduce) moves the global parameters with Nesterov momentum. The global parameters and
the outer momentum are a Chorus shared state: a joiner receives them at its first sync, and every
outer step checks that all members hold the same bits (a sync that finds nobody outdated moves
nothing). A lost or leaving peer makes the step's collective fail at every survivor with one
retryable error; they re-form and redo the step from the global parameters.
"""
import argparse
import hashlib
import os
import selectors
import signal
import subprocess
import sys
import time

import torch

import chorus

INPUTS, HIDDEN = 32, 64


def teacher(x):
    """The function every peer learns, from its own samples."""
    return torch.sin(x[:, :8].sum(1, keepdim=True)) + 0.5 * torch.cos(x[:, 8:16].sum(1, keepdim=True))


def model():
    torch.manual_seed(0)  # every peer starts from the same parameters (the sync would fix it anyway)
    return torch.nn.Sequential(torch.nn.Linear(INPUTS, HIDDEN), torch.nn.Tanh(), torch.nn.Linear(HIDDEN, HIDDEN),
                               torch.nn.Tanh(), torch.nn.Linear(HIDDEN, 1))


def worker(arguments):
    """One peer: `--worker NAME`; prints "NAME: outer R world W loss L state H" per outer step and
    leaves the group gracefully at the next step once it gets SIGUSR1."""
    leave_requested = []
    signal.signal(signal.SIGUSR1, lambda *_: leave_requested.append(True))
    local = model()
    global_parameters = [p.detach().clone() for p in local.parameters()]
    momentum = [torch.zeros_like(p) for p in global_parameters]
    state = chorus.SharedState(revision=0)
    for index, tensor in enumerate(global_parameters + momentum):
        state.add(f"{'parameter' if index < len(global_parameters) else 'momentum'}.{index}", tensor)
    inner = torch.optim.AdamW(local.parameters(), lr=arguments.inner_lr)
    comm = chorus.Communicator(arguments.master)
    name = arguments.worker
    while True:
        try:
            if comm.topology_change_pending:
                comm.update_topology()
            info = comm.synchronize(state)
            if info.was_outdated and info.bytes_received:
                print(f"{name}: received the global state at revision {state.revision} ({info.bytes_received} bytes)", flush=True)
            if state.revision >= arguments.outer_steps:
                break
            if leave_requested:
                comm.leave()
                print(f"{name}: left the group at revision {state.revision}", flush=True)
                return
            with torch.no_grad():
                for p, g in zip(local.parameters(), global_parameters):
                    p.copy_(g)
            seed = int.from_bytes(hashlib.sha256(f"{name}:{state.revision}".encode()).digest()[:4], "little")
            generator = torch.Generator().manual_seed(seed)  # this peer's data for this step, the same on a retry
            for _ in range(arguments.inner_steps):
                x = torch.randn(64, INPUTS, generator=generator)
                loss = torch.nn.functional.mse_loss(local(x), teacher(x))
                inner.zero_grad()
                loss.backward()
                inner.step()
            outer_gradient = torch.cat([(g - p.detach()).flatten() for g, p in zip(global_parameters, local.parameters())])
            time.sleep(arguments.step_delay)  # room for the churn to land inside a step
            comm.all_reduce(outer_gradient, op="avg")
        except chorus.ChorusError as error:
            if not error.retryable:
                raise
            print(f"{name}: step at revision {state.revision} failed ({error.message}); re-forming", flush=True)
            comm.update_topology()
            continue
        with torch.no_grad():
            offset = 0
            for g, m in zip(global_parameters, momentum):
                step = outer_gradient[offset:offset + g.numel()].view_as(g)
                offset += g.numel()
                m.mul_(arguments.outer_momentum).add_(step)
                g.sub_(arguments.outer_lr * (step + arguments.outer_momentum * m))
        state.revision += 1
        x = torch.randn(512, INPUTS, generator=torch.Generator().manual_seed(12345))
        with torch.no_grad():
            for p, g in zip(local.parameters(), global_parameters):
                p.copy_(g)
            held_out = torch.nn.functional.mse_loss(local(x), teacher(x)).item()
        print(f"{name}: outer {state.revision} world {comm.world_size} loss {held_out:.5f} state {state.content_hash:016x}",
              flush=True)
    print(f"{name}: finished at revision {state.revision} with state {state.content_hash:016x}", flush=True)
    comm.leave()


def launch(arguments):
    """The run: a master, three peers, a joiner, a leaver and a peer that is SIGKILLed."""
    master = chorus.Master()
    print(f"master on {master.endpoint}; {arguments.outer_steps} outer steps of {arguments.inner_steps} inner steps", flush=True)
    environment = dict(os.environ, CHORUS_PEER_TIMEOUT_MS="2000", CHORUS_HEARTBEAT_MS="200",
                       CHORUS_LOG_LEVEL=os.environ.get("CHORUS_LOG_LEVEL", "error"))

    def start(name, *extra):
        return subprocess.Popen([sys.executable, __file__, "--worker", name, "--master", master.endpoint,
                                 "--outer-steps", str(arguments.outer_steps), "--inner-steps", str(arguments.inner_steps),
                                 "--step-delay", str(arguments.step_delay), *extra],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environment)

    third = arguments.outer_steps // 3
    print(f"peer-d joins once the run is going; when it is in, peer-b leaves, then peer-c is SIGKILLed", flush=True)
    peers = {}
    streams = selectors.DefaultSelector()

    def add(name, *extra):
        peers[name] = start(name, *extra)
        streams.register(peers[name].stdout, selectors.EVENT_READ, name)

    add("peer-a")
    add("peer-b")
    add("peer-c")
    lines, finals, left_at = [], {}, None
    deadline = time.monotonic() + 300
    # Every peer's lines as they come; the churn follows peer-a's progress.
    while streams.get_map() and time.monotonic() < deadline:
        for key, _ in streams.select(timeout=1):
            line = key.fileobj.readline()
            if not line:
                streams.unregister(key.fileobj)
                continue
            line = line.rstrip("\n")
            print(line, flush=True)
            lines.append(line)
            if line.startswith(f"{key.data}: finished"):
                finals[key.data] = line.split("state ")[1]
            if line.startswith("peer-b: left"):
                left_at = int(line.split()[-1])
            if not line.startswith("peer-a: outer"):
                continue
            # The churn, one event at a time: a joiner, then (once it is in) a leaver, then a kill.
            revision, world = int(line.split()[2]), int(line.split()[4])
            if revision >= 2 and "peer-d" not in peers:
                print("-- peer-d starts and will join at the next safe point", flush=True)
                add("peer-d")
            elif world == 4 and left_at is None and peers["peer-b"].poll() is None and revision >= third:
                print("-- peer-b is asked to leave", flush=True)
                peers["peer-b"].send_signal(signal.SIGUSR1)
            elif left_at is not None and revision >= left_at + 3 and peers["peer-c"].poll() is None:
                peers["peer-c"].send_signal(signal.SIGKILL)
                print("-- peer-c SIGKILLed", flush=True)
    for process in peers.values():
        process.wait(timeout=max(1, deadline - time.monotonic()))
    master.close()
    losses = [float(line.split("loss ")[1].split()[0]) for line in lines if line.startswith("peer-a: outer")]
    print(f"held-out loss fell from {losses[0]:.5f} to {losses[-1]:.5f}; finishers {sorted(finals)}; "
          f"final state {'bit-identical' if len(set(finals.values())) == 1 else 'DIFFERENT'}", flush=True)
    ok = set(finals) == {"peer-a", "peer-d"} and len(set(finals.values())) == 1 and losses[-1] < losses[0]
    sys.exit(0 if ok else 1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--outer-steps", type=int, default=40)
    parser.add_argument("--inner-steps", type=int, default=20)
    parser.add_argument("--inner-lr", type=float, default=3e-3)
    parser.add_argument("--outer-lr", type=float, default=0.7)
    parser.add_argument("--outer-momentum", type=float, default=0.9)
    parser.add_argument("--step-delay", type=float, default=0.05, help="seconds of idle per outer step (the churn lands in it)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--master", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    worker(arguments) if arguments.worker else launch(arguments)


if __name__ == "__main__":
    main()
