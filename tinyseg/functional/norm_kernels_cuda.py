"""Launch code of kernels/batchnorm.cu: batch norm's per-channel reductions and elementwise passes.

Reductions: a grid (B, C) of THREADS-thread blocks writes per-block partial sums (a fixed
tree in shared memory), then ``channel_sums_finish`` adds each row of partials in a fixed
order: deterministic, no atomics. B and the block size depend only on the shape (partial_grid). The
elementwise passes are one thread per element, grid-stride, capped at MAX_BLOCKS. The
per-channel scalars (inv_std, scale: C values) are computed with xp on the arrays'
device. The same code launches on CuPy arrays (GPU) and on NumPy arrays inside
``tinyseg.backend.cuda_emulation()``. Arrays of per-channel values are (C,) here; the
kernel class in norm.py reshapes them to broadcast.
"""
from __future__ import annotations

import math

import numpy as np

from .. import cuda

THREADS = 256            # at most kernels/batchnorm.cu's TINYSEG_REDUCE_THREADS (its shared-memory trees)
MAX_BLOCKS = 4096
MAX_PARTIAL_BLOCKS = 1024


def _grid(n):
    return min(cuda.blocks_for(n, THREADS), MAX_BLOCKS)


def reduce_threads(n):
    """Threads of a reduction block over n values: 256, or the smallest power of two >= n."""
    return min(THREADS, 1 << max(0, int(n) - 1).bit_length())


def partial_grid(values_per_channel, channels):
    """(B, threads): B blocks per channel, enough for ~4096 blocks in all, at most one per
    ``threads`` values."""
    threads = reduce_threads(values_per_channel)
    blocks = max(1, min(cuda.blocks_for(values_per_channel, threads), max(1, 4096 // channels), MAX_PARTIAL_BLOCKS))
    return blocks, threads


def _layout(x):
    """(N, C, S) of an (N, C, ...) array."""
    return x.shape[0], x.shape[1], math.prod(x.shape[2:])


def _finish(partials, divisor, xp):
    rows, length = partials.shape
    out = xp.empty(rows, dtype=partials.dtype)
    cuda.launch("batchnorm.cu", "channel_sums_finish", partials.dtype, rows, reduce_threads(length),
                (partials, np.int64(length), partials.dtype.type(divisor), out))
    return out


def batch_statistics(x, xp):
    """(mean, biased variance), each (C,), by two deterministic passes over the contiguous x."""
    N, C, S = _layout(x)
    m = N * S
    blocks, threads = partial_grid(m, C)
    partials = xp.empty((C, blocks), dtype=x.dtype)
    sizes = (np.int64(N), np.int64(C), np.int64(S))
    cuda.launch("batchnorm.cu", "channel_sum_partials", x.dtype, (blocks, C), threads, (x, *sizes, partials))
    mean = _finish(partials, m, xp)
    cuda.launch("batchnorm.cu", "channel_centred_square_partials", x.dtype, (blocks, C), threads,
                (x, mean, *sizes, partials))
    return mean, _finish(partials, m, xp)


def normalise(x, mean, scale, shift, xp):
    """y = (x − mean[c]) · scale[c] + shift[c] (shift None: no shift)."""
    N, C, S = _layout(x)
    y = xp.empty_like(x)
    has_shift = shift is not None
    shift = xp.ascontiguousarray(shift, dtype=x.dtype) if has_shift else xp.zeros(1, dtype=x.dtype)
    cuda.launch("batchnorm.cu", "batch_norm_forward_apply", x.dtype, _grid(x.size), THREADS,
                (x, mean, scale, shift, np.int32(has_shift), np.int64(C), np.int64(S), np.int64(x.size), y))
    return y


def backward_sums(g, x, mean, inv_std, xp):
    """(Σ dy, Σ dy · x̂), each (C,), in one deterministic pass over dy and x."""
    N, C, S = _layout(x)
    blocks, threads = partial_grid(N * S, C)
    partials = xp.empty((2 * C, blocks), dtype=x.dtype)
    cuda.launch("batchnorm.cu", "batch_norm_backward_partials", x.dtype, (blocks, C), threads,
                (g, x, mean, inv_std, np.int64(N), np.int64(C), np.int64(S), partials))
    sums = _finish(partials, 1, xp)
    return sums[:C], sums[C:]


def input_gradient(g, x, mean, inv_std, scale, sum_g, sum_g_xhat, count, training, xp):
    """dx: (dy − x̂·Σ_gx̂/m − Σ_g/m)·scale in training, dy·scale in evaluation."""
    N, C, S = _layout(g)
    dx = xp.empty_like(g)
    if not training:                      # the sums are not needed: any (C,) arrays will do
        sum_g = sum_g_xhat = scale
    cuda.launch("batchnorm.cu", "batch_norm_backward_dx", g.dtype, _grid(g.size), THREADS,
                (g, x, mean, inv_std, scale, sum_g, sum_g_xhat, g.dtype.type(count), np.int32(bool(training)),
                 np.int64(C), np.int64(S), np.int64(g.size), dx))
    return dx
