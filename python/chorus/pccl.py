"""PCCL 1.0's Python API over Chorus: a program written for the `pccl` package runs on Chorus by
changing its import to `from chorus import pccl` (or `import chorus.pccl as pccl`).

Same classes, enums, methods and outcomes: `MasterNode`, `Communicator` (`connect`, `update_topology`,
`are_peers_pending`, `optimize_topology`, `sync_shared_state`, `all_reduce`, `all_reduce_async`,
`all_reduce_multiple_with_retry`, `get_attribute`), `SharedState`, `TensorInfo`, `ReduceOp`,
`Attribute`, `SharedStateSyncStrategy`, `DataType`, `ReduceInfo`, `PCCLError` with its `Result`.
PCCL's model is kept where it differs from Chorus's own:
- a failed all-reduce is simply called again: the next call on the communicator first re-forms
  the surviving members (Chorus's `update_topology(admit_pending=False)`), so joiners still wait for
  the program's own `update_topology()`;
- an all-reduce in a world of one fails with `TOO_FEW_PEERS`;
- after a synchronization the shared state's `revision` is the elected one;
- `are_peers_pending()` gives every member the same answer (a small all-reduce), so members never
  split between `update_topology()` and the next collective; every member calls it at the same
  point of its loop, as PCCL programs do.
Peer groups are Chorus's own (`Configuration.peerGroup`): each group keeps its own members, collectives
and shared state at one master. What Chorus lacks is said, not faked: data types Chorus does not reduce
(4-bit, 8/16-bit integers, unsigned 32/64) raise `INVALID_ARGUMENT`; quantization options are honoured
(PCCL's default, 8-bit min-max, quantizes; `QuantizationAlgorithm.NONE` reduces exactly) with Chorus's
quantized all-reduce: a scale per block of 256 elements, every member the same bits; integer data is
reduced exactly; quantizing to a type other than 8 or 4 bits raises `INVALID_ARGUMENT`.
`optimize_topology()` is Chorus's: the members measure the links they have not measured before
(bounded time per pair) and re-form in the ring order whose slowest link is fastest; like PCCL's it
admits nobody (joiners wait for `update_topology()`).
`ReduceInfo` byte counts are what a ring all-reduce moves per peer, 2(n-1)/n of the buffer, as Chorus
counts no bytes per collective.
"""
import logging
import time
from enum import Enum

import numpy

from .communicator import Communicator as _Communicator
from .errors import ChorusError
from .master import Master as _Master
from .state import SharedState as _SharedState

__all__ = ["Attribute", "AsyncReduceHandle", "Communicator", "DataType", "DeviceType", "DistributionHint",
           "MasterNode", "PCCLError", "QuantizationAlgorithm", "QuantizationOptions", "ReduceDescriptor", "ReduceInfo",
           "ReduceOp", "ReduceOpDescriptor", "ReduceOperandDescriptor", "Result", "SharedState",
           "SharedStateSyncInfo", "SharedStateSyncStrategy", "TensorInfo"]

_log = logging.getLogger("chorus.pccl")


class Result(Enum):
    SUCCESS = 0
    NOT_INITIALIZED = 1
    INTERNAL_ERROR = 2
    INVALID_ARGUMENT = 3
    INVALID_USAGE = 4
    TOO_FEW_PEERS = 5
    MASTER_CONNECTION_FAILED = 6
    RANK_CONNECTION_FAILED = 7
    RANK_CONNECTION_LOST = 8
    NO_SHARED_STATE_AVAILABLE = 9
    PENDING_ASYNC_OPS = 10
    UPDATE_TOPOLOGY_FAILED = 11
    TOPOLOGY_OPTIMIZATION_FAILED = 12


class PCCLError(Exception):
    """A failed call: `result` says which kind; the text also carries Chorus's own explanation."""

    def __init__(self, result, func_name, detail=None):
        text = f"{func_name} failed with error: {result.name}"
        super().__init__(f"{text} ({detail})" if detail else text)
        self.result = result


def _result_of(error, func_name):
    """The PCCL result a ChorusError stands for in `func_name`."""
    if error.code == "invalid_argument":
        return Result.INVALID_ARGUMENT
    if error.code in ("master_unreachable", "evicted", "authentication_failed"):
        return Result.MASTER_CONNECTION_FAILED
    if error.code == "setup_failed":
        return Result.INTERNAL_ERROR
    if not error.retryable:  # mismatched calls or states that cannot be synchronized
        return Result.INVALID_USAGE
    if func_name in ("pcclUpdateTopology", "pcclConnect"):
        return Result.UPDATE_TOPOLOGY_FAILED
    return Result.RANK_CONNECTION_LOST


class ReduceOp(Enum):
    SUM = 0
    AVG = 1
    PROD = 2
    MAX = 3
    MIN = 4


_CHORUS_OPS = {ReduceOp.SUM: "sum", ReduceOp.AVG: "avg", ReduceOp.PROD: "prod", ReduceOp.MAX: "max",
               ReduceOp.MIN: "min"}


class Attribute(Enum):
    GLOBAL_WORLD_SIZE = 1
    LOCAL_WORLD_SIZE = 2
    NUM_DISTINCT_PEER_GROUPS = 3
    LARGEST_PEER_GROUP_WORLD_SIZE = 4


class SharedStateSyncStrategy(Enum):
    ENFORCE_POPULAR = 0
    RECEIVE_ONLY = 1
    SEND_ONLY = 2


_CHORUS_STRATEGIES = {SharedStateSyncStrategy.ENFORCE_POPULAR: "elect", SharedStateSyncStrategy.RECEIVE_ONLY: "receive_only",
                      SharedStateSyncStrategy.SEND_ONLY: "send_only"}


class DataType(Enum):
    UINT4 = 0
    UINT8 = 1
    INT8 = 2
    UINT16 = 4
    UINT32 = 5
    INT32 = 6
    UINT64 = 7
    INT64 = 8
    FLOAT16 = 9
    BFLOAT16 = 10
    FLOAT = 11
    DOUBLE = 12

    def to_torch_dtype(self):
        import torch
        return getattr(torch, _TORCH_NAMES[self])

    def to_numpy_dtype(self):
        if self not in _NUMPY_NAMES:
            raise ValueError(f"Unsupported DataType: {self}")
        return numpy.dtype(_NUMPY_NAMES[self])

    @classmethod
    def from_torch_dtype(cls, dtype):
        for member, name in _TORCH_NAMES.items():
            if str(dtype) == f"torch.{name}":
                return member
        raise ValueError(f"Unsupported dtype: {dtype}")

    @classmethod
    def from_numpy_dtype(cls, dtype):
        for member, name in _NUMPY_NAMES.items():
            if str(dtype) == name:
                return member
        raise ValueError(f"Unsupported dtype: {dtype}")


_TORCH_NAMES = {DataType.UINT8: "uint8", DataType.INT8: "int8", DataType.UINT16: "uint16", DataType.UINT32: "uint32",
                DataType.INT32: "int32", DataType.UINT64: "uint64", DataType.INT64: "int64", DataType.FLOAT16: "float16",
                DataType.BFLOAT16: "bfloat16", DataType.FLOAT: "float32", DataType.DOUBLE: "float64"}
_NUMPY_NAMES = {member: name for member, name in _TORCH_NAMES.items() if member is not DataType.BFLOAT16}
# What Chorus reduces and holds in shared state, by its own type names.
_CHORUS_TYPES = {DataType.UINT8: "uint8", DataType.INT32: "int32", DataType.INT64: "int64", DataType.FLOAT16: "float16",
                 DataType.BFLOAT16: "bfloat16", DataType.FLOAT: "float32", DataType.DOUBLE: "float64"}


# Elements per scale when a PCCL call asks for quantization (PCCL scales whole tensors; a block follows
# the data more closely and costs 8 bytes per 256 elements).
_QUANTIZATION_BLOCK = 256


def _quantization(options, func_name):
    """Chorus's (quantize, scaling) for PCCL's QuantizationOptions: NONE reduces exactly, MIN_MAX and
    ZERO_POINT_SCALE (both affine) quantize min-max to 8 bits (UINT8, INT8) or 4 (UINT4)."""
    if options is None or options.algorithm is QuantizationAlgorithm.NONE:
        return None, "absmax"
    bits = {DataType.UINT8: "int8", DataType.INT8: "int8", DataType.UINT4: "int4"}.get(options.quantized_datatype)
    if bits is None:
        raise PCCLError(Result.INVALID_ARGUMENT, func_name,
                        f"Chorus quantizes to 8 or 4 bits (UINT8, INT8, UINT4), not {options.quantized_datatype.name}")
    return bits, "minmax"


def _chorus_type(datatype, func_name):
    if datatype not in _CHORUS_TYPES:
        raise PCCLError(Result.INVALID_ARGUMENT, func_name,
                        f"Chorus does not reduce {datatype.name}; it reduces {', '.join(t.name for t in _CHORUS_TYPES)}")
    return _CHORUS_TYPES[datatype]


class DeviceType(Enum):
    CPU = 0
    CUDA = 1

    @classmethod
    def from_torch_device_type(cls, device_type):
        return {"cpu": cls.CPU, "cuda": cls.CUDA}.get(device_type)


class DistributionHint(Enum):
    NONE = 0
    NORMAL = 1
    UNIFORM = 2


class QuantizationAlgorithm(Enum):
    NONE = 0
    MIN_MAX = 1
    ZERO_POINT_SCALE = 2


class ReduceOperandDescriptor:
    def __init__(self, datatype, distribution_hint=DistributionHint.NONE):
        self.datatype = datatype
        self.distribution_hint = distribution_hint


class QuantizationOptions:
    """PCCL's defaults: 8-bit min-max. Chorus quantizes per block of 256 (see the module's notes)."""

    def __init__(self, quantized_datatype=DataType.UINT8, algorithm=QuantizationAlgorithm.MIN_MAX):
        self.quantized_datatype = quantized_datatype
        self.algorithm = algorithm


class ReduceDescriptor:
    def __init__(self, count, op, tag, operand_descriptor, quantization_options):
        self.count = count
        self.op = op
        self.tag = tag
        self.operand_descriptor = operand_descriptor
        self.quantization_options = quantization_options


class ReduceOpDescriptor:
    """One all-reduce of `all_reduce_multiple_with_retry`: its send and receive arrays."""

    def __init__(self, send, recv, reduce_descriptor):
        self.send = send
        self.recv = recv
        self.reduce_descriptor = reduce_descriptor

    @staticmethod
    def from_torch(send, recv, reduce_descriptor):
        return ReduceOpDescriptor(send, recv, reduce_descriptor)

    @staticmethod
    def from_numpy(send, recv, reduce_descriptor):
        return ReduceOpDescriptor(send, recv, reduce_descriptor)


class TensorInfo:
    """A named tensor of a shared state: an array (from_torch / from_numpy, kept referenced) or raw
    memory at `data_ptr` that the caller keeps alive."""

    def __init__(self, name, data_ptr, *, numel, dtype, device_type, allow_content_inequality, array=None):
        if data_ptr == 0:
            raise ValueError("Invalid data pointer: nullptr")
        if device_type is not DeviceType.CPU:
            raise PCCLError(Result.INVALID_ARGUMENT, "TensorInfo", "Chorus holds CPU memory only")
        self.name = name
        self.data_ptr = data_ptr
        self.numel = numel
        self.dtype = dtype
        self.device_type = device_type
        self.allow_content_inequality = allow_content_inequality
        self.array = array

    @classmethod
    def from_torch(cls, tensor, name, *, allow_content_inequality=False):
        if not tensor.is_contiguous():
            raise ValueError("Input tensor must be contiguous")
        return cls(name, tensor.data_ptr(), numel=tensor.numel(), dtype=DataType.from_torch_dtype(tensor.dtype),
                   device_type=DeviceType.from_torch_device_type(tensor.device.type),
                   allow_content_inequality=allow_content_inequality, array=tensor)

    @classmethod
    def from_numpy(cls, array, name, *, allow_content_inequality=False):
        if not array.flags["C_CONTIGUOUS"]:
            raise ValueError("Input array must be contiguous")
        return cls(name, array.ctypes.data, numel=array.size, dtype=DataType.from_numpy_dtype(array.dtype),
                   device_type=DeviceType.CPU, allow_content_inequality=allow_content_inequality, array=array)


class SharedState:
    def __init__(self, tensor_infos):
        if not tensor_infos:
            raise ValueError("At least one tensor info must be provided")
        self.tensor_infos = list(tensor_infos)
        self._state = _SharedState(0)
        for info in self.tensor_infos:
            if info.array is not None:
                self._state.add(info.name, info.array, allowed_to_differ=info.allow_content_inequality)
            else:
                self._state.add_memory(info.name, info.data_ptr, info.numel, _chorus_type(info.dtype, "SharedState"),
                                       allowed_to_differ=info.allow_content_inequality)

    @property
    def revision(self):
        return self._state.revision

    @revision.setter
    def revision(self, value):
        self._state.revision = value

    def push_revision(self):
        self._state.revision += 1


class SharedStateSyncInfo:
    def __init__(self, tx_bytes, rx_bytes):
        self.tx_bytes = tx_bytes
        self.rx_bytes = rx_bytes


class ReduceInfo:
    def __init__(self, local_world_size, tx_bytes, rx_bytes):
        self.local_world_size = local_world_size
        self.tx_bytes = tx_bytes
        self.rx_bytes = rx_bytes

    @property
    def world_size(self):
        """The name releases before 1.0 used."""
        return self.local_world_size


def _ring_info(world_size, buffer):
    moved = 2 * (world_size - 1) * buffer.nbytes // world_size
    return ReduceInfo(world_size, moved, moved)


class AsyncReduceHandle:
    def __init__(self, communicator, request, recv, world_size):
        self._communicator = communicator
        self._request = request
        self._recv = recv
        self._world_size = world_size
        self._outcome = None

    def wait(self):
        """Blocks until the all-reduce has its verdict: (is_success, status, ReduceInfo)."""
        if self._outcome is None:
            try:
                self._request.wait()
                self._outcome = (True, Result.SUCCESS.value, _ring_info(self._world_size, self._recv))
            except ChorusError as error:
                self._communicator._failed(error)
                self._outcome = (False, _result_of(error, "pcclAwaitAsyncReduce").value, ReduceInfo(self._world_size, 0, 0))
        return self._outcome


class Communicator:
    """A peer. `connect()` joins the run (blocking until admitted at the members' next
    `update_topology()`). `peer_group`: the members it all-reduces and shares state with (the
    master keeps each group's membership apart). `p2p_connection_pool_size` > 0 sets the
    connections per neighbour."""

    def __init__(self, address, peer_group=0, p2p_connection_pool_size=0):
        if ":" not in address:
            raise ValueError(f"Invalid address: {address}, expected format: ip:port")
        if not 0 <= peer_group <= 0xFFFFFFFF:
            raise PCCLError(Result.INVALID_ARGUMENT, "pcclCreateCommunicator",
                            f"peer group {peer_group} is outside 0...{0xFFFFFFFF}")
        self._address = address
        self._options = {"peer_group": peer_group}
        if p2p_connection_pool_size > 0:
            self._options["connections"] = p2p_connection_pool_size
        self._comm = None
        self._reform_needed = False

    def _call(self, func_name, body):
        if self._comm is None:
            raise PCCLError(Result.INVALID_USAGE, func_name, "connect() first")
        try:
            return body()
        except ChorusError as error:
            self._failed(error)
            raise PCCLError(_result_of(error, func_name), func_name, error.message) from error

    def _failed(self, error):
        if error.retryable:
            self._reform_needed = True

    def _reform_if_needed(self):
        # A collective failed: the survivors re-form before the next one, joiners keep waiting.
        if self._reform_needed:
            self._comm.update_topology(admit_pending=False)
            self._reform_needed = False

    def connect(self, n_attempts=5):
        """Connects to the master and waits to be admitted; tries `n_attempts` times, a second apart."""
        last = None
        for attempt in range(1, n_attempts + 1):
            try:
                self._comm = _Communicator(self._address, **self._options)
                return
            except ChorusError as error:
                _log.error("Failed to connect to the master node (attempt %d/%d): %s", attempt, n_attempts, error)
                last = error
                time.sleep(1)
        raise PCCLError(Result.MASTER_CONNECTION_FAILED, "pcclConnect", last.message if last else None)

    def get_attribute(self, attribute):
        def read():
            if attribute is Attribute.NUM_DISTINCT_PEER_GROUPS:
                return 1
            return self._comm.world_size
        return self._call("pcclGetAttribute", read)

    def update_topology(self):
        """A safe point: admits waiting peers, drops lost ones. Every member calls it."""
        def update():
            self._comm.update_topology()
            self._reform_needed = False
        self._call("pcclUpdateTopology", update)

    def are_peers_pending(self):
        """True when peers wait to join; the same answer at every member (a one-integer all-reduce of
        what each has heard from the master), so all of them call `update_topology()` or none."""
        def ask():
            self._reform_if_needed()
            self._comm.poll_membership()
            heard = numpy.array([self._comm.pending_joins], dtype=numpy.int64)
            if self._comm.world_size > 1:
                self._comm.all_reduce(heard, op="max")
            return bool(heard[0] > 0)
        return self._call("pcclArePeersPending", ask)

    def optimize_topology(self):
        """Orders the ring by measured link speed; every member calls it (see the module's notes)."""
        def optimize():
            self._reform_if_needed()
            self._comm.optimize_topology(admit_pending=False)
        self._call("pcclOptimizeTopology", optimize)

    def sync_shared_state(self, shared_state, strategy=SharedStateSyncStrategy.ENFORCE_POPULAR):
        def sync():
            self._reform_if_needed()
            info = self._comm.synchronize(shared_state._state, strategy=_CHORUS_STRATEGIES[strategy])
            return SharedStateSyncInfo(info.bytes_sent, info.bytes_received)
        return self._call("pcclSynchronizeSharedState", sync)

    def _start(self, send, recv, op, func_name, quantization_options=None):
        """Checks the call the way PCCL does, then starts it: (request, world size)."""
        datatype = DataType.from_torch_dtype(send.dtype) if hasattr(send, "data_ptr") else DataType.from_numpy_dtype(send.dtype)
        _chorus_type(datatype, func_name)
        if type(send) is not type(recv) or send.dtype != recv.dtype:
            raise PCCLError(Result.INVALID_ARGUMENT, func_name, "send and recv must be arrays of one kind and dtype")
        if send.nbytes != recv.nbytes:
            raise PCCLError(Result.INVALID_ARGUMENT, func_name, "send and recv hold different numbers of elements")

        def start():
            self._reform_if_needed()
            if self._comm.world_size < 2:
                raise PCCLError(Result.TOO_FEW_PEERS, func_name, "the world has one peer")
            # Integer data is reduced exactly whatever the options say (there is nothing to scale).
            floating = datatype in (DataType.FLOAT, DataType.FLOAT16, DataType.BFLOAT16)
            quantize, scaling = _quantization(quantization_options, func_name) if floating else (None, "absmax")
            return (self._comm.all_reduce_async(send, recv, op=_CHORUS_OPS[op], quantize=quantize, scaling=scaling,
                                                block=_QUANTIZATION_BLOCK), self._comm.world_size)
        return self._call(func_name, start)

    def all_reduce(self, send, recv, *, op, tag=0, operand_descriptor=None, quantization_options=None):
        """Reduces `send` of every member into `recv` (they may be the same array); blocks."""
        request, world_size = self._start(send, recv, op, "pcclAllReduce", quantization_options)
        self._call("pcclAllReduce", request.wait)
        return _ring_info(world_size, recv)

    def all_reduce_async(self, send, recv, *, op, tag=0, operand_descriptor=None, quantization_options=None, numel=None):
        """Starts the all-reduce; `wait()` on the handle gives (is_success, status, ReduceInfo).
        (`numel` is what releases before 1.0 passed; the arrays' sizes rule.)"""
        request, world_size = self._start(send, recv, op, "pcclAllReduceAsync", quantization_options)
        return AsyncReduceHandle(self, request, recv, world_size)

    def all_reduce_multiple_with_retry(self, descriptors, *, max_in_flight=4):
        """Runs every all-reduce, up to `max_in_flight` at a time, relaunching the ones that failed
        after the survivors re-form, until all succeeded; `TOO_FEW_PEERS` once the world is one peer."""
        if not descriptors or max_in_flight < 1:
            raise PCCLError(Result.INVALID_ARGUMENT, "pcclAllReduceMultipleWithRetry", "no descriptors, or max_in_flight < 1")
        remaining = list(range(len(descriptors)))
        tx = rx = 0
        while remaining:
            in_flight, failed = [], []
            for index in remaining:
                if len(in_flight) == max_in_flight:
                    failed += self._settle(in_flight.pop(0), descriptors)
                d = descriptors[index]
                in_flight.append((index, *self._start(d.send, d.recv, d.reduce_descriptor.op, "pcclAllReduceMultipleWithRetry",
                                                      d.reduce_descriptor.quantization_options)))
            while in_flight:
                failed += self._settle(in_flight.pop(0), descriptors)
            for index in remaining:
                if index not in failed:
                    info = _ring_info(self._comm.world_size, descriptors[index].recv)
                    tx, rx = tx + info.tx_bytes, rx + info.rx_bytes
            remaining = failed
        return ReduceInfo(self._comm.world_size, tx, rx)

    def _settle(self, launched, descriptors):
        """Waits for one launched all-reduce: [] on success, [its index] when it must run again."""
        index, request, _ = launched
        try:
            request.wait()
            return []
        except ChorusError as error:
            if not error.retryable:
                raise PCCLError(_result_of(error, "pcclAllReduceMultipleWithRetry"), "pcclAllReduceMultipleWithRetry",
                                error.message) from error
            self._failed(error)
            return [index]

    # Names of releases before 1.0.
    def current_world_size(self):
        return self.get_attribute(Attribute.GLOBAL_WORLD_SIZE)


class MasterNode:
    """A master inside this process, serving from `run()` until `interrupt()`."""

    def __init__(self, listen_address):
        if ":" not in listen_address:
            raise ValueError(f"Invalid listen address: {listen_address}, expected format: ip:port")
        host, port = listen_address.rsplit(":", 1)
        self._host, self._port = host, int(port)
        self._master = None

    def run(self):
        """Starts serving; returns at once."""
        if self._master is not None:
            raise PCCLError(Result.INVALID_USAGE, "pcclRunMaster", "the master already runs")
        try:
            self._master = _Master(self._host, self._port)
        except ChorusError as error:
            raise PCCLError(Result.INVALID_USAGE, "pcclRunMaster", error.message) from error

    def interrupt(self):
        if self._master is None:
            raise PCCLError(Result.INVALID_USAGE, "pcclInterruptMaster", "the master is not running")
        self._master.close()
        self._master = None

    def __del__(self):
        if self._master is not None:
            self._master.close()
