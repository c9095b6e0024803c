"""NumPy arrays and PyTorch CPU tensors as Chorus buffers, without copying: the library reads and
writes their memory in place (the buffer protocol for NumPy, `data_ptr()` for PyTorch)."""
import numpy

from .errors import ChorusError

# chorus_type codes (chorus.h), by the element type's name.
TYPE_CODES = {"float32": 0, "float64": 1, "float16": 2, "bfloat16": 3, "int32": 4, "int64": 5, "uint8": 6}
# Keyed by dtype objects: a collective's call path looks its types up, and str(dtype) costs microseconds.
_NUMPY = {numpy.dtype(name): code for name, code in TYPE_CODES.items() if name != "bfloat16"}
_TORCH = {f"torch.{name}": code for name, code in TYPE_CODES.items()}


def invalid(message):
    return ChorusError("invalid_argument", f"invalid argument: {message}", False)


class Buffer:
    """A contiguous CPU array's memory: address, element count and type. Keeps the array alive."""
    __slots__ = ("array", "address", "count", "dtype")

    def __init__(self, array, name, writable=False):
        self.array = array
        if isinstance(array, numpy.ndarray):
            flags = array.flags
            if not flags.c_contiguous:
                raise invalid(f"{name} is not C-contiguous")
            if writable and not flags.writeable:
                raise invalid(f"{name} is read-only")
            dtype = _NUMPY.get(array.dtype)
            self.address, self.count = array.ctypes.data, array.size
        elif type(array).__module__.startswith("torch"):
            if not array.is_cpu:
                raise invalid(f"{name} is on {array.device}; Chorus moves CPU tensors")
            if not array.is_contiguous():
                raise invalid(f"{name} is not contiguous")
            dtype = _TORCH.get(str(array.dtype))
            self.address, self.count = array.data_ptr(), array.numel()
        else:
            raise invalid(f"{name} is a {type(array).__name__}, not a NumPy array or a PyTorch tensor")
        if dtype is None:
            raise invalid(f"{name} has dtype {array.dtype}; Chorus reduces float32/64, float16, bfloat16, int32/64, uint8")
        self.dtype = dtype
        if self.count == 0:
            self.address = None


def same_type(first, second, first_name, second_name):
    if first.dtype != second.dtype:
        raise invalid(f"{first_name} and {second_name} have different dtypes ({first.array.dtype} and {second.array.dtype})")
