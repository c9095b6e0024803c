"""Shared state: named tensors over the caller's arrays, kept bit-identical by `synchronize`."""
import ctypes

from . import _native
from ._owned import Owned
from .buffers import Buffer
from .errors import check


class SharedState(Owned):
    """Named tensors plus a `revision` the training loop bumps by one per step. Tensors are the
    caller's own NumPy arrays or PyTorch tensors, updated in place by a synchronization; the state
    keeps them referenced (their memory must not move: do not resize them)."""
    _destroy = _native.lib.chorus_state_destroy
    _what = "shared state"

    def __init__(self, revision=0):
        handle, error = ctypes.c_void_p(), _native.Error()
        check(_native.lib.chorus_state_create(revision, ctypes.byref(handle), ctypes.byref(error)), error)
        self._handle = handle
        self._arrays = {}

    def add(self, name, array, allowed_to_differ=False):
        """Adds `array` under `name` (the same on every member). `allowed_to_differ`: per-peer data,
        never compared or transferred. Returns the array."""
        buffer = Buffer(array, name, writable=True)
        error = _native.Error()
        check(_native.lib.chorus_state_add_tensor(self._live(), name.encode(), buffer.address, buffer.count, buffer.dtype,
                                                  1 if allowed_to_differ else 0, ctypes.byref(error)), error)
        self._arrays[name] = array
        return array

    def __getitem__(self, name):
        return self._arrays[name]

    @property
    def revision(self):
        return _native.lib.chorus_state_revision(self._live())

    @revision.setter
    def revision(self, value):
        _native.lib.chorus_state_set_revision(self._live(), value)

    @property
    def content_hash(self):
        """xxHash3 over every tensor that may not differ: equal on every member after a sync."""
        return _native.lib.chorus_state_content_hash(self._live())

