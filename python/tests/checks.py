"""The worker processes' check counter: each expectation counts, the first that fails ends the
process with a FAIL line (the test reads it and the exit code)."""
import sys


class Checks:
    def __init__(self, label=""):
        self.count = 0
        self.label = label

    def expect(self, condition, what):
        self.count += 1
        if not condition:
            print(f"FAIL {self.label}{what}", flush=True)
            sys.exit(1)
