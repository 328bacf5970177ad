"""Launch code of kernels/adam.cu: the Adam/AdamW update in place, one thread per element.

The per-step scalars are computed here in double precision and rounded to the
parameter's dtype, as optim.NumbaAdamKernel does for its compiled loop. Blocks of
THREADS threads in a grid-stride loop capped at MAX_BLOCKS. The same code launches on
CuPy arrays (GPU) and on NumPy arrays inside ``tinyseg.backend.cuda_emulation()``.
param, m and v must be C-contiguous (they are updated in place); grad is copied if not.
"""
from __future__ import annotations

import math

import numpy as np

from . import cuda

THREADS = 256
MAX_BLOCKS = 4096


def adam_update(param, grad, m, v, hyper, xp):
    """One step on ``param`` (and its moments m, v), in place."""
    scalar = param.dtype.type
    lr, beta1, beta2, weight_decay, step = hyper.lr, hyper.beta1, hyper.beta2, hyper.weight_decay, hyper.step
    grad = xp.ascontiguousarray(grad, dtype=param.dtype)
    n = param.size
    cuda.launch("adam.cu", "adam_update", param.dtype, min(cuda.blocks_for(n, THREADS), MAX_BLOCKS), THREADS,
                (param, grad, m, v, np.int64(n),
                 np.int32(weight_decay != 0 and not hyper.decoupled_weight_decay), scalar(weight_decay),
                 np.int32(weight_decay != 0 and hyper.decoupled_weight_decay), scalar(1 - lr * weight_decay),
                 scalar(beta1), scalar(1 - beta2), scalar(beta2), scalar(math.sqrt(1 - beta2 ** step)),
                 scalar(hyper.eps), scalar(lr / (1 - beta1 ** step))))
