"""The compiled loops of two elementwise-type ops (Numba, CPU): nearest upsampling and ReLU.

Imported lazily, on the first call that selects the "numba" kernel, so that ``import
tinyseg`` does not pay for importing Numba. Every function is
``@njit(parallel=True, cache=True)``: ``prange`` runs over independent rows (upsampling)
or chunks (ReLU), and each output element has exactly one writer (no races; results do
not depend on the thread count). Inputs must be C-contiguous (callers use
``np.ascontiguousarray``); float32 and float64 each get their own compiled version, and
outputs have the input's dtype.

The threading layer is chosen by ``threads.select_threading_layer`` (tinyseg/threads.py).
"""
from __future__ import annotations


import numpy as np
from numba import njit, prange

from .. import threads

threads.select_threading_layer()
threads.configure()

# ReLU works on the flattened array in chunks of this many elements: one chunk per
# parallel iteration, and a plain inner loop that the compiler vectorises.
CHUNK = 16384


# ----- nearest upsampling: y[p, i, j] = x[p, ⌊i/s_h⌋, ⌊j/s_w⌋], p = n·C + c

@njit(parallel=True, cache=True)
def upsample_nearest_forward(x, sh, sw):
    """x (P, H, W) -> y (P, s_h·H, s_w·W) with y[p, s_h·a + u, s_w·b + v] = x[p, a, b].

    One input row (p, a) per parallel iteration: it writes its s_h output rows.
    """
    P, H, W = x.shape
    y = np.empty((P, H * sh, W * sw), dtype=x.dtype)
    for pa in prange(P * H):
        p = pa // H
        a = pa - p * H
        source = x[p, a]
        first = y[p, a * sh]
        for b in range(W):
            value = source[b]
            for v in range(sw):
                first[b * sw + v] = value
        for u in range(1, sh):
            y[p, a * sh + u, :] = first
    return y


@njit(parallel=True, cache=True)
def upsample_nearest_backward(grad, sh, sw):
    """grad (P, s_h·H, s_w·W) -> dx (P, H, W) with dx[p, a, b] = Σ_{u<s_h, v<s_w} grad[p, s_h·a + u, s_w·b + v].

    One input row (p, a) per parallel iteration: it first adds its s_h gradient rows
    (contiguous, so the compiler vectorises the sum), then sums that row by blocks of s_w.
    """
    P, Hs, Ws = grad.shape
    H, W = Hs // sh, Ws // sw
    dx = np.empty((P, H, W), dtype=grad.dtype)
    for pa in prange(P * H):
        p = pa // H
        a = pa - p * H
        rows = grad[p, a * sh]
        if sh > 1:
            rows = rows.copy()
            for u in range(1, sh):
                rows += grad[p, a * sh + u]
        out = dx[p, a]
        for b in range(W):
            block = rows[b * sw]
            for v in range(1, sw):
                block += rows[b * sw + v]
            out[b] = block
    return dx


# ----- ReLU: y = max(x, 0); dx = dy · [y > 0]
#
# Each has a parallel version (chunks over the threads) and a serial one (one loop in
# the calling thread): the parallel launch costs ~50 µs, which the serial loop saves on
# arrays below ~2M elements (NumbaReluKernel picks by size). Both run the same
# element function, so they give identical results. The caller allocates the output
# (NumPy's allocator asks the kernel for huge pages on large arrays; Numba's does not,
# and the page faults of a fresh 32 MB output made the loop 3× slower than NumPy).

@njit(cache=True, inline="always")
def _relu_range(x, y):
    for k in range(x.size):
        value = x[k]
        # value != value: NaN, which np.maximum propagates; −0.0 gives +0.0, as NumPy's.
        y[k] = value if value > 0 or value != value else 0


@njit(cache=True, inline="always")
def _relu_backward_range(grad, y, dx):
    for k in range(grad.size):
        g = grad[k]
        dx[k] = g if y[k] > 0 else g * 0


@njit(parallel=True, cache=True)
def relu_forward(x, y):
    """y[k] = max(x[k], 0) on flat arrays, as np.maximum (NaN stays NaN)."""
    n = x.size
    for chunk in prange((n + CHUNK - 1) // CHUNK):
        start, stop = chunk * CHUNK, min(n, (chunk + 1) * CHUNK)
        # Slices looped from 0: with range(start, stop) over the whole arrays the
        # compiler did not vectorise the parallel loop.
        _relu_range(x[start:stop], y[start:stop])


@njit(cache=True)
def relu_forward_serial(x, y):
    """relu_forward in one loop in the calling thread."""
    _relu_range(x, y)


@njit(parallel=True, cache=True)
def relu_backward(grad, y, dx):
    """dx[k] = grad[k] · [y[k] > 0] on flat arrays, in one pass (the mask is never stored).

    Where y ≤ 0 (x ≤ 0: the gradient at 0 is 0) the result is grad·0, exactly as NumPy's
    ``grad * (y > 0)`` (so an infinite or NaN grad still gives NaN there).
    """
    n = grad.size
    for chunk in prange((n + CHUNK - 1) // CHUNK):
        start, stop = chunk * CHUNK, min(n, (chunk + 1) * CHUNK)
        _relu_backward_range(grad[start:stop], y[start:stop], dx[start:stop])


@njit(cache=True)
def relu_backward_serial(grad, y, dx):
    """relu_backward in one loop in the calling thread."""
    _relu_backward_range(grad, y, dx)


# ----- bias + ReLU (a conv layer's bias and activation, F.bias_relu): one pass each way

@njit(parallel=True, cache=True)
def bias_relu_forward(z, b, y):
    """y[n, c, k] = max(z[n, c, k] + b[c], 0) for z, y (N, C, P): one (n, c) plane per parallel iteration."""
    N, C = z.shape[0], z.shape[1]
    for t in prange(N * C):
        n = t // C
        c = t - n * C
        _bias_relu_plane(z[n, c], b[c], y[n, c])


@njit(cache=True)
def bias_relu_forward_serial(z, b, y):
    """bias_relu_forward in one loop in the calling thread."""
    for n in range(z.shape[0]):
        for c in range(z.shape[1]):
            _bias_relu_plane(z[n, c], b[c], y[n, c])


@njit(cache=True, inline="always")
def _bias_relu_plane(z, bias, y):
    for k in range(z.size):
        y[k] = z[k] + bias
    _relu_range(y, y)


@njit(parallel=True, cache=True)
def bias_relu_backward(grad, y, dz, db):
    """dz = grad · [y > 0] and db[c] = Σ_{n,k} dz[n, c, k] (float64 sums, in order), for (N, C, P) arrays.

    One channel c per parallel iteration: it owns dz[:, c] and db[c].
    """
    N, C = grad.shape[0], grad.shape[1]
    for c in prange(C):
        db[c] = _bias_relu_backward_channel(grad, y, dz, c, N)


@njit(cache=True)
def bias_relu_backward_serial(grad, y, dz, db):
    """bias_relu_backward in one loop in the calling thread."""
    for c in range(grad.shape[1]):
        db[c] = _bias_relu_backward_channel(grad, y, dz, c, grad.shape[0])


@njit(cache=True, inline="always")
def _bias_relu_backward_channel(grad, y, dz, c, N):
    total = 0.0
    for n in range(N):
        plane = dz[n, c]
        _relu_backward_range(grad[n, c], y[n, c], plane)
        total += _sum_float64(plane)
    return total


@njit(cache=True, fastmath={"reassoc"})
def _sum_float64(a):
    """Σ a[k] in float64. "reassoc" lets LLVM keep vector partial sums (a fixed order for a
    given machine); without it the sum is one dependent add after another, ~4× slower."""
    total = 0.0
    for k in range(a.size):
        total += a[k]
    return total
