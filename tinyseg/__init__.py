"""tinyseg: a from-scratch deep-learning engine for medical image segmentation.

    import tinyseg as ts
    import tinyseg.functional as F
    x = ts.Tensor(array, requires_grad=True)
"""
import importlib

from .tensor import Function, Tensor, is_grad_enabled, no_grad
from .random import manual_seed
from . import functional
from .gradcheck import GradcheckError, gradcheck

__version__ = "0.1.0"

# Heavier parts load on first use, so ``import tinyseg`` stays quick.
_lazy = {"nn", "optim", "models", "data", "metrics", "train", "inference", "viz", "bench",
         "reference", "backend", "serialization"}


def __getattr__(name):
    if name in _lazy:
        return importlib.import_module(f".{name}", __name__)
    if name in ("save", "load"):
        return getattr(importlib.import_module(".serialization", __name__), name)
    raise AttributeError(f"module 'tinyseg' has no attribute {name!r}")
