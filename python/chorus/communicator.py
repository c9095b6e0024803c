"""A peer's handle on a Chorus group: membership and collectives on NumPy arrays and PyTorch tensors."""
import ctypes

from . import _native
from ._owned import Owned
from .buffers import TYPE_CODES, Buffer, invalid, same_type
from .errors import ChorusError, check

REDUCE_OPS = {"sum": 0, "prod": 1, "min": 2, "max": 3, "avg": 4}
QUANTIZE_BITS = {"int8": 8, "int4": 4}
QUANTIZE_SCALINGS = {"absmax": 0, "minmax": 1}
SCAN_OPS = {"sum": 0, "prod": 1, "max": 2, "min": 3, "affine": 4}
SYNC_STRATEGIES = {"elect": 0, "receive_only": 1, "send_only": 2}


def _code(table, name, what):
    if name not in table:
        raise ChorusError("invalid_argument", f"invalid argument: unknown {what} {name!r}; have {', '.join(table)}", False)
    return table[name]


class Request:
    """A collective in flight: started on the communicator's queue in call order, its data moved
    there, and `wait()` takes its verdict (the master's round trip overlaps the next calls' data).
    Its buffers stay referenced (and must not be touched) until `wait()` returns; requests on one
    communicator complete in the order they were made."""

    def __init__(self, handle, keep):
        self._handle = handle
        self._keep = keep
        self._error = None
        self._finished = False

    def wait(self):
        """Blocks (without the GIL) until the collective has its verdict; raises its ChorusError."""
        if not self._finished:
            error = _native.Error()
            status = _native.lib.chorus_wait(self._handle, ctypes.byref(error))
            self._finished, self._keep = True, None
            if status != _native.STATUS_OK:
                try:
                    check(status, error)
                except ChorusError as failure:
                    self._error = failure
        if self._error is not None:
            raise self._error

    def test(self):
        """True once the collective has finished (call `wait()` for its outcome)."""
        if self._finished:
            return True
        error = _native.Error()
        return _native.lib.chorus_test(self._handle, ctypes.byref(error)) != _native.STATUS_PENDING

    def __del__(self):
        # Never let the library write into buffers Python has freed.
        if not self._finished and _native is not None:
            try:
                self.wait()
            except ChorusError:
                pass


class Communicator(Owned):
    """Connects to the master and waits to be admitted.

    master: "host:port" (None: the CHORUS_MASTER environment variable). options: Configuration
    knobs by their environment names without the prefix, e.g. ``peer_timeout_ms=2000``
    (CHORUS_PEER_TIMEOUT_MS). Calls may come from any thread; they run one at a time, in order.
    Every member must make the same collective calls in the same order. `close()` frees it after
    its requests; a member that did not `leave()` first is seen by the others as lost.
    """
    _destroy = _native.lib.chorus_comm_destroy
    _what = "communicator"

    def __init__(self, master=None, **options):
        entries = [f"CHORUS_{key.upper()}={value}".encode() for key, value in options.items()]
        array = (ctypes.c_char_p * (len(entries) + 1))(*entries, None)
        handle, error = ctypes.c_void_p(), _native.Error()
        check(_native.lib.chorus_comm_create(master.encode() if master else None, array, ctypes.byref(handle),
                                             ctypes.byref(error)), error)
        self._handle = handle

    # Membership

    @property
    def rank(self):
        return _native.lib.chorus_comm_rank(self._live())

    @property
    def world_size(self):
        return _native.lib.chorus_comm_world_size(self._live())

    @property
    def epoch(self):
        return _native.lib.chorus_comm_epoch(self._live())

    @property
    def peer_id(self):
        return _native.lib.chorus_comm_peer_id(self._live())

    @property
    def pending_joins(self):
        return _native.lib.chorus_comm_pending_joins(self._live())

    @property
    def pending_leaves(self):
        return _native.lib.chorus_comm_pending_leaves(self._live())

    def poll_membership(self):
        """Reads what the master sent since the last call, without waiting: the pending counts are
        otherwise updated while calls run, so a member running no collective polls to see joiners."""
        self._call("chorus_comm_poll")

    @property
    def topology_change_pending(self):
        """True when peers wait to join or leave: call `update_topology()` between steps."""
        return self.pending_joins + self.pending_leaves > 0

    def update_topology(self, minimum_world_size=1, admit_pending=True):
        """A safe point: admits waiting peers, drops lost ones, connects the new epoch. Every member
        calls it. `admit_pending=False` re-forms the current members only: waiting peers keep waiting
        (unless every other member admits), as a retry after a failure wants."""
        self._call("chorus_update_topology", minimum_world_size, 1 if admit_pending else 0)

    def optimize_topology(self, measure_ms=50, remeasure=False, minimum_world_size=1, admit_pending=True):
        """A safe point that also orders the ring by measured link speed; every member calls it with
        the same `measure_ms` and `remeasure`. Pairs not measured before are measured (about twice
        `measure_ms` each), and the group re-forms in the order whose slowest link is fastest, the
        same at every member; ranks follow the new order. Returns a TopologyOptimization."""
        result, error = _native.TopologyOptimization(), _native.Error()
        check(_native.lib.chorus_optimize_topology(self._live(), measure_ms, 1 if remeasure else 0, minimum_world_size,
                                                   1 if admit_pending else 0, ctypes.byref(result), ctypes.byref(error)), error)
        return TopologyOptimization(result)

    def leave(self):
        """Leaves the group at the next safe point; afterwards only `close()` is allowed."""
        self._call("chorus_comm_leave")

    # Collectives. `receive=None` means in place where the collective allows it.

    def all_reduce(self, send, receive=None, op="sum", quantize=None, block=64, scaling="absmax", error_feedback=None):
        """`quantize="int8"` or `"int4"` sends float32/float16/bfloat16 data (sum or avg) as integers
        with one scale per `block` elements (`scaling` "absmax" or "minmax"), summed in float32, the
        same bits on every member. `error_feedback` (a float32 array of the same size, zeros at first,
        kept between calls) carries what quantizing lost into the next call."""
        self._run(*self._all_reduce(send, receive, op, quantize, block, scaling, error_feedback))

    def all_reduce_async(self, send, receive=None, op="sum", quantize=None, block=64, scaling="absmax", error_feedback=None):
        return self._start(*self._all_reduce(send, receive, op, quantize, block, scaling, error_feedback))

    def reduce_scatter(self, send, receive, op="sum"):
        """`send` holds world_size blocks of len(receive); block `rank` of their reduction lands in `receive`."""
        self._run(*self._reduce_scatter(send, receive, op))

    def reduce_scatter_async(self, send, receive, op="sum"):
        return self._start(*self._reduce_scatter(send, receive, op))

    def all_gather(self, send, receive):
        """Every rank's `send` lands in block `rank` of `receive` (world_size blocks)."""
        self._run(*self._all_gather(send, receive))

    def all_gather_async(self, send, receive):
        return self._start(*self._all_gather(send, receive))

    def broadcast(self, buffer, root=0):
        """`root`'s values replace everyone's `buffer`."""
        self._run(*self._broadcast(buffer, root))

    def broadcast_async(self, buffer, root=0):
        return self._start(*self._broadcast(buffer, root))

    def barrier(self):
        self._run("chorus_barrier", (), ())

    def barrier_async(self):
        return self._start("chorus_barrier", (), ())

    def all_scan(self, state, exclusive=None, inclusive=None, op="sum", decay=None, reverse=False):
        """Exclusive: the fold of the earlier ranks' states (rank 0: the identity); inclusive: that
        fold with this rank's own. `op="affine"` reads `decay` (a leading prefix of the state's shape)."""
        self._run(*self._all_scan(state, exclusive, inclusive, op, decay, reverse))

    def all_scan_async(self, state, exclusive=None, inclusive=None, op="sum", decay=None, reverse=False):
        return self._start(*self._all_scan(state, exclusive, inclusive, op, decay, reverse))

    def synchronize(self, state, strategy="elect"):
        """Makes `state` (a SharedState) bit-identical on every member; returns a SyncInfo."""
        info, error = _native.SyncInfo(), _native.Error()
        check(_native.lib.chorus_synchronize(self._live(), state._live(), _code(SYNC_STRATEGIES, strategy, "strategy"),
                                             ctypes.byref(info), ctypes.byref(error)), error)
        return SyncInfo(info)

    # Plumbing: each collective is (C function, arguments after the communicator, arrays to keep alive).

    def _all_reduce(self, send, receive, op, quantize, block, scaling, error_feedback):
        source = Buffer(send, "send", writable=receive is None)
        target = source if receive is None else Buffer(receive, "receive", writable=True)
        same_type(source, target, "send", "receive")
        if target.count < source.count:
            raise ChorusError("invalid_argument", f"invalid argument: receive holds {target.count} elements, send {source.count}", False)
        arguments = (source.address, target.address, source.count, source.dtype, _code(REDUCE_OPS, op, "op"))
        if quantize is None:
            if error_feedback is not None:
                raise invalid("error_feedback applies to a quantized all-reduce (pass quantize=)")
            return ("chorus_all_reduce", arguments, (send, receive))
        feedback = None
        if error_feedback is not None:
            feedback = Buffer(error_feedback, "error_feedback", writable=True)
            if feedback.dtype != TYPE_CODES["float32"] or feedback.count != source.count:
                raise invalid(f"error_feedback must be float32 with {source.count} elements, not "
                              f"{feedback.array.dtype} with {feedback.count}")
        return ("chorus_all_reduce_quantized",
                arguments + (_code(QUANTIZE_BITS, quantize, "quantize"), _code(QUANTIZE_SCALINGS, scaling, "scaling"), block,
                             feedback.address if feedback else None), (send, receive, error_feedback))

    def _reduce_scatter(self, send, receive, op):
        source, target = Buffer(send, "send"), Buffer(receive, "receive", writable=True)
        same_type(source, target, "send", "receive")
        if source.count != target.count * self.world_size:
            raise ChorusError("invalid_argument", f"invalid argument: send holds {source.count} elements, not "
                              f"world_size ({self.world_size}) x receive ({target.count})", False)
        return ("chorus_reduce_scatter", (source.address, target.address, target.count, source.dtype,
                                          _code(REDUCE_OPS, op, "op")), (send, receive))

    def _all_gather(self, send, receive):
        source, target = Buffer(send, "send"), Buffer(receive, "receive", writable=True)
        same_type(source, target, "send", "receive")
        if target.count != source.count * self.world_size:
            raise ChorusError("invalid_argument", f"invalid argument: receive holds {target.count} elements, not "
                              f"world_size ({self.world_size}) x send ({source.count})", False)
        return ("chorus_all_gather", (source.address, target.address, source.count, source.dtype), (send, receive))

    def _broadcast(self, buffer, root):
        target = Buffer(buffer, "buffer", writable=True)
        return ("chorus_broadcast", (target.address, target.count, target.dtype, root), (buffer,))

    def _all_scan(self, state, exclusive, inclusive, op, decay, reverse):
        source = Buffer(state, "state")
        outputs = [None if array is None else Buffer(array, name, writable=True)
                   for array, name in ((exclusive, "exclusive"), (inclusive, "inclusive"))]
        for output, name in zip(outputs, ("exclusive", "inclusive")):
            if output is not None:
                same_type(source, output, "state", name)
                if output.count != source.count:
                    raise ChorusError("invalid_argument", f"invalid argument: {name} holds {output.count} elements, state {source.count}", False)
        factor = Buffer(decay, "decay") if decay is not None else None
        return ("chorus_all_scan", (source.address, outputs[0] and outputs[0].address, outputs[1] and outputs[1].address,
                                    source.count, source.dtype, _code(SCAN_OPS, op, "op"),
                                    factor.address if factor else None, factor.count if factor else 0, 1 if reverse else 0),
                (state, exclusive, inclusive, decay))

    def _call(self, function, *arguments):
        error = _native.Error()
        check(getattr(_native.lib, function)(self._live(), *arguments, ctypes.byref(error)), error)

    def _run(self, function, arguments, keep):
        # The caller holds `keep` (its arrays) for as long as this blocking call runs.
        self._call(function, *arguments)

    def _start(self, function, arguments, keep):
        handle, error = ctypes.c_void_p(), _native.Error()
        check(getattr(_native.lib, function + "_async")(self._live(), *arguments, ctypes.byref(handle), ctypes.byref(error)), error)
        return Request(handle, keep)


class TopologyOptimization:
    """What `optimize_topology()` measured and chose here (link speeds in bytes per second)."""

    def __init__(self, result):
        self.reordered = bool(result.reordered)
        self.measured_pairs = result.measured_pairs
        self.right_lanes = result.right_lanes
        self.slowest_link_before = result.slowest_link_before
        self.slowest_link_after = result.slowest_link_after

    def __repr__(self):
        return (f"TopologyOptimization(reordered={self.reordered}, measured_pairs={self.measured_pairs}, right_lanes={self.right_lanes}, "
                f"slowest_link_before={self.slowest_link_before:.3g}, slowest_link_after={self.slowest_link_after:.3g})")


class SyncInfo:
    """What a synchronization did here."""

    def __init__(self, info):
        self.revision = info.revision
        self.was_outdated = bool(info.was_outdated)
        self.tensors_received = info.tensors_received
        self.bytes_received = info.bytes_received
        self.bytes_sent = info.bytes_sent
        self.sources = info.sources
        self.lost_sources = info.lost_sources

    def __repr__(self):
        return (f"SyncInfo(revision={self.revision}, was_outdated={self.was_outdated}, "
                f"bytes_received={self.bytes_received}, bytes_sent={self.bytes_sent}, sources={self.sources})")
