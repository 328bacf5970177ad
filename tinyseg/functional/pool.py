"""Pooling: max_pool2d and avg_pool2d, each a forward with its backward right below it.

Both reduce every k_h × k_w window of the padded input, one window every s pixels:

    window (i, j) covers padded rows s_h·i + u and columns s_w·j + v, 0 <= u < k_h, 0 <= v < k_w
    H' = ⌊(H + 2p_h − k_h) / s_h⌋ + 1,   W' likewise

Element (u, v) of every window, taken over all windows at once, is one strided slice of
the padded input, ``padded[:, :, u : u + s_h·(H'−1) + 1 : s_h, v : ... : s_w]``. So
each op is a handful of whole-array operations on such slices, never a loop over pixels.
Both reductions are separable (a 2-D window max is the max over rows of the max along
each row; likewise for sums), so the forward reduces along W first, then along H:
k_w + k_h slice operations instead of k_h·k_w.

The definitions and the derivation of each backward are in
docs/math/pooling_and_resizing.md, sections 1 (max pooling) and 2 (average pooling).
"""
from __future__ import annotations

import numpy as np

from .. import backend
from ..tensor import Function, is_grad_enabled
from ._checks import check_float, check_ndim, pair


class _WindowGeometry:
    """Kernel, stride, padding and output size of one pooling call, with the slices they imply."""

    def __init__(self, input_shape, kernel, stride, padding):
        self.kernel, self.stride, self.padding = kernel, stride, padding
        N, C, H, W = input_shape
        (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
        self.input_shape = tuple(input_shape)
        self.padded_shape = (N, C, H + 2 * ph, W + 2 * pw)
        self.out_size = ((H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1)
        # Windows share pixels when the stride is shorter than the kernel; their
        # gradients must then be added, not assigned, in the backward pass.
        self.overlapping = sh < kh or sw < kw
        # Kernel == stride with no padding and sizes divisible by it (U-Net's 2×2 pool):
        # the windows tile the input exactly, so every input pixel is in one window.
        self.tiles_input = (kernel == stride and padding == (0, 0)
                            and self.out_size[0] * kh == H and self.out_size[1] * kw == W)

    def rows(self, u):
        """Slice of padded rows holding element row u of every window."""
        return slice(u, u + self.stride[0] * (self.out_size[0] - 1) + 1, self.stride[0])

    def columns(self, v):
        """Slice of padded columns holding element column v of every window."""
        return slice(v, v + self.stride[1] * (self.out_size[1] - 1) + 1, self.stride[1])

    def rows_used(self):
        """The padded rows that some window covers (stride > kernel skips the others)."""
        return slice(0, self.stride[0] * (self.out_size[0] - 1) + self.kernel[0])


def _pad(xp, x, padding, fill):
    """x with ``padding`` rows/columns of ``fill`` on every side of H and W (x itself if none)."""
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    N, C, H, W = x.shape
    padded = xp.full((N, C, H + 2 * ph, W + 2 * pw), fill, dtype=x.dtype)
    padded[:, :, ph:ph + H, pw:pw + W] = x
    return padded


def _crop_padding(padded, padding):
    ph, pw = padding
    H, W = padded.shape[2] - 2 * ph, padded.shape[3] - 2 * pw
    return padded[:, :, ph:ph + H, pw:pw + W]


def _scatter_to_windows(xp, geometry: _WindowGeometry, grad, local_derivative):
    """dx for a pooling op: dx_pad[s_h·i+u, s_w·j+v] += g[i, j] · ∂y[i, j]/∂x_pad[s_h·i+u, s_w·j+v].

    ``local_derivative(u, v)`` is that derivative for window element (u, v) of every
    window at once: an (N, C, H', W') array, or a scalar when it is the same for all.
    One strided slice per (u, v); where windows do not overlap every pixel receives at
    most one term, so it is written in place (no temporary) instead of added.
    """
    kh, kw = geometry.kernel
    if geometry.tiles_input:
        padded_grad = xp.empty(geometry.padded_shape, dtype=grad.dtype)   # every pixel gets written
    else:
        padded_grad = xp.zeros(geometry.padded_shape, dtype=grad.dtype)
    for u in range(kh):
        for v in range(kw):
            element = padded_grad[:, :, geometry.rows(u), geometry.columns(v)]
            if geometry.overlapping:
                element += grad * local_derivative(u, v)
            else:
                xp.multiply(grad, local_derivative(u, v), out=element)
    return _crop_padding(padded_grad, geometry.padding)


# ----- max pooling: y[n,c,i,j] = max_{u,v} x_pad[n,c, s_h·i+u, s_w·j+v]   (x_pad = −∞ outside x)

class NumpyMaxPoolKernel:
    """Max pooling by whole-array operations on strided slices (the module docstring's scheme).

    ``forward(xp, x, geometry, keep_winner)`` returns (y, winner): winner[n,c,i,j] is the
    position u·k_w + v of the first maximum of window (i, j) in row-major order, as the
    smallest unsigned integer type holding k_h·k_w − 1 (None when not ``keep_winner``).
    ``backward(xp, grad, winner, geometry)`` returns dx.
    """

    name = "numpy"

    @staticmethod
    def forward(xp, x, geometry, keep_winner):
        kh, kw = geometry.kernel
        index_type = np.min_scalar_type(kh * kw - 1).type
        rows = _pad(xp, x, geometry.padding, -np.inf)[:, :, geometry.rows_used()]

        # Stage 1, along W: the max of each padded row over the k_w columns of every
        # window, and the first column v reaching it (strict '>' keeps the earliest on ties).
        # Indices grow with v, so a new winner always has the larger index: the update
        # is max(winner, [new max]·v), cheaper than a masked copy.
        row_max = rows[:, :, :, geometry.columns(0)]
        column_winner = xp.zeros(row_max.shape, dtype=index_type) if keep_winner else None
        for v in range(1, kw):
            candidate = rows[:, :, :, geometry.columns(v)]
            if keep_winner:
                column_winner = xp.maximum(column_winner, (candidate > row_max) * index_type(v))
            row_max = xp.maximum(row_max, candidate)    # maximum propagates NaN, as PyTorch

        # Stage 2, along H: the max over the k_h row maxima of every window. A later row
        # wins only when strictly greater, so the winner is the first maximum in
        # row-major order: the first row holding the window's max, at its first column.
        # Row u's indices u·k_w + v exceed every index of rows above it, so the same
        # max(winner, [new max]·index) update applies.
        y = row_max[:, :, geometry.rows(0)]
        winner = column_winner[:, :, geometry.rows(0)] if keep_winner else None
        for u in range(1, kh):
            candidate = row_max[:, :, geometry.rows(u)]
            if keep_winner:
                index_in_row_u = column_winner[:, :, geometry.rows(u)] + index_type(u * kw)
                winner = xp.maximum(winner, (candidate > y) * index_in_row_u)
            y = xp.maximum(y, candidate)
        return y, winner

    @staticmethod
    def backward(xp, grad, winner, geometry):
        # ∂y[i, j]/∂(element (u, v) of window (i, j)) = 1 if that element won the window, else 0.
        kw = geometry.kernel[1]
        return _scatter_to_windows(xp, geometry, grad, lambda u, v: winner == u * kw + v)


class NumbaMaxPoolKernel(NumpyMaxPoolKernel):
    """The same forward and backward as one compiled pass each (pool_kernels_numba.py).

    Forward: per window, the separable max and first-maximum rule of the NumPy kernel,
    with x_pad = −∞ read on the fly (no padded copy). Backward:
    dx[n,c, s_h·i+u−p_h, s_w·j+v−p_w] += g[n,c,i,j] for the winner (u, v) of each window,
    one thread per (n, c) plane. NumPy arrays only: CuPy arrays use the NumPy/CuPy path.
    """

    name = "numba"

    @staticmethod
    def forward(xp, x, geometry, keep_winner):
        if xp is not np:
            return NumpyMaxPoolKernel.forward(xp, x, geometry, keep_winner)
        from . import pool_kernels_numba as compiled

        (kh, kw), (sh, sw), (ph, pw) = geometry.kernel, geometry.stride, geometry.padding
        N, C = x.shape[:2]
        y = np.empty((N, C) + geometry.out_size, dtype=x.dtype)
        index_type = np.min_scalar_type(kh * kw - 1)
        winner = np.empty(y.shape if keep_winner else (0, 0, 0, 0), dtype=index_type)
        if _is_2x2_stride_2(geometry):
            compiled.max_pool2d_2x2_forward(np.ascontiguousarray(x), y, winner, keep_winner)
        else:
            compiled.max_pool2d_forward(np.ascontiguousarray(x), kh, kw, sh, sw, ph, pw, y, winner, keep_winner,
                                        x.dtype.type(-np.inf))
        return y, (winner if keep_winner else None)

    @staticmethod
    def backward(xp, grad, winner, geometry):
        if xp is not np:
            return NumpyMaxPoolKernel.backward(xp, grad, winner, geometry)
        from . import pool_kernels_numba as compiled

        (_, kw), (sh, sw), (ph, pw) = geometry.kernel, geometry.stride, geometry.padding
        dx = np.zeros(geometry.input_shape, dtype=grad.dtype)
        compiled.max_pool2d_backward(np.ascontiguousarray(grad), np.ascontiguousarray(winner),
                                     kw, sh, sw, ph, pw, dx)
        return dx


def _is_2x2_stride_2(geometry) -> bool:
    """The U-Net's pooling, which the compiled forward runs as a special case."""
    return geometry.kernel == (2, 2) and geometry.stride == (2, 2) and geometry.padding == (0, 0)


class CupyMaxPoolKernel(NumpyMaxPoolKernel):
    """The NumPy kernel's whole-array expressions run by CuPy on the GPU: k_w + k_h strided
    slice passes forward, k_h·k_w masked passes backward."""

    name = "cupy"


class CudaMaxPoolKernel(NumpyMaxPoolKernel):
    """Hand-written CUDA C (kernels/pool.cu): forward one thread per window (the CPU kernels'
    separable max and winner rule, so the same winners), backward a gather, one thread per
    input element adding the windows it won (deterministic, overlapping windows included).

    Runs on CuPy arrays, or on NumPy arrays inside ``backend.cuda_emulation()``.
    """

    name = "cuda"

    @staticmethod
    def forward(xp, x, geometry, keep_winner):
        from . import pool_kernels_cuda as gpu
        return gpu.max_pool2d_forward(x, geometry, keep_winner, xp)

    @staticmethod
    def backward(xp, grad, winner, geometry):
        from . import pool_kernels_cuda as gpu
        return gpu.max_pool2d_backward(grad, winner, geometry, xp)


class NumbaCudaMaxPoolKernel(NumpyMaxPoolKernel):
    """Numba CUDA kernels (pool_kernels_numba_cuda.py), the Python twins of kernels/pool.cu's:
    forward one thread per window (the CPU kernels' separable max and winner rule),
    backward a gather, one thread per input element (deterministic).

    Runs on CuPy arrays on a GPU, or on NumPy arrays in Numba's CUDA simulator
    (NUMBA_ENABLE_CUDASIM=1 set before start); imports numba.cuda on first use.
    """

    name = "numba_cuda"
    device = "cuda"

    @staticmethod
    def forward(xp, x, geometry, keep_winner):
        from . import pool_kernels_numba_cuda as gpu
        return gpu.forward(x, geometry, keep_winner)

    @staticmethod
    def backward(xp, grad, winner, geometry):
        from . import pool_kernels_numba_cuda as gpu
        return gpu.backward(grad, winner, geometry)


class AutoMaxPoolKernel(NumpyMaxPoolKernel):
    """The default. On the GPU (CuPy arrays): the hand-written CUDA kernel ("cuda"). On the CPU: NumPy's forward except for large, wide 2×2-stride-2 pooling (below),
    and Numba's backward from NUMBA_BACKWARD_MIN_OUTPUTS outputs.

    Measured (float32, 2×2 stride 2, 2 threads, median of 25 calls, ms; NumPy / Numba):

        shape                forward         backward
        (4, 16, 128, 128)    1.3 / 4.6       0.82 / 0.84
        (4, 64, 32, 32)      0.45 / 0.87     0.25 / 0.17
        (2, 32, 256, 256)    8.3 / 13.6      6.9 / 4.1
        (1, 64, 256, 256)    8.9 / 13.5      7.9 / 3.8
        (1, 256, 16, 16)     0.17 / 0.46     0.087 / 0.064

    NumPy's separable slice forward beats the compiled per-window loop at every size; the
    compiled scatter (one pass, no k_h·k_w masks) wins the backward from about 2^16
    outputs, below which Numba's ~50 µs launch makes it a tie. The winners are the same
    array for both (u·k_w + v per window), so the two halves combine freely.

    The compiled 2×2-stride-2 special case (max_pool2d_2x2_forward) against NumPy,
    forward ms (same conditions):

        shape                NumPy    2×2 loop
        (1, 16, 128, 128)    0.34     0.096
        (4, 16, 128, 128)    1.32     0.23
        (2, 64, 128, 128)    2.73     0.49
        (2, 32, 256, 256)    8.29     0.70
        (1, 64, 256, 256)    8.21     1.55
        (1, 32, 64, 64)      0.26     0.53
        (4, 64, 32, 32)      0.45     0.58
        (1, 256, 16, 16)     0.17     0.22

    It wins 3–12× on images of width 128 and more and loses on width 64 and less (an
    effect of the short rows not understood yet), hence NUMBA_2X2_FORWARD_MIN_WIDTH. Inside
    a whole B16 U-Net step, though, using it on (4, 16, 128, 128) and (1, 16, 128, 128)
    bought nothing measurable (6 alternating processes each: training 445 vs 444 ms,
    inference 48.8 vs 45.7 ms with and without it: the threads it wakes between the
    GEMMs cost what the loop saves, ~0.2–1 ms), so "auto" takes it only from
    NUMBA_2X2_FORWARD_MIN_ELEMENTS input elements, where one call saves 6–7 ms.
    """

    name = "auto"

    @staticmethod
    def forward(xp, x, geometry, keep_winner):
        if xp is not np:
            return CudaMaxPoolKernel.forward(xp, x, geometry, keep_winner)
        if (_is_2x2_stride_2(geometry) and x.shape[3] >= NUMBA_2X2_FORWARD_MIN_WIDTH
                and x.size >= NUMBA_2X2_FORWARD_MIN_ELEMENTS):
            return NumbaMaxPoolKernel.forward(xp, x, geometry, keep_winner)
        return NumpyMaxPoolKernel.forward(xp, x, geometry, keep_winner)

    @staticmethod
    def backward(xp, grad, winner, geometry):
        if xp is not np:
            return CudaMaxPoolKernel.backward(xp, grad, winner, geometry)
        if grad.size >= NUMBA_BACKWARD_MIN_OUTPUTS:
            return NumbaMaxPoolKernel.backward(xp, grad, winner, geometry)
        return NumpyMaxPoolKernel.backward(xp, grad, winner, geometry)


# Where "auto" switches the backward from NumPy to Numba: N·C·H'·W' outputs (see above).
NUMBA_BACKWARD_MIN_OUTPUTS = 2**16
# Input width and size from which "auto" runs 2×2-stride-2 forwards compiled (see above).
NUMBA_2X2_FORWARD_MIN_WIDTH = 128
NUMBA_2X2_FORWARD_MIN_ELEMENTS = 2**21


# Kernels by name: ``backend.use_kernel("max_pool2d", name)`` selects one.
MAX_POOL2D_KERNELS = {kernel.name: kernel for kernel in (NumpyMaxPoolKernel, NumbaMaxPoolKernel, CupyMaxPoolKernel,
                                                        CudaMaxPoolKernel, NumbaCudaMaxPoolKernel,
                                                        AutoMaxPoolKernel)}
DEFAULT_MAX_POOL2D_KERNEL = "auto"


def _selected_max_pool_kernel():
    name = backend.kernel_for("max_pool2d", DEFAULT_MAX_POOL2D_KERNEL)
    if name not in MAX_POOL2D_KERNELS:
        available = ", ".join(repr(k) for k in sorted(MAX_POOL2D_KERNELS))
        raise ValueError(f"max_pool2d: unknown kernel {name!r}; available kernels: {available}")
    return MAX_POOL2D_KERNELS[name]


class MaxPool2dFn(Function):
    """Max pooling with −∞ padding; the gradient goes to one winner per window.

    The winner is the first maximum of the window in row-major (u, v) order, as in
    PyTorch; the forward stores its position u·k_w + v per window as a small unsigned
    integer (uint8 for windows up to 16×16) instead of keeping the input. The work is
    done by the kernel selected with ``backend.use_kernel("max_pool2d", name)``.
    """

    def __init__(self, kernel, stride, padding):
        self.kernel, self.stride, self.padding = kernel, stride, padding
        self.pool_kernel = _selected_max_pool_kernel()

    def forward(self, x):
        geometry = self.geometry = _WindowGeometry(x.shape, self.kernel, self.stride, self.padding)
        keep_winner = is_grad_enabled() and self.needs_grad[0]
        y, winner = self.pool_kernel.forward(self.xp, x, geometry, keep_winner)
        if keep_winner:
            self.winner = winner
        return y

    def backward(self, grad):
        return self.pool_kernel.backward(self.xp, grad, self.winner, self.geometry)


# ----- average pooling: y[n,c,i,j] = 1/(k_h·k_w) Σ_{u,v} x_pad[n,c, s_h·i+u, s_w·j+v]   (x_pad = 0 outside x)

class NumpyAvgPoolKernel:
    """Average pooling by whole-array operations on strided slices (the module docstring's scheme).

    ``forward(xp, x, geometry)`` returns y; ``backward(xp, grad, geometry)`` returns dx.
    """

    name = "numpy"

    @staticmethod
    def forward(xp, x, geometry):
        kh, kw = geometry.kernel
        rows = _pad(xp, x, geometry.padding, 0.0)[:, :, geometry.rows_used()]
        row_sum = rows[:, :, :, geometry.columns(0)]
        for v in range(1, kw):
            row_sum = row_sum + rows[:, :, :, geometry.columns(v)]
        window_sum = row_sum[:, :, geometry.rows(0)]
        for u in range(1, kh):
            window_sum = window_sum + row_sum[:, :, geometry.rows(u)]
        return window_sum / x.dtype.type(kh * kw)

    @staticmethod
    def backward(xp, grad, geometry):
        # ∂y[i, j]/∂(any element of window (i, j)) = 1/(k_h·k_w).
        kh, kw = geometry.kernel
        weight = grad.dtype.type(1.0 / (kh * kw))
        return _scatter_to_windows(xp, geometry, grad, lambda u, v: weight)


class NumbaAvgPoolKernel(NumpyAvgPoolKernel):
    """The same forward and backward as one compiled pass each (pool_kernels_numba.py).

    Forward: per row of windows, the separable sum of the NumPy kernel in its order
    (Σ_u of the row sums Σ_v), padding skipped rather than copied. Backward: a gather,
    dx[n,c,r,q] = Σ g[n,c,i,j]/(k_h·k_w) over the windows (i, j) holding (r, q), one
    thread per (n, c) plane. Both equal the NumPy kernel's results bit for bit (the
    same additions in the same order). NumPy arrays only: CuPy arrays use the NumPy/CuPy path.
    """

    name = "numba"

    @staticmethod
    def forward(xp, x, geometry):
        if xp is not np:
            return NumpyAvgPoolKernel.forward(xp, x, geometry)
        from . import pool_kernels_numba as compiled

        (kh, kw), (sh, sw), (ph, pw) = geometry.kernel, geometry.stride, geometry.padding
        N, C = x.shape[:2]
        y = np.empty((N, C) + geometry.out_size, dtype=x.dtype)
        compiled.avg_pool2d_forward(np.ascontiguousarray(x), kh, kw, sh, sw, ph, pw, y, x.dtype.type(kh * kw))
        return y

    @staticmethod
    def backward(xp, grad, geometry):
        if xp is not np:
            return NumpyAvgPoolKernel.backward(xp, grad, geometry)
        from . import pool_kernels_numba as compiled

        (kh, kw), (sh, sw), (ph, pw) = geometry.kernel, geometry.stride, geometry.padding
        dx = np.zeros(geometry.input_shape, dtype=grad.dtype)
        compiled.avg_pool2d_backward(np.ascontiguousarray(grad), kh, kw, sh, sw, ph, pw, dx,
                                     grad.dtype.type(1.0 / (kh * kw)))
        return dx


class CupyAvgPoolKernel(NumpyAvgPoolKernel):
    """The NumPy kernel's whole-array expressions run by CuPy on the GPU."""

    name = "cupy"


class CudaAvgPoolKernel(NumpyAvgPoolKernel):
    """Hand-written CUDA C (kernels/pool.cu): forward one thread per window (the CPU kernels'
    order of additions), backward a gather, one thread per input element.

    Runs on CuPy arrays, or on NumPy arrays inside ``backend.cuda_emulation()``.
    """

    name = "cuda"

    @staticmethod
    def forward(xp, x, geometry):
        from . import pool_kernels_cuda as gpu
        return gpu.avg_pool2d_forward(x, geometry, xp)

    @staticmethod
    def backward(xp, grad, geometry):
        from . import pool_kernels_cuda as gpu
        return gpu.avg_pool2d_backward(grad, geometry, xp)


class AutoAvgPoolKernel(NumpyAvgPoolKernel):
    """The default. On the GPU (CuPy arrays): the hand-written CUDA kernel ("cuda"). On the CPU:
    per call, NumPy below and Numba from a size threshold, forward and backward apart.

    Measured (float32, 2 threads, median of 25 calls after warm-up, ms; NumPy / Numba):

        shape                kernel          forward        backward
        (1, 256, 16, 16)     2×2 s2          0.056 / 0.18   0.069 / 0.20
        (4, 64, 32, 32)      2×2 s2          0.16 / 0.37    0.19 / 0.41
        (4, 16, 128, 128)    2×2 s2          0.48 / 0.49    0.69 / 0.66
        (4, 32, 128, 128)    2×2 s2          0.83 / 0.92    1.23 / 1.20
        (2, 16, 256, 256)    2×2 s2          0.87 / 0.81    1.24 / 1.06
        (2, 32, 256, 256)    2×2 s2          2.98 / 1.75    6.93 / 2.84
        (1, 64, 256, 256)    2×2 s2          3.00 / 1.76    7.21 / 2.64
        (1, 16, 32, 32)      3×3 s1 p1       0.057 / 0.14   0.16 / 0.14
        (1, 64, 64, 64)      3×3 s1 p1       0.48 / 0.73    1.50 / 0.58
        (1, 64, 128, 128)    3×3 s1 p1       2.05 / 1.77    5.34 / 1.44
        (1, 64, 256, 256)    3×3 s1 p1       23.7 / 6.4     40.3 / 5.1

    Numba's launch (~60 µs) and per-plane set-up lose to NumPy's few whole-array slice
    operations on small inputs. NumPy's forward costs about k_w + k_h passes over the
    input, so it is the input size that decides: Numba from NUMBA_FORWARD_MIN_INPUTS
    elements. NumPy's backward makes k_h·k_w passes over the gradient: Numba from
    NUMBA_BACKWARD_MIN_TERMS window elements N·C·H'·W'·k_h·k_w. Both kernels add the
    same terms in the same order, so the halves combine freely (results are identical).
    """

    name = "auto"

    @staticmethod
    def forward(xp, x, geometry):
        if xp is not np:
            return CudaAvgPoolKernel.forward(xp, x, geometry)
        if x.size >= NUMBA_FORWARD_MIN_INPUTS:
            return NumbaAvgPoolKernel.forward(xp, x, geometry)
        return NumpyAvgPoolKernel.forward(xp, x, geometry)

    @staticmethod
    def backward(xp, grad, geometry):
        if xp is not np:
            return CudaAvgPoolKernel.backward(xp, grad, geometry)
        kh, kw = geometry.kernel
        if grad.size * kh * kw >= NUMBA_BACKWARD_MIN_TERMS:
            return NumbaAvgPoolKernel.backward(xp, grad, geometry)
        return NumpyAvgPoolKernel.backward(xp, grad, geometry)


# Where "auto" switches avg_pool2d to Numba (AutoAvgPoolKernel's table: the two are about
# even at these sizes): forward from N·C·H·W inputs, backward from N·C·H'·W'·k_h·k_w window elements.
NUMBA_FORWARD_MIN_INPUTS = 2**21
NUMBA_BACKWARD_MIN_TERMS = 2**21


# Kernels by name: ``backend.use_kernel("avg_pool2d", name)`` selects one.
AVG_POOL2D_KERNELS = {kernel.name: kernel for kernel in (NumpyAvgPoolKernel, NumbaAvgPoolKernel, CupyAvgPoolKernel,
                                                        CudaAvgPoolKernel, AutoAvgPoolKernel)}
DEFAULT_AVG_POOL2D_KERNEL = "auto"


def _selected_avg_pool_kernel():
    name = backend.kernel_for("avg_pool2d", DEFAULT_AVG_POOL2D_KERNEL)
    if name not in AVG_POOL2D_KERNELS:
        available = ", ".join(repr(k) for k in sorted(AVG_POOL2D_KERNELS))
        raise ValueError(f"avg_pool2d: unknown kernel {name!r}; available kernels: {available}")
    return AVG_POOL2D_KERNELS[name]


class AvgPool2dFn(Function):
    """Average pooling with zero padding counted in the divisor (always k_h·k_w, as PyTorch's default).

    The work is done by the kernel selected with ``backend.use_kernel("avg_pool2d", name)``.
    """

    def __init__(self, kernel, stride, padding):
        self.kernel, self.stride, self.padding = kernel, stride, padding
        self.pool_kernel = _selected_avg_pool_kernel()

    def forward(self, x):
        self.geometry = _WindowGeometry(x.shape, self.kernel, self.stride, self.padding)
        return self.pool_kernel.forward(self.xp, x, self.geometry)

    def backward(self, grad):
        return self.pool_kernel.backward(self.xp, grad, self.geometry)


# ----- the public functions

def _pool_arguments(op, x, kernel_size, stride, padding):
    """Validated (kernel, stride, padding) pairs; errors name the op and the argument."""
    check_ndim(op, "x", x, 4, "(N, C, H, W)")
    check_float(op, "x", x)
    kernel = pair(op, "kernel_size", kernel_size, minimum=1)
    stride = kernel if stride is None else pair(op, "stride", stride, minimum=1)
    padding = pair(op, "padding", padding, minimum=0)
    if any(2 * p > k for p, k in zip(padding, kernel)):
        # As PyTorch: a wider pad would allow windows lying entirely in the padding.
        raise ValueError(f"{op}: argument 'padding' expected at most half the kernel size {kernel}, "
                         f"got {padding}")
    H, W = x.shape[2], x.shape[3]
    padded_size = (H + 2 * padding[0], W + 2 * padding[1])
    if kernel[0] > padded_size[0] or kernel[1] > padded_size[1]:
        raise ValueError(f"{op}: argument 'kernel_size' {kernel} is larger than the padded input "
                         f"{padded_size} (input {(H, W)}, padding {padding})")
    return kernel, stride, padding


def max_pool2d(x, kernel_size, stride=None, padding=0):
    """Max pooling: y[n,c,i,j] = max_{0≤u<k_h, 0≤v<k_w} x[n,c, s_h·i+u−p_h, s_w·j+v−p_w].

    (N, C, H, W) -> (N, C, H', W'), H' = ⌊(H + 2p − k)/s⌋ + 1 per axis. ``kernel_size``,
    ``stride`` (default: kernel_size) and ``padding`` are ints or (h, w) pairs; padding
    counts as −∞ and may be at most half the kernel. Backward: the whole upstream
    gradient of a window goes to its first maximum in row-major order (as PyTorch);
    gradients of overlapping windows add up. A NaN in a window makes its output NaN.
    Derivation: docs/math/pooling_and_resizing.md, section 1.
    """
    kernel, stride, padding = _pool_arguments("max_pool2d", x, kernel_size, stride, padding)
    return MaxPool2dFn(kernel, stride, padding)(x)


def avg_pool2d(x, kernel_size, stride=None, padding=0):
    """Average pooling: y[n,c,i,j] = 1/(k_h·k_w) Σ_{u,v} x[n,c, s_h·i+u−p_h, s_w·j+v−p_w].

    (N, C, H, W) -> (N, C, H', W'), H' = ⌊(H + 2p − k)/s⌋ + 1 per axis. Padding counts
    as zeros that stay in the divisor (PyTorch's count_include_pad=True). Backward: each
    element of a window receives g/(k_h·k_w); overlapping windows add up.
    Derivation: docs/math/pooling_and_resizing.md, section 2.
    """
    kernel, stride, padding = _pool_arguments("avg_pool2d", x, kernel_size, stride, padding)
    return AvgPool2dFn(kernel, stride, padding)(x)
