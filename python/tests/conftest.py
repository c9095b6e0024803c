"""Shared helpers: an embedded master per test and worker processes (tests/worker.py) on loopback."""
import os
import socket
import subprocess
import sys
import time

import pytest

import chorus

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker.py")
# Short liveness bounds, so a lost peer is noticed within a few seconds.
ENVIRONMENT = dict(os.environ, CHORUS_PEER_TIMEOUT_MS="2000", CHORUS_HEARTBEAT_MS="200", CHORUS_LOG_LEVEL="error")


@pytest.fixture
def master():
    with chorus.Master() as m:
        yield m


def start_workers(count, *arguments, **environment):
    return [subprocess.Popen([sys.executable, WORKER, *map(str, arguments)], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, env=dict(ENVIRONMENT, **environment))
            for _ in range(count)]


def free_port():
    """A port nobody listens on now (for programs that want a fixed port, such as torch's store)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def finish(workers, timeout=120):
    """Every worker's exit code and output lines; workers still running at the deadline are killed."""
    deadline = time.monotonic() + timeout
    results = []
    for worker in workers:
        try:
            output, _ = worker.communicate(timeout=max(1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            worker.kill()
            output, _ = worker.communicate()
        results.append((worker.returncode, output.splitlines()))
    return results
