"""Up-front validation of op inputs, so that bad input fails with a sentence, not a traceback.

Each message names the op, the argument, what was expected and what was received, e.g.
``conv2d: argument 'input' expected a 4-D tensor (N, C, H, W), got shape (3, 32, 32)``.
"""
from __future__ import annotations

import numpy as np

from ..tensor import Tensor


def array_of(x):
    return x.data if isinstance(x, Tensor) else x


_FLOAT32, _FLOAT64 = np.dtype(np.float32), np.dtype(np.float64)


def check_float(op: str, name: str, x) -> None:
    dtype = array_of(x).dtype
    # float32 and float64 only: the compiled kernels exist for those two (float16 and
    # longdouble would fail inside Numba). A dtype compare: this runs once per op call.
    if dtype != _FLOAT32 and dtype != _FLOAT64:
        raise TypeError(f"{op}: argument '{name}' expected a floating-point tensor (float32 or float64), "
                        f"got dtype {dtype}")


def check_ndim(op: str, name: str, x, ndim: int, layout: str) -> None:
    shape = array_of(x).shape
    if len(shape) != ndim:
        raise ValueError(f"{op}: argument '{name}' expected a {ndim}-D tensor {layout}, got shape {tuple(shape)}")


def check_same_dtype(op: str, **named) -> None:
    dtypes = {name: array_of(x).dtype for name, x in named.items() if x is not None}
    if len(set(dtypes.values())) > 1:
        listed = ", ".join(f"'{k}' {v}" for k, v in dtypes.items())
        raise TypeError(f"{op}: expected all floating-point arguments to share one dtype, got {listed}")


def pair(op: str, name: str, value, minimum: int = 0) -> tuple[int, int]:
    """An int or a pair of ints as a pair, each >= ``minimum``."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (int(value), int(value))
    if (not isinstance(value, (tuple, list)) or len(value) != 2
            or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value)):
        raise TypeError(f"{op}: argument '{name}' expected an int or a pair of ints, got {value!r}")
    value = (int(value[0]), int(value[1]))
    if min(value) < minimum:
        raise ValueError(f"{op}: argument '{name}' expected values >= {minimum}, got {value}")
    return value
