"""A `torch.distributed` backend named "chorus". Importing this module registers it:

    import torch.distributed as dist
    import chorus.torch
    dist.init_process_group("chorus")           # MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE as usual
    model = torch.nn.parallel.DistributedDataParallel(model)

Where the master comes from: CHORUS_MASTER=host:port names a running `chorus-master` (the setup that
survives any peer's loss); without it, rank 0 hosts an embedded master in its own process (as
torch's TCP store does) and publishes its address through torch's store, so losing rank 0 ends the
group.

Ranks: the group forms in rank order, so `dist.get_rank()` is both RANK and the Chorus rank.

A lost peer: the collective in flight aborts at every survivor with the same retryable
`chorus.ChorusError`, tensors restored. Through DDP it surfaces from `backward()` as torch's error;
`failure(exc)` finds the ChorusError behind it. Re-form with `reform()`, which re-creates the default
process group over the same Chorus communicator with the survivors' new ranks, then wrap the module
in a new DistributedDataParallel and redo the step:

    try:
        loss = loss_fn(ddp(x), y); loss.backward(); optimizer.step()
    except Exception as exc:
        error = chorus.torch.failure(exc)
        if error is None or not error.retryable: raise
        optimizer.zero_grad()
        rank, world_size = chorus.torch.reform()
        ddp = DistributedDataParallel(ddp.module)
"""
import atexit
import os
import queue
import socket
import threading

import torch
import torch.distributed as dist

from .communicator import Communicator
from .errors import ChorusError
from .master import Master

__all__ = ["ProcessGroupChorus", "communicator", "failure", "reform"]

_REDUCE_OPS = ((dist.ReduceOp.SUM, "sum"), (dist.ReduceOp.PRODUCT, "prod"), (dist.ReduceOp.MIN, "min"),
               (dist.ReduceOp.MAX, "max"), (dist.ReduceOp.AVG, "avg"))

# The process's Chorus communicator (and embedded master): they outlive the torch process groups
# built over them, so `reform()` can re-create the group without reconnecting.
_communicator = None
_master = None
_last_error = None


def _reduce_op(op):
    for torch_op, name in _REDUCE_OPS:
        if op == torch_op:
            return name
    raise ChorusError("invalid_argument", f"invalid argument: the chorus backend reduces with SUM, PRODUCT, MIN, MAX "
                      f"or AVG, not {op}", False)


def _unsupported(what):
    return ChorusError("invalid_argument", f"invalid argument: the chorus backend has no {what} "
                       "(it offers all_reduce, all_gather, reduce_scatter, broadcast and barrier)", False)


class _Completer:
    """One daemon thread that waits for the works whose futures someone holds. DDP chains on a
    work's future and never calls `wait()`, so something must complete it; requests finish in the
    order they were made, so one thread in that order suffices."""

    # At exit, how long the completer may take to finish the works already queued.
    STOP_TIMEOUT_SECONDS = 10

    def __init__(self):
        self._queue = queue.SimpleQueue()
        self._thread = None

    def submit(self, work):
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="chorus-completer", daemon=True)
            self._thread.start()
        self._queue.put(work)

    def stop(self):
        """Ends the thread while the interpreter is whole: a daemon thread still completing a torch
        future during finalization re-takes the GIL inside torch's C++, and Python's exit of that
        thread then unwinds through it and aborts the process (std::terminate)."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(self.STOP_TIMEOUT_SECONDS)
            self._thread = None

    def _run(self):
        while (work := self._queue.get()) is not None:
            work._complete()


# One for the process: its requests all come from the one communicator, in call order, and a
# group re-created by reform() must not leave a thread behind.
_completer = _Completer()
atexit.register(_completer.stop)


class _Work(dist.Work):
    """Collectives in flight for one torch call. `finish` copies results out (all_gather into a
    tensor list) once every request succeeded. Exactly one thread waits for the requests: the first
    caller of `wait()`, or the completer once `get_future()` was asked for.

    The future torch's C++ side chains on (DDP) is the child of a `then`, because only a callback
    that raises marks a future failed for C++: `Future.set_exception` from Python stores the
    exception as the future's value, which C++ would read as the result."""

    def __init__(self, requests, result, finish=None):
        super().__init__()
        self._requests = requests
        self._result = result
        self._finish = finish
        self._failure = None
        self._finished = threading.Event()
        self._done = torch.futures.Future()
        self._future = self._done.then(self._outcome)
        self._lock = threading.Lock()
        self._claimed = False

    def _claim(self):
        with self._lock:
            claimed, self._claimed = self._claimed, True
            return not claimed

    def _complete(self):
        global _last_error
        for request in self._requests:  # every one, so none is left writing into freed tensors
            try:
                request.wait()
            except ChorusError as error:
                self._failure = self._failure or error
        if self._failure is None and self._finish is not None:
            self._finish()
        if self._failure is not None:
            _last_error = self._failure
        self._finished.set()
        self._done.set_result(None)

    def _outcome(self, _):
        if self._failure is not None:
            raise self._failure
        return self._result

    def wait(self, timeout=None):
        """Blocks until the collective has its verdict; raises its `ChorusError`."""
        if self._claim():
            self._complete()
        else:
            self._finished.wait()
        if self._failure is not None:
            raise self._failure
        return True

    def get_future(self):
        if self._claim():
            _completer.submit(self)
        return self._future

    def is_completed(self):
        return self._finished.is_set()

    def is_success(self):
        return self._finished.is_set() and self._failure is None

    def exception(self):
        return self._failure


class ProcessGroupChorus(dist.ProcessGroup):
    """A torch process group over a Chorus communicator. Its rank and size are those of the
    communicator's epoch when it was made (`reform()` makes a new one for a new epoch)."""

    def __init__(self, comm):
        super().__init__(comm.rank, comm.world_size)
        self.comm = comm

    def getBackendName(self):
        return "chorus"

    def _work(self, requests, result, finish=None):
        return _Work(requests, result, finish)

    def allreduce(self, tensors, opts=None):
        op = _reduce_op(opts.reduceOp) if opts is not None else "sum"
        return self._work([self.comm.all_reduce_async(t, op=op) for t in tensors], tensors)

    def broadcast(self, tensors, opts=None):
        root = opts.rootRank if opts is not None else 0
        return self._work([self.comm.broadcast_async(t, root=root) for t in tensors], tensors)

    def allgather(self, output_tensors, input_tensors, opts=None):
        """output_tensors[i][r] receives rank r's input_tensors[i]."""
        requests, copies = [], []
        for outputs, tensor in zip(output_tensors, input_tensors):
            if len(outputs) != self.size():
                raise ChorusError("invalid_argument", f"invalid argument: all_gather wants {self.size()} output tensors, "
                                  f"got {len(outputs)}", False)
            gathered = torch.empty((self.size(), *tensor.shape), dtype=tensor.dtype)
            requests.append(self.comm.all_gather_async(tensor, gathered))
            copies.append((outputs, gathered))

        def finish():
            for outputs, gathered in copies:
                for output, block in zip(outputs, gathered):
                    output.copy_(block)
        return self._work(requests, output_tensors, finish)

    def all_gather_single(self, output, input, opts=None):
        return self._work([self.comm.all_gather_async(input, output)], [output])

    def allgather_into_tensor_coalesced(self, outputs, inputs, opts=None):
        return self._work([self.comm.all_gather_async(i, o) for o, i in zip(outputs, inputs)], outputs)

    # The names torch's C++ side (and older Python) call the same collectives by.
    _allgather_base = all_gather_single
    all_gather_single_coalesced = allgather_into_tensor_coalesced

    def reduce_scatter(self, output_tensors, input_tensors, opts=None):
        """output_tensors[i] receives block `rank` of the reduction of input_tensors[i] (one tensor per rank)."""
        op = _reduce_op(opts.reduceOp) if opts is not None else "sum"
        requests = []
        for output, inputs in zip(output_tensors, input_tensors):
            if len(inputs) != self.size():
                raise ChorusError("invalid_argument", f"invalid argument: reduce_scatter wants {self.size()} input tensors, "
                                  f"got {len(inputs)}", False)
            requests.append(self.comm.reduce_scatter_async(torch.stack(inputs), output, op=op))
        return self._work(requests, output_tensors)

    def reduce_scatter_single(self, output, input, opts=None):
        op = _reduce_op(opts.reduceOp) if opts is not None else "sum"
        return self._work([self.comm.reduce_scatter_async(input, output, op=op)], [output])

    def reduce_scatter_tensor_coalesced(self, outputs, inputs, opts=None):
        op = _reduce_op(opts.reduceOp) if opts is not None else "sum"
        return self._work([self.comm.reduce_scatter_async(i, o, op=op) for o, i in zip(outputs, inputs)], outputs)

    _reduce_scatter_base = reduce_scatter_single
    reduce_scatter_single_coalesced = reduce_scatter_tensor_coalesced

    def barrier(self, opts=None):
        return self._work([self.comm.barrier_async()], [])

    # What Chorus does not offer: a clear error rather than a silent fallback.
    def send(self, *args):
        raise _unsupported("send")

    def recv(self, *args):
        raise _unsupported("recv")

    def recv_anysource(self, *args):
        raise _unsupported("recv_anysource")

    def gather(self, *args):
        raise _unsupported("gather")

    def scatter(self, *args):
        raise _unsupported("scatter")

    def reduce(self, *args):
        raise _unsupported("reduce")

    def alltoall(self, *args):
        raise _unsupported("alltoall")

    def alltoall_base(self, *args):
        raise _unsupported("alltoall")


class QuantizedHookState:
    """The state of `quantized_hook` for one DDP model: the format (as `Communicator.all_reduce`
    takes it) and an error-feedback buffer per gradient bucket, kept between steps. A bucket whose
    size changes (DDP rebuilds its buckets after the first step) starts again from zeros."""

    def __init__(self, quantize="int8", block=64, scaling="absmax", error_feedback=True):
        self.quantize, self.block, self.scaling, self.error_feedback = quantize, block, scaling, error_feedback
        self._feedback = {}

    def feedback(self, index, numel):
        if not self.error_feedback:
            return None
        kept = self._feedback.get(index)
        if kept is None or kept.numel() != numel:
            kept = self._feedback[index] = torch.zeros(numel, dtype=torch.float32)
        return kept


def quantized_hook(state, bucket):
    """A DDP communication hook that averages each gradient bucket with Chorus's quantized
    all-reduce: `model.register_comm_hook(chorus.torch.QuantizedHookState(), chorus.torch.quantized_hook)`.
    Every replica gets the same bits, so they stay identical; float32, float16 and bfloat16 buckets
    are quantized, others averaged exactly. A failure surfaces as any chorus collective's does
    (`failure(exc)`), with the bucket's feedback put back."""
    buffer = bucket.buffer()
    if buffer.dtype in (torch.float32, torch.float16, torch.bfloat16):
        request = communicator().all_reduce_async(buffer, op="avg", quantize=state.quantize, block=state.block,
                                                  scaling=state.scaling,
                                                  error_feedback=state.feedback(bucket.index(), buffer.numel()))
    else:
        request = communicator().all_reduce_async(buffer, op="avg")
    return _Work([request], buffer).get_future()


def communicator():
    """The Chorus communicator under the default process group (for `SharedState` sync, pending
    joins, or Chorus's own collectives beside torch's)."""
    if _communicator is None:
        raise ChorusError("invalid_argument", "invalid argument: no chorus process group has been initialized", False)
    return _communicator


def failure(exc):
    """The ChorusError behind `exc`: itself, or the one a chorus collective raised when torch
    reported it under its own type (DDP's backward). None when Chorus was not the cause."""
    if isinstance(exc, ChorusError):
        return exc
    if _last_error is not None and _last_error.message in str(exc):
        return _last_error
    return None


def reform(minimum_world_size=1):
    """After a retryable failure: a safe point (survivors re-form, waiting peers join), then a new
    default process group over the same communicator. Returns (rank, world_size)."""
    global _last_error
    comm = communicator()
    comm.update_topology(minimum_world_size)
    _last_error = None
    dist.destroy_process_group()
    # The store is only the API's price of admission: the chorus backend never touches it.
    dist.init_process_group("chorus", store=dist.HashStore(), rank=comm.rank, world_size=comm.world_size)
    return comm.rank, comm.world_size


def _master_address(store, rank):
    """CHORUS_MASTER, or the embedded master of rank 0, whose address travels through the store."""
    if os.environ.get("CHORUS_MASTER"):
        return os.environ["CHORUS_MASTER"]
    global _master
    if rank == 0:
        host = socket.gethostbyname(os.environ.get("MASTER_ADDR", "127.0.0.1"))
        _master = Master(host=host, port=0)
        store.set("chorus/master", _master.endpoint)
    return store.get("chorus/master").decode()


def _create(store, rank, world_size, timeout):
    global _communicator
    if _communicator is not None:  # reform(): the group goes on over the same communicator
        if (_communicator.rank, _communicator.world_size) != (rank, world_size):
            raise ChorusError("invalid_argument", f"invalid argument: the chorus communicator is rank {_communicator.rank} "
                              f"of {_communicator.world_size}, not {rank} of {world_size}", False)
        return ProcessGroupChorus(_communicator)
    address = _master_address(store, rank)
    # Join in rank order: rank r registers once rank r-1 is a member, and the members grow the
    # group one peer per safe point, so admission order (the ring order) is rank order.
    if rank > 0:
        store.wait([f"chorus/member/{rank - 1}"], timeout)
    comm = Communicator(address)
    store.set(f"chorus/member/{rank}", "1")
    while comm.world_size < world_size:
        comm.update_topology(comm.world_size + 1)
    if comm.rank != rank or comm.world_size != world_size:
        raise ChorusError("invalid_argument", f"invalid argument: this process is RANK {rank} of WORLD_SIZE {world_size}, "
                          f"but the chorus group made it rank {comm.rank} of {comm.world_size} (is the master shared "
                          "with another group?)", False)
    _communicator = comm
    return ProcessGroupChorus(comm)


dist.Backend.register_backend("chorus", _create, devices=["cpu"])
