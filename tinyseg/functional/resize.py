"""Upsampling by integer factors: nearest and bilinear, each a forward with its backward below it.

Both are separable: resampling along each axis in turn. Nearest copies every input
pixel into an s_h × s_w block (forward: ``repeat``; backward: the sum over each block,
by s_h + s_w strided slice additions). Bilinear is a linear map per axis, written as a
small interpolation matrix A (H' × H) with two non-zeros per row:

    y = A_h · x · A_wᵀ   (for every image n, c),     dx = A_hᵀ · dy · A_w

Each op has kernels, picked by ``backend.use_kernel("upsample_nearest" or
"upsample_bilinear", name)``: "numpy" (whole-array operations; for bilinear, along W
one matrix product over all rows, along H a gather of the few input rows each output
row reads: the non-zeros of A_h, or of A_hᵀ in the backward), "numba" (compiled loops,
in elementwise_kernels_numba and resize_kernels_numba) and "auto" (the default: by
size, from the measurements quoted with each). The definitions (as PyTorch's
``F.interpolate(x, scale_factor=s, mode=...)``) and the derivations are in
docs/math/pooling_and_resizing.md, sections 3 (nearest) and 4 (bilinear).
"""
from __future__ import annotations

import functools
import math
import numbers

import numpy as np

from .. import backend, threads
from ..tensor import Function
from ._checks import check_float, check_ndim

MODES = ("nearest", "bilinear")


# ----- nearest: y[n,c,i,j] = x[n,c, ⌊i/s_h⌋, ⌊j/s_w⌋]

class NumpyNearestKernel:
    """Whole-array NumPy (or CuPy) operations.

    forward:  ``repeat`` along W, then along H (which then copies whole contiguous rows);
    backward: dx[a, b] = Σ_{u<s_h, v<s_w} dy[s_h·a + u, s_w·b + v], by s_h strided row
              slice additions, then s_w strided column slice additions.
    """

    name = "numpy"

    @staticmethod
    def forward(x, scale):
        sh, sw = scale
        # Columns first: the row repeat that follows then copies whole contiguous rows.
        return x.repeat(sw, axis=3).repeat(sh, axis=2)

    @staticmethod
    def backward(grad, scale):
        # Input pixel (a, b) was copied to output rows s_h·a + u and columns s_w·b + v,
        # so its gradient is the sum of grad over that s_h × s_w block.
        sh, sw = scale
        summed_rows = grad[:, :, 0::sh]
        for u in range(1, sh):
            summed_rows = summed_rows + grad[:, :, u::sh]
        block_sum = summed_rows[:, :, :, 0::sw]
        for v in range(1, sw):
            block_sum = block_sum + summed_rows[:, :, :, v::sw]
        return block_sum


class NumbaNearestKernel:
    """One compiled pass each way (elementwise_kernels_numba), parallel over input rows:

    forward:  y[n,c, s_h·a + u, s_w·b + v] = x[n,c,a,b]
    backward: dx[n,c,a,b] = Σ_{u<s_h, v<s_w} dy[n,c, s_h·a + u, s_w·b + v]

    NumPy arrays only: CuPy arrays use the NumPy/CuPy path.
    """

    name = "numba"

    @staticmethod
    def forward(x, scale):
        if not isinstance(x, np.ndarray):
            return NumpyNearestKernel.forward(x, scale)
        from . import elementwise_kernels_numba as compiled

        N, C, H, W = x.shape
        planes = np.ascontiguousarray(x).reshape(N * C, H, W)
        return compiled.upsample_nearest_forward(planes, *scale).reshape(N, C, H * scale[0], W * scale[1])

    @staticmethod
    def backward(grad, scale):
        if not isinstance(grad, np.ndarray):
            return NumpyNearestKernel.backward(grad, scale)
        from . import elementwise_kernels_numba as compiled

        N, C, Hs, Ws = grad.shape
        planes = np.ascontiguousarray(grad).reshape(N * C, Hs, Ws)
        return compiled.upsample_nearest_backward(planes, *scale).reshape(N, C, Hs // scale[0], Ws // scale[1])


# Measured (2 cores, float32, scale 2, median ms, forward / backward; the shape is the
# upsampled one):             numpy         numba
#   (4, 128, 16, 16)     0.07 / 0.08   0.21 / 0.54
#   (1, 512, 16, 16)     0.07 / 0.08   0.17 / 0.27
#   (4, 16, 128, 128)    0.62 / 0.39   0.44 / 1.78
#   (2, 32, 256, 256)    3.54 / 3.27   2.21 / 1.49
#   (1, 64, 256, 256)    2.87 / 3.28   1.82 / 1.68
# Numba's parallel launch (~50 µs) and per-row work lose on small arrays, and it wins
# from about 4M upsampled elements; "auto" switches at 2**21 (2M).
AUTO_NEAREST_NUMBA_MIN_ELEMENTS = 2 ** 21


class CupyNearestKernel(NumpyNearestKernel):
    """The NumPy kernel's whole-array expressions run by CuPy on the GPU (two ``repeat`` passes
    forward, s_h + s_w slice additions backward)."""

    name = "cupy"


class CudaNearestKernel:
    """Hand-written CUDA C (kernels/upsample.cu): forward one thread per output pixel; backward a
    gather, one thread per input pixel summing its s_h × s_w block (one pass each way).

    Runs on CuPy arrays, or on NumPy arrays inside ``backend.cuda_emulation()``.
    """

    name = "cuda"

    @staticmethod
    def forward(x, scale):
        from . import resize_kernels_cuda as gpu
        return gpu.nearest_forward(x, scale, backend.get_array_module(x))

    @staticmethod
    def backward(grad, scale):
        from . import resize_kernels_cuda as gpu
        return gpu.nearest_backward(grad, scale, backend.get_array_module(grad))


class AutoNearestKernel:
    """GPU (CuPy arrays): "cuda". CPU: numba for upsampled arrays of at least
    AUTO_NEAREST_NUMBA_MIN_ELEMENTS elements, numpy below."""

    name = "auto"

    @staticmethod
    def forward(x, scale):
        if backend.get_array_module(x) is not np:
            return CudaNearestKernel.forward(x, scale)
        large = x.size * scale[0] * scale[1] >= AUTO_NEAREST_NUMBA_MIN_ELEMENTS
        return (NumbaNearestKernel if large else NumpyNearestKernel).forward(x, scale)

    @staticmethod
    def backward(grad, scale):
        if backend.get_array_module(grad) is not np:
            return CudaNearestKernel.backward(grad, scale)
        large = grad.size >= AUTO_NEAREST_NUMBA_MIN_ELEMENTS
        return (NumbaNearestKernel if large else NumpyNearestKernel).backward(grad, scale)


UPSAMPLE_NEAREST_KERNELS = {kernel.name: kernel
                            for kernel in (NumpyNearestKernel, NumbaNearestKernel, CupyNearestKernel,
                                           CudaNearestKernel, AutoNearestKernel)}
DEFAULT_UPSAMPLE_NEAREST_KERNEL = "auto"


def _selected_nearest_kernel():
    name = backend.kernel_for("upsample_nearest", DEFAULT_UPSAMPLE_NEAREST_KERNEL)
    if name not in UPSAMPLE_NEAREST_KERNELS:
        available = ", ".join(repr(k) for k in sorted(UPSAMPLE_NEAREST_KERNELS))
        raise ValueError(f"upsample_nearest: unknown kernel {name!r}; available kernels: {available}")
    return UPSAMPLE_NEAREST_KERNELS[name]


class UpsampleNearestFn(Function):
    """y[n,c,i,j] = x[n,c,⌊i/s_h⌋,⌊j/s_w⌋]; dx = the sum of dy over each s_h × s_w block.

    Computed by the kernel ``backend.kernel_for("upsample_nearest", ...)`` names.
    """

    def __init__(self, scale):
        self.scale = scale
        self.kernel = _selected_nearest_kernel()

    def forward(self, x):
        return self.kernel.forward(x, self.scale)

    def backward(self, grad):
        return self.kernel.backward(grad, self.scale)


# ----- bilinear: y = A_h · x · A_wᵀ

@functools.lru_cache(maxsize=64)
def _interpolation_matrix(in_size: int, scale: int, align_corners: bool, dtype: np.dtype) -> np.ndarray:
    """A (in_size·scale × in_size) in ``dtype``: row i holds the weights output i gives the input.

    Source coordinate of output i (PyTorch's convention for a given scale factor):
        align_corners=True:  src = i · (H − 1)/(H' − 1)            (0 when H' = 1)
        align_corners=False: src = max((1/s) · (i + 0.5) − 0.5, 0)
    then i0 = ⌊src⌋, i1 = min(i0 + 1, H − 1), λ = src − i0, and
        A[i, i0] += 1 − λ,  A[i, i1] += λ
    (both land on the same column at the last pixel, where i1 = i0). As PyTorch, the
    ratio and src are rounded to ``dtype``: in float32 that shifts λ by up to ~1e-6 for
    large i, and doing the same keeps the results PyTorch's.
    """
    real = np.dtype(dtype).type
    out_size = in_size * scale
    out_index = np.arange(out_size, dtype=np.float64)
    if align_corners:
        ratio = real(in_size - 1) / real(out_size - 1) if out_size > 1 else real(0)
        source = (np.float64(ratio) * out_index).astype(real)
    else:
        # Computed in float64 and rounded once, as the fused multiply-add of PyTorch's
        # compiled kernel does: exactly its float32 coordinates.
        ratio = real(1.0 / scale)
        source = np.maximum(np.float64(ratio) * (out_index + 0.5) - 0.5, 0.0).astype(real)
    low = np.minimum(np.floor(source).astype(np.int64), in_size - 1)
    high = np.minimum(low + 1, in_size - 1)
    weight_high = np.clip(source - low.astype(real), real(0), real(1))
    matrix = np.zeros((out_size, in_size), dtype=real)
    rows = np.arange(out_size)
    matrix[rows, low] = real(1) - weight_high
    matrix[rows, high] += weight_high
    matrix.setflags(write=False)     # shared through the cache
    return matrix


@functools.lru_cache(maxsize=64)
def _gather_table(in_size: int, scale: int, align_corners: bool, dtype: np.dtype, transposed: bool):
    """The non-zeros of each row of A (or of Aᵀ): (columns, weights), both (rows, K).

    Row r of the matrix times a vector v is Σ_k weights[r, k] · v[columns[r, k]]: K
    gathers instead of a dense row. K is the most non-zeros in a row (2 for A; about
    2s for Aᵀ, whose row a lists the outputs that read input a). Shorter rows are padded
    with weight 0 on a column the row really uses, so no gather reads an unrelated pixel.
    """
    matrix = _interpolation_matrix(in_size, scale, align_corners, dtype)
    if transposed:
        matrix = matrix.T
    nonzero = matrix != 0
    width = max(1, int(nonzero.sum(axis=1).max()))
    columns = np.argsort(~nonzero, axis=1, kind="stable")[:, :width]     # non-zero columns first
    weights = np.take_along_axis(matrix, columns, axis=1)
    columns = np.where(weights != 0, columns, columns[:, :1])
    return columns, weights


def _apply_along_rows(xp, table, images):
    """A · images[n, c] for every n, c, with A given by its gather table: (N,C,H,W) -> (N,C,rows,W)."""
    columns, weights = (xp.asarray(a) for a in table)
    out = xp.take(images, columns[:, 0], axis=2) * weights[:, 0, None]
    for k in range(1, columns.shape[1]):
        out += xp.take(images, columns[:, k], axis=2) * weights[:, k, None]
    return out


class NumpyBilinearKernel:
    """Whole-array NumPy (or CuPy) operations.

    forward:  along H by row gathers (2 per output row, the non-zeros of A_h), along W by
              one matrix product over all N·C·H' rows at once (for widths up to a few
              hundred, BLAS beats gathering single elements);
    backward: the transpose of each linear map, in reverse order: dx = A_hᵀ · (dy · A_w).

    The matrix product multiplies every element of a row by A_w's zeros too, so a NaN or
    inf makes its whole output row NaN (in PyTorch and the Numba kernel a NaN reaches
    only the outputs that read it).
    """

    name = "numpy"

    @staticmethod
    def forward(xp, x, scale, align_corners):
        N, C, H, W = x.shape
        sh, sw = scale
        A_w = xp.asarray(_interpolation_matrix(W, sw, align_corners, x.dtype))
        # Along H first: it works on W columns, not s_w·W.
        along_h = _apply_along_rows(xp, _gather_table(H, sh, align_corners, x.dtype, False), x)
        return _matmul(xp, along_h.reshape(N * C * H * sh, W), A_w.T).reshape(N, C, H * sh, W * sw)

    @staticmethod
    def backward(xp, grad, scale, align_corners):
        N, C, Hs, Ws = grad.shape
        sh, sw = scale
        H, W = Hs // sh, Ws // sw
        A_w = xp.asarray(_interpolation_matrix(W, sw, align_corners, grad.dtype))
        grad_along_w = _matmul(xp, grad.reshape(N * C * Hs, Ws), A_w).reshape(N, C, Hs, W)
        return _apply_along_rows(xp, _gather_table(H, sh, align_corners, grad.dtype, True), grad_along_w)


def _matmul(xp, a, b):
    """a @ b; NumPy products on tinyseg's own threads, OpenBLAS single-threaded (``threads.matmul``)."""
    return threads.matmul(a, b) if xp is np else a @ b


@functools.lru_cache(maxsize=64)
def _compiled_tables(H: int, W: int, scale: tuple[int, int], align_corners: bool, dtype: np.dtype,
                     transposed: bool):
    """The four tables resize_kernels_numba.rows_then_columns takes, C-contiguous and
    read-only (shared through the cache): the non-zeros of A_h (or A_hᵀ) as two (rows, K)
    arrays, and those of A_w (or A_wᵀ) as two (L, columns) arrays."""
    row_sources, row_weights = _gather_table(H, scale[0], align_corners, dtype, transposed)
    column_sources, column_weights = _gather_table(W, scale[1], align_corners, dtype, transposed)
    tables = tuple(np.array(a, order="C") for a in (row_sources, row_weights, column_sources.T, column_weights.T))
    for table in tables:
        table.setflags(write=False)
    return tables


class NumbaBilinearKernel:
    """One compiled pass each way (resize_kernels_numba.rows_then_columns), parallel over
    output rows, each a blend of input rows followed by a gather along the row:

    forward:  y[p] = A_h · x[p] · A_wᵀ     (the non-zeros of A_h, A_w: 2 per row)
    backward: dx[p] = A_hᵀ · dy[p] · A_w   (the non-zeros of A_hᵀ, A_wᵀ: a gather per
                                            input pixel, so each dx element has one writer)

    float32 and float64 NumPy arrays only: CuPy arrays (and other dtypes) use the NumPy
    kernel.
    """

    name = "numba"

    @staticmethod
    def _compiled_applies(xp, array):
        return xp is np and array.dtype in (np.float32, np.float64)

    @staticmethod
    def forward(xp, x, scale, align_corners):
        if not NumbaBilinearKernel._compiled_applies(xp, x):
            return NumpyBilinearKernel.forward(xp, x, scale, align_corners)
        from . import resize_kernels_numba as compiled

        N, C, H, W = x.shape
        sh, sw = scale
        planes = np.ascontiguousarray(x).reshape(N * C, H, W)
        y = np.empty((N * C, H * sh, W * sw), dtype=x.dtype)
        compiled.rows_then_columns(planes, *_compiled_tables(H, W, scale, align_corners, x.dtype, False), y)
        return y.reshape(N, C, H * sh, W * sw)

    @staticmethod
    def backward(xp, grad, scale, align_corners):
        if not NumbaBilinearKernel._compiled_applies(xp, grad):
            return NumpyBilinearKernel.backward(xp, grad, scale, align_corners)
        from . import resize_kernels_numba as compiled

        N, C, Hs, Ws = grad.shape
        H, W = Hs // scale[0], Ws // scale[1]
        planes = np.ascontiguousarray(grad).reshape(N * C, Hs, Ws)
        dx = np.empty((N * C, H, W), dtype=grad.dtype)
        compiled.rows_then_columns(planes, *_compiled_tables(H, W, scale, align_corners, grad.dtype, True), dx)
        return dx.reshape(N, C, H, W)


# Measured (2 cores, float32, scale 2, align_corners False and True alike, median ms of
# 25 calls, forward / backward; the shape is the input's):     numpy           numba
#   (1, 512, 8, 8)      131k upsampled elements        0.32 /  0.33    0.51 / 0.30
#   (1, 64, 32, 32)     262k                           0.59 /  0.59    0.69 / 0.46
#   (2, 64, 32, 32)     524k                           1.05 /  1.11    1.27 / 0.84
#   (4, 16, 64, 64)     1.0M                           2.35 /  2.84    1.14 / 0.85
#   (2, 32, 128, 128)   4.2M                          26.2  / 18.2     6.13 / 5.67
#   (1, 64, 128, 128)   4.2M                          26.9  / 15.5     5.46 / 3.14
# Numba's forward wins from 1M upsampled elements, its backward from 262k: "auto"
# switches at 2**20 and 2**18.
AUTO_BILINEAR_FORWARD_NUMBA_MIN_ELEMENTS = 2 ** 20
AUTO_BILINEAR_BACKWARD_NUMBA_MIN_ELEMENTS = 2 ** 18


class CupyBilinearKernel(NumpyBilinearKernel):
    """The NumPy kernel's expressions run by CuPy on the GPU (row gathers along H, a cuBLAS
    matrix product along W)."""

    name = "cupy"


class CudaBilinearKernel:
    """Hand-written CUDA C (kernels/upsample.cu): one kernel per direction reading the gather
    tables of A_h, A_w (forward, one thread per output pixel) or of A_hᵀ, A_wᵀ (backward, a
    gather: one thread per input pixel, deterministic). Unlike the NumPy kernel's matrix
    product, a NaN reaches only the outputs whose weights read it (as PyTorch, Numba).

    Runs on CuPy arrays, or on NumPy arrays inside ``backend.cuda_emulation()``.
    """

    name = "cuda"

    @staticmethod
    def forward(xp, x, scale, align_corners):
        from . import resize_kernels_cuda as gpu
        return gpu.bilinear_forward(x, scale, align_corners, xp)

    @staticmethod
    def backward(xp, grad, scale, align_corners):
        from . import resize_kernels_cuda as gpu
        return gpu.bilinear_backward(grad, scale, align_corners, xp)


class AutoBilinearKernel:
    """GPU (CuPy arrays): "cuda". CPU: numba for upsampled arrays of at least AUTO_BILINEAR_FORWARD_NUMBA_MIN_ELEMENTS
    (forward) or AUTO_BILINEAR_BACKWARD_NUMBA_MIN_ELEMENTS (backward) elements, numpy below."""

    name = "auto"

    @staticmethod
    def forward(xp, x, scale, align_corners):
        if xp is not np:
            return CudaBilinearKernel.forward(xp, x, scale, align_corners)
        large = x.size * scale[0] * scale[1] >= AUTO_BILINEAR_FORWARD_NUMBA_MIN_ELEMENTS
        return (NumbaBilinearKernel if large else NumpyBilinearKernel).forward(xp, x, scale, align_corners)

    @staticmethod
    def backward(xp, grad, scale, align_corners):
        if xp is not np:
            return CudaBilinearKernel.backward(xp, grad, scale, align_corners)
        large = grad.size >= AUTO_BILINEAR_BACKWARD_NUMBA_MIN_ELEMENTS
        return (NumbaBilinearKernel if large else NumpyBilinearKernel).backward(xp, grad, scale, align_corners)


UPSAMPLE_BILINEAR_KERNELS = {kernel.name: kernel
                             for kernel in (NumpyBilinearKernel, NumbaBilinearKernel, CupyBilinearKernel,
                                            CudaBilinearKernel, AutoBilinearKernel)}
DEFAULT_UPSAMPLE_BILINEAR_KERNEL = "auto"


def _selected_bilinear_kernel():
    name = backend.kernel_for("upsample_bilinear", DEFAULT_UPSAMPLE_BILINEAR_KERNEL)
    if name not in UPSAMPLE_BILINEAR_KERNELS:
        available = ", ".join(repr(k) for k in sorted(UPSAMPLE_BILINEAR_KERNELS))
        raise ValueError(f"upsample_bilinear: unknown kernel {name!r}; available kernels: {available}")
    return UPSAMPLE_BILINEAR_KERNELS[name]


class UpsampleBilinearFn(Function):
    """y = A_h · x · A_wᵀ per image; dx = A_hᵀ · dy · A_w.

    Computed by the kernel ``backend.kernel_for("upsample_bilinear", ...)`` names.
    """

    def __init__(self, scale, align_corners):
        self.scale, self.align_corners = scale, align_corners
        self.kernel = _selected_bilinear_kernel()

    def forward(self, x):
        return self.kernel.forward(self.xp, x, self.scale, self.align_corners)

    def backward(self, grad):
        return self.kernel.backward(self.xp, grad, self.scale, self.align_corners)


# ----- the public function

def _integer_scale(scale_factor) -> tuple[int, int]:
    """scale_factor (an int or an (s_h, s_w) pair; integral floats allowed) as a pair of ints >= 1."""
    values = tuple(scale_factor) if isinstance(scale_factor, (tuple, list)) else (scale_factor, scale_factor)
    if len(values) != 2 or not all(isinstance(s, numbers.Real) and not isinstance(s, bool) for s in values):
        raise TypeError(f"upsample: argument 'scale_factor' expected an int or a pair of ints, "
                        f"got {scale_factor!r}")
    if not all(math.isfinite(s) and float(s).is_integer() for s in values):
        raise ValueError(f"upsample: argument 'scale_factor' must be an integer or a pair of integers "
                         f"(only integer scale factors are supported), got {scale_factor!r}")
    scale = (int(values[0]), int(values[1]))
    if min(scale) < 1:
        raise ValueError(f"upsample: argument 'scale_factor' expected integers >= 1, got {scale_factor!r}")
    return scale


def upsample(x, scale_factor=2, mode="nearest", align_corners=False):
    """Upsample by integer factors: (N, C, H, W) -> (N, C, s_h·H, s_w·W), as PyTorch's F.interpolate.

    nearest:  y[n,c,i,j] = x[n,c, ⌊i/s_h⌋, ⌊j/s_w⌋]
    bilinear: y[n,c] = A_h · x[n,c] · A_wᵀ, where row i of A_h blends input rows i0 and
              i1 = min(i0 + 1, H − 1) with weights 1 − λ and λ, from the source row
              src = i·(H−1)/(H'−1) (align_corners=True) or max((i+0.5)/s − 0.5, 0) (False),
              i0 = ⌊src⌋, λ = src − i0; A_w likewise.
    ``scale_factor``: an int or an (s_h, s_w) pair of ints. ``align_corners`` is only
    meaningful for bilinear (True with nearest is an error, as in PyTorch).
    Derivations: docs/math/pooling_and_resizing.md, sections 3 and 4.
    """
    check_ndim("upsample", "x", x, 4, "(N, C, H, W)")
    check_float("upsample", "x", x)
    scale = _integer_scale(scale_factor)
    if mode not in MODES:
        raise ValueError(f"upsample: argument 'mode' expected one of {MODES}, got {mode!r}")
    if not isinstance(align_corners, (bool, np.bool_)):
        raise TypeError(f"upsample: argument 'align_corners' expected a bool, got {align_corners!r}")
    if mode == "nearest":
        if align_corners:
            raise ValueError("upsample: argument 'align_corners' can only be True with mode='bilinear' "
                             "(as PyTorch), got mode='nearest'")
        return UpsampleNearestFn(scale)(x)
    return UpsampleBilinearFn(scale, bool(align_corners))(x)
