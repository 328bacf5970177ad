"""Convolutions: conv2d and conv_transpose2d, each a forward with its backward right below it.

conv2d is a cross-correlation of the zero-padded input with the kernel:

    y[n,o,i,j] = b[o] + Σ_c Σ_u Σ_v W[o,c,u,v] · x_pad[n,c, s_h·i + d_h·u, s_w·j + d_w·v]
    H' = ⌊(H + p_top + p_bottom − d_h·(k_h − 1) − 1) / s_h⌋ + 1,   W' likewise

Every op here is built from three primitives of that one convolution (the "kernel"):

* ``forward(x, W)``          y = conv2d(x, W), as one GEMM on the im2col matrix of x;
* ``weight_grad(x, dY)``     dW = Σ_n dY[n] · cols(x[n])ᵀ (the im2col matrix again);
* ``input_grad(dY, W)``      dX, the adjoint of forward: a scatter of Wᵀ·dY back into
                              the windows (col2im), or for stride 1 a convolution of dY
                              with the flipped, channel-swapped kernel.

conv_transpose2d *is* the adjoint of conv2d, so its forward is ``input_grad``, its input
gradient is ``forward`` and its weight gradient is ``weight_grad`` with the roles of
input and output swapped. The definitions, output sizes and the derivation of every
backward are in docs/math/convolution.md.

Memory: the im2col matrix is k_h·k_w times the size of the input, so it is never kept
for backward; only x and W are saved, and backward recomputes the matrix. Both passes
build it in one reusable work buffer (see ``_scratch``), which also avoids paying for
fresh, page-faulting allocations on every call.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from .. import backend, threads, tuning
from ..tensor import Function
from ._checks import array_of, check_float, check_ndim, check_same_dtype, pair
from . import conv_kernels_cuda, conv_winograd


# ----- the geometry of one convolution

class _ConvGeometry:
    """Sizes of one conv2d: y (N, O, H', W') = conv2d(x (N, C, H, W), W (O, C, k_h, k_w)).

    ``padding`` is ((top, bottom), (left, right)); a negative amount crops instead of
    padding (used by the flipped-kernel form of ``input_grad``). ``output_size`` is given
    explicitly because conv_transpose2d may ask for fewer windows than fit in the padded
    input (when output_padding >= stride); ``for_conv2d`` computes the usual one.
    """

    def __init__(self, input_size, output_size, kernel, stride, padding, dilation):
        self.input_size = tuple(input_size)
        self.output_size = tuple(output_size)
        self.kernel, self.stride, self.padding, self.dilation = kernel, stride, padding, dilation
        (top, bottom), (left, right) = padding
        self.padded_size = (input_size[0] + top + bottom, input_size[1] + left + right)

    @classmethod
    def for_conv2d(cls, input_size, kernel, stride, padding, dilation):
        padded = (input_size[0] + sum(padding[0]), input_size[1] + sum(padding[1]))
        output_size = tuple((padded[a] - dilation[a] * (kernel[a] - 1) - 1) // stride[a] + 1 for a in (0, 1))
        return cls(input_size, output_size, kernel, stride, padding, dilation)

    def rows(self, u):
        """Padded rows holding kernel row u of every window: s_h·i + d_h·u for i < H'."""
        start = self.dilation[0] * u
        return slice(start, start + self.stride[0] * (self.output_size[0] - 1) + 1, self.stride[0])

    def columns(self, v):
        """Padded columns holding kernel column v of every window: s_w·j + d_w·v for j < W'."""
        start = self.dilation[1] * v
        return slice(start, start + self.stride[1] * (self.output_size[1] - 1) + 1, self.stride[1])

    @property
    def windows_overlap(self):
        """Whether two windows may share a padded pixel: only when the stride is shorter
        than the dilated kernel extent d·(k − 1) + 1 in some dimension."""
        return any(s < d * (k - 1) + 1 for s, d, k in zip(self.stride, self.dilation, self.kernel))

    @property
    def windows_tile_padded_input(self):
        """Whether the windows cover every padded pixel exactly once (U-Net's 2×2, stride-2 up-convolution)."""
        return all(d == 1 and s == k and s * n == size for s, d, k, n, size in
                   zip(self.stride, self.dilation, self.kernel, self.output_size, self.padded_size))

    @property
    def is_pointwise(self):
        """A 1×1 kernel with stride 1, no padding, one window per pixel: x itself is the im2col matrix.

        (conv_transpose2d with output_padding >= stride asks for fewer windows than pixels.)
        """
        return (self.kernel == (1, 1) and self.stride == (1, 1) and self.padding == ((0, 0), (0, 0))
                and self.output_size == self.input_size)


def _pad_with_zeros(xp, x, padding):
    """x with ((top, bottom), (left, right)) zero rows/columns added; negative amounts crop."""
    (top, bottom), (left, right) = padding
    if top == bottom == left == right == 0:
        return x
    N, C, H, W = x.shape
    return _pad_into(x, padding, xp.empty((N, C, H + top + bottom, W + left + right), dtype=x.dtype))


def _pad_into(x, padding, out):
    """Write x with ((top, bottom), (left, right)) zeros around (negative amounts crop) into ``out``.

    Only the border is zeroed: each element of ``out`` is written once.
    """
    (top, bottom), (left, right) = padding
    H, W = x.shape[2:]
    kept = x[:, :, max(-top, 0):H - max(-bottom, 0), max(-left, 0):W - max(-right, 0)]
    row, column = max(top, 0), max(left, 0)
    rows = slice(row, row + kept.shape[2])
    out[:, :, :row] = 0
    out[:, :, rows.stop:] = 0
    out[:, :, rows, :column] = 0
    out[:, :, rows, column + kept.shape[3]:] = 0
    out[:, :, rows, column:column + kept.shape[3]] = kept
    return out


# ----- the work buffer for im2col matrices

# One 1-D buffer per (array module, dtype, device), grown to the largest block seen so
# far and reused by every call: memory stays at one block (not one im2col matrix per
# layer), and NumPy skips the page faults of a fresh allocation (measured for
# x (4, 32, 128, 128): 5.6 ms of slice copies into a reused buffer, 13.7 ms into a new
# one). The buffer is borrowed only for the duration of one block of one primitive
# below and nothing returned ever points into it, but it is shared: tinyseg's
# convolutions are meant to run on one thread at a time.
_scratch_buffers: dict = {}

# The most a block's work array may take. An im2col matrix is k_h·k_w times its input:
# 302 MB for the 128-channel 256² decoder level of the benchmark's B64 U-Net, which
# made tinyseg's peak memory 1.24× PyTorch's. Blocks of at most 32 MB cost nothing in
# speed (each is still a GEMM of ≥ 7,000 columns); docs/performance.md has the numbers.
BLOCK_BYTES = 32 * 2**20


def _scratch(xp, like, shape):
    """A work array of ``shape`` and ``like``'s dtype and device, with undefined contents."""
    size = math.prod(shape)
    key = (xp.__name__, np.dtype(like.dtype).str, str(getattr(like, "device", "cpu")))
    buffer = _scratch_buffers.get(key)
    if buffer is None or buffer.size < size:
        _scratch_buffers.pop(key, None)      # free the smaller one before allocating
        buffer = _scratch_buffers[key] = xp.empty(size, dtype=like.dtype)
    return buffer[:size].reshape(shape)


def release_scratch_memory():
    """Free the im2col work buffers (they are reallocated on the next convolution)."""
    _scratch_buffers.clear()


def _blocks(xp, N, rows, bytes_per_row):
    """Split N samples × ``rows`` rows into blocks (n0, n1, i0, i1) of at most BLOCK_BYTES.

    Whole samples are grouped while they fit; a sample that alone is too large is cut
    into bands of rows (at least one row per block). On the GPU: one block (memory is
    not the constraint there, and CuPy's matmul wants contiguous outputs).
    """
    if xp is not np or N * rows * bytes_per_row <= BLOCK_BYTES:
        yield 0, N, 0, rows
        return
    if rows * bytes_per_row <= BLOCK_BYTES:
        per_block = BLOCK_BYTES // (rows * bytes_per_row)
        for n0 in range(0, N, per_block):
            yield n0, min(N, n0 + per_block), 0, rows
        return
    band = max(1, BLOCK_BYTES // bytes_per_row)
    for n in range(N):
        for i0 in range(0, rows, band):
            yield n, n + 1, i0, min(rows, i0 + band)


def _matmul(xp, a, b, out=None):
    """a @ b; on NumPy arrays split over tinyseg's own threads with OpenBLAS single-threaded (``threads.matmul``)."""
    if xp is np:
        return threads.matmul(a, b, out=out)
    return xp.matmul(a, b, out=out)


def _rows_view(a, n0, n1, i0, i1):
    """a[n0:n1, :, i0:i1, :] of an (N, K, H, W) C-contiguous array as (n, K, rows·W), a view."""
    block = a[n0:n1, :, i0:i1, :]
    view = block.reshape(n1 - n0, a.shape[1], (i1 - i0) * a.shape[3])
    assert view.base is not None or view is a, "a block of rows must be a view"
    return view


# ----- the im2col + GEMM kernel

def _im2col(xp, x, geometry: _ConvGeometry, block=None):
    """The (n, C·k_h·k_w, rows·W') matrix of x's windows: cols[n, (c,u,v), (i,j)] = x_pad[n,c, s·i+d·u, s·j+d·v].

    For the block (n0, n1, i0, i1) of samples and output rows (all of them by default).
    Filled with k_h·k_w strided slice copies (one per kernel element, each covering every
    window of the block at once) into the shared work buffer: valid until the next call.
    """
    N, C = x.shape[:2]
    (kh, kw), (Ho, Wo) = geometry.kernel, geometry.output_size
    n0, n1, i0, i1 = block or (0, N, 0, Ho)
    if geometry.is_pointwise:
        return _rows_view(x, n0, n1, i0, i1)
    # The padded rows this block reads, s·i0 ≤ p < s·(i1−1) + d·(k−1) + 1, are x's rows
    # p − top: those inside x are copied, the others become the band's own zero padding.
    (top, _), horizontal = geometry.padding
    sh, dh = geometry.stride[0], geometry.dilation[0]
    H = geometry.input_size[0]
    first, last = sh * i0 - top, sh * (i1 - 1) + dh * (kh - 1) + 1 - top
    lo = max(first, 0)
    hi = max(min(last, H), lo)
    band_padding = ((lo - first, last - hi), horizontal)
    padded = _pad_with_zeros(xp, x[n0:n1, :, lo:hi], band_padding)
    band_geometry = _ConvGeometry((hi - lo, geometry.input_size[1]), (i1 - i0, Wo), geometry.kernel,
                                  geometry.stride, band_padding, geometry.dilation)
    cols = _scratch(xp, x, (n1 - n0, C, kh, kw, i1 - i0, Wo))
    for u in range(kh):
        for v in range(kw):
            cols[:, :, u, v] = padded[:, :, band_geometry.rows(u), band_geometry.columns(v)]
    return cols.reshape(n1 - n0, C * kh * kw, (i1 - i0) * Wo)


class Im2colKernel:
    """conv2d's three primitives with NumPy/CuPy array operations: im2col + GEMM.

    Layout: the im2col matrix of sample n is (C·k_h·k_w, H'·W') and W is viewed as
    (O, C·k_h·k_w), so y[n] = W · cols[n] comes out in NCHW order with no transpose; the
    N products are one batched ``matmul``. (docs/math/convolution.md, section 6, compares
    it with one (C·k_h·k_w, N·H'·W') GEMM, no faster once its output is transposed, and
    with an NHWC layout, about twice as slow.) Large convolutions run block by block
    (``_blocks``: whole samples, or bands of output rows), so the matrix never exceeds
    BLOCK_BYTES. Every function returns a new array. Subclasses may change how the
    matrix is built (``columns``) and keep the rest.
    """

    name = "im2col"

    @staticmethod
    def columns(xp, x, geometry, block):
        """The (n, C·k_h·k_w, rows·W') im2col matrix of one block, in the shared work buffer."""
        return _im2col(xp, x, geometry, block)

    @classmethod
    def forward(cls, x, weight, geometry):
        """y = conv2d(x, W): (N, C, H, W), (O, C, k_h, k_w) -> (N, O, H', W')."""
        xp = backend.get_array_module(x)
        x = xp.ascontiguousarray(x)
        (O, C, kh, kw), N = weight.shape, x.shape[0]
        (Ho, Wo) = geometry.output_size
        matrix = xp.ascontiguousarray(weight.reshape(O, -1))
        y = xp.empty((N, O, Ho, Wo), dtype=x.dtype)
        for block in _blocks(xp, N, Ho, C * kh * kw * Wo * x.itemsize):
            _matmul(xp, matrix, cls.columns(xp, x, geometry, block), out=_rows_view(y, *block))
        return y

    @classmethod
    def weight_grad(cls, x, grad, geometry):
        """dW[o,c,u,v] = Σ_n Σ_ij dY[n,o,i,j] · x_pad[n,c, s·i+d·u, s·j+d·v]: -> (O, C, k_h, k_w)."""
        xp = backend.get_array_module(x)
        x, grad = xp.ascontiguousarray(x), xp.ascontiguousarray(grad)
        (N, O, Ho, Wo), C = grad.shape, x.shape[1]
        kh, kw = geometry.kernel
        dw = None
        for block in _blocks(xp, N, Ho, C * kh * kw * Wo * x.itemsize):
            cols = cls.columns(xp, x, geometry, block)
            per_sample = _matmul(xp, _rows_view(grad, *block), cols.transpose(0, 2, 1))    # (n, O, C·k_h·k_w)
            dw = per_sample.sum(axis=0) if dw is None else dw + per_sample.sum(axis=0)
        return dw.reshape(O, C, kh, kw)

    @classmethod
    def input_grad(cls, grad, weight, geometry):
        """dX of y = conv2d(x, W), given dY (N, O, H', W') and W (O, C, k_h, k_w): -> (N, C, H, W).

        Stride 1: a convolution of dY, padded by d·(k−1) − p on each side, with the
        flipped kernel W[o,c,k−1−u,k−1−v] seen as (C, O, k_h, k_w) (one more im2col + GEMM).
        Otherwise col2im: dcols = Wᵀ · dY, then each kernel element's slice is added back
        at the padded positions its windows read (written, not added, where windows cannot
        overlap: each position then receives at most one term). Inputs no window reads get 0.
        docs/math/convolution.md, section 3, derives both; section 6 has the timings.
        """
        if geometry.stride == (1, 1):
            return cls.forward(grad, _flipped_kernel(weight), _flipped_geometry(geometry))
        xp = backend.get_array_module(grad)
        grad = xp.ascontiguousarray(grad)
        N, O = grad.shape[:2]
        C = weight.shape[1]
        (kh, kw), (Ho, Wo) = geometry.kernel, geometry.output_size
        matrix_t = weight.reshape(O, -1).T
        allocate = xp.empty if geometry.windows_tile_padded_input else xp.zeros
        padded_grad = allocate((N, C, *geometry.padded_size), dtype=grad.dtype)
        # Blocks of whole samples (the scatter needs all rows of a sample's windows).
        per_sample_bytes = C * kh * kw * Ho * Wo * grad.itemsize
        for n0, n1, _, _ in _blocks(xp, N, 1, per_sample_bytes):
            dcols = _scratch(xp, grad, (n1 - n0, C * kh * kw, Ho * Wo))
            _matmul(xp, matrix_t, grad[n0:n1].reshape(n1 - n0, O, Ho * Wo), out=dcols)
            dcols = dcols.reshape(n1 - n0, C, kh, kw, Ho, Wo)
            for u in range(kh):
                for v in range(kw):
                    window_elements = padded_grad[n0:n1, :, geometry.rows(u), geometry.columns(v)]
                    if geometry.windows_overlap:
                        window_elements += dcols[:, :, u, v]
                    else:
                        window_elements[...] = dcols[:, :, u, v]
        (top, _), (left, _) = geometry.padding
        H, W = geometry.input_size
        return xp.ascontiguousarray(padded_grad[:, :, top:top + H, left:left + W])


def _flipped_kernel(weight):
    """W'[c,o,u,v] = W[o,c,k_h−1−u,k_w−1−v]: the kernel of the stride-1 input gradient."""
    return weight[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)


def _flipped_geometry(geometry: _ConvGeometry):
    """The stride-1 convolution of dY (H', W') with the flipped kernel that gives dX (H, W).

    dX[r] = Σ_u W[u] · dY[r + p_top − d·u] = Σ_u' W[k−1−u'] · dY_pad[r + d·u'] once dY is
    padded with d·(k−1) − p_top rows on top, and with H − H' + p_top at the bottom so
    that H rows come out (a negative amount crops). Derived in the docs, section 3.
    """
    (top, _), (left, _) = geometry.padding
    (H, W), (Ho, Wo) = geometry.input_size, geometry.output_size
    (kh, kw), (dh, dw) = geometry.kernel, geometry.dilation
    padding = ((dh * (kh - 1) - top, H - Ho + top), (dw * (kw - 1) - left, W - Wo + left))
    return _ConvGeometry((Ho, Wo), (H, W), geometry.kernel, (1, 1), padding, geometry.dilation)


class NumbaIm2colKernel(Im2colKernel):
    """im2col + GEMM with the matrix built by one compiled pass (padding fused in, no padded copy).

    The GEMMs are the same as ``Im2colKernel``'s; NumPy arrays only (CuPy arrays use the
    NumPy/CuPy path).
    """

    name = "numba-im2col"

    @staticmethod
    def columns(xp, x, geometry, block):
        if xp is not np or geometry.is_pointwise:
            return _im2col(xp, x, geometry, block)
        from . import conv_kernels_numba as compiled

        n0, n1, i0, i1 = block
        (kh, kw), (sh, sw), (dh, dw) = geometry.kernel, geometry.stride, geometry.dilation
        (top, _), (left, _) = geometry.padding
        Wo = geometry.output_size[1]
        cols = _scratch(xp, x, (n1 - n0, x.shape[1] * kh * kw, (i1 - i0) * Wo))
        compiled.im2col(x, kh, kw, sh, sw, dh, dw, top, left, Wo, n0, n1, i0, i1, cols)
        return cols


class WinogradKernel(NumbaIm2colKernel):
    """Winograd F(2×2, 3×3) for 3×3, stride-1, dilation-1 convolutions; Numba im2col + GEMM otherwise.

    All three primitives: the forward, the stride-1 input gradient (a 3×3 convolution of
    dY with the flipped kernel) and the weight gradient (through the adjoints of the
    transforms). See ``conv_winograd`` and docs/math/convolution.md, section 8. NumPy
    arrays only (CuPy: im2col).
    """

    name = "winograd"

    @classmethod
    def uses_winograd(cls, x, out_channels, geometry, primitive="forward"):
        """Whether ``primitive`` ("forward" or "weight_grad") of this convolution runs as Winograd."""
        from . import conv_winograd
        return backend.get_array_module(x) is np and conv_winograd.applies(geometry)

    @classmethod
    def forward(cls, x, weight, geometry):
        if not cls.uses_winograd(x, weight.shape[0], geometry):
            return super().forward(x, weight, geometry)
        from . import conv_winograd
        return conv_winograd.conv2d(x, weight, geometry, lambda shape: _scratch(np, x, shape), BLOCK_BYTES)

    @classmethod
    def weight_grad(cls, x, grad, geometry):
        if not cls.uses_winograd(x, grad.shape[1], geometry, "weight_grad"):
            return super().weight_grad(x, grad, geometry)
        from . import conv_winograd
        return conv_winograd.weight_grad(x, grad, geometry, lambda shape: _scratch(np, x, shape), BLOCK_BYTES)


class DirectKernel(NumbaIm2colKernel):
    """A direct convolution, stride 1: no im2col matrix, no GEMM, the register blocking of oneDNN.

    With 16 channels the im2col GEMMs are (16 × 144)·(144 × pixels) products, too thin
    for OpenBLAS to reach its speed, and building the matrix writes 9× the input. The
    compiled loop (``conv_kernels_numba.direct_forward``) keeps a block of output
    channels × one vector of pixels in vector registers through the whole sum over
    input channels and taps: one input-vector load and one broadcast weight per vector
    multiply-add (explicit SIMD through ``simd_numba``; AVX-512 and AVX2 alike). The
    input is padded once and the weights transposed to output-channel-last
    (``direct_layout``). Forward, the stride-1 input gradient (the forward of dY with the
    flipped kernel, as for im2col) and the weight gradient (``direct_weight_grad``: output
    channels × 3 kernel columns of running sums in registers, float64 totals per chunk
    of rows); strided convolutions go to numba-im2col. NumPy arrays only.
    "auto" picks it where it measures fastest (tinyseg/tuning.py).
    """

    name = "direct"

    @staticmethod
    def _runs_here(x, geometry):
        """NumPy arrays and stride 1: the cases the compiled loops handle (others go to numba-im2col)."""
        return backend.get_array_module(x) is np and geometry.stride == (1, 1)

    @classmethod
    def forward(cls, x, weight, geometry):
        if not cls._runs_here(x, geometry):
            return super().forward(x, weight, geometry)
        return cls._forward(x, weight, None, False, geometry)

    @classmethod
    def forward_bias_relu(cls, x, weight, bias, geometry):
        """max(conv2d(x, W) + b, 0) with the bias and ReLU applied as the outputs are stored;
        None where this kernel does not fuse them (CuPy arrays, strides)."""
        if not cls._runs_here(x, geometry):
            return None
        return cls._forward(x, weight, bias, True, geometry)

    @staticmethod
    def _forward(x, weight, bias, relu, geometry):
        from . import conv_kernels_numba as compiled
        (top, _), (left, _) = geometry.padding
        (out_h, out_w), O = geometry.output_size, weight.shape[0]
        x_pad, w_t, y = compiled.direct_layout(x, weight, top, left, *geometry.dilation, out_h, out_w)
        compiled.direct_forward(x_pad, w_t, *geometry.dilation, compiled.direct_bias(bias, y.shape[1], x.dtype),
                                relu, y)
        if y.shape[1] != O or y.shape[3] != out_w:
            y = np.ascontiguousarray(y[:, :O, :, :out_w])
        return y

    @classmethod
    def weight_grad(cls, x, grad, geometry):
        if not cls._runs_here(x, geometry):
            return super().weight_grad(x, grad, geometry)
        from . import conv_kernels_numba as compiled
        (top, _), (left, _) = geometry.padding
        x_pad, dy_pad, rows_per_chunk, partial = compiled.direct_weight_grad_layout(
            x, grad, top, left, *geometry.dilation, *geometry.kernel)
        compiled.direct_weight_grad(x_pad, dy_pad, *geometry.dilation, rows_per_chunk, partial)
        return partial.sum(axis=0)[:grad.shape[1]].astype(x.dtype)       # the chunks in order, in float64


class AutoKernel(WinogradKernel):
    """The default on the CPU: per convolution, the kernel measured fastest for its shape.

    Winograd for 3×3 stride-1 convolutions with enough work to pay for its transforms:
    at least 32 input channels and 16 output channels (with 16 input channels its
    transforms and thin GEMMs lose: 0.8–0.93× the speed of im2col), O·C·tiles >= 2^21
    (the multiply-adds of each of its 16 GEMMs) and at least 64 tiles (2×2 output
    blocks) in the batch; for the weight gradient, whose 16 GEMMs sum over the tiles,
    O·C·tiles >= 2^22 and at least 256 tiles. Measured per layer: every shape past these
    limits ran 1.0–2.4× faster than im2col, most below them slower (docs/performance.md).
    Also not when the transformed kernel U (16·O·C values) would take more than
    WINOGRAD_MAX_KERNEL_BYTES (a memory bound: with 1024×1024 channels U is 64 MB).
    Otherwise im2col + GEMM, the matrix built by NumPy or Numba by size (``columns``).
    """

    name = "auto"

    # On CuPy arrays: the GPU kernel measured fastest for the shape (``GPU_AUTO``, below).
    # On NumPy arrays with tuning on (the default): the CPU kernel measured fastest on this
    # machine for the shape class (``_tuned_kernel``); with tuning off, the rules below.
    @classmethod
    def _run(cls, primitive, a, b, geometry, in_channels, out_channels):
        """``primitive`` ("forward", "input_grad" or "weight_grad") of the kernel chosen for (a, b)."""
        if backend.get_array_module(a) is not np:
            return getattr(GPU_AUTO, primitive)(a, b, geometry)
        tuned = _tuned_kernel(primitive, a, b, geometry, in_channels, out_channels)
        if tuned is not None:
            return getattr(tuned, primitive)(a, b, geometry)
        return getattr(super(AutoKernel, cls), primitive)(a, b, geometry)

    @classmethod
    def forward(cls, x, weight, geometry):
        return cls._run("forward", x, weight, geometry, x.shape[1], weight.shape[0])

    @classmethod
    def forward_bias_relu(cls, x, weight, bias, geometry):
        """The fused forward of the kernel "auto" chooses for this forward, if it has one; else None."""
        if backend.get_array_module(x) is not np:
            return None
        tuned = _tuned_kernel("forward", x, weight, geometry, x.shape[1], weight.shape[0])
        fused = getattr(tuned, "forward_bias_relu", None)
        return None if fused is None else fused(x, weight, bias, geometry)

    @classmethod
    def input_grad(cls, grad, weight, geometry):
        return cls._run("input_grad", grad, weight, geometry, weight.shape[1], weight.shape[0])

    @classmethod
    def weight_grad(cls, x, grad, geometry):
        return cls._run("weight_grad", x, grad, geometry, x.shape[1], grad.shape[1])

    @staticmethod
    def columns(xp, x, geometry, block):
        """Numba's one-pass im2col for matrices of NUMBA_IM2COL_MIN_BYTES or more, NumPy's slices below.

        The compiled loop copies row by row: 2× faster than NumPy's k_h·k_w strided
        copies on large images, but its per-row work dominates on small ones (measured
        for one 8×8 image of 256 channels: 0.77 ms against NumPy's 0.28 ms).
        """
        n0, n1, i0, i1 = block
        size = (n1 - n0) * x.shape[1] * math.prod(geometry.kernel) * (i1 - i0) * geometry.output_size[1] * x.itemsize
        if size >= NUMBA_IM2COL_MIN_BYTES:
            return NumbaIm2colKernel.columns(xp, x, geometry, block)
        return _im2col(xp, x, geometry, block)

    @classmethod
    def uses_winograd(cls, x, out_channels, geometry, primitive="forward"):
        O, C = out_channels, x.shape[1]
        Ho, Wo = geometry.output_size
        tiles = x.shape[0] * ((Ho + 1) // 2) * ((Wo + 1) // 2)
        if primitive == "weight_grad":
            enough_work = O * C * tiles >= 2**22 and tiles >= 256
        else:
            enough_work = O * C * tiles >= 2**21 and tiles >= 64
        return (super().uses_winograd(x, out_channels, geometry, primitive) and C >= 32 and O >= 16
                and enough_work and 16 * O * C * x.itemsize <= WINOGRAD_MAX_KERNEL_BYTES)


# The largest transformed kernel U (16·O·C values) Winograd may build: one work block,
# 32 MB (512×1024 channels in float32). It is an extra array while the layer runs: U of
# the B64 U-Net's 1024-channel bottleneck (64 MB) would raise its peak memory by that
# much for a layer 1.04–1.10× faster, so that one stays with im2col; 512→1024 and
# 1024→512 (32 MB) are in (measured on a 2-core Zen 4, (1, 1024→512, 32²): im2col 176,
# Winograd 293 GFLOP/s forward; 164/254 input gradient; 145/226 weight gradient).
WINOGRAD_MAX_KERNEL_BYTES = BLOCK_BYTES


def _tuning_candidates(geometry, primitive, in_channels, out_channels, itemsize):
    """The CPU kernels that compute ``primitive`` of this convolution in different ways.

    Never a GPU kernel. One name where they all run the same code: a pointwise 1×1
    convolution (x is its own im2col matrix) and a strided input gradient (col2im).
    Winograd only where it applies and its transformed kernel U (16·O·C values) takes at
    most WINOGRAD_MAX_KERNEL_BYTES: a memory bound, not a speed rule (below).
    """
    if geometry.is_pointwise or (primitive == "input_grad" and geometry.stride != (1, 1)):
        return ["im2col"]
    names = ["im2col", "numba-im2col"]
    if conv_winograd.applies(geometry) and 16 * out_channels * in_channels * itemsize <= WINOGRAD_MAX_KERNEL_BYTES:
        names.append("winograd")
    if geometry.stride == (1, 1) and max(in_channels, out_channels) <= DIRECT_MAX_CHANNELS:
        names.append("direct")
    return names


# The widest layers "direct" competes for. Register-blocked, it won most U-Net layers up
# to 256 channels on a 2-core Zen 4 (forward and input gradient; the weight gradient up to
# 32–64, then Winograd); past 512 its weights no longer fit the caches: measuring it there
# would only spend the tuning budget.
DIRECT_MAX_CHANNELS = 512


def _tuned_kernel(primitive, a, b, geometry, in_channels, out_channels):
    """The CPU kernel measured fastest here for this primitive's shape class, or None with tuning off.

    Shape class: the primitive, channels, kernel, stride, dilation, padding, dtype and the
    batch's output pixels N·H'·W' to half an octave (tinyseg/tuning.py measures, caches).
    """
    if not tuning.enabled():
        return None
    names = _tuning_candidates(geometry, primitive, in_channels, out_channels, a.itemsize)
    if len(names) > 1:
        threads.configure()
        (kh, kw), (sh, sw), (dh, dw) = geometry.kernel, geometry.stride, geometry.dilation
        (top, bottom), (left, right) = geometry.padding
        pixels = a.shape[0] * geometry.output_size[0] * geometry.output_size[1]
        decision = (f"{primitive} C{in_channels} O{out_channels} k{kh}x{kw} s{sh}x{sw} d{dh}x{dw} "
                    f"p{top},{bottom},{left},{right} {a.dtype.name} NHW{tuning.pixels_class(pixels)}")
        runs = {name: functools.partial(getattr(_cpu_kernel(name), primitive), a, b, geometry) for name in names}
        names = [tuning.TUNER.choose("conv2d", decision, runs)]
    return _cpu_kernel(names[0])


def _cpu_kernel(name):
    """A CPU kernel by name. (Every CPU kernel's GEMMs run on tinyseg's own threads with
    OpenBLAS single-threaded, ``threads.matmul``: there is no OpenBLAS thread count to tune.)"""
    return CONV2D_KERNELS[name]


# Where "auto" switches from NumPy's im2col to Numba's (measured, 1 image of C×S²:
# 9 MB matrices are a tie, from 18 MB Numba is 2× faster; docs/performance.md).
NUMBA_IM2COL_MIN_BYTES = 12 * 2**20


class NumbaCudaKernel:
    """Numba CUDA kernels (conv_kernels_numba_cuda.py), the Python twins of kernels/conv2d_v2_tiled.cu
    ("cuda_v2"): forward and input gradient from shared-memory tiles (a patch plus the weights
    of 8 channels per block), weight gradient one block per (o, c) with a fixed-order
    reduction (deterministic, no atomics).

    Runs on CuPy arrays on a GPU, or on NumPy arrays in Numba's CUDA simulator
    (NUMBA_ENABLE_CUDASIM=1 set before start); imports numba.cuda on first use.
    """

    name = "numba_cuda"
    device = "cuda"
    version = "v2"

    @classmethod
    def forward(cls, x, weight, geometry):
        from . import conv_kernels_numba_cuda as gpu
        return gpu.forward(x, weight, geometry, cls.version)

    @classmethod
    def weight_grad(cls, x, grad, geometry):
        from . import conv_kernels_numba_cuda as gpu
        return gpu.weight_grad(x, grad, geometry, cls.version)

    @classmethod
    def input_grad(cls, grad, weight, geometry):
        from . import conv_kernels_numba_cuda as gpu
        return gpu.input_grad(grad, weight, geometry, cls.version)


class NumbaCudaV1Kernel(NumbaCudaKernel):
    """The twins of kernels/conv2d_v1_naive.cu ("cuda_v1"): one thread per element of y, of dX
    (a gather), of dW, straight from the definitions."""

    name = "numba_cuda_v1"
    version = "v1"


# Kernels by name: ``backend.use_kernel("conv2d", name)`` selects one; both conv2d and
# conv_transpose2d are built from the three primitives of the selected kernel. The
# teaching version, "im2col", stays runnable; "auto" picks per shape.
CONV2D_KERNELS = {kernel.name: kernel for kernel in (Im2colKernel, NumbaIm2colKernel, WinogradKernel, DirectKernel,
                                                     AutoKernel, NumbaCudaKernel, NumbaCudaV1Kernel)}
DEFAULT_CONV2D_KERNEL = "auto"


class CupyKernel(Im2colKernel):
    """The NumPy-expression im2col + GEMM above, run by CuPy on the GPU (GEMMs by cuBLAS)."""

    name = "cupy"
    device = "cuda"


# The hand-written CUDA C kernels ("cuda_v1", "cuda_v2", "cuda_v3", "cuda", "cuda_im2col";
# conv_kernels_cuda.py) and "cupy". On CuPy arrays "auto" takes the one measured fastest.
CONV2D_KERNELS.update({kernel.name: kernel for kernel in (*conv_kernels_cuda.CUDA_CONV2D_KERNELS, CupyKernel)})
GPU_AUTO = conv_kernels_cuda.MeasuredChoice(CONV2D_KERNELS)


def _selected_kernel():
    name = backend.kernel_for("conv2d", DEFAULT_CONV2D_KERNEL)
    if name not in CONV2D_KERNELS:
        available = ", ".join(repr(k) for k in sorted(CONV2D_KERNELS))
        raise ValueError(f"conv2d: unknown kernel {name!r}; available kernels: {available}")
    return CONV2D_KERNELS[name]


# ----- conv2d: y[n,o,i,j] = b[o] + Σ_c Σ_u Σ_v W[o,c,u,v] · x_pad[n,c, s_h·i + d_h·u, s_w·j + d_w·v]

class Conv2dFn(Function):
    """conv2d on (x, W) or (x, W, b); padding is ((top, bottom), (left, right)).

    Saves x, W and the geometry (which holds x's size: a strided convolution may leave
    the last rows/columns unread, and their gradient must still come out, as zeros).
    """

    def __init__(self, stride, padding, dilation):
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.kernel = _selected_kernel()

    def forward(self, x, weight, bias=None):
        self.geometry = _ConvGeometry.for_conv2d(x.shape[2:], weight.shape[2:], self.stride,
                                                 self.padding, self.dilation)
        self.x, self.weight = x, weight
        y = self.kernel.forward(x, weight, self.geometry)
        if bias is not None:
            y += bias.reshape(1, -1, 1, 1)     # y is a new array: adding in place is safe
        return y

    def backward(self, grad):
        # dX: the adjoint of the forward; dW: dY against the recomputed im2col of x; db: Σ_{n,i,j} dY.
        dx = self.kernel.input_grad(grad, self.weight, self.geometry) if self.needs_grad[0] else None
        dw = self.kernel.weight_grad(self.x, grad, self.geometry) if self.needs_grad[1] else None
        if len(self.needs_grad) == 2:
            return dx, dw
        db = grad.sum(axis=(0, 2, 3)) if self.needs_grad[2] else None
        return dx, dw, db


# ----- conv2d, bias and ReLU as one op: y = max(conv2d(x, W) + b, 0)

class Conv2dBiasReluFn(Function):
    """y = max(conv2d(x, W) + b, 0): a U-Net layer without normalisation, as one op.

    Forward: the conv kernel's fused forward where it has one ("direct" adds the bias and
    applies the ReLU as it stores each output vector: no pass over z, and z is never
    allocated), else the conv forward then the fused bias + ReLU pass (``F.bias_relu``).
    Backward: dz = dy · [y > 0] and db = Σ dz (one pass, the ReLU kernel's), then the
    conv's input and weight gradients of dz. Saves x, W and y (not z): the same values
    and gradients as ``bias_relu(conv2d(x, W), b)``.
    """

    def __init__(self, stride, padding, dilation):
        from .activation import _selected_relu_kernel
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.kernel = _selected_kernel()
        self.relu_kernel = _selected_relu_kernel()

    def forward(self, x, weight, bias):
        self.geometry = _ConvGeometry.for_conv2d(x.shape[2:], weight.shape[2:], self.stride,
                                                 self.padding, self.dilation)
        fused = getattr(self.kernel, "forward_bias_relu", None)
        y = fused(x, weight, bias, self.geometry) if fused is not None else None
        if y is None:
            y = self.relu_kernel.forward_with_bias(self.kernel.forward(x, weight, self.geometry), bias, self.xp)
        self.x, self.weight, self.y = x, weight, y
        return y

    def backward(self, grad):
        from .activation import _bias_relu_backward
        dz, db = _bias_relu_backward(self.relu_kernel, grad, self.y, self.xp)
        dx = self.kernel.input_grad(dz, self.weight, self.geometry) if self.needs_grad[0] else None
        dw = self.kernel.weight_grad(self.x, dz, self.geometry) if self.needs_grad[1] else None
        return dx, dw, (db if self.needs_grad[2] else None)


# ----- conv_transpose2d: y = (conv2d with weight W)ᵀ x, plus b

class ConvTranspose2dFn(Function):
    """conv_transpose2d on (x, W) or (x, W, b), as the adjoint of a conv2d.

    With W (C_in, C_out, k_h, k_w) read as a conv2d weight from C_out to C_in channels,
    y = Aᵀ x where A is that conv2d on an (H_out, W_out) input; so
    forward = input_grad(x), dX = forward(dY), dW = weight_grad(input=dY, grad=x).
    """

    def __init__(self, stride, padding, output_padding, dilation):
        self.stride, self.padding, self.output_padding, self.dilation = stride, padding, output_padding, dilation
        self.kernel = _selected_kernel()

    def forward(self, x, weight, bias=None):
        output_size = _transposed_output_size(x.shape[2:], weight.shape[2:], self.stride, self.padding,
                                              self.output_padding, self.dilation)
        ph, pw = self.padding
        # The conv2d this is the adjoint of reads an (H_out, W_out) input and produces x's size.
        self.geometry = _ConvGeometry(output_size, x.shape[2:], weight.shape[2:], self.stride,
                                      ((ph, ph), (pw, pw)), self.dilation)
        self.x, self.weight = x, weight
        y = self.kernel.input_grad(x, weight, self.geometry)
        if bias is not None:
            y += bias.reshape(1, -1, 1, 1)     # y is a new array: adding in place is safe
        return y

    def backward(self, grad):
        dx = self.kernel.forward(grad, self.weight, self.geometry) if self.needs_grad[0] else None
        dw = self.kernel.weight_grad(grad, self.x, self.geometry) if self.needs_grad[1] else None
        if len(self.needs_grad) == 2:
            return dx, dw
        db = grad.sum(axis=(0, 2, 3)) if self.needs_grad[2] else None
        return dx, dw, db


def _transposed_output_size(input_size, kernel, stride, padding, output_padding, dilation):
    """H_out = (H − 1)·s − 2p + d·(k − 1) + output_padding + 1, per spatial dimension."""
    return tuple((input_size[a] - 1) * stride[a] - 2 * padding[a] + dilation[a] * (kernel[a] - 1)
                 + output_padding[a] + 1 for a in (0, 1))


# ----- the public functions: validation, then the Function

def _check_conv_inputs(op, x, weight, bias, weight_layout, weight_in_axis, weight_out_axis):
    """Shapes and dtypes of (x, weight, bias); returns the kernel size (k_h, k_w)."""
    check_ndim(op, "x", x, 4, "(N, C, H, W)")
    check_ndim(op, "weight", weight, 4, weight_layout)
    check_float(op, "x", x)
    check_float(op, "weight", weight)
    if bias is not None:
        check_float(op, "bias", bias)
    check_same_dtype(op, x=x, weight=weight, bias=bias)
    x_shape, weight_shape = array_of(x).shape, array_of(weight).shape
    if x_shape[1] != weight_shape[weight_in_axis]:
        raise ValueError(f"{op}: input has {x_shape[1]} channels but weight expects "
                         f"{weight_shape[weight_in_axis]} (weight shape {weight_shape})")
    out_channels = weight_shape[weight_out_axis]
    if bias is not None and array_of(bias).shape != (out_channels,):
        raise ValueError(f"{op}: argument 'bias' expected shape ({out_channels},) (one value per output "
                         f"channel), got shape {array_of(bias).shape}")
    kernel = weight_shape[2:]
    if min(kernel) < 1:
        raise ValueError(f"{op}: argument 'weight' expected a kernel of at least 1×1, got {kernel[0]}×{kernel[1]}")
    return kernel


def _conv2d_padding(padding, kernel, stride, dilation):
    """``padding`` (int, pair, "same" or "valid") as ((top, bottom), (left, right))."""
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0), (0, 0))
        if padding != "same":
            raise ValueError(f"conv2d: argument 'padding' expected an int, a pair of ints, 'same' or 'valid', "
                             f"got {padding!r}")
        if stride != (1, 1):
            raise ValueError(f"conv2d: padding='same' requires stride 1 (as PyTorch), got stride {stride}")
        # Total d·(k−1) per dimension; an even kernel puts the odd row/column at the bottom/right.
        totals = (dilation[0] * (kernel[0] - 1), dilation[1] * (kernel[1] - 1))
        return tuple((total // 2, total - total // 2) for total in totals)
    ph, pw = pair("conv2d", "padding", padding, minimum=0)
    return ((ph, ph), (pw, pw))


def _with_bias(x, weight, bias):
    return (x, weight) if bias is None else (x, weight, bias)


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1):
    """2-D convolution (cross-correlation, as PyTorch) with zero padding.

        y[n,o,i,j] = b[o] + Σ_c Σ_u Σ_v W[o,c,u,v] · x[n,c, s_h·i + d_h·u − p_top, s_w·j + d_w·v − p_left]
        (x taken as 0 outside the image)

    Shapes: x (N, C, H, W), weight (O, C, k_h, k_w), bias (O,) or None -> (N, O, H', W'),
    H' = ⌊(H + p_top + p_bottom − d_h·(k_h − 1) − 1) / s_h⌋ + 1 (W' likewise).
    stride, dilation: int or pair, >= 1. padding: int or pair (same amount on both sides),
    "valid" (0), or "same" (stride 1 only; total d·(k−1) per dimension, total//2 at the
    top/left and the rest at the bottom/right, as PyTorch).
    Derivation of the backward: docs/math/convolution.md, sections 1–3.
    """
    stride, padding, dilation = _conv2d_arguments("conv2d", x, weight, bias, stride, padding, dilation)
    return Conv2dFn(stride, padding, dilation)(*_with_bias(x, weight, bias))


def _conv2d_arguments(name, x, weight, bias, stride, padding, dilation):
    """Check a conv2d-like call's arrays and geometry; return (stride, padding, dilation) as pairs."""
    kernel = _check_conv_inputs(name, x, weight, bias, "(C_out, C_in, kH, kW)",
                                weight_in_axis=1, weight_out_axis=0)
    stride = pair(name, "stride", stride, minimum=1)
    dilation = pair(name, "dilation", dilation, minimum=1)
    padding = _conv2d_padding(padding, kernel, stride, dilation)
    _check_kernel_fits(array_of(x).shape[2:], kernel, padding, dilation)
    return stride, padding, dilation


def _check_kernel_fits(input_size, kernel, padding, dilation):
    H, W = input_size
    padded = (H + sum(padding[0]), W + sum(padding[1]))
    dilated_kernel = (dilation[0] * (kernel[0] - 1) + 1, dilation[1] * (kernel[1] - 1) + 1)
    if dilated_kernel[0] > padded[0] or dilated_kernel[1] > padded[1]:
        raise ValueError(f"conv2d: the dilated kernel ({dilated_kernel[0]}×{dilated_kernel[1]}) is larger than "
                         f"the padded input ({padded[0]}×{padded[1]})")


def conv2d_bias_relu(x, weight, bias, stride=1, padding=0, dilation=1):
    """y = max(conv2d(x, W, b), 0) as one op (a U-Net layer without normalisation).

    The same values and gradients as ``relu(conv2d(x, weight, bias, ...))``, with the same
    arguments as ``conv2d`` (bias required, shape (C_out,)); one pass fewer over the
    output, and on the CPU's "direct" kernel the bias and ReLU happen as the outputs are
    stored (Conv2dBiasReluFn).
    """
    if bias is None:
        raise ValueError("conv2d_bias_relu: argument 'bias' is required (a (C_out,) array); "
                         "for no bias use relu(conv2d(x, weight))")
    stride, padding, dilation = _conv2d_arguments("conv2d_bias_relu", x, weight, bias, stride, padding, dilation)
    return Conv2dBiasReluFn(stride, padding, dilation)(x, weight, bias)


def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0, dilation=1):
    """Transposed convolution: the adjoint of conv2d with the same weight, stride, padding, dilation.

        y[n,o, s_h·i + d_h·u − p_h, s_w·j + d_w·v − p_w] += x[n,c,i,j] · W[c,o,u,v]   (inside y only),
        then y[n,o] += b[o]

    Shapes: x (N, C_in, H, W), weight (C_in, C_out, k_h, k_w), bias (C_out,) or None
    -> (N, C_out, H_out, W_out), H_out = (H − 1)·s_h − 2p_h + d_h·(k_h − 1) + output_padding_h + 1.
    output_padding adds rows/columns at the bottom/right (to pick one of the input sizes a
    strided conv2d maps to the same size); it must be smaller than the stride or the
    dilation in each dimension, as PyTorch. Derivation: docs/math/convolution.md, section 4.
    """
    op = "conv_transpose2d"
    kernel = _check_conv_inputs(op, x, weight, bias, "(C_in, C_out, kH, kW)", weight_in_axis=0, weight_out_axis=1)
    stride = pair(op, "stride", stride, minimum=1)
    padding = pair(op, "padding", padding, minimum=0)
    output_padding = pair(op, "output_padding", output_padding, minimum=0)
    dilation = pair(op, "dilation", dilation, minimum=1)
    for extra, s, d in zip(output_padding, stride, dilation):
        if not (extra < s or extra < d):
            raise ValueError(f"{op}: argument 'output_padding' must be smaller than the stride or the dilation "
                             f"in each dimension, got output_padding {output_padding} with stride {stride} "
                             f"and dilation {dilation}")
    input_size = array_of(x).shape[2:]
    output_size = _transposed_output_size(input_size, kernel, stride, padding, output_padding, dilation)
    if min(output_size) < 1:
        raise ValueError(f"{op}: the output would be empty: (H−1)·s − 2p + d·(k−1) + output_padding + 1 = "
                         f"{output_size} for input {tuple(input_size)}, kernel {kernel}, stride {stride}, "
                         f"padding {padding}, output_padding {output_padding}, dilation {dilation}")
    return ConvTranspose2dFn(stride, padding, output_padding, dilation)(*_with_bias(x, weight, bias))
