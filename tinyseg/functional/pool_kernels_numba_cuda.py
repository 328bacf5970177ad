"""Max pooling as Numba CUDA kernels: the Python twins of kernels/pool.cu's max_pool2d kernels.

    y[n,c,i,j]      = max_{0≤u<k_h, 0≤v<k_w} x_pad[n,c, s_h·i+u, s_w·j+v]      (x_pad = −∞ outside x)
    winner[n,c,i,j] = u·k_w + v of the window's first maximum in row-major order (as PyTorch)
    dx[n,c,r,q]     = Σ g[n,c,i,j] over the windows (i, j) whose winner is (r, q)

The winner is stored as the CPU kernels store it (pool.py, ``NumpyMaxPoolKernel``): the
smallest unsigned type holding k_h·k_w − 1, uint8 up to 16×16 windows. Numba compiles
one version of each kernel per (value dtype, winner dtype), as pool.cu instantiates its
templates. The maximum is separable and follows the CPU kernels' rules exactly (see
``max_pool2d_forward``), so the winners, hence the gradients, are the CPU's also with ties
and NaN. The backward is a gather: one writer per dx element, adding its windows in a
fixed order (i, then j), so it needs no atomics and gives the same bits on every run —
the same bits as the CPU's compiled scatter, which adds the same terms in the same order.

Run on CuPy arrays on a GPU, or on NumPy arrays in Numba's CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1``); every launch is recorded (tinyseg.cuda.numba_cuda.launch).
Imported only when the "numba_cuda" max_pool2d kernel runs.
"""
from __future__ import annotations

import numpy as np

from .. import backend
from ..cuda import blocks_for
from ..cuda.numba_cuda import check_arrays, launch, numba_cuda

cuda = numba_cuda()

THREADS = 256          # threads per block (8 warps), as pool.cu's launcher
MAX_BLOCKS = 4096      # grid cap: larger problems loop (grid-stride)


# ---------------------------------------------------------------------------------------
# Forward (kernels/pool.cu, max_pool2d_forward<T, Index>).
#
# Thread/block mapping: one thread per y[n,c,i,j], flat index with j fastest, 256-thread
# blocks in a grid-stride loop.
#
# The window's max is separable, as in the CPU kernels: along row u the max m_u and its
# first column v_u (a later column wins only when strictly greater), then over the rows
# (a later row wins only when m_u is strictly greater than the running max). Maxima
# propagate NaN as np.maximum does (``value != value``); NaN never compares greater, so
# it never moves the winner. Positions in the padding are skipped: −∞ never wins a
# strict '>' nor makes a NaN.
#
# Memory access: a warp writes 32 consecutive outputs (coalesced, plus 32 bytes of uint8
# winners) and reads x[.., s_w·j + v]: for the U-Net's 2×2 stride-2 pool, 64 consecutive
# values per window row over its two v, every byte fetched used. No shared memory: each
# input is read by at most ⌈k/s⌉² windows and L1/L2 serve the re-reads.
#
# Arithmetic intensity: 3 comparisons per 16 B read + 5 B written (float32, 2×2 stride 2):
# ~0.14 FLOP/byte, far below the ridge point: bound by HBM bandwidth.
@cuda.jit
def max_pool2d_forward(x, y, winner, keep_winner, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,
                       minus_inf):
    N, C, H, W = x.shape
    out_h, out_w = y.shape[2], y.shape[3]
    total = N * C * out_h * out_w
    for k in range(cuda.grid(1), total, cuda.gridsize(1)):
        j = k % out_w
        i = (k // out_w) % out_h
        c = (k // (out_w * out_h)) % C
        n = k // (out_w * out_h * C)
        r0, q0 = stride_h * i - pad_h, stride_w * j - pad_w
        best = minus_inf
        best_index = 0
        for u in range(kernel_h):
            r = r0 + u
            row_inside = 0 <= r < H
            row_max = x[n, c, r, q0] if row_inside and 0 <= q0 < W else minus_inf
            row_winner = 0
            for v in range(1, kernel_w):
                q = q0 + v
                if not row_inside or q < 0 or q >= W:
                    continue
                value = x[n, c, r, q]
                if value > row_max:
                    row_winner = v
                if value > row_max or value != value:
                    row_max = value
            if u == 0:
                best = row_max
                best_index = row_winner
            else:
                if row_max > best:
                    best_index = u * kernel_w + row_winner
                if row_max > best or row_max != row_max:
                    best = row_max
        y[n, c, i, j] = best
        if keep_winner:
            winner[n, c, i, j] = best_index


# ---------------------------------------------------------------------------------------
# Backward (kernels/pool.cu, max_pool2d_backward<T, Index>): a gather.
#
# Thread/block mapping: one thread per dx[n,c,r,q], q fastest, 256-thread blocks,
# grid-stride. At padded position R = r + p_h the windows holding the pixel are
# s_h·i <= R <= s_h·i + k_h − 1, i.e. i from ⌈(R − k_h + 1)/s_h⌉ (at least 0) to ⌊R/s_h⌋
# (at most H' − 1); columns likewise. The thread adds g[n,c,i,j] for each of those
# windows (i ascending, then j) whose winner is this pixel's position in it.
# A winner in the padding (a window of −∞ only) is nobody's: its gradient is dropped.
#
# Memory access: dx writes coalesced; the reads of g and winner at j ≈ q/s_w are shared
# by neighbouring lanes (broadcast), without waste.
#
# Arithmetic intensity: ≤ 1 add per 4 B of g + 1 B of winner read and 4 B of dx written:
# ~0.1 FLOP/byte, bound by HBM bandwidth.
@cuda.jit
def max_pool2d_backward(grad, winner, dx, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w):
    N, C, H, W = dx.shape
    out_h, out_w = grad.shape[2], grad.shape[3]
    total = N * C * H * W
    for k in range(cuda.grid(1), total, cuda.gridsize(1)):
        q = k % W
        r = (k // W) % H
        c = (k // (W * H)) % C
        n = k // (W * H * C)
        R, Q = r + pad_h, q + pad_w
        low_i, low_j = R - kernel_h + 1, Q - kernel_w + 1
        i_first = 0 if low_i <= 0 else (low_i + stride_h - 1) // stride_h
        j_first = 0 if low_j <= 0 else (low_j + stride_w - 1) // stride_w
        i_last = R // stride_h if R // stride_h < out_h - 1 else out_h - 1
        j_last = Q // stride_w if Q // stride_w < out_w - 1 else out_w - 1
        acc = dx.dtype.type(0)
        for i in range(i_first, i_last + 1):
            u = R - stride_h * i
            for j in range(j_first, j_last + 1):
                if winner[n, c, i, j] == u * kernel_w + (Q - stride_w * j):
                    acc += grad[n, c, i, j]
        dx[n, c, r, q] = acc


# ----- launch code

def _flat_launch(total):
    """(grid, block): THREADS-thread blocks, at most MAX_BLOCKS; a problem smaller than one
    block gets just the warps it needs."""
    threads = min(THREADS, 32 * blocks_for(total, 32))
    return min(blocks_for(total, threads), MAX_BLOCKS), threads


def _winner_type(geometry):
    kh, kw = geometry.kernel
    return np.min_scalar_type(kh * kw - 1)


def forward(x, geometry, keep_winner):
    """(y, winner or None) for pool._WindowGeometry ``geometry``, as ``NumpyMaxPoolKernel.forward``."""
    xp = backend.get_array_module(x)
    x = xp.ascontiguousarray(x)
    check_arrays("max_pool2d", x)
    N, C = x.shape[:2]
    y = xp.empty((N, C) + tuple(geometry.out_size), dtype=x.dtype)
    # Without keep_winner the kernel writes no winner; a 1-element array stands in for it.
    winner = xp.empty(y.shape if keep_winner else (1, 1, 1, 1), dtype=_winner_type(geometry))
    launch(f"max_pool2d_forward[{x.dtype.name},{winner.dtype.name}]", max_pool2d_forward, *_flat_launch(y.size),
           (x, y, winner, bool(keep_winner), *geometry.kernel, *geometry.stride, *geometry.padding,
            x.dtype.type(-np.inf)))
    return y, (winner if keep_winner else None)


def backward(grad, winner, geometry):
    """dx (N, C, H, W): each window's gradient to its winner, overlapping windows added up."""
    xp = backend.get_array_module(grad, winner)
    grad, winner = xp.ascontiguousarray(grad), xp.ascontiguousarray(winner)
    check_arrays("max_pool2d", grad, winner)
    dx = xp.empty(geometry.input_shape, dtype=grad.dtype)
    launch(f"max_pool2d_backward[{grad.dtype.name},{winner.dtype.name}]", max_pool2d_backward,
           *_flat_launch(dx.size), (grad, winner, dx, *geometry.kernel, *geometry.stride, *geometry.padding))
    return dx
