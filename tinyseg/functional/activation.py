"""Activations: relu, leaky_relu, sigmoid, tanh, softmax, log_softmax.

Each is elementwise (or, for the softmaxes, works along one axis), keeps the input's
shape and dtype, and has its derivative written right below its forward. The
derivations are in docs/math/activations_norm_losses.md, section "Activations".
"""
from __future__ import annotations

import functools
import numbers

import numpy as np

from .. import backend
from ..tensor import Function
from ._checks import array_of, check_float


def stable_sigmoid(x, xp):
    """(σ(x), e) with e = exp(−|x|), computed without overflow for any x.

    σ(x) = 1 / (1 + e) for x ≥ 0 and e / (1 + e) for x < 0: the same function, but
    exp() only ever sees a non-positive argument, so it cannot overflow. ``e`` also
    gives the derivative exactly: σ'(x) = σ(x)·σ(−x) = e / (1 + e)² (no 1 − σ
    cancellation for large x). Shared with the losses, which need both.
    """
    e = xp.exp(-xp.abs(x))
    one_plus_e = 1 + e
    sigma = xp.where(x >= 0, 1 / one_plus_e, e / one_plus_e)
    return sigma, e


def sigmoid_derivative(e):
    """σ'(x) from e = exp(−|x|): e / (1 + e)²."""
    one_plus_e = 1 + e
    return e / (one_plus_e * one_plus_e)


def log_softmax_along(x, axis, xp):
    """log_softmax(x) = x − M − log Σ exp(x − M) along ``axis``, M = max along ``axis``."""
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))


class NumpyReluKernel:
    """forward: y = max(x, 0) (``xp.maximum``); backward: dx = dy · [y > 0] (mask, then product)."""

    name = "numpy"

    @staticmethod
    def forward(x, xp):
        return xp.maximum(x, 0)

    @staticmethod
    def backward(grad, y, xp):
        return grad * (y > 0)

    @staticmethod
    def backward_with_bias(grad, y, xp):
        return _backward_with_bias(NumpyReluKernel, grad, y, xp)

    @staticmethod
    def forward_with_bias(z, b, xp):
        """y = max(z + b[c], 0): the bias add, then ReLU in place on the new array."""
        y = z + _per_channel(b, z)
        return xp.maximum(y, 0, out=y)


def _per_channel(b, z):
    """b (C,) shaped to broadcast along axis 1 of z (N, C, ...)."""
    return b.reshape((1, -1) + (1,) * (z.ndim - 2))


def _backward_with_bias(kernel, grad, y, xp):
    """(dz, db) of y = max(z + b[c], 0): the kernel's ReLU backward, then db[c] = Σ over all axes but 1."""
    dz = kernel.backward(grad, y, xp)
    return dz, dz.sum(axis=(0,) + tuple(range(2, dz.ndim)))


def _bias_relu_backward(kernel, grad, y, xp):
    """(dz, db) of y = max(z + b[c], 0) with ``kernel``: its one-pass ``backward_with_bias``
    where it has one, else its ReLU backward then the sum (``_backward_with_bias``)."""
    if hasattr(kernel, "backward_with_bias"):
        return kernel.backward_with_bias(grad, y, xp)
    return _backward_with_bias(kernel, grad, y, xp)


class NumbaReluKernel:
    """The same equations, each one compiled pass (elementwise_kernels_numba): the
    backward fuses the mask into the product, dx[k] = dy[k] if y[k] > 0 else dy[k]·0.
    A serial loop below NUMBA_RELU_PARALLEL_MIN_ELEMENTS, parallel chunks from there.

    NumPy arrays only: CuPy arrays use the NumPy/CuPy path.
    """

    name = "numba"

    @staticmethod
    def forward(x, xp):
        if xp is not np:
            return NumpyReluKernel.forward(x, xp)
        from . import elementwise_kernels_numba as compiled

        loop = compiled.relu_forward if x.size >= NUMBA_RELU_PARALLEL_MIN_ELEMENTS else compiled.relu_forward_serial
        # (ascontiguousarray makes a 0-d array 1-d: hence the shape kept aside.)
        flat_x = np.ascontiguousarray(x).ravel()
        y = np.empty_like(flat_x)
        loop(flat_x, y)
        return y.reshape(x.shape)

    @staticmethod
    def backward(grad, y, xp):
        if xp is not np:
            return NumpyReluKernel.backward(grad, y, xp)
        from . import elementwise_kernels_numba as compiled

        loop = (compiled.relu_backward if grad.size >= NUMBA_RELU_PARALLEL_MIN_ELEMENTS
                else compiled.relu_backward_serial)
        flat_grad, flat_y = np.ascontiguousarray(grad).ravel(), np.ascontiguousarray(y).ravel()
        dx = np.empty_like(flat_grad)
        loop(flat_grad, flat_y, dx)
        return dx.reshape(grad.shape)

    @staticmethod
    def forward_with_bias(z, b, xp):
        """y = z + b[c] (NumPy), then the compiled ReLU loop in place on y."""
        if xp is not np:
            return NumpyReluKernel.forward_with_bias(z, b, xp)
        from . import elementwise_kernels_numba as compiled

        if z.ndim < 2:
            y = z + _per_channel(b, z)
            flat = y.reshape(-1)
            (compiled.relu_forward if y.size >= NUMBA_RELU_PARALLEL_MIN_ELEMENTS
             else compiled.relu_forward_serial)(flat, flat)
            return y
        z3 = np.ascontiguousarray(z).reshape(z.shape[0], z.shape[1], -1)
        y = np.empty_like(z3)
        (compiled.bias_relu_forward if _parallel_bias_relu(z) else compiled.bias_relu_forward_serial)(
            z3, np.ascontiguousarray(b, dtype=z.dtype), y)
        return y.reshape(z.shape)

    @staticmethod
    def backward_with_bias(grad, y, xp):
        """(dz, db) in one pass: dz = dy · [y > 0] and its per-channel sums (float64, then the dtype)."""
        if xp is not np or grad.ndim < 2:
            return _backward_with_bias(NumbaReluKernel, grad, y, xp)
        from . import elementwise_kernels_numba as compiled

        shape = (grad.shape[0], grad.shape[1], -1)
        g3, y3 = np.ascontiguousarray(grad).reshape(shape), np.ascontiguousarray(y).reshape(shape)
        dz = np.empty_like(g3)
        db = np.empty(grad.shape[1], dtype=np.float64)
        (compiled.bias_relu_backward if _parallel_bias_relu(grad) else compiled.bias_relu_backward_serial)(
            g3, y3, dz, db)
        return dz.reshape(grad.shape), db.astype(grad.dtype)


# Measured (2 cores, float32, median µs of 50 calls, forward / backward, outputs
# allocated by NumPy as the kernel does):
#   elements        numpy          serial numba   parallel numba
#   2^14            9 / 9          3 / 5          49 / 49
#   2^18            127 / 96       46 / 58        92 / 113
#   2^20            536 / 467      173 / 270      233 / 381
#   2^21            1125 / 1655    481 / 1081     642 / 1131
#   2^22            2319 / 3913    1607 / 2468    1795 / 1768
#   2^23            8115 / 9955    5966 / 6944    4268 / 6013
# (np.maximum runs at ~2 GB/s here; the compiled loop is vectorised.) The serial loop
# beats NumPy from a few thousand elements on; the parallel one pays back its ~50 µs
# launch from ~4M elements: "numba" goes parallel at 2**22, and "auto" uses "numba"
# from 2**12 elements (below that both take a few µs).
NUMBA_RELU_PARALLEL_MIN_ELEMENTS = 2 ** 22

# The fused bias + ReLU loops (one pass each way) go parallel from this many elements,
# over (n, c) planes forward and channels backward, when there are at least 2 of those.
# Measured on a 2-core Zen 4 with Numba's "omp" layer (tinyseg/threads.py: the caller
# works in the team, launches cost ~10-20 µs): see docs/performance.md.
NUMBA_BIAS_RELU_PARALLEL_MIN_ELEMENTS = 2 ** 16


def _parallel_bias_relu(a):
    return a.size >= NUMBA_BIAS_RELU_PARALLEL_MIN_ELEMENTS and a.shape[1] >= 2
AUTO_RELU_NUMBA_MIN_ELEMENTS = 2 ** 12


class CupyReluKernel(NumpyReluKernel):
    """The NumPy expressions run by CuPy on the GPU: ``cp.maximum`` (one pass), mask then product (two)."""

    name = "cupy"


class CudaReluKernel:
    """Hand-written CUDA C (kernels/activation.cu): one thread per element; the backward fuses
    the mask into the product (one pass over dy and y instead of CuPy's two).

    Runs on CuPy arrays, or on NumPy arrays inside ``backend.cuda_emulation()``.
    """

    name = "cuda"

    @staticmethod
    def forward(x, xp):
        from . import activation_kernels_cuda as gpu
        return gpu.relu_forward(x, xp)

    @staticmethod
    def backward(grad, y, xp):
        from . import activation_kernels_cuda as gpu
        return gpu.relu_backward(grad, y, xp)

    @staticmethod
    def forward_with_bias(z, b, xp):
        """One pass: y = max(z + b[c], 0) (kernels/activation.cu, bias_relu_forward)."""
        from . import activation_kernels_cuda as gpu
        return gpu.bias_relu_forward(z, b, xp)


class AutoReluKernel:
    """CPU: numpy below AUTO_RELU_NUMBA_MIN_ELEMENTS elements (a few µs either way); from
    there, with tuning on (the default, tinyseg/tuning.py), the kernel measured fastest on
    this machine per primitive, dtype and size class, and with tuning off numba.
    GPU: the hand-written CUDA kernel (memory-bound either way; its backward is one pass).
    """

    name = "auto"

    @staticmethod
    def _kernel(a, xp, primitive=None, args=()):
        if xp is not np:
            return CudaReluKernel
        from .. import tuning
        if tuning.enabled() and a.size >= AUTO_RELU_NUMBA_MIN_ELEMENTS:
            # Measured here (tinyseg/tuning.py), per primitive, dtype and size class.
            candidates = {kernel.name: kernel for kernel in (NumpyReluKernel, NumbaReluKernel)}
            runs = {name: functools.partial(getattr(kernel, primitive), *args, xp) for name, kernel in candidates.items()}
            decision = f"{primitive} {np.dtype(a.dtype).name} n{tuning.pixels_class(a.size)}"
            return candidates[tuning.TUNER.choose("relu", decision, runs)]
        return NumbaReluKernel if a.size >= AUTO_RELU_NUMBA_MIN_ELEMENTS else NumpyReluKernel

    @classmethod
    def forward(cls, x, xp):
        return cls._kernel(x, xp, "forward", (x,)).forward(x, xp)

    @classmethod
    def backward(cls, grad, y, xp):
        return cls._kernel(grad, xp, "backward", (grad, y)).backward(grad, y, xp)

    @classmethod
    def forward_with_bias(cls, z, b, xp):
        return cls._kernel(z, xp, "forward_with_bias", (z, b)).forward_with_bias(z, b, xp)

    @classmethod
    def backward_with_bias(cls, grad, y, xp):
        return _bias_relu_backward(cls._kernel(grad, xp, "backward_with_bias", (grad, y)), grad, y, xp)


RELU_KERNELS = {kernel.name: kernel for kernel in (NumpyReluKernel, NumbaReluKernel, CupyReluKernel,
                                                   CudaReluKernel, AutoReluKernel)}
DEFAULT_RELU_KERNEL = "auto"


def _selected_relu_kernel():
    name = backend.kernel_for("relu", DEFAULT_RELU_KERNEL)
    if name not in RELU_KERNELS:
        available = ", ".join(repr(k) for k in sorted(RELU_KERNELS))
        raise ValueError(f"relu: unknown kernel {name!r}; available kernels: {available}")
    return RELU_KERNELS[name]


class ReLU(Function):
    """y = max(x, 0); dy/dx = 1 where x > 0, else 0 (0 at x = 0, as PyTorch).

    Saves its output y rather than a mask: y > 0 exactly where x > 0, and y is usually
    kept anyway (as the saved input of the next conv), so ReLU costs no extra memory.
    Computed by the kernel ``backend.kernel_for("relu", ...)`` names.
    """

    def __init__(self):
        self.kernel = _selected_relu_kernel()

    def forward(self, x):
        self.y = self.kernel.forward(x, self.xp)
        return self.y

    def backward(self, g):
        return self.kernel.backward(g, self.y, self.xp)


class BiasReLU(Function):
    """y = max(z + b[c], 0) for z (N, C, ...) and b (C,): a conv layer's bias and ReLU in one op.

    The same values as ``relu(z + b)``, and the same gradients: dz = dy · [y > 0],
    db[c] = Σ_{n,i,j} dz[n,c,i,j]. On the GPU the forward is one pass over z instead of
    two (bias add, then ReLU): see kernels/activation.cu. Runs with the kernel
    ``backend.kernel_for("relu", ...)`` names.
    """

    def __init__(self):
        self.kernel = _selected_relu_kernel()

    def forward(self, z, b):
        self.y = self.kernel.forward_with_bias(z, b, self.xp)
        return self.y

    def backward(self, g):
        if not self.needs_grad[1]:
            return self.kernel.backward(g, self.y, self.xp), None
        dz, db = _bias_relu_backward(self.kernel, g, self.y, self.xp)   # one pass where the kernel fuses the sum
        return (dz if self.needs_grad[0] else None), db


class LeakyReLU(Function):
    """y = x where x > 0, else a·x; dy/dx = 1 where x > 0, else a (a at x = 0, as PyTorch)."""

    def __init__(self, negative_slope):
        self.negative_slope = negative_slope

    def forward(self, x):
        self.positive = x > 0
        return self.xp.where(self.positive, x, x * self.negative_slope)

    def backward(self, g):
        return self.xp.where(self.positive, g, g * self.negative_slope)


class Sigmoid(Function):
    """y = σ(x) = 1 / (1 + exp(−x)); dy/dx = σ(x)·σ(−x) = e / (1 + e)² with e = exp(−|x|)."""

    def forward(self, x):
        y, self.e = stable_sigmoid(x, self.xp)
        return y

    def backward(self, g):
        return g * sigmoid_derivative(self.e)


class Tanh(Function):
    """y = tanh(x); dy/dx = 1 − y²."""

    def forward(self, x):
        self.y = self.xp.tanh(x)
        return self.y

    def backward(self, g):
        return g * (1 - self.y * self.y)


class Softmax(Function):
    """y_k = exp(x_k − M) / Σ_l exp(x_l − M) along ``axis``; dx = y ⊙ (g − Σ_l g_l y_l)."""

    def __init__(self, axis):
        self.axis = axis

    def forward(self, x):
        e = self.xp.exp(x - x.max(axis=self.axis, keepdims=True))
        e /= e.sum(axis=self.axis, keepdims=True)
        self.y = e
        return self.y

    def backward(self, g):
        return self.y * (g - (g * self.y).sum(axis=self.axis, keepdims=True))


class LogSoftmax(Function):
    """y_k = x_k − M − log Σ_l exp(x_l − M) along ``axis``; dx = g − exp(y) · Σ_l g_l."""

    def __init__(self, axis):
        self.axis = axis

    def forward(self, x):
        self.y = log_softmax_along(x, self.axis, self.xp)
        return self.y

    def backward(self, g):
        return g - self.xp.exp(self.y) * g.sum(axis=self.axis, keepdims=True)


# ----- validation and the public functions

def _check_axis(op, x, axis):
    ndim = array_of(x).ndim
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise TypeError(f"{op}: argument 'axis' expected an int, got {axis!r}")
    if ndim == 0:
        raise ValueError(f"{op}: argument 'x' expected a tensor with at least 1 dimension, got a 0-d tensor")
    if not -ndim <= axis < ndim:
        raise ValueError(f"{op}: argument 'axis' expected a value in [{-ndim}, {ndim}) for a {ndim}-D "
                         f"tensor, got {axis}")
    return int(axis) % ndim


def relu(x):
    """y = max(x, 0), elementwise; any shape. Gradient 0 at x = 0 (docs: Activations)."""
    check_float("relu", "x", x)
    return ReLU()(x)


def bias_relu(z, b):
    """y = max(z + b[c], 0) for z (N, C, ...) and b (C,): bias add and ReLU fused (docs: Activations)."""
    check_float("bias_relu", "z", z)
    check_float("bias_relu", "b", b)
    if len(z.shape) < 2 or tuple(b.shape) != (z.shape[1],):
        raise ValueError(f"bias_relu: expected z (N, C, ...) and b (C,), got z {tuple(z.shape)} and b {tuple(b.shape)}")
    if z.dtype != b.dtype:
        raise TypeError(f"bias_relu: z and b must have the same dtype, got {z.dtype} and {b.dtype}")
    return BiasReLU()(z, b)


def leaky_relu(x, negative_slope=0.01):
    """y = x for x > 0, negative_slope·x otherwise, elementwise; any shape (docs: Activations)."""
    check_float("leaky_relu", "x", x)
    if isinstance(negative_slope, bool) or not isinstance(negative_slope, numbers.Real):
        raise TypeError(f"leaky_relu: argument 'negative_slope' expected a real number, got {negative_slope!r}")
    return LeakyReLU(float(negative_slope))(x)


def sigmoid(x):
    """y = 1 / (1 + exp(−x)), elementwise, without overflow for any |x|; any shape (docs: Activations)."""
    check_float("sigmoid", "x", x)
    return Sigmoid()(x)


def tanh(x):
    """y = tanh(x), elementwise; any shape (docs: Activations)."""
    check_float("tanh", "x", x)
    return Tanh()(x)


def softmax(x, axis=1):
    """y_k = exp(x_k − max) / Σ_l exp(x_l − max) along ``axis`` (default 1, the channels of NCHW).

    Same shape as x; each slice along ``axis`` sums to 1. Subtracting the max keeps
    exp() from overflowing (docs: Activations, "Softmax").
    """
    check_float("softmax", "x", x)
    return Softmax(_check_axis("softmax", x, axis))(x)


def log_softmax(x, axis=1):
    """y_k = x_k − max − log Σ_l exp(x_l − max) along ``axis`` (default 1); same shape as x.

    Computed directly, not as log(softmax(x)), so it stays finite where a probability
    underflows to 0 (docs: Activations, "Log-softmax").
    """
    check_float("log_softmax", "x", x)
    return LogSoftmax(_check_axis("log_softmax", x, axis))(x)
