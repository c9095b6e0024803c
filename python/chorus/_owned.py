"""The life of a native handle, shared by Master, Communicator and SharedState."""
from .errors import ChorusError


class Owned:
    """Owns a handle from libchorus.so, released by `close()`, at the end of a `with` block, or when
    collected. Subclasses name the C function that frees it (`_destroy`) and what they are (`_what`)."""
    _destroy = None
    _what = "object"
    _handle = None

    def _live(self):
        if not self._handle:
            raise ChorusError("invalid_argument", f"invalid argument: this {self._what} is closed", False)
        return self._handle

    def close(self):
        if self._handle:
            type(self)._destroy(self._handle)
            self._handle = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        self.close()
