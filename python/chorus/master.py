"""An embedded master: membership, admission and the verdict of every collective."""
import ctypes

from . import _native
from ._owned import Owned
from .errors import check


class Master(Owned):
    """Serves on a background thread of this process until `close()` (or the end of a `with` block).
    `host` is the listening address (loopback by default); port 0 takes an ephemeral port."""
    _destroy = _native.lib.chorus_master_destroy
    _what = "master"

    def __init__(self, host="127.0.0.1", port=0):
        handle, error = ctypes.c_void_p(), _native.Error()
        check(_native.lib.chorus_master_create(host.encode(), port, ctypes.byref(handle), ctypes.byref(error)), error)
        self._handle = handle
        self.host = host
        self.port = _native.lib.chorus_master_port(handle)

    @property
    def endpoint(self):
        """"host:port", for `Communicator(master=...)` or CHORUS_MASTER."""
        return f"{self.host}:{self.port}"
