"""The exception every Chorus call raises, mirroring the Swift `ChorusError`."""
from . import _native

_NAMES = {0: "ok", 1: "aborted", 2: "topology_update_required", 3: "topology_failed", 4: "invalid_argument",
          5: "master_unreachable", 6: "evicted", 7: "timed_out", 8: "setup_failed", 9: "pending",
          10: "authentication_failed"}


class ChorusError(Exception):
    """A failed Chorus call. `retryable` says whether to call `update_topology()` and try again (every
    surviving member got the same error, and in-place inputs are restored); `code` names the kind:
    aborted, topology_update_required, topology_failed, invalid_argument, master_unreachable,
    evicted, timed_out, setup_failed, authentication_failed."""

    def __init__(self, code, message, retryable):
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable

    def __repr__(self):
        return f"ChorusError({self.code!r}, {self.message!r}, retryable={self.retryable})"


def check(status, error):
    """Raises the ChorusError for a failed status."""
    if status != _native.STATUS_OK:
        raise ChorusError(_NAMES.get(status, str(status)), error.message.decode("utf-8", "replace"), bool(error.retryable))
