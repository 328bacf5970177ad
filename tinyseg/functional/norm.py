"""Batch normalisation, instance normalisation and dropout.

Batch norm normalises every channel with statistics taken over the batch and the pixels
(axes (0, 2, 3) of NCHW, axis 0 of (N, C)); its backward is the compact closed form
derived in docs/math/activations_norm_losses.md, section "Batch normalisation".
Instance norm takes the statistics over the pixels of each image and channel alone
(axes (2, 3)): the same closed form, per (n, c) (section "Instance normalisation").
Dropout is inverted dropout (section "Dropout").
"""
from __future__ import annotations

import functools
import math
import numbers

import numpy as np

from .. import backend
from .. import random as ts_random
from ..tensor import Function, Tensor
from ._checks import array_of, check_float


def _channel_shape(ndim):
    """Shape that broadcasts a (C,) vector against (N, C) or (N, C, H, W)."""
    return (1, -1) + (1,) * (ndim - 2)


class NumpyBatchNormKernel:
    """Whole-array expressions on NumPy or CuPy (statistics by ``mean`` over the axes).

    ``forward(x, gamma, beta, mean, var, eps, axes, xp)``: mean and var are the running
    statistics (broadcastable to x) in evaluation, None in training (the batch's are
    computed); returns (y, mean, var, inv_std), the last three broadcastable to x.
    ``backward(g, x, mean, inv_std, gamma, training, count, axes, wants_dx, wants_dgamma,
    wants_dbeta, xp)`` returns (dx, Σ g·x̂, Σ g), each None unless needed (the sums
    broadcastable to x).
    """

    name = "numpy"

    @staticmethod
    def forward(x, gamma, beta, mean, var, eps, axes, xp):
        channel = _channel_shape(x.ndim)
        if mean is None:
            mean = x.mean(axis=axes, keepdims=True)
            centred = x - mean
            var = (centred * centred).mean(axis=axes, keepdims=True)
        else:
            centred = x - mean
        inv_std = 1 / xp.sqrt(var + x.dtype.type(eps))
        scale = inv_std if gamma is None else inv_std * gamma.reshape(channel)
        y = centred
        y *= scale                     # in place: ``centred`` is our own temporary
        if beta is not None:
            y += beta.reshape(channel)
        return y, mean, var, inv_std

    @staticmethod
    def backward(g, x, mean, inv_std, gamma, training, count, axes, wants_dx, wants_dgamma, wants_dbeta, xp):
        channel = _channel_shape(g.ndim)
        sum_g = g.sum(axis=axes, keepdims=True) if (wants_dbeta or (wants_dx and training)) else None
        x_hat = sum_g_xhat = None
        if wants_dgamma or (wants_dx and training):
            x_hat = (x - mean) * inv_std
            sum_g_xhat = (g * x_hat).sum(axis=axes, keepdims=True)

        dx = None
        if wants_dx:
            scale = inv_std if gamma is None else inv_std * gamma.reshape(channel)
            if training:
                # dx = γ/σ · (g − mean(g) − x̂ · mean(g · x̂)), built in x̂'s buffer.
                dx = x_hat
                dx *= sum_g_xhat / count
                xp.subtract(g, dx, out=dx)
                dx -= sum_g / count
                dx *= scale
            else:
                dx = g * scale
        return dx, sum_g_xhat, sum_g


class NumbaBatchNormKernel:
    """Compiled passes over the activation (norm_kernels_numba.py): forward, one pass for
    both statistics (float64 sums) and one for y = x·a + b with a = γ/σ, b = β − μ·a per
    channel, computed as (x − μ)·a + β; backward, one pass for Σ g and Σ g·(x − μ) and one for

        dx = γ/σ · (g − Σg/m − x̂ · Σ(g·x̂)/m) = a·g + b·(x − μ) + d     (a, b, d per channel)

    (evaluation: dx = a·g). Per-channel coefficients in float64, then the dtype; x − μ
    rather than x, so that a large mean does not cancel in float32. The same interface as ``NumpyBatchNormKernel``; NumPy arrays
    only (CuPy arrays run the NumPy kernel's expressions).
    """

    name = "numba"

    @staticmethod
    def forward(x, gamma, beta, mean, var, eps, axes, xp):
        if xp is not np:
            return NumpyBatchNormKernel.forward(x, gamma, beta, mean, var, eps, axes, xp)
        from . import norm_kernels_numba as compiled
        channel = _channel_shape(x.ndim)
        C = x.shape[1]
        x3 = np.ascontiguousarray(x).reshape(x.shape[0], C, -1)
        if mean is None:
            mean64, var64 = np.empty(C), np.empty(C)
            compiled.channel_statistics(x3, mean64, var64)
        else:
            mean64, var64 = mean.reshape(-1).astype(np.float64), var.reshape(-1).astype(np.float64)
        inv_std64 = 1 / np.sqrt(var64 + eps)
        a = inv_std64 if gamma is None else inv_std64 * gamma.astype(np.float64)
        shift = np.zeros(C, x.dtype) if beta is None else beta.astype(x.dtype)
        y = np.empty_like(x3)
        compiled.scale_shift(x3, mean64.astype(x.dtype), a.astype(x.dtype), shift, y)
        as_dtype = lambda v: v.astype(x.dtype).reshape(channel)     # noqa: E731
        return y.reshape(x.shape), as_dtype(mean64), as_dtype(var64), as_dtype(inv_std64)

    @staticmethod
    def backward(g, x, mean, inv_std, gamma, training, count, axes, wants_dx, wants_dgamma, wants_dbeta, xp):
        if xp is not np:
            return NumpyBatchNormKernel.backward(g, x, mean, inv_std, gamma, training, count, axes, wants_dx,
                                                 wants_dgamma, wants_dbeta, xp)
        from . import norm_kernels_numba as compiled
        channel = _channel_shape(g.ndim)
        C = g.shape[1]
        g3 = np.ascontiguousarray(g).reshape(g.shape[0], C, -1)
        x3 = np.ascontiguousarray(x).reshape(x.shape[0], C, -1)
        mean64, inv_std64 = mean.reshape(-1).astype(np.float64), inv_std.reshape(-1).astype(np.float64)
        a = inv_std64 if gamma is None else inv_std64 * gamma.astype(np.float64)
        sum_g = sum_g_xhat = None
        if wants_dbeta or wants_dgamma or (wants_dx and training):
            sum_g64, sum_g_centred = np.empty(C), np.empty(C)
            compiled.gradient_sums(g3, x3, mean64, sum_g64, sum_g_centred)
            sum_g_xhat64 = sum_g_centred * inv_std64
            sum_g, sum_g_xhat = sum_g64.astype(g.dtype).reshape(channel), sum_g_xhat64.astype(g.dtype).reshape(channel)
        dx = None
        if wants_dx:
            if training:
                # a·(g − Σg/m − (x − μ)·σ⁻¹·Σ(g·x̂)/m): the coefficients of g, of x − μ, and the constant.
                b = -a * inv_std64 * sum_g_xhat64 / count
                d = -a * sum_g64 / count
            else:
                b = d = np.zeros(C)
            dx = np.empty_like(g3)
            compiled.affine_combination(g3, x3, mean64.astype(g.dtype), a.astype(g.dtype), b.astype(g.dtype),
                                        d.astype(g.dtype), dx)
            dx = dx.reshape(g.shape)
        return dx, (sum_g_xhat if wants_dgamma or (wants_dx and training) else None), \
            (sum_g if wants_dbeta or (wants_dx and training) else None)


class CupyBatchNormKernel(NumpyBatchNormKernel):
    """The NumPy kernel's expressions run by CuPy on the GPU."""

    name = "cupy"


class CudaBatchNormKernel:
    """Hand-written CUDA C (kernels/batchnorm.cu): the per-channel mean and biased variance
    (two passes) and the backward's Σ g, Σ g·x̂ (one pass) as deterministic reductions
    (per-block partial sums, then a fixed-order final sum), and one elementwise pass each
    for y and dx. The same interface as NumpyBatchNormKernel.

    Runs on CuPy arrays, or on NumPy arrays inside ``backend.cuda_emulation()``.
    """

    name = "cuda"

    @staticmethod
    def forward(x, gamma, beta, mean, var, eps, axes, xp):
        from . import norm_kernels_cuda as gpu

        channel = _channel_shape(x.ndim)
        x = xp.ascontiguousarray(x)
        if mean is None:
            mean, var = gpu.batch_statistics(x, xp)
        else:
            mean = xp.ascontiguousarray(mean.reshape(-1), dtype=x.dtype)
            var = xp.ascontiguousarray(var.reshape(-1), dtype=x.dtype)
        inv_std = 1 / xp.sqrt(var + x.dtype.type(eps))
        scale = xp.ascontiguousarray(inv_std if gamma is None else inv_std * gamma.reshape(-1))
        y = gpu.normalise(x, mean, scale, None if beta is None else beta.reshape(-1), xp)
        return y, mean.reshape(channel), var.reshape(channel), inv_std.reshape(channel)

    @staticmethod
    def backward(g, x, mean, inv_std, gamma, training, count, axes, wants_dx, wants_dgamma, wants_dbeta, xp):
        from . import norm_kernels_cuda as gpu

        channel = _channel_shape(g.ndim)
        g, x = xp.ascontiguousarray(g), xp.ascontiguousarray(x)
        mean, inv_std = (xp.ascontiguousarray(a.reshape(-1), dtype=g.dtype) for a in (mean, inv_std))
        sum_g = sum_g_xhat = None
        if wants_dgamma or wants_dbeta or (wants_dx and training):
            sum_g, sum_g_xhat = gpu.backward_sums(g, x, mean, inv_std, xp)
        dx = None
        if wants_dx:
            scale = xp.ascontiguousarray(inv_std if gamma is None else inv_std * gamma.reshape(-1))
            dx = gpu.input_gradient(g, x, mean, inv_std, scale, sum_g, sum_g_xhat, count, training, xp)
        reshaped = lambda a: None if a is None else a.reshape(channel)
        return dx, reshaped(sum_g_xhat), reshaped(sum_g)


class AutoBatchNormKernel:
    """GPU (CuPy arrays): "cuda". CPU: with tuning on (the default, tinyseg/tuning.py), "numpy" or
    "numba", whichever measures faster here per direction, dtype and size class, from
    AUTO_BATCH_NORM_TUNE_MIN_ELEMENTS elements; "numba" with tuning off or below that size
    (where both take microseconds)."""

    name = "auto"

    @staticmethod
    def _kernel(a, xp, primitive, args):
        if xp is not np:
            return CudaBatchNormKernel
        from .. import tuning
        if tuning.enabled() and a.size >= AUTO_BATCH_NORM_TUNE_MIN_ELEMENTS:
            candidates = {kernel.name: kernel for kernel in (NumpyBatchNormKernel, NumbaBatchNormKernel)}
            runs = {name: functools.partial(getattr(kernel, primitive), *args) for name, kernel in candidates.items()}
            decision = f"{primitive} {np.dtype(a.dtype).name} C{a.shape[1]} n{tuning.pixels_class(a.size)}"
            return candidates[tuning.TUNER.choose("batch_norm", decision, runs)]
        return NumbaBatchNormKernel

    @classmethod
    def forward(cls, x, gamma, beta, mean, var, eps, axes, xp):
        args = (x, gamma, beta, mean, var, eps, axes, xp)
        return cls._kernel(x, xp, "forward", args).forward(*args)

    @classmethod
    def backward(cls, g, x, mean, inv_std, gamma, training, count, axes, wants_dx, wants_dgamma, wants_dbeta, xp):
        args = (g, x, mean, inv_std, gamma, training, count, axes, wants_dx, wants_dgamma, wants_dbeta, xp)
        return cls._kernel(g, xp, "backward", args).backward(*args)


# Below this many elements "auto" does not measure (both CPU kernels take microseconds).
AUTO_BATCH_NORM_TUNE_MIN_ELEMENTS = 2 ** 14


# Kernels by name: ``backend.use_kernel("batch_norm", name)`` selects one.
BATCH_NORM_KERNELS = {kernel.name: kernel for kernel in (NumpyBatchNormKernel, NumbaBatchNormKernel, CupyBatchNormKernel,
                                                         CudaBatchNormKernel, AutoBatchNormKernel)}
DEFAULT_BATCH_NORM_KERNEL = "auto"


def _selected_batch_norm_kernel():
    name = backend.kernel_for("batch_norm", DEFAULT_BATCH_NORM_KERNEL)
    if name not in BATCH_NORM_KERNELS:
        available = ", ".join(repr(k) for k in sorted(BATCH_NORM_KERNELS))
        raise ValueError(f"batch_norm: unknown kernel {name!r}; available kernels: {available}")
    return BATCH_NORM_KERNELS[name]


class BatchNorm(Function):
    """y = γ · x̂ + β with x̂ = (x − μ) / sqrt(σ² + eps), per channel.

    Inputs: x, then γ (weight) if ``has_weight``, then β (bias) if ``has_bias``.
    Training: μ, σ² are the batch mean and biased variance over the m = N·H·W values of
    each channel, and the running statistics (arrays, updated in place) move towards
    μ and the unbiased variance σ²·m/(m − 1). Evaluation: μ, σ² are the running ones.

    Backward (training), per channel, with ĝ = g·γ:
        dx = (1/sqrt(σ² + eps)) · (ĝ − mean(ĝ) − x̂ · mean(ĝ · x̂))
        dγ = Σ g · x̂,   dβ = Σ g
    Backward (evaluation), μ and σ² being constants: dx = g · γ / sqrt(σ² + eps).
    Computed by the kernel ``backend.kernel_for("batch_norm", ...)`` names (BATCH_NORM_KERNELS).
    """

    def __init__(self, running_mean, running_var, training, momentum, eps, has_weight, has_bias):
        self.running_mean, self.running_var = running_mean, running_var
        self.training, self.momentum, self.eps = training, momentum, eps
        self.has_weight, self.has_bias = has_weight, has_bias
        self.kernel = _selected_batch_norm_kernel()

    def forward(self, x, *affine):
        xp = self.xp
        gamma = affine[0] if self.has_weight else None
        beta = affine[-1] if self.has_bias else None
        self.axes = (0,) + tuple(range(2, x.ndim))
        channel = _channel_shape(x.ndim)
        self.count = x.size // x.shape[1]          # m: values per channel

        if self.training:
            mean = var = None                       # the kernel takes the batch's
        else:
            mean = xp.asarray(self.running_mean, dtype=x.dtype).reshape(channel)
            var = xp.asarray(self.running_var, dtype=x.dtype).reshape(channel)
        y, mean, var, inv_std = self.kernel.forward(x, gamma, beta, mean, var, self.eps, self.axes, xp)
        if self.training:
            self._update_running_stats(mean.reshape(-1), var.reshape(-1))

        # x̂ is not kept for backward: it is recomputed from x (which the graph holds
        # anyway), trading one elementwise pass for one activation-sized buffer.
        self.x, self.mean, self.inv_std, self.gamma = x, mean, inv_std, gamma
        return y

    def _update_running_stats(self, batch_mean, batch_var):
        m = self.momentum
        if self.running_mean is not None:
            self.running_mean *= 1 - m
            self.running_mean += m * batch_mean
        if self.running_var is not None:
            unbiased_var = batch_var * (self.count / (self.count - 1))
            self.running_var *= 1 - m
            self.running_var += m * unbiased_var

    def backward(self, g):
        wants_dx = self.needs_grad[0]
        wants_dgamma = self.has_weight and self.needs_grad[1]
        wants_dbeta = self.has_bias and self.needs_grad[-1]
        dx, sum_g_xhat, sum_g = self.kernel.backward(g, self.x, self.mean, self.inv_std, self.gamma, self.training,
                                                     self.count, self.axes, wants_dx, wants_dgamma, wants_dbeta,
                                                     self.xp)
        grads = [dx]
        if self.has_weight:
            grads.append(sum_g_xhat.reshape(-1) if wants_dgamma else None)
        if self.has_bias:
            grads.append(sum_g.reshape(-1) if wants_dbeta else None)
        return tuple(grads)


class InstanceNorm(Function):
    """y = γ_c · x̂ + β_c with x̂ = (x − μ_nc) / sqrt(σ²_nc + eps), per image n and channel c.

    Inputs: x (N, C, *spatial), then γ (weight) if ``has_weight``, then β (bias) if
    ``has_bias``. μ_nc, σ²_nc are the mean and biased variance over the m = H·W values
    of x[n, c]: the same in training and evaluation, so there are no running statistics.

    Backward, per (n, c), with ĝ = g·γ_c (the batch-norm form with the sums over pixels only):
        dx = (1/sqrt(σ²_nc + eps)) · (ĝ − mean(ĝ) − x̂ · mean(ĝ · x̂))
        dγ_c = Σ_n Σ_pixels g · x̂,   dβ_c = Σ_n Σ_pixels g
    """

    def __init__(self, eps, has_weight, has_bias):
        self.eps, self.has_weight, self.has_bias = eps, has_weight, has_bias

    def forward(self, x, *affine):
        gamma = affine[0] if self.has_weight else None
        beta = affine[-1] if self.has_bias else None
        self.axes = tuple(range(2, x.ndim))
        self.count = math.prod(x.shape[2:])           # m: values per (n, c)
        channel = _channel_shape(x.ndim)
        mean = x.mean(axis=self.axes, keepdims=True)
        centred = x - mean
        var = (centred * centred).mean(axis=self.axes, keepdims=True)
        inv_std = 1 / self.xp.sqrt(var + x.dtype.type(self.eps))
        # As in BatchNorm, x̂ is recomputed in backward from x rather than kept.
        self.x, self.mean, self.inv_std, self.gamma = x, mean, inv_std, gamma
        y = centred
        y *= inv_std if gamma is None else inv_std * gamma.reshape(channel)
        if beta is not None:
            y += beta.reshape(channel)
        return y

    def backward(self, g):
        channel = _channel_shape(g.ndim)
        wants_dx = self.needs_grad[0]
        wants_dgamma = self.has_weight and self.needs_grad[1]
        wants_dbeta = self.has_bias and self.needs_grad[-1]
        # Per-(n, c) sums; dγ, dβ then add them over the batch as well.
        sum_g = g.sum(axis=self.axes, keepdims=True) if (wants_dx or wants_dbeta) else None
        x_hat = sum_g_xhat = None
        if wants_dx or wants_dgamma:
            x_hat = (self.x - self.mean) * self.inv_std
            sum_g_xhat = (g * x_hat).sum(axis=self.axes, keepdims=True)
        dgamma = sum_g_xhat.sum(axis=0).reshape(-1) if wants_dgamma else None
        dbeta = sum_g.sum(axis=0).reshape(-1) if wants_dbeta else None

        dx = None
        if wants_dx:
            scale = self.inv_std if self.gamma is None else self.inv_std * self.gamma.reshape(channel)
            # dx = γ/σ · (g − mean(g) − x̂ · mean(g · x̂)), built in x̂'s buffer.
            dx = x_hat
            dx *= sum_g_xhat / self.count
            self.xp.subtract(g, dx, out=dx)
            dx -= sum_g / self.count
            dx *= scale
        grads = [dx]
        if self.has_weight:
            grads.append(dgamma)
        if self.has_bias:
            grads.append(dbeta)
        return tuple(grads)


class Dropout(Function):
    """y = x · mask / (1 − p) with mask ~ Bernoulli(1 − p); dx = g · mask / (1 − p)."""

    def __init__(self, p):
        self.p = p

    def forward(self, x):
        uniform = ts_random.random(x.shape, self.xp, x.dtype)
        # The mask is kept as bools (1 byte per element, not 4 or 8) and the scale apart.
        self.keep = uniform >= self.p
        self.scale = x.dtype.type(1 / (1 - self.p) if self.p < 1 else 0.0)
        y = x * self.keep
        y *= self.scale
        return y

    def backward(self, g):
        dx = g * self.keep
        dx *= self.scale
        return dx


# ----- validation and the public functions

def _check_real(op, name, value, low, high, low_inclusive=True):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{op}: argument '{name}' expected a real number, got {value!r}")
    above_low = value >= low if low_inclusive else value > low
    if not (above_low and value <= high):
        bracket = "[" if low_inclusive else "("
        raise ValueError(f"{op}: argument '{name}' expected a value in {bracket}{low}, {high}], got {value}")
    return float(value)


def _check_channel_vector(name, v, channels, op="batch_norm"):
    if v is None:
        return
    if not hasattr(array_of(v), "shape"):
        raise TypeError(f"{op}: argument '{name}' expected an array or Tensor of shape ({channels},), "
                        f"got {type(v).__name__}")
    check_float(op, name, v)
    shape = tuple(array_of(v).shape)
    if shape != (channels,):
        raise ValueError(f"{op}: argument '{name}' expected shape ({channels},) (one value per channel "
                         f"of x), got {shape}")


def _running_buffer(stat):
    """The array behind a running statistic, updated in place (a Tensor's ``.data``)."""
    return None if stat is None else array_of(stat)


def batch_norm(x, running_mean, running_var, weight, bias, training, momentum=0.1, eps=1e-5):
    """Batch normalisation per channel, as PyTorch (docs: "Batch normalisation").

        y[n,c,h,w] = γ_c · (x[n,c,h,w] − μ_c) / sqrt(σ²_c + eps) + β_c

    x: (N, C, H, W) or (N, C); running_mean, running_var, weight (γ), bias (β): (C,) or None.
    Training: μ_c, σ²_c are the batch mean and biased variance over (N, H, W); the
    running statistics, when given, are updated IN PLACE (arrays, or a Tensor's
    ``.data``) with running = (1 − momentum)·running + momentum·batch, the variance
    entering unbiased (·m/(m − 1), m = N·H·W). Evaluation: μ, σ² are the running
    statistics (both required). γ = 1 and β = 0 when weight / bias are None.
    Kernels (op "batch_norm"): "numpy", "cupy", "cuda", "auto" (the default; "cuda" on
    CuPy arrays), see BATCH_NORM_KERNELS.
    """
    op = "batch_norm"
    check_float(op, "x", x)
    shape = tuple(array_of(x).shape)
    if len(shape) not in (2, 4):
        raise ValueError(f"{op}: argument 'x' expected a 4-D tensor (N, C, H, W) or a 2-D tensor (N, C), "
                         f"got shape {shape}")
    if not isinstance(training, bool):
        raise TypeError(f"{op}: argument 'training' expected a bool, got {training!r}")
    momentum = _check_real(op, "momentum", momentum, 0.0, 1.0)
    eps = _check_real(op, "eps", eps, 0.0, float("inf"), low_inclusive=False)
    channels = shape[1]
    for name, v in (("running_mean", running_mean), ("running_var", running_var),
                    ("weight", weight), ("bias", bias)):
        _check_channel_vector(name, v, channels)
    x_dtype = array_of(x).dtype
    for name, v in (("weight", weight), ("bias", bias)):
        if v is not None and array_of(v).dtype != x_dtype:
            raise TypeError(f"{op}: argument '{name}' expected dtype {x_dtype} (the dtype of x), "
                            f"got {array_of(v).dtype}")
    if not training and (running_mean is None or running_var is None):
        raise ValueError(f"{op}: evaluation mode (training=False) needs running_mean and running_var, got None")
    # The running statistics are updated in place, outside the graph, so the device
    # check that Function.__call__ does for its inputs is done for them here.
    backend.get_array_module(array_of(x), *(array_of(v) for v in (running_mean, running_var) if v is not None))
    if training and math.prod(shape) // max(channels, 1) <= 1:
        raise ValueError(f"{op}: training needs more than 1 value per channel to estimate a variance, "
                         f"got x of shape {shape}")

    affine = [t for t in (weight, bias) if t is not None]
    fn = BatchNorm(_running_buffer(running_mean), _running_buffer(running_var),
                   training, momentum, eps, weight is not None, bias is not None)
    return fn(x, *affine)


def instance_norm(x, weight=None, bias=None, eps=1e-5):
    """Instance normalisation, as PyTorch's ``F.instance_norm`` with input statistics
    (docs: "Instance normalisation"); nnU-Net's default normalisation.

        y[n,c,h,w] = γ_c · (x[n,c,h,w] − μ_nc) / sqrt(σ²_nc + eps) + β_c

    μ_nc, σ²_nc: mean and biased variance of x[n, c] over its H·W pixels, in training
    and evaluation alike (each image is normalised on its own, so the result does not
    depend on the batch). x: (N, C, H, W) (any number of spatial axes >= 1);
    weight (γ), bias (β): (C,) or None (γ = 1, β = 0).
    """
    op = "instance_norm"
    check_float(op, "x", x)
    shape = tuple(array_of(x).shape)
    if len(shape) < 3:
        raise ValueError(f"{op}: argument 'x' expected a tensor (N, C, H, W) (or (N, C, L), (N, C, D, H, W)) "
                         f"with spatial axes, got shape {shape}")
    eps = _check_real(op, "eps", eps, 0.0, float("inf"), low_inclusive=False)
    for name, v in (("weight", weight), ("bias", bias)):
        _check_channel_vector(name, v, shape[1], op)
        if v is not None and array_of(v).dtype != array_of(x).dtype:
            raise TypeError(f"{op}: argument '{name}' expected dtype {array_of(x).dtype} (the dtype of x), "
                            f"got {array_of(v).dtype}")
    if math.prod(shape[2:]) <= 1:
        raise ValueError(f"{op}: needs more than 1 spatial value per image and channel to estimate a variance, "
                         f"got x of shape {shape}")
    affine = [t for t in (weight, bias) if t is not None]
    return InstanceNorm(eps, weight is not None, bias is not None)(x, *affine)


def dropout(x, p, training):
    """Inverted dropout (docs: "Dropout"): y = x · mask / (1 − p), mask ~ Bernoulli(1 − p).

    Each element is zeroed with probability p and the survivors are scaled by
    1/(1 − p), so E[y] = x and evaluation needs no rescaling. Identity when
    ``training`` is False or p = 0 (x itself is returned); zeros when p = 1. The mask
    is drawn from tinyseg.random, so ``ts.manual_seed(s)`` makes it repeatable. Any shape.
    """
    check_float("dropout", "x", x)
    p = _check_real("dropout", "p", p, 0.0, 1.0)
    if not isinstance(training, bool):
        raise TypeError(f"dropout: argument 'training' expected a bool, got {training!r}")
    if not training or p == 0.0:
        return x if isinstance(x, Tensor) else Tensor(x)
    return Dropout(p)(x)
