"""The Python example runs end to end: Examples/diloco-torch/diloco.py trains through a join, a
leave and a SIGKILL, and its finishers hold bit-identical states (it exits 1 otherwise)."""
import os
import subprocess
import sys

from conftest import ENVIRONMENT

EXAMPLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "Examples", "diloco-torch", "diloco.py")


def test_the_elastic_diloco_example_trains_through_churn():
    run = subprocess.run([sys.executable, EXAMPLE], capture_output=True, text=True, env=ENVIRONMENT, timeout=300)
    lines = run.stdout.splitlines()
    # On a failure: what was not routine progress (the churn, failures, a traceback), then the end.
    unusual = [line for line in lines if " outer " not in line]
    assert run.returncode == 0, unusual[-40:] + lines[-5:] + run.stderr.splitlines()[-5:]
    assert "-- peer-c SIGKILLed" in lines and any(line.startswith("peer-b: left") for line in lines)
    assert any(line.startswith("peer-d: received the global state") for line in lines)
    assert lines[-1].endswith("final state bit-identical"), lines[-1]
