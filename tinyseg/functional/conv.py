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

import math

import numpy as np

from .. import backend
from ..tensor import Function
from ._checks import array_of, check_float, check_ndim, check_same_dtype, pair


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
    padded = xp.zeros((N, C, H + top + bottom, W + left + right), dtype=x.dtype)
    kept = x[:, :, max(-top, 0):H - max(-bottom, 0), max(-left, 0):W - max(-right, 0)]
    row, column = max(top, 0), max(left, 0)
    padded[:, :, row:row + kept.shape[2], column:column + kept.shape[3]] = kept
    return padded


# ----- the work buffer for im2col matrices

# One 1-D buffer per (array module, dtype, device), grown to the largest im2col matrix
# seen so far and reused by every call: memory stays at the largest single matrix (not
# one per layer), and NumPy skips the page faults of a fresh allocation (measured for
# x (4, 32, 128, 128): 5.6 ms of slice copies into a reused buffer, 13.7 ms into a new
# one). The buffer is borrowed only for the
# duration of one primitive below and nothing returned ever points into it, but it is
# shared: tinyseg's convolutions are meant to run on one thread at a time.
_scratch_buffers: dict = {}


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


# ----- the im2col + GEMM kernel

def _im2col(xp, x, geometry: _ConvGeometry):
    """The (N, C·k_h·k_w, H'·W') matrix of x's windows: cols[n, (c,u,v), (i,j)] = x_pad[n,c, s·i+d·u, s·j+d·v].

    Filled with k_h·k_w strided slice copies (one per kernel element, each covering every
    window at once) into the shared work buffer: valid until the next call.
    """
    N, C = x.shape[:2]
    (kh, kw), (Ho, Wo) = geometry.kernel, geometry.output_size
    if geometry.is_pointwise:
        return x.reshape(N, C, Ho * Wo)
    padded = _pad_with_zeros(xp, x, geometry.padding)
    cols = _scratch(xp, x, (N, C, kh, kw, Ho, Wo))
    for u in range(kh):
        for v in range(kw):
            cols[:, :, u, v] = padded[:, :, geometry.rows(u), geometry.columns(v)]
    return cols.reshape(N, C * kh * kw, Ho * Wo)


class Im2colKernel:
    """conv2d's three primitives with NumPy/CuPy array operations: im2col + GEMM.

    Layout: the im2col matrix of sample n is (C·k_h·k_w, H'·W') and W is viewed as
    (O, C·k_h·k_w), so y[n] = W · cols[n] comes out in NCHW order with no transpose; the
    N products are one batched ``matmul``. (docs/math/convolution.md, section 6, compares
    it with one (C·k_h·k_w, N·H'·W') GEMM, no faster once its output is transposed, and
    with an NHWC layout, about twice as slow.) Every function returns a new array.
    """

    @staticmethod
    def forward(x, weight, geometry):
        """y = conv2d(x, W): (N, C, H, W), (O, C, k_h, k_w) -> (N, O, H', W')."""
        xp = backend.get_array_module(x)
        O, N = weight.shape[0], x.shape[0]
        y = xp.matmul(weight.reshape(O, -1), _im2col(xp, x, geometry))
        return y.reshape(N, O, *geometry.output_size)

    @staticmethod
    def weight_grad(x, grad, geometry):
        """dW[o,c,u,v] = Σ_n Σ_ij dY[n,o,i,j] · x_pad[n,c, s·i+d·u, s·j+d·v]: -> (O, C, k_h, k_w)."""
        xp = backend.get_array_module(x)
        N, O = grad.shape[:2]
        cols = _im2col(xp, x, geometry)
        Ho, Wo = geometry.output_size
        per_sample = xp.matmul(grad.reshape(N, O, Ho * Wo), cols.transpose(0, 2, 1))    # (N, O, C·k_h·k_w)
        return per_sample.sum(axis=0).reshape(O, x.shape[1], *geometry.kernel)

    @staticmethod
    def input_grad(grad, weight, geometry):
        """dX of y = conv2d(x, W), given dY (N, O, H', W') and W (O, C, k_h, k_w): -> (N, C, H, W).

        Stride 1: a convolution of dY, padded by d·(k−1) − p on each side, with the
        flipped kernel W[o,c,k−1−u,k−1−v] seen as (C, O, k_h, k_w) (one more im2col + GEMM).
        Otherwise col2im: dcols = Wᵀ · dY, then each kernel element's slice is added back
        at the padded positions its windows read (written, not added, where windows cannot
        overlap: each position then receives at most one term). Inputs no window reads get 0.
        docs/math/convolution.md, section 3, derives both; section 6 has the timings.
        """
        if geometry.stride == (1, 1):
            return Im2colKernel.forward(grad, _flipped_kernel(weight), _flipped_geometry(geometry))
        xp = backend.get_array_module(grad)
        N, O = grad.shape[:2]
        C = weight.shape[1]
        (kh, kw), (Ho, Wo) = geometry.kernel, geometry.output_size
        dcols = _scratch(xp, grad, (N, C * kh * kw, Ho * Wo))
        xp.matmul(weight.reshape(O, -1).T, grad.reshape(N, O, Ho * Wo), out=dcols)
        dcols = dcols.reshape(N, C, kh, kw, Ho, Wo)
        allocate = xp.empty if geometry.windows_tile_padded_input else xp.zeros
        padded_grad = allocate((N, C, *geometry.padded_size), dtype=grad.dtype)
        for u in range(kh):
            for v in range(kw):
                window_elements = padded_grad[:, :, geometry.rows(u), geometry.columns(v)]
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


# Kernels by name. Faster ones (Numba on the CPU, CUDA on the GPU) register here with the
# same three functions, and ``backend.use_kernel("conv2d", name)`` selects one; both
# conv2d and conv_transpose2d are built from them.
CONV2D_KERNELS = {"im2col": Im2colKernel}


def _selected_kernel():
    name = backend.kernel_for("conv2d", "im2col")
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
    kernel = _check_conv_inputs("conv2d", x, weight, bias, "(C_out, C_in, kH, kW)",
                                weight_in_axis=1, weight_out_axis=0)
    stride = pair("conv2d", "stride", stride, minimum=1)
    dilation = pair("conv2d", "dilation", dilation, minimum=1)
    padding = _conv2d_padding(padding, kernel, stride, dilation)
    H, W = array_of(x).shape[2:]
    padded = (H + sum(padding[0]), W + sum(padding[1]))
    dilated_kernel = (dilation[0] * (kernel[0] - 1) + 1, dilation[1] * (kernel[1] - 1) + 1)
    if dilated_kernel[0] > padded[0] or dilated_kernel[1] > padded[1]:
        raise ValueError(f"conv2d: the dilated kernel ({dilated_kernel[0]}×{dilated_kernel[1]}) is larger than "
                         f"the padded input ({padded[0]}×{padded[1]})")
    return Conv2dFn(stride, padding, dilation)(*_with_bias(x, weight, bias))


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
