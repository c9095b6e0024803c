"""A peer SIGKILLed mid-step: the survivors raise the same retryable error with their input
restored, re-form, and finish with exact results."""
import signal
import time

import chorus
from conftest import finish, start_workers


def test_a_killed_peer_gives_every_survivor_one_retryable_error(master):
    workers = start_workers(3, "rounds", master.endpoint, 3, 40)
    # Let them run a few rounds, then kill one in the middle of its loop.
    lines_seen = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and sum(1 for _ in lines_seen) < 2:
        line = workers[2].stdout.readline()
        if line.startswith("OK"):
            lines_seen.append(line)
    workers[2].send_signal(signal.SIGKILL)
    results = finish(workers[:2])
    workers[2].wait()
    aborts = []
    for code, lines in results:
        assert code == 0, lines
        aborted = [line for line in lines if line.startswith("ABORT")]
        assert len(aborted) == 1, lines
        assert "retryable=True" in aborted[0] and "restored=True" in aborted[0] and "code=aborted" in aborted[0], aborted
        aborts.append(aborted[0])
        assert "TOPOLOGY world=2" in lines, lines
        oks = [line for line in lines if line.startswith("OK")]
        assert all("correct=True" in line for line in oks) and oks[-1].startswith("OK round=39 world=2"), oks[-3:]
    assert len(set(aborts)) == 1, aborts


def test_errors_are_exceptions_with_a_code_and_a_message():
    try:
        chorus.Communicator("127.0.0.1:1", connect_timeout_ms=2000, log_level="critical")
        raise AssertionError("connected to a port nobody listens on")
    except chorus.ChorusError as error:
        assert error.code == "master_unreachable" and not error.retryable
        assert "connect 127.0.0.1:1: Connection refused" in str(error)
    try:
        chorus.Communicator("127.0.0.1:1", peer_timeout_ms="soon")
        raise AssertionError("a bad option was accepted")
    except chorus.ChorusError as error:
        assert error.code == "invalid_argument" and "CHORUS_PEER_TIMEOUT_MS=soon" in str(error)
    try:
        chorus.Communicator("127.0.0.1:1", peer_timeout_ms=0)
        raise AssertionError("a peer timeout of 0 (no hang detection) was accepted")
    except chorus.ChorusError as error:
        assert error.code == "invalid_argument" and "peerTimeout (CHORUS_PEER_TIMEOUT_MS)" in str(error)


def test_a_wrong_or_missing_secret_is_refused(tmp_path, monkeypatch):
    right, wrong = tmp_path / "right", tmp_path / "wrong"
    right.write_text("0123456789abcdef-the-right-one\n")
    wrong.write_text("0123456789abcdef-the-wrong-one\n")
    monkeypatch.setenv("CHORUS_SECRET_FILE", str(right))  # read when the master starts
    with chorus.Master() as master:
        monkeypatch.delenv("CHORUS_SECRET_FILE")
        with chorus.Communicator(master.endpoint, secret_file=str(right), log_level="critical") as member:
            assert member.world_size == 1
            for options in ({"secret_file": str(wrong)}, {}):
                try:
                    chorus.Communicator(master.endpoint, log_level="critical", **options)
                    raise AssertionError(f"joined with {options}")
                except chorus.ChorusError as error:
                    assert error.code == "authentication_failed" and not error.retryable, error
                    assert "wrong secret" in str(error) or "requires the shared secret" in str(error), error
            assert member.world_size == 1
