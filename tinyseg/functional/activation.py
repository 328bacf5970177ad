"""Activations: relu, leaky_relu, sigmoid, tanh, softmax, log_softmax.

Each is elementwise (or, for the softmaxes, works along one axis), keeps the input's
shape and dtype, and has its derivative written right below its forward. The
derivations are in docs/math/activations_norm_losses.md, section "Activations".
"""
from __future__ import annotations

import numbers

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


class ReLU(Function):
    """y = max(x, 0); dy/dx = 1 where x > 0, else 0 (0 at x = 0, as PyTorch).

    Saves its output y rather than a mask: y > 0 exactly where x > 0, and y is usually
    kept anyway (as the saved input of the next conv), so ReLU costs no extra memory.
    """

    def forward(self, x):
        self.y = self.xp.maximum(x, 0)
        return self.y

    def backward(self, g):
        return g * (self.y > 0)


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
