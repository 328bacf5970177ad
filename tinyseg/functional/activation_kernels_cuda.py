"""Launch code of kernels/activation.cu: ReLU forward/backward and the fused bias + ReLU.

One thread per element in a grid-stride loop; the grid is capped at MAX_BLOCKS blocks
(enough to fill any current GPU several times over), so huge tensors reuse threads
instead of launching millions of blocks. The same code launches on CuPy arrays (GPU) and
on NumPy arrays inside ``tinyseg.backend.cuda_emulation()``.
"""
from __future__ import annotations

import numpy as np

from .. import cuda

THREADS = 256
MAX_BLOCKS = 4096


def _grid(n):
    return min(cuda.blocks_for(n, THREADS), MAX_BLOCKS)


def relu_forward(x, xp):
    shape = x.shape                       # (ascontiguousarray makes a 0-d array 1-d)
    x = xp.ascontiguousarray(x)
    y = xp.empty_like(x)
    cuda.launch("activation.cu", "relu_forward", x.dtype, _grid(x.size), THREADS, (x, y, np.int64(x.size)))
    return y.reshape(shape)


def relu_backward(grad, y, xp):
    shape = grad.shape
    grad, y = xp.ascontiguousarray(grad), xp.ascontiguousarray(y)
    dx = xp.empty_like(grad)
    cuda.launch("activation.cu", "relu_backward", grad.dtype, _grid(grad.size), THREADS,
                (grad, y, dx, np.int64(grad.size)))
    return dx.reshape(shape)


def bias_relu_forward(z, b, xp):
    """y = max(z + b[c], 0) for z (N, C, H, W) and b (C,), in one pass."""
    z, b = xp.ascontiguousarray(z), xp.ascontiguousarray(b, dtype=z.dtype)
    y = xp.empty_like(z)
    plane = int(np.prod(z.shape[2:]))
    cuda.launch("activation.cu", "bias_relu_forward", z.dtype, _grid(z.size), THREADS,
                (z, b, y, np.int64(z.shape[1]), np.int64(plane), np.int64(z.size)))
    return y
