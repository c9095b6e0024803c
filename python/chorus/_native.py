"""ctypes bindings to libchorus.so (the C ABI, CModules/CChorus/include/chorus.h).

ctypes releases the GIL around every foreign call, so a collective that waits on the network never
holds up the interpreter's other threads.
"""
import ctypes
import os

_HERE = os.path.dirname(os.path.abspath(__file__))


def _load():
    # The library installed beside this file, else one named by CHORUS_LIBRARY (a build tree).
    candidates = [os.environ.get("CHORUS_LIBRARY"), os.path.join(_HERE, "libchorus.so")]
    for path in candidates:
        if path and os.path.exists(path):
            return ctypes.CDLL(path)
    raise ImportError(
        "libchorus.so not found: install the package with `pip install ./python` (it builds the library), "
        "or set CHORUS_LIBRARY to a built libchorus.so")


lib = _load()

STATUS_OK, STATUS_ABORTED, STATUS_PENDING = 0, 1, 9


class Error(ctypes.Structure):
    _fields_ = [("code", ctypes.c_int32), ("retryable", ctypes.c_int32), ("message", ctypes.c_char * 1024)]


class SyncInfo(ctypes.Structure):
    _fields_ = [("revision", ctypes.c_uint64), ("was_outdated", ctypes.c_int32), ("tensors_received", ctypes.c_int32),
                ("bytes_received", ctypes.c_uint64), ("sources", ctypes.c_int32), ("lost_sources", ctypes.c_int32),
                ("bytes_sent", ctypes.c_uint64)]


class TopologyOptimization(ctypes.Structure):
    _fields_ = [("reordered", ctypes.c_int32), ("measured_pairs", ctypes.c_int32), ("right_lanes", ctypes.c_int32),
                ("slowest_link_before", ctypes.c_double), ("slowest_link_after", ctypes.c_double)]


_p = ctypes.c_void_p
_pp = ctypes.POINTER(ctypes.c_void_p)
_err = ctypes.POINTER(Error)
_i32, _u16, _u64, _size = ctypes.c_int32, ctypes.c_uint16, ctypes.c_uint64, ctypes.c_size_t
_status = ctypes.c_int

_PROTOTYPES = {
    "chorus_status_name": (ctypes.c_char_p, [ctypes.c_int]),
    "chorus_master_create": (_status, [ctypes.c_char_p, _u16, _pp, _err]),
    "chorus_master_port": (_u16, [_p]),
    "chorus_master_destroy": (None, [_p]),
    "chorus_comm_create": (_status, [ctypes.c_char_p, ctypes.POINTER(ctypes.c_char_p), _pp, _err]),
    "chorus_comm_destroy": (None, [_p]),
    "chorus_comm_leave": (_status, [_p, _err]),
    "chorus_update_topology": (_status, [_p, _i32, _i32, _err]),
    "chorus_optimize_topology": (_status, [_p, _i32, _i32, _i32, _i32, ctypes.POINTER(TopologyOptimization), _err]),
    "chorus_comm_poll": (_status, [_p, _err]),
    "chorus_comm_rank": (_i32, [_p]),
    "chorus_comm_world_size": (_i32, [_p]),
    "chorus_comm_epoch": (_u64, [_p]),
    "chorus_comm_peer_id": (_u64, [_p]),
    "chorus_comm_pending_joins": (_i32, [_p]),
    "chorus_comm_pending_leaves": (_i32, [_p]),
    "chorus_all_reduce": (_status, [_p, _p, _p, _size, ctypes.c_int, ctypes.c_int, _err]),
    "chorus_all_reduce_async": (_status, [_p, _p, _p, _size, ctypes.c_int, ctypes.c_int, _pp, _err]),
    "chorus_all_reduce_quantized": (_status, [_p, _p, _p, _size, ctypes.c_int, ctypes.c_int, _i32, _i32, _size, _p, _err]),
    "chorus_all_reduce_quantized_async": (_status, [_p, _p, _p, _size, ctypes.c_int, ctypes.c_int, _i32, _i32, _size, _p, _pp, _err]),
    "chorus_reduce_scatter": (_status, [_p, _p, _p, _size, ctypes.c_int, ctypes.c_int, _err]),
    "chorus_reduce_scatter_async": (_status, [_p, _p, _p, _size, ctypes.c_int, ctypes.c_int, _pp, _err]),
    "chorus_all_gather": (_status, [_p, _p, _p, _size, ctypes.c_int, _err]),
    "chorus_all_gather_async": (_status, [_p, _p, _p, _size, ctypes.c_int, _pp, _err]),
    "chorus_broadcast": (_status, [_p, _p, _size, ctypes.c_int, _i32, _err]),
    "chorus_broadcast_async": (_status, [_p, _p, _size, ctypes.c_int, _i32, _pp, _err]),
    "chorus_barrier": (_status, [_p, _err]),
    "chorus_barrier_async": (_status, [_p, _pp, _err]),
    "chorus_all_scan": (_status, [_p, _p, _p, _p, _size, ctypes.c_int, ctypes.c_int, _p, _size, _i32, _err]),
    "chorus_all_scan_async": (_status, [_p, _p, _p, _p, _size, ctypes.c_int, ctypes.c_int, _p, _size, _i32, _pp, _err]),
    "chorus_wait": (_status, [_p, _err]),
    "chorus_test": (_status, [_p, _err]),
    "chorus_state_create": (_status, [_u64, _pp, _err]),
    "chorus_state_destroy": (None, [_p]),
    "chorus_state_add_tensor": (_status, [_p, ctypes.c_char_p, _p, _size, ctypes.c_int, _i32, _err]),
    "chorus_state_revision": (_u64, [_p]),
    "chorus_state_set_revision": (None, [_p, _u64]),
    "chorus_state_content_hash": (_u64, [_p]),
    "chorus_synchronize": (_status, [_p, _p, ctypes.c_int, ctypes.POINTER(SyncInfo), _err]),
}

for _name, (_restype, _argtypes) in _PROTOTYPES.items():
    _function = getattr(lib, _name)
    _function.restype = _restype
    _function.argtypes = _argtypes
