"""Chorus from Python: fault-tolerant collectives on NumPy arrays and PyTorch CPU tensors.

    import chorus, numpy as np
    master = chorus.Master()                       # or run `chorus-master` somewhere
    comm = chorus.Communicator(master.endpoint)
    grads = np.ones(1024, dtype=np.float32)
    try:
        comm.all_reduce(grads, op="avg")           # in place, without copying, GIL released
    except chorus.ChorusError as e:
        if not e.retryable: raise
        comm.update_topology()                     # every survivor got the same error; retry
"""
from .communicator import Communicator, Request, SyncInfo, TopologyOptimization
from .errors import ChorusError
from .master import Master
from .state import SharedState

__all__ = ["ChorusError", "Communicator", "Master", "Request", "SharedState", "SyncInfo", "TopologyOptimization"]
