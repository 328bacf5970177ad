"""Elementwise arithmetic, reductions and array reshaping, each forward with its backward.

Broadcasting: when ``a + b`` broadcasts b of shape (C, 1, 1) against a of shape
(N, C, H, W), every element of b is used N·H·W times, so its gradient is the sum of
the upstream gradient over the broadcast axes (``unbroadcast``).
"""
from __future__ import annotations

import numbers

import numpy as np

from .. import threads
from ..tensor import Function, Tensor, as_tensor


def unbroadcast(grad, shape):
    """Sum ``grad`` over the axes that broadcasting added or stretched, to get ``shape``."""
    if grad.shape == tuple(shape):
        return grad
    extra = grad.ndim - len(shape)
    if extra:
        grad = grad.sum(axis=tuple(range(extra)))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if stretched:
        grad = grad.sum(axis=stretched, keepdims=True)
    return grad


def _operands(a, b):
    if isinstance(a, Tensor):
        return a, as_tensor(b, like=a)
    b = as_tensor(b)
    return as_tensor(a, like=b), b


# ----- binary arithmetic: y = a ∘ b (with broadcasting)

class Add(Function):
    def forward(self, a, b):
        self.shapes = a.shape, b.shape
        return a + b

    def backward(self, g):       # dy/da = 1, dy/db = 1
        return unbroadcast(g, self.shapes[0]), unbroadcast(g, self.shapes[1])


class Sub(Function):
    def forward(self, a, b):
        self.shapes = a.shape, b.shape
        return a - b

    def backward(self, g):       # dy/da = 1, dy/db = -1
        return unbroadcast(g, self.shapes[0]), unbroadcast(-g, self.shapes[1])


class Mul(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, g):       # dy/da = b, dy/db = a
        ga = unbroadcast(g * self.b, self.a.shape) if self.needs_grad[0] else None
        gb = unbroadcast(g * self.a, self.b.shape) if self.needs_grad[1] else None
        return ga, gb


class Div(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return a / b

    def backward(self, g):       # dy/da = 1/b, dy/db = -a/b²
        ga = unbroadcast(g / self.b, self.a.shape) if self.needs_grad[0] else None
        gb = unbroadcast(-g * self.a / (self.b * self.b), self.b.shape) if self.needs_grad[1] else None
        return ga, gb


class Maximum(Function):
    """y = max(a, b); on ties each side gets half the gradient (as torch.maximum)."""

    def forward(self, a, b):
        self.a, self.b = a, b
        return self.xp.maximum(a, b)

    def backward(self, g):
        share_a = (self.a > self.b) + 0.5 * (self.a == self.b)
        ga = unbroadcast(g * share_a, self.a.shape) if self.needs_grad[0] else None
        gb = unbroadcast(g * (1 - share_a), self.b.shape) if self.needs_grad[1] else None
        return ga, gb


class MatMul(Function):
    """y = a @ b over the last two axes (leading axes broadcast): dA = g Bᵀ, dB = Aᵀ g."""

    def forward(self, a, b):
        if a.ndim < 2 or b.ndim < 2:
            raise ValueError(f"matmul: expected inputs with at least 2 dimensions, got shapes {a.shape} and {b.shape}")
        if a.shape[-1] != b.shape[-2]:
            raise ValueError(f"matmul: inner dimensions differ: {a.shape} @ {b.shape}")
        self.a, self.b = a, b
        return _matmul(a, b)

    def backward(self, g):
        ga = unbroadcast(_matmul(g, self.b.swapaxes(-1, -2)), self.a.shape) if self.needs_grad[0] else None
        gb = unbroadcast(_matmul(self.a.swapaxes(-1, -2), g), self.b.shape) if self.needs_grad[1] else None
        return ga, gb


def _matmul(a, b):
    """a @ b; NumPy products on tinyseg's own threads, OpenBLAS single-threaded (``threads.matmul``)."""
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return threads.matmul(a, b)
    return a @ b


# ----- unary elementwise: y = f(x), dx = g · f'(x)

class Neg(Function):
    def forward(self, x):
        return -x

    def backward(self, g):
        return -g


class Pow(Function):
    """y = x^p for a constant exponent p: dy/dx = p x^(p-1)."""

    def __init__(self, exponent):
        if not isinstance(exponent, numbers.Real):
            raise TypeError(f"pow: exponent expected a real number, got {type(exponent).__name__}")
        self.p = exponent

    def forward(self, x):
        self.x = x
        return x ** self.p

    def backward(self, g):
        return g * self.p * self.x ** (self.p - 1)


class Exp(Function):
    def forward(self, x):
        self.y = self.xp.exp(x)
        return self.y

    def backward(self, g):       # d/dx e^x = e^x
        return g * self.y


class Log(Function):
    def forward(self, x):
        self.x = x
        return self.xp.log(x)

    def backward(self, g):       # d/dx ln x = 1/x
        return g / self.x


class Sqrt(Function):
    def forward(self, x):
        self.y = self.xp.sqrt(x)
        return self.y

    def backward(self, g):       # d/dx √x = 1/(2√x)
        return g / (2 * self.y)


class Abs(Function):
    def forward(self, x):
        self.sign = self.xp.sign(x)
        return self.xp.abs(x)

    def backward(self, g):       # sign(x), 0 at x = 0 (as PyTorch)
        return g * self.sign


class Clip(Function):
    """y = min(max(x, lo), hi); the gradient passes where lo <= x <= hi (as torch.clamp)."""

    def __init__(self, lo, hi):
        self.lo, self.hi = lo, hi

    def forward(self, x):
        self.x = x
        return self.xp.clip(x, self.lo, self.hi)

    def backward(self, g):
        inside = self.xp.ones(self.x.shape, dtype=bool)
        if self.lo is not None:
            inside &= self.x >= self.lo
        if self.hi is not None:
            inside &= self.x <= self.hi
        return g * inside


# ----- reductions

def _axes(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    return tuple(a % ndim for a in axes)


class Sum(Function):
    """y = Σ_axis x: every summed element gets the upstream gradient once."""

    def __init__(self, axis=None, keepdims=False):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        self.shape = x.shape
        self.axes = _axes(self.axis, x.ndim)
        return x.sum(axis=self.axes, keepdims=self.keepdims)

    def backward(self, g):
        if not self.keepdims:
            g = g.reshape([1 if i in self.axes else n for i, n in enumerate(self.shape)])
        return self.xp.broadcast_to(g, self.shape)


class Mean(Sum):
    """y = (1/n) Σ_axis x."""

    def forward(self, x):
        y = super().forward(x)
        self.count = x.size // y.size if y.size else 1
        return y / self.count

    def backward(self, g):
        return super().backward(g / self.count)


class Max(Function):
    """y = max_axis x; tied maxima share the gradient equally (as torch.amax)."""

    def __init__(self, axis=None, keepdims=False):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        self.axes = _axes(self.axis, x.ndim)
        y = x.max(axis=self.axes, keepdims=True)
        self.winners = x == y
        return y if self.keepdims else y.reshape([n for i, n in enumerate(y.shape) if i not in self.axes])

    def backward(self, g):
        g = g.reshape([1 if i in self.axes else n for i, n in enumerate(self.winners.shape)])
        share = self.winners / self.winners.sum(axis=self.axes, keepdims=True)
        return g * share


# ----- shape

class Reshape(Function):
    def __init__(self, shape):
        self.shape = shape

    def forward(self, x):
        self.in_shape = x.shape
        return x.reshape(self.shape)

    def backward(self, g):
        return g.reshape(self.in_shape)


class Transpose(Function):
    def __init__(self, axes=None):
        self.axes = axes

    def forward(self, x):
        self.inverse = None if self.axes is None else tuple(int(i) for i in np.argsort(self.axes))
        return x.transpose(self.axes)

    def backward(self, g):
        return g.transpose(self.inverse)


class GetItem(Function):
    """y = x[index]; the gradient is scattered back (added, for repeated fancy indices)."""

    def __init__(self, index):
        self.index = index

    def forward(self, x):
        self.shape, self.dtype = x.shape, x.dtype
        return x[self.index]

    def backward(self, g):
        gx = self.xp.zeros(self.shape, dtype=g.dtype)
        index = self.index if isinstance(self.index, tuple) else (self.index,)
        if any(hasattr(i, "shape") or isinstance(i, list) for i in index):
            self.xp.add.at(gx, self.index, g)
        else:
            gx[self.index] = g
        return gx


# ----- the public functions

def add(a, b): return Add()(*_operands(a, b))
def sub(a, b): return Sub()(*_operands(a, b))
def mul(a, b): return Mul()(*_operands(a, b))
def div(a, b): return Div()(*_operands(a, b))
def maximum(a, b): return Maximum()(*_operands(a, b))
def matmul(a, b): return MatMul()(*_operands(a, b))
def neg(x): return Neg()(x)
def pow(x, exponent): return Pow(exponent)(x)
def exp(x): return Exp()(x)
def log(x): return Log()(x)
def sqrt(x): return Sqrt()(x)
def abs(x): return Abs()(x)
def clip(x, lo=None, hi=None): return Clip(lo, hi)(x)
def sum(x, axis=None, keepdims=False): return Sum(axis, keepdims)(x)
def mean(x, axis=None, keepdims=False): return Mean(axis, keepdims)(x)
def max(x, axis=None, keepdims=False): return Max(axis, keepdims)(x)
def transpose(x, axes=None): return Transpose(axes)(x)


def reshape(x, *shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    return Reshape(shape)(x)


def _install_operators():
    """Give Tensor its operators and methods, implemented by the Functions above."""
    T = Tensor
    T.__add__ = lambda a, b: add(a, b)
    T.__radd__ = lambda a, b: add(b, a)
    T.__sub__ = lambda a, b: sub(a, b)
    T.__rsub__ = lambda a, b: sub(b, a)
    T.__mul__ = lambda a, b: mul(a, b)
    T.__rmul__ = lambda a, b: mul(b, a)
    T.__truediv__ = lambda a, b: div(a, b)
    T.__rtruediv__ = lambda a, b: div(b, a)
    T.__matmul__ = lambda a, b: matmul(a, b)
    T.__rmatmul__ = lambda a, b: matmul(b, a)
    T.__neg__ = neg
    T.__pow__ = pow
    T.__getitem__ = lambda x, index: GetItem(index)(x)
    T.exp, T.log, T.sqrt, T.abs, T.clip = exp, log, sqrt, abs, clip
    T.sum, T.mean, T.max = sum, mean, max
    T.reshape, T.transpose = reshape, transpose
    T.T = property(lambda x: transpose(x))


_install_operators()
