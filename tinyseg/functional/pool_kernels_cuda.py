"""Launch code of kernels/pool.cu: max pooling (with winners) and average pooling, forward and backward.

One thread per output element of each kernel (y in the forwards, dx in the backwards:
the backwards are gathers, so every element has one writer and results are
deterministic), blocks of THREADS threads in a grid-stride loop capped at MAX_BLOCKS
blocks. The same code launches on CuPy arrays (GPU) and on NumPy arrays inside
``tinyseg.backend.cuda_emulation()``. ``geometry`` is pool._WindowGeometry.
"""
from __future__ import annotations

import numpy as np

from .. import cuda

THREADS = 256
MAX_BLOCKS = 4096


def _grid(n):
    return min(cuda.blocks_for(n, THREADS), MAX_BLOCKS)


def _sizes(geometry):
    """planes, H, W, H', W', k_h, k_w, s_h, s_w, p_h, p_w as the kernels take them (long long)."""
    N, C, H, W = geometry.input_shape
    values = (N * C, H, W, *geometry.out_size, *geometry.kernel, *geometry.stride, *geometry.padding)
    return tuple(np.int64(v) for v in values)


def _winner_type(geometry):
    """The CPU kernels' winner type, np.min_scalar_type(k_h·k_w − 1): the kernels' Index (uint8, 16 or 32)."""
    kh, kw = geometry.kernel
    return np.min_scalar_type(kh * kw - 1)


def max_pool2d_forward(x, geometry, keep_winner, xp):
    """(y, winner or None): winner[n,c,i,j] = u·k_w + v of the window's first maximum."""
    x = xp.ascontiguousarray(x)
    N, C = x.shape[:2]
    y = xp.empty((N, C) + tuple(geometry.out_size), dtype=x.dtype)
    index_type = _winner_type(geometry)
    winner = xp.empty(y.shape if keep_winner else (1,), dtype=index_type)
    cuda.launch("pool.cu", "max_pool2d_forward", x.dtype, _grid(y.size), THREADS,
                (x, y, winner, np.int32(bool(keep_winner)), *_sizes(geometry), x.dtype.type(-np.inf)),
                index_dtype=winner.dtype)
    return y, (winner if keep_winner else None)


def max_pool2d_backward(grad, winner, geometry, xp):
    grad, winner = xp.ascontiguousarray(grad), xp.ascontiguousarray(winner)
    dx = xp.empty(geometry.input_shape, dtype=grad.dtype)
    cuda.launch("pool.cu", "max_pool2d_backward", grad.dtype, _grid(dx.size), THREADS,
                (grad, winner, dx, *_sizes(geometry)), index_dtype=winner.dtype)
    return dx


def avg_pool2d_forward(x, geometry, xp):
    x = xp.ascontiguousarray(x)
    N, C = x.shape[:2]
    y = xp.empty((N, C) + tuple(geometry.out_size), dtype=x.dtype)
    cuda.launch("pool.cu", "avg_pool2d_forward", x.dtype, _grid(y.size), THREADS, (x, y, *_sizes(geometry)))
    return y


def avg_pool2d_backward(grad, geometry, xp):
    grad = xp.ascontiguousarray(grad)
    dx = xp.empty(geometry.input_shape, dtype=grad.dtype)
    kh, kw = geometry.kernel
    cuda.launch("pool.cu", "avg_pool2d_backward", grad.dtype, _grid(dx.size), THREADS,
                (grad, dx, *_sizes(geometry), grad.dtype.type(1.0 / (kh * kw))))
    return dx
