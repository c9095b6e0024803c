"""Shared state: named tensors over the caller's arrays, kept bit-identical by `synchronize`."""
import ctypes

from . import _native
from ._owned import Owned
from .buffers import TYPE_CODES, Buffer, invalid
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
        self._add(name, buffer.address, buffer.count, buffer.dtype, allowed_to_differ)
        self._arrays[name] = array
        return array

    def add_memory(self, name, address, count, dtype, allowed_to_differ=False):
        """Adds `count` elements of `dtype` ("float32", "bfloat16", ...) at a raw `address` (an int),
        memory the caller keeps valid and unmoved for the life of the state."""
        if dtype not in TYPE_CODES:
            raise invalid(f"{name} has dtype {dtype!r}; Chorus holds {', '.join(TYPE_CODES)}")
        if not address:
            raise invalid(f"{name} has a null address")
        self._add(name, address, count, TYPE_CODES[dtype], allowed_to_differ)

    def _add(self, name, address, count, dtype, allowed_to_differ):
        error = _native.Error()
        check(_native.lib.chorus_state_add_tensor(self._live(), name.encode(), address, count, dtype,
                                                  1 if allowed_to_differ else 0, ctypes.byref(error)), error)

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

