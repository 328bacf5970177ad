"""The compiled loops of pooling (Numba, CPU): max pooling (forward with its winners,
backward) and average pooling (forward, backward).

Imported lazily, on the first pooling that selects a "numba" kernel, so that
``import tinyseg`` does not pay for importing Numba. Every function is
``@njit(parallel=True, cache=True)`` with ``prange`` over the N·C independent (n, c)
planes: each output element, and each element of dx, has exactly one writer, so
overlapping windows (stride < kernel) accumulate without races and results do not
depend on the thread count. Inputs are C-contiguous (callers use
``np.ascontiguousarray``); float32 and float64 each get their own compiled version,
and outputs have the input's dtype.

Max pooling has the semantics of ``NumpyMaxPoolKernel``, element for element:

    y[n,c,i,j] = max_{0≤u<k_h, 0≤v<k_w} x_pad[n,c, s_h·i+u, s_w·j+v]     (x_pad = −∞ outside x)

computed separably, first along each row of the window (the row max m_u and its first
column v_u reaching it: a later column wins only when strictly greater), then over the
rows (a later row wins only when its max is strictly greater than the running max).
The winner stored is u·k_w + v_u, the first maximum in row-major order (as PyTorch).
Running maxima propagate NaN as ``np.maximum`` does; NaN never compares greater, so a
window's winner is the same as the NumPy kernel's also when it holds NaN.

Average pooling has the semantics of ``NumpyAvgPoolKernel`` and adds in its order
(see the two functions), so the results are the NumPy kernel's bit for bit (up to the
sign of a zero sum).

Threads: the layer is chosen by ``threads.select_threading_layer`` (tinyseg/threads.py).
"""
from __future__ import annotations


import numpy as np
from numba import njit, prange

from .. import threads

threads.select_threading_layer()
threads.configure()


@njit(cache=True, inline="always")
def _window_max(image, r0, q0, kernel_h, kernel_w, H, W, interior, minus_inf):
    """(max, u·k_w + v of its first occurrence) of the window at padded-origin (r0, q0) of x.

    Separable as the NumPy kernel: along row u, m_u and its first column v_u (a later
    column wins only if strictly greater); then over rows, a later row wins only if
    m_u is strictly greater than the running max. Maxima propagate NaN as np.maximum.
    Positions outside x read −∞ (``minus_inf``, of x's dtype so that
    float32 stays float32); ``interior`` says the window lies inside x (no checks).
    """
    best = image[0, 0]      # (typed as x's dtype; set from row 0 below)
    best_index = 0
    for u in range(kernel_h):
        r = r0 + u
        row_inside = interior or (0 <= r < H)
        row_max = minus_inf if not row_inside or not (interior or 0 <= q0 < W) else image[r, q0]
        row_winner = 0
        for v in range(1, kernel_w):
            q = q0 + v
            if interior:
                value = image[r, q]
            elif row_inside and 0 <= q < W:
                value = image[r, q]
            else:
                continue            # −∞ never wins a strict '>' nor makes a NaN
            # Branch-free selects (cmov): on random data a branch here mispredicts half the time.
            row_winner = v if value > row_max else row_winner
            row_max = value if (value > row_max or value != value) else row_max
        if u == 0:
            best = row_max
            best_index = row_winner
        else:
            best_index = u * kernel_w + row_winner if row_max > best else best_index
            best = row_max if (row_max > best or row_max != row_max) else best
    return best, best_index


@njit(parallel=True, cache=True)
def max_pool2d_forward(x, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, y, winner, keep_winner,
                       minus_inf):
    """y[n,c,i,j] = max_{u,v} x_pad[n,c, s_h·i+u, s_w·j+v]; winner[n,c,i,j] = u·k_w + v of the first maximum.

    x is (N, C, H, W) and C-contiguous; y is (N, C, H', W') of x's dtype; winner is
    (N, C, H', W') of an unsigned integer type, written only when ``keep_winner``;
    minus_inf is −∞ as a scalar of x's dtype. One (n, c) plane per parallel iteration. Windows inside x (all but a border of
    width ⌈p/s⌉) take a path without bounds checks.
    """
    N, C, H, W = x.shape
    out_h, out_w = y.shape[2], y.shape[3]
    for nc in prange(N * C):
        n = nc // C
        c = nc - n * C
        image = x[n, c]
        out = y[n, c]
        for i in range(out_h):
            r0 = stride_h * i - pad_h
            rows_inside = r0 >= 0 and r0 + kernel_h <= H
            for j in range(out_w):
                q0 = stride_w * j - pad_w
                if rows_inside and q0 >= 0 and q0 + kernel_w <= W:
                    best, best_index = _window_max(image, r0, q0, kernel_h, kernel_w, H, W, True, minus_inf)
                else:
                    best, best_index = _window_max(image, r0, q0, kernel_h, kernel_w, H, W, False, minus_inf)
                out[i, j] = best
                if keep_winner:
                    winner[n, c, i, j] = best_index


@njit(parallel=True, cache=True)
def max_pool2d_backward(grad, winner, kernel_w, stride_h, stride_w, pad_h, pad_w, dx):
    """dx[n,c, s_h·i+u−p_h, s_w·j+v−p_w] += g[n,c,i,j] for the winner (u, v) of every window (i, j).

    dx is (N, C, H, W), zero on entry; grad and winner are (N, C, H', W'), C-contiguous.
    A winner in the padding (a window of −∞ only) drops its gradient, as the NumPy
    kernel's crop does. One (n, c) plane per parallel iteration: the windows of a plane,
    overlapping or not, are added up by one thread.
    """
    N, C, H, W = dx.shape
    out_h, out_w = grad.shape[2], grad.shape[3]
    for nc in prange(N * C):
        n = nc // C
        c = nc - n * C
        plane = dx[n, c]
        for i in range(out_h):
            for j in range(out_w):
                index = np.int64(winner[n, c, i, j])
                u = index // kernel_w
                v = index - u * kernel_w
                r = stride_h * i + u - pad_h
                q = stride_w * j + v - pad_w
                if 0 <= r < H and 0 <= q < W:
                    plane[r, q] += grad[n, c, i, j]


# ----- average pooling: y[n,c,i,j] = 1/(k_h·k_w) Σ_{u,v} x_pad[n,c, s_h·i+u, s_w·j+v]   (x_pad = 0 outside x)

@njit(cache=True, inline="always")
def _valid_windows(offset, stride, size, out_size):
    """[first, stop) of the window indices j with 0 <= stride·j + offset < size (and 0 <= j < out_size)."""
    first = 0 if offset >= 0 else (stride - 1 - offset) // stride
    stop = min(out_size, (size - 1 - offset) // stride + 1)
    return first, max(first, stop)


@njit(cache=True, inline="always")
def _add_strided_source(target, source, count, stride):
    """target[j] += source[stride·j] for j < count.

    Callers pass views that start at index 0 and call with a literal stride where they
    can: LLVM vectorises these loops only when it can see the indices never wrap
    around (no negative offsets) and, for strided access, the stride's value.
    """
    for j in range(count):
        target[j] += source[stride * j]


@njit(cache=True, inline="always")
def _add_strided_target(target, source, count, stride, weight):
    """target[stride·j] += source[j] · weight for j < count (views and literal strides as above)."""
    for j in range(count):
        target[stride * j] += source[j] * weight


@njit(parallel=True, cache=True)
def avg_pool2d_forward(x, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, y, divisor):
    """y[n,c,i,j] = (1/(k_h·k_w)) Σ_{0≤u<k_h} Σ_{0≤v<k_w} x_pad[n,c, s_h·i+u, s_w·j+v]   (x_pad = 0 outside x).

    x is (N, C, H, W), C-contiguous; y is (N, C, H', W') of x's dtype; divisor is k_h·k_w
    as a scalar of x's dtype (so that float32 stays float32). Padding counts in the
    divisor, which is always k_h·k_w (PyTorch's count_include_pad=True). Summed as the
    NumPy kernel does, separably: per window row u the row sum Σ_v in ascending v, then
    those row sums in ascending u, then one division by k_h·k_w. Padded terms are zeros
    and are skipped. Per row of windows the loop over v is outside the loop over j, so
    the innermost loops run along rows (vectorised for s_w = 1 and 2).
    """
    N, C, H, W = x.shape
    out_h, out_w = y.shape[2], y.shape[3]
    for nc in prange(N * C):
        n = nc // C
        c = nc - n * C
        image = x[n, c]
        row_sum = np.empty_like(y[n, c, 0])
        for i in range(out_h):
            window_sum = y[n, c, i]
            window_sum[:] = 0
            for u in range(kernel_h):
                r = stride_h * i + u - pad_h
                if r < 0 or r >= H:
                    continue
                row_sum[:] = 0
                for v in range(kernel_w):
                    first, stop = _valid_windows(v - pad_w, stride_w, W, out_w)
                    if stop == first:
                        continue
                    target = row_sum[first:stop]
                    source = image[r, stride_w * first + v - pad_w:]
                    if stride_w == 1:
                        _add_strided_source(target, source, stop - first, 1)
                    elif stride_w == 2:
                        _add_strided_source(target, source, stop - first, 2)
                    else:
                        _add_strided_source(target, source, stop - first, stride_w)
                for j in range(out_w):
                    window_sum[j] += row_sum[j]
            for j in range(out_w):
                window_sum[j] = window_sum[j] / divisor


@njit(parallel=True, cache=True)
def avg_pool2d_backward(grad, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dx, weight):
    """dx[n,c,r,q] = Σ_{(i,j,u,v): s_h·i+u−p_h = r, s_w·j+v−p_w = q} g[n,c,i,j] · (1/(k_h·k_w)).

    dx is (N, C, H, W), zero on entry; grad is (N, C, H', W'), C-contiguous; weight is
    1/(k_h·k_w) as a scalar of grad's dtype, rounded as the NumPy kernel's. A gather
    over the rows of dx: row r takes, in ascending (u, v), the terms of the windows
    whose element (u, v) lies on it, the order in which the NumPy kernel adds them.
    Terms that fall in the padding are never formed (the NumPy kernel crops them).
    One (n, c) plane per parallel iteration, so overlapping windows are added by one thread.
    """
    N, C, H, W = dx.shape
    out_h, out_w = grad.shape[2], grad.shape[3]
    for nc in prange(N * C):
        n = nc // C
        c = nc - n * C
        for r in range(H):
            for u in range(kernel_h):
                top = r + pad_h - u             # = s_h·i for the window row i whose element row u is r
                if top < 0 or top % stride_h != 0 or top // stride_h >= out_h:
                    continue
                i = top // stride_h
                for v in range(kernel_w):
                    first, stop = _valid_windows(v - pad_w, stride_w, W, out_w)
                    if stop == first:
                        continue
                    target = dx[n, c, r, stride_w * first + v - pad_w:]
                    source = grad[n, c, i, first:stop]
                    if stride_w == 1:
                        _add_strided_target(target, source, stop - first, 1, weight)
                    elif stride_w == 2:
                        _add_strided_target(target, source, stop - first, 2, weight)
                    else:
                        _add_strided_target(target, source, stop - first, stride_w, weight)


@njit(parallel=True, cache=True)
def max_pool2d_2x2_forward(x, y, winner, keep_winner):
    """max_pool2d_forward for a 2×2 kernel, stride 2, no padding: the U-Net's pooling.

    The same separable rule written out for the four values of a window,
        row 0: m0 = max(a, b), winner 1 if b > a else 0;   row 1: m1 = max(c, d), likewise
        y = m1 if m1 > m0 else m0 (NaN propagating), winner 2 + (row 1's) if m1 > m0,
    so it gives exactly what the general loop gives. One (n, c) plane per parallel
    iteration; no bounds checks (every window lies inside x: H' = ⌊H/2⌋, W' = ⌊W/2⌋).
    """
    N, C = x.shape[0], x.shape[1]
    out_h, out_w = y.shape[2], y.shape[3]
    for nc in prange(N * C):
        n = nc // C
        c = nc - n * C
        plane = x[n, c]
        out = y[n, c]
        for i in range(out_h):
            for j in range(out_w):
                a, b = plane[2 * i, 2 * j], plane[2 * i, 2 * j + 1]
                m0 = b if (b > a or b != b) else a
                w0 = 1 if b > a else 0
                p, q = plane[2 * i + 1, 2 * j], plane[2 * i + 1, 2 * j + 1]
                m1 = q if (q > p or q != q) else p
                w1 = 3 if q > p else 2
                out[i, j] = m1 if (m1 > m0 or m1 != m1) else m0
                if keep_winner:
                    winner[n, c, i, j] = w1 if m1 > m0 else w0
