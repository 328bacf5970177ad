"""tinyseg: a from-scratch deep-learning engine for medical image segmentation.

    import tinyseg as ts
    import tinyseg.functional as F
    x = ts.Tensor(array, requires_grad=True)
"""
import importlib
import os

# OpenBLAS's idle threads keep spinning for about 0.1 s after every matrix product
# (2^28 cycles). tinyseg's Numba kernels (im2col, the Winograd transforms) run between
# the products, so on a 2-core machine a spinning OpenBLAS thread took a core from them:
# measured, the B32 U-Net training step went from 1.98 s to 1.49 s and the B64 one from
# 2.56 s to 2.28 s when the threads sleep right away (docs/performance.md). OpenBLAS
# reads this once, when NumPy loads it: it works when tinyseg is imported before NumPy,
# or when the variable is set in the shell. A value the user set is kept.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

# Both thread pools start as many threads as os.cpu_count() by default, which counts the
# host's cores, not the ones this process may use (affinity mask, container CPU quota):
# capped here, before NumPy and Numba load, unless the user set the counts
# (tinyseg/threads.py).
from . import threads as _threads

_cores = _threads.available_cores()
if _cores < (os.cpu_count() or _cores):
    os.environ.setdefault("OPENBLAS_NUM_THREADS", str(_cores))
    os.environ.setdefault("NUMBA_NUM_THREADS", str(_cores))

from .tensor import Function, Tensor, is_grad_enabled, no_grad
from .random import manual_seed
from . import functional
from .gradcheck import GradcheckError, gradcheck

__version__ = "0.1.0"

# Heavier parts load on first use, so ``import tinyseg`` stays quick.
_lazy = {"nn", "optim", "models", "data", "metrics", "train", "inference", "viz", "bench",
         "reference", "backend", "serialization", "exercises", "tuning"}


def __getattr__(name):
    if name in _lazy:
        return importlib.import_module(f".{name}", __name__)
    if name in ("save", "load"):
        return getattr(importlib.import_module(".serialization", __name__), name)
    raise AttributeError(f"module 'tinyseg' has no attribute {name!r}")
