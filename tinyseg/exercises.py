"""Exercises for learners: write an op's forward or backward on NumPy arrays, then check it.

    from tinyseg.exercises import check, describe, ExerciseError, EXERCISES
    print(describe("conv2d_forward"))        # the signature, shapes and equation
    check("conv2d_forward", my_conv2d)       # True, or ExerciseError

``check(name, fn)`` runs ``fn`` on a battery of cases (edge shapes, stride > 1, padding,
1×1 and non-square kernels, non-square images, batch > 1, float64 and float32) and
compares it with tinyseg's own answer: the loop definitions of ``tinyseg.reference``
for forward passes, the engine's autograd (``tinyseg.functional``, itself tested against
those loops) for gradients. On the first case it gets wrong it raises ``ExerciseError``
naming the case (shapes, stride, padding, dtype), the first wrong element (index,
expected, got) and, when the output is exactly what a known mistake produces, a hint
naming that mistake. The hints are honest: each comes from running a planted version of
the mistake on the failing case and finding the same numbers as ``fn``'s.

The exercises (all arrays NumPy; results must keep the input's dtype):

    conv2d_forward(x, w, b, stride, padding) -> y
        x (N, C, H, W), w (O, C, kH, kW), b (O,), stride and padding ints
        y[n,o,i,j] = b[o] + Σ_c Σ_u Σ_v w[o,c,u,v] · x_pad[n,c, s·i+u, s·j+v]
        x_pad: x with p rows/columns of zeros on every side; y (N, O, H', W'),
        H' = ⌊(H + 2p − kH)/s⌋ + 1, W' likewise          (docs/math/convolution.md)
    conv2d_backward(x, w, b, stride, padding, dy) -> (dx, dw, db)
        dy = ∂L/∂y (N, O, H', W'); dx, dw, db: ∂L/∂x, ∂L/∂w, ∂L/∂b, shaped like x, w, b
    max_pool2d_forward(x, kernel_size, stride) -> y
        y[n,c,i,j] = max_{0≤u,v<k} x[n,c, s·i+u, s·j+v];  H' = ⌊(H − k)/s⌋ + 1
    max_pool2d_backward(x, kernel_size, stride, dy) -> dx
        each window's dy goes to its first maximum in row-major order (as PyTorch)
    bce_with_logits_forward(z, t) -> loss
        loss = (1/M) Σ [max(z,0) − z·t + log(1 + e^−|z|)]
             = (1/M) Σ −[t·log σ(z) + (1−t)·log(1−σ(z))],  M = z.size
    bce_with_logits_backward(z, t) -> dz       dz = ∂loss/∂z, shaped like z
    dice_forward(z, t, smooth) -> loss
        p = σ(z); loss = 1 − (2 Σ p·t + smooth) / (Σ p + Σ t + smooth), sums over everything
    dice_backward(z, t, smooth) -> dz          dz = ∂loss/∂z, shaped like z

z (logits) and t (targets) have the same shape, e.g. (N, 1, H, W); t ∈ [0, 1] for BCE,
{0, 1} for Dice. The losses return a number (a Python float or a 0-d array). The
backward exercises of the losses return the gradient of the loss itself (no upstream
gradient: ∂L/∂loss = 1).

Stubs to fill are in docs/notebooks/exercises.py; the engine is the solution
(tinyseg/functional/conv.py, pool.py, loss.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from . import functional as F
from . import reference as ref
from .tensor import Tensor


class ExerciseError(Exception):
    """A learner's function gave a wrong answer (or none): the message says where and why."""


@dataclass
class Case:
    """One input of the battery: a description, the arguments and the result's dtype."""
    description: str
    args: tuple
    dtype: type = np.float64


@dataclass
class Mistake:
    """A planted mistake: ``planted(*args)`` computes what the mistake computes."""
    hint: str
    planted: Callable


@dataclass
class Exercise:
    name: str
    signature: str
    equation: str
    arg_names: tuple
    output_names: tuple                 # one name: a single result; several: a tuple
    expected: Callable                  # the right answer, from tinyseg's reference / engine
    cases: Callable                     # () -> list[Case]
    mistakes: list = field(default_factory=list)
    scalar: bool = False                # the result is one number (a loss)


# ======================================================================== hints

HINT_FLIP = ("the kernel is flipped: this is a true convolution, Σ w[o,c,kH−1−u,kW−1−v]·x[…]. Deep learning's "
             "conv2d is a cross-correlation: y[n,o,i,j] = b[o] + Σ_c Σ_u Σ_v w[o,c,u,v]·x_pad[n,c,s·i+u,s·j+v], "
             "no flip")
HINT_FLIP_DX = ("dx uses the kernel the wrong way round: ∂L/∂x is the full convolution of dy with the kernel "
                "rotated by 180°, which in loops is simply dx_pad[n,c,s·i+u,s·j+v] += w[o,c,u,v]·dy[n,o,i,j] "
                "(your dx is that with w[o,c,kH−1−u,kW−1−v])")
HINT_PAD_SUB = ("padding was subtracted from the pixel values (x − p), the mistake of the article's §4.2 formula "
                "(X_ij − p) ∗ K_ij: padding p adds p rows and columns of zeros around the image and leaves the "
                "pixel values unchanged")
HINT_CHANNELS = ("channels summed too early: the kernel was summed over its input channels (Σ_c w[o,c,u,v]) "
                 "before meeting the image, as in the article's §4.2 step (3). Each input channel c has its own "
                 "slice w[o,c,:,:], multiplied with x[n,c] before the sum over c")
HINT_STRIDE = ("the stride is ignored: output (i, j) reads the window that starts at row s·i and column s·j of "
               "the padded input, and H' = ⌊(H + 2p − kH)/s⌋ + 1")
HINT_PAD_IGNORED = ("the padding is ignored: first surround x with p rows/columns of zeros, then slide the kernel; "
                    "H' = ⌊(H + 2p − kH)/s⌋ + 1")
HINT_BIAS_MISSING = "the bias is missing: add b[o] to every output of channel o"
HINT_DX_PADDED = ("dx has the padded input's shape: drop the p border rows and columns of the padded gradient "
                  "(they belong to the zeros, not to x)")
HINT_DB_ONE_SAMPLE = ("the bias gradient is not summed over the batch: b[o] is added to every output of channel o "
                      "in every sample, so db[o] = Σ_n Σ_i Σ_j dy[n,o,i,j] (yours uses sample 0 only)")
HINT_DB_PER_SAMPLE = ("the bias gradient is not summed over the batch: db has b's shape (O,), "
                      "db[o] = Σ_n Σ_i Σ_j dy[n,o,i,j] (yours keeps one row per sample)")
HINT_DB_MEAN = ("the bias gradient is averaged instead of summed: db[o] = Σ_n Σ_i Σ_j dy[n,o,i,j]. Any mean "
                "the loss takes is already inside dy; dividing again by N (or by N·H'·W') counts it twice")
HINT_POOL_AVG = "this is average pooling: max pooling keeps the largest value of each window"
HINT_POOL_STRIDE = ("the stride is ignored (taken as the kernel size, or 1): window (i, j) starts at row s·i, "
                    "column s·j, and H' = ⌊(H − k)/s⌋ + 1")
HINT_POOL_SPREAD = ("the gradient was spread over the whole window: y depends only on the window's maximum, so "
                    "dy[n,c,i,j] goes to that one element and the others get 0")
HINT_POOL_TIES = ("on ties every maximum got the gradient: tinyseg, as PyTorch, sends it to the first maximum of "
                  "the window in row-major order (np.argmax on the flattened window), so the gradient is not "
                  "duplicated")
HINT_POOL_OVERWRITE = ("overlapping windows (stride < kernel) overwrite each other's gradient: a pixel that is the "
                       "maximum of two windows receives both gradients, so accumulate with +=")
HINT_BCE_UNSTABLE = ("overflow: log(σ(z)) and log(1 − σ(z)) computed as written give inf or nan for large |z| "
                     "(σ(z) rounds to 0 or 1). Use the identity ℓ = max(z, 0) − z·t + log(1 + e^−|z|)")
HINT_BCE_SUM = "the loss is the mean over all M elements, not the sum: divide by M = z.size"
HINT_BCE_SWAP = ("t and 1 − t are swapped: ℓ = −[t·log σ(z) + (1 − t)·log(1 − σ(z))], the positive term weighs "
                 "log σ(z)")
HINT_BCE_GRAD_SUM = "the 1/M of the mean is missing: dz = (σ(z) − t)/M with M = z.size"
HINT_BCE_GRAD_SIGN = "the sign is flipped: dz = (σ(z) − t)/M (raising z lowers the loss where t = 1)"
HINT_BCE_GRAD_SIGMOID = ("an extra σ'(z) = σ(z)(1 − σ(z)) factor: for BCE on logits it cancels, "
                         "∂ℓ/∂z = σ(z) − t exactly")
HINT_DICE_NO_SIGMOID = "the logits were used as probabilities: p = σ(z) first"
HINT_DICE_NO_CHAIN = ("the chain rule stops at p: this is ∂loss/∂p; multiply by ∂p/∂z = σ(z)(1 − σ(z)) to get "
                      "∂loss/∂z")
HINT_DICE_PER_IMAGE = ("Dice was computed per image and averaged: here (tinyseg's convention, as the equation) the "
                       "sums Σ p·t, Σ p, Σ t run over the whole batch and every pixel")
HINT_DICE_SIGN = "this is the Dice coefficient D (or its gradient), not the loss 1 − D: the sign is flipped"


# ======================================================================== planted computations
# NumPy versions of each op, right and with each mistake. The right ones double as worked
# solutions (tests/test_exercises.py checks them); the checker's expected values come from
# tinyseg.reference and the engine, not from these.

def _pad(x, p):
    return np.pad(x, ((0, 0), (0, 0), (p, p), (p, p))) if p else x


def _out_size(size, k, s, p):
    return (size + 2 * p - k) // s + 1


def _window(u, s, n):
    """Rows u, u+s, …, u+s·(n−1): where kernel row u lands for outputs 0 … n−1."""
    return slice(u, u + s * (n - 1) + 1, s)


def _conv_forward(x, w, b, stride, padding, index_stride=None):
    """y = b + Σ_c Σ_u Σ_v w[:, c, u, v] · x_pad[:, c, s·i+u, s·j+v], one (u, v) at a time.
    ``index_stride`` = 1 plants "stride ignored inside the sum" (output size kept)."""
    N, C, H, W = x.shape
    O, _, kH, kW = w.shape
    Ho, Wo = _out_size(H, kH, stride, padding), _out_size(W, kW, stride, padding)
    s = stride if index_stride is None else index_stride
    xp = _pad(x, padding)
    y = np.zeros((N, O, Ho, Wo), dtype=np.result_type(x, w))
    for u in range(kH):
        for v in range(kW):
            y += np.einsum("ncij,oc->noij", xp[:, :, _window(u, s, Ho), _window(v, s, Wo)], w[:, :, u, v])
    return y + b[None, :, None, None]


def _conv_backward(x, w, b, stride, padding, dy, index_stride=None, keep_padding=False):
    """dx, dw, db of y = conv(x, w, b): each output's dy flows back along the products it came from."""
    N, C, H, W = x.shape
    O, _, kH, kW = w.shape
    Ho, Wo = dy.shape[2:]
    s = stride if index_stride is None else index_stride
    xp = _pad(x, padding)
    dxp = np.zeros_like(xp)
    dw = np.zeros_like(w)
    for u in range(kH):
        for v in range(kW):
            rows, cols = _window(u, s, Ho), _window(v, s, Wo)
            dw[:, :, u, v] = np.einsum("noij,ncij->oc", dy, xp[:, :, rows, cols])
            dxp[:, :, rows, cols] += np.einsum("noij,oc->ncij", dy, w[:, :, u, v])
    dx = dxp if keep_padding else dxp[:, :, padding:padding + H, padding:padding + W]
    return dx, dw, dy.sum(axis=(0, 2, 3))


def _flip(w):
    return w[:, :, ::-1, ::-1]


def _windows(x, k, s):
    """(N, C, H', W', k·k): every pooling window flattened in row-major order."""
    N, C, H, W = x.shape
    Ho, Wo = (H - k) // s + 1, (W - k) // s + 1
    return np.stack([x[:, :, _window(u, s, Ho), _window(v, s, Wo)] for u in range(k) for v in range(k)], axis=-1)


def _pool_forward(x, k, s, reduce=np.max):
    return reduce(_windows(x, k, s), axis=-1)


def _pool_backward(x, k, s, dy, route="first", accumulate=True):
    """dx of max pooling, window by window. route: "first" (the first maximum), "ties"
    (every maximum), "spread" (the whole window); accumulate=False plants overwriting
    where windows overlap."""
    N, C, Ho, Wo = dy.shape
    dx = np.zeros_like(x)
    for i in range(Ho):
        for j in range(Wo):
            window = x[:, :, s * i:s * i + k, s * j:s * j + k].reshape(N, C, k * k)
            if route == "first":
                share = np.zeros_like(window)
                np.put_along_axis(share, window.argmax(axis=-1)[..., None], 1.0, axis=-1)
            elif route == "ties":
                share = (window == window.max(axis=-1, keepdims=True)).astype(x.dtype)
            else:
                share = np.ones_like(window)
            share = share.reshape(N, C, k, k)
            target = dx[:, :, s * i:s * i + k, s * j:s * j + k]
            if accumulate:
                target += share * dy[:, :, i, j, None, None]
            else:
                np.copyto(target, share * dy[:, :, i, j, None, None], where=share > 0)
    return dx


def _sigmoid(z):
    return np.exp(-np.logaddexp(0.0, -z))


def _bce(z, t):
    return np.mean(np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z))))


def _bce_naive(z, t):
    with np.errstate(all="ignore"):
        p = 1.0 / (1.0 + np.exp(-z))
        return np.mean(-(t * np.log(p) + (1 - t) * np.log(1 - p)))


def _dice(p, t, smooth, axes=None):
    intersection, total = (p * t).sum(axis=axes), p.sum(axis=axes) + t.sum(axis=axes)
    return 1.0 - np.mean((2 * intersection + smooth) / (total + smooth))


def _dice_grad_p(p, t, smooth):
    """∂loss/∂p for loss = 1 − (2I + s)/(P + T + s): −[2t·(P+T+s) − (2I+s)] / (P+T+s)²."""
    intersection, total = (p * t).sum(), p.sum() + t.sum()
    return -(2 * t * (total + smooth) - (2 * intersection + smooth)) / (total + smooth) ** 2


def _dice_grad_per_image(p, t, smooth):
    N = p.shape[0]
    return np.stack([_dice_grad_p(p[n], t[n], smooth) for n in range(N)]) / N * p * (1 - p)


# ======================================================================== expected answers

def _engine_grads(op, arrays, upstream=None):
    """Gradients of op(*tensors) with respect to each array, by tinyseg's autograd."""
    tensors = [Tensor(a, requires_grad=True) for a in arrays]
    out = op(*tensors)
    out.backward(None if upstream is None else upstream)
    return tuple(np.asarray(t.grad) for t in tensors)


def _expected_conv_forward(x, w, b, stride, padding):
    return ref.conv2d(x, w, b, stride=stride, padding=padding).astype(x.dtype)


def _expected_conv_backward(x, w, b, stride, padding, dy):
    return _engine_grads(lambda x, w, b: F.conv2d(x, w, b, stride=stride, padding=padding), (x, w, b), dy)


def _expected_pool_forward(x, k, s):
    return ref.max_pool2d(x, k, stride=s).astype(x.dtype)


def _expected_pool_backward(x, k, s, dy):
    return _engine_grads(lambda x: F.max_pool2d(x, k, stride=s), (x,), dy)[0]


def _expected_bce_backward(z, t):
    return _engine_grads(lambda z: F.binary_cross_entropy_with_logits(z, t), (z,))[0]


def _expected_dice_backward(z, t, smooth):
    return _engine_grads(lambda z: F.dice_loss(z, t, smooth=smooth), (z,))[0]


# ======================================================================== the batteries

def _rng(seed):
    return np.random.default_rng(seed)


_CONV_SHAPES = [
    # description, N, C, H, W, O, kH, kW, stride, padding
    ("3×3 kernel, padding 1, batch 2", 2, 3, 5, 5, 4, 3, 3, 1, 1),
    ("no padding", 1, 2, 6, 6, 3, 3, 3, 1, 0),
    ("stride 2 with padding 1", 2, 3, 7, 7, 2, 3, 3, 2, 1),
    ("1×1 kernel", 2, 4, 5, 5, 3, 1, 1, 1, 0),
    ("non-square image and kernel", 1, 2, 6, 9, 2, 3, 2, 1, 1),
    ("stride 3, padding 2, non-square, rows left over", 2, 2, 8, 5, 3, 2, 4, 3, 2),
    ("kernel as large as the padded image (one output)", 1, 3, 3, 3, 2, 5, 5, 1, 1),
    ("a single pixel", 3, 1, 1, 1, 2, 1, 1, 1, 0),
    ("float32 input", 2, 3, 6, 5, 4, 3, 3, 2, 1),
]


def _conv_cases(backward):
    cases = []
    for seed, (text, N, C, H, W, O, kH, kW, s, p) in enumerate(_CONV_SHAPES):
        dtype = np.float32 if "float32" in text else np.float64
        rng = _rng(seed)
        x = rng.standard_normal((N, C, H, W)).astype(dtype)
        w = rng.standard_normal((O, C, kH, kW)).astype(dtype)
        b = rng.standard_normal(O).astype(dtype)
        args = (x, w, b, s, p)
        if backward:
            Ho, Wo = _out_size(H, kH, s, p), _out_size(W, kW, s, p)
            args += (rng.standard_normal((N, O, Ho, Wo)).astype(dtype),)
        cases.append(Case(text, args, dtype))
    return cases


_POOL_SHAPES = [
    # description, N, C, H, W, kernel, stride, integer values (ties)
    ("2×2 windows, stride 2", 2, 3, 6, 6, 2, 2, False),
    ("3×3 windows, stride 2 (overlapping), non-square, rows left over", 1, 2, 7, 5, 3, 2, False),
    ("2×2 windows, stride 1 (overlapping)", 2, 1, 5, 8, 2, 1, False),
    ("ties: values from {0, 1, 2}", 2, 2, 6, 6, 2, 2, True),
    ("ties with overlapping windows", 1, 2, 5, 5, 3, 1, True),
    ("1×1 windows, stride 2", 1, 2, 5, 4, 1, 2, False),
    ("one window covers the image", 2, 2, 3, 3, 3, 3, False),
    ("float32 input, stride 3 over 2×2 windows", 2, 2, 8, 7, 2, 3, False),
]


def _pool_cases(backward):
    cases = []
    for seed, (text, N, C, H, W, k, s, ties) in enumerate(_POOL_SHAPES):
        dtype = np.float32 if "float32" in text else np.float64
        rng = _rng(100 + seed)
        x = (rng.integers(0, 3, (N, C, H, W)) if ties else rng.standard_normal((N, C, H, W))).astype(dtype)
        args = (x, k, s)
        if backward:
            Ho, Wo = (H - k) // s + 1, (W - k) // s + 1
            args += (rng.standard_normal((N, C, Ho, Wo)).astype(dtype),)
        cases.append(Case(text, args, dtype))
    return cases


def _loss_cases(dice):
    specs = [("logits near 0, batch 2", (2, 1, 4, 4), 1.0),
             ("non-square map", (1, 1, 3, 7), 1.0),
             ("large logits (|z| up to 1000)", (2, 1, 3, 3), 1000.0),
             ("a single element", (1, 1, 1, 1), 1.0),
             ("every target 0", (2, 1, 4, 3), 3.0),
             ("float32 input", (2, 1, 5, 4), 2.0)]
    cases = []
    for seed, (text, shape, scale) in enumerate(specs):
        dtype = np.float32 if "float32" in text else np.float64
        rng = _rng(200 + seed)
        z = (scale * rng.standard_normal(shape)).astype(dtype)
        if "every target 0" in text:
            t = np.zeros(shape, dtype)
        elif dice or seed % 2 == 0:
            t = (rng.random(shape) > 0.5).astype(dtype)
        else:
            t = rng.random(shape).astype(dtype)          # soft targets: BCE takes any t in [0, 1]
        args = (z, t, 1.0 if seed % 2 == 0 else 0.5) if dice else (z, t)
        if dice and "large logits" in text:
            # σ(±1000) is exactly 0 or 1, where a Dice gradient is 0: keep them moderate.
            args = ((z / 100).astype(dtype),) + args[1:]
        cases.append(Case(text, args, dtype))
    return cases


# ======================================================================== the exercises

EXERCISES: dict[str, Exercise] = {}


def _register(exercise: Exercise) -> None:
    EXERCISES[exercise.name] = exercise


_CONV_EQUATION = ("y[n,o,i,j] = b[o] + Σ_c Σ_u Σ_v w[o,c,u,v] · x_pad[n,c, s·i+u, s·j+v]\n"
                  "x_pad = x with p zeros on every side; H' = ⌊(H + 2p − kH)/s⌋ + 1, W' likewise")

_register(Exercise(
    "conv2d_forward", "conv2d_forward(x, w, b, stride, padding) -> y",
    _CONV_EQUATION + "\nx (N, C, H, W), w (O, C, kH, kW), b (O,), stride and padding ints -> y (N, O, H', W')",
    ("x", "w", "b", "stride", "padding"), ("y",),
    _expected_conv_forward, lambda: _conv_cases(backward=False),
    [Mistake(HINT_FLIP, lambda x, w, b, s, p: _conv_forward(x, _flip(w), b, s, p)),
     Mistake(HINT_PAD_SUB, lambda x, w, b, s, p: _conv_forward(x - p, w, b, s, 0)),
     Mistake(HINT_PAD_SUB, lambda x, w, b, s, p: _conv_forward(x - p, w, b, s, p)),
     Mistake(HINT_CHANNELS, lambda x, w, b, s, p: _conv_forward(
         x, np.broadcast_to(w.sum(axis=1, keepdims=True), w.shape), b, s, p)),
     Mistake(HINT_STRIDE, lambda x, w, b, s, p: _conv_forward(x, w, b, 1, p)),
     Mistake(HINT_STRIDE, lambda x, w, b, s, p: _conv_forward(x, w, b, s, p, index_stride=1)),
     Mistake(HINT_PAD_IGNORED, lambda x, w, b, s, p: _conv_forward(x, w, b, s, 0)),
     Mistake(HINT_BIAS_MISSING, lambda x, w, b, s, p: _conv_forward(x, w, 0 * b, s, p))]))


def _with_db(db):
    return lambda x, w, b, s, p, dy: _conv_backward(x, w, b, s, p, dy)[:2] + (db(dy),)


_register(Exercise(
    "conv2d_backward", "conv2d_backward(x, w, b, stride, padding, dy) -> (dx, dw, db)",
    _CONV_EQUATION + "\ndy = ∂L/∂y (N, O, H', W') -> dx (N, C, H, W), dw (O, C, kH, kW), db (O,):\n"
    "dw[o,c,u,v] = Σ_n Σ_i Σ_j dy[n,o,i,j] · x_pad[n,c, s·i+u, s·j+v]\n"
    "dx_pad[n,c, s·i+u, s·j+v] += w[o,c,u,v] · dy[n,o,i,j]  (then drop the padding)\n"
    "db[o] = Σ_n Σ_i Σ_j dy[n,o,i,j]",
    ("x", "w", "b", "stride", "padding", "dy"), ("dx", "dw", "db"),
    _expected_conv_backward, lambda: _conv_cases(backward=True),
    [Mistake(HINT_DB_ONE_SAMPLE, _with_db(lambda dy: dy[0].sum(axis=(1, 2)))),
     Mistake(HINT_DB_PER_SAMPLE, _with_db(lambda dy: dy.sum(axis=(2, 3)))),
     Mistake(HINT_DB_MEAN, _with_db(lambda dy: dy.sum(axis=(0, 2, 3)) / dy.shape[0])),
     Mistake(HINT_DB_MEAN, _with_db(lambda dy: dy.mean(axis=(0, 2, 3)))),
     Mistake(HINT_FLIP_DX, lambda x, w, b, s, p, dy: (_conv_backward(x, _flip(w), b, s, p, dy)[0],)
             + _conv_backward(x, w, b, s, p, dy)[1:]),
     Mistake(HINT_FLIP, lambda x, w, b, s, p, dy: (lambda dx, dw, db: (dx, dw[:, :, ::-1, ::-1], db))(
         *_conv_backward(x, _flip(w), b, s, p, dy))),
     Mistake(HINT_STRIDE, lambda x, w, b, s, p, dy: _conv_backward(x, w, b, s, p, dy, index_stride=1)),
     Mistake(HINT_DX_PADDED, lambda x, w, b, s, p, dy: _conv_backward(x, w, b, s, p, dy, keep_padding=True)),
     Mistake(HINT_PAD_SUB, lambda x, w, b, s, p, dy: _conv_backward(x - p, w, b, s, p, dy))]))

_register(Exercise(
    "max_pool2d_forward", "max_pool2d_forward(x, kernel_size, stride) -> y",
    "y[n,c,i,j] = max_{0≤u,v<k} x[n,c, s·i+u, s·j+v]\n"
    "x (N, C, H, W), kernel_size k and stride s ints, no padding -> y (N, C, H', W'), H' = ⌊(H − k)/s⌋ + 1",
    ("x", "kernel_size", "stride"), ("y",),
    _expected_pool_forward, lambda: _pool_cases(backward=False),
    [Mistake(HINT_POOL_AVG, lambda x, k, s: _pool_forward(x, k, s, np.mean)),
     Mistake(HINT_POOL_STRIDE, lambda x, k, s: _pool_forward(x, k, k)),
     Mistake(HINT_POOL_STRIDE, lambda x, k, s: _pool_forward(x, k, 1))]))

_register(Exercise(
    "max_pool2d_backward", "max_pool2d_backward(x, kernel_size, stride, dy) -> dx",
    "y[n,c,i,j] = max_{0≤u,v<k} x[n,c, s·i+u, s·j+v]; dy (N, C, H', W') -> dx (N, C, H, W):\n"
    "dx[n,c, s·i+u*, s·j+v*] += dy[n,c,i,j], (u*, v*) = the first maximum of window (i, j) in row-major order",
    ("x", "kernel_size", "stride", "dy"), ("dx",),
    _expected_pool_backward, lambda: _pool_cases(backward=True),
    [Mistake(HINT_POOL_TIES, lambda x, k, s, dy: _pool_backward(x, k, s, dy, route="ties")),
     Mistake(HINT_POOL_SPREAD, lambda x, k, s, dy: _pool_backward(x, k, s, dy, route="spread")),
     Mistake(HINT_POOL_SPREAD, lambda x, k, s, dy: _pool_backward(x, k, s, dy, route="spread") / k ** 2),
     Mistake(HINT_POOL_OVERWRITE, lambda x, k, s, dy: _pool_backward(x, k, s, dy, accumulate=False)),
     Mistake(HINT_POOL_STRIDE, lambda x, k, s, dy: _pool_backward(x, k, 1, dy))]))

_BCE_EQUATION = ("loss = (1/M) Σ −[t·log σ(z) + (1 − t)·log(1 − σ(z))] = (1/M) Σ [max(z,0) − z·t + log(1 + e^−|z|)]\n"
                 "z, t of one shape (e.g. (N, 1, H, W)), t ∈ [0, 1], M = z.size")

_register(Exercise(
    "bce_with_logits_forward", "bce_with_logits_forward(z, t) -> loss", _BCE_EQUATION + " -> a number",
    ("z", "t"), ("loss",),
    lambda z, t: ref.binary_cross_entropy_with_logits(z, t), lambda: _loss_cases(dice=False),
    [Mistake(HINT_BCE_UNSTABLE, _bce_naive),
     Mistake(HINT_BCE_SUM, lambda z, t: _bce(z, t) * z.size),
     Mistake(HINT_BCE_SWAP, lambda z, t: _bce(z, 1 - t))],
    scalar=True))

_register(Exercise(
    "bce_with_logits_backward", "bce_with_logits_backward(z, t) -> dz", _BCE_EQUATION + "\n-> dz = ∂loss/∂z = (σ(z) − t)/M",
    ("z", "t"), ("dz",),
    _expected_bce_backward, lambda: _loss_cases(dice=False),
    [Mistake(HINT_BCE_GRAD_SUM, lambda z, t: _sigmoid(z) - t),
     Mistake(HINT_BCE_GRAD_SIGN, lambda z, t: (t - _sigmoid(z)) / z.size),
     Mistake(HINT_BCE_GRAD_SIGMOID, lambda z, t: (_sigmoid(z) - t) * _sigmoid(z) * (1 - _sigmoid(z)) / z.size)]))

_DICE_EQUATION = ("p = σ(z); loss = 1 − (2 Σ p·t + smooth) / (Σ p + Σ t + smooth), sums over every element\n"
                  "z, t of one shape (e.g. (N, 1, H, W)), t ∈ {0, 1}, smooth > 0")

_register(Exercise(
    "dice_forward", "dice_forward(z, t, smooth) -> loss", _DICE_EQUATION + " -> a number",
    ("z", "t", "smooth"), ("loss",),
    lambda z, t, smooth: ref.dice_loss(z, t, smooth=smooth), lambda: _loss_cases(dice=True),
    [Mistake(HINT_DICE_NO_SIGMOID, lambda z, t, smooth: _dice(z, t, smooth)),
     Mistake(HINT_DICE_PER_IMAGE, lambda z, t, smooth: _dice(_sigmoid(z), t, smooth, axes=(1, 2, 3))),
     Mistake(HINT_DICE_SIGN, lambda z, t, smooth: 1 - _dice(_sigmoid(z), t, smooth))],
    scalar=True))

_register(Exercise(
    "dice_backward", "dice_backward(z, t, smooth) -> dz",
    _DICE_EQUATION + "\n-> dz = ∂loss/∂z = ∂loss/∂p · σ(z)(1 − σ(z)), with I = Σ p·t, S = Σ p + Σ t + smooth:\n"
    "∂loss/∂p = −[2t·S − (2I + smooth)] / S²",
    ("z", "t", "smooth"), ("dz",),
    _expected_dice_backward, lambda: _loss_cases(dice=True),
    [Mistake(HINT_DICE_NO_CHAIN, lambda z, t, smooth: _dice_grad_p(_sigmoid(z), t, smooth)),
     Mistake(HINT_DICE_SIGN, lambda z, t, smooth: -_dice_grad_p(_sigmoid(z), t, smooth)
             * _sigmoid(z) * (1 - _sigmoid(z))),
     Mistake(HINT_DICE_PER_IMAGE, lambda z, t, smooth: _dice_grad_per_image(_sigmoid(z), t, smooth))]))


# ======================================================================== the checker

def describe(name: str) -> str:
    """The exercise's signature, equation and shapes."""
    exercise = _lookup(name)
    return f"{exercise.signature}\n{exercise.equation}"


def check(name: str, fn: Callable) -> bool:
    """True when ``fn`` solves exercise ``name`` on every case of its battery; otherwise
    ExerciseError for the first case it gets wrong (see the module docstring)."""
    exercise = _lookup(name)
    if not callable(fn):
        raise TypeError(f"check: argument 'fn' expected a function {exercise.signature}, got {fn!r}")
    cases = exercise.cases()
    for number, case in enumerate(cases, 1):
        _check_case(exercise, fn, case, f"case {number} of {len(cases)}")
    return True


def _lookup(name):
    if name not in EXERCISES:
        raise KeyError(f"no exercise named {name!r}; expected one of {', '.join(EXERCISES)}")
    return EXERCISES[name]


def _describe_case(exercise, case, label):
    parts = []
    for arg_name, value in zip(exercise.arg_names, case.args):
        parts.append(f"{arg_name} {tuple(value.shape)}" if isinstance(value, np.ndarray) else f"{arg_name}={value}")
    return f"{label}, \"{case.description}\": {', '.join(parts)}, {np.dtype(case.dtype).name}"


def _as_outputs(exercise, result, where):
    """The result as a tuple of arrays, one per output name, or an ExerciseError."""
    names = exercise.output_names
    if len(names) > 1:
        if not isinstance(result, (tuple, list)) or len(result) != len(names):
            raise ExerciseError(f"{exercise.name}: expected a tuple ({', '.join(names)}) on {where}, got "
                                f"{_kind(result)}")
    else:
        result = (result,)
    outputs = []
    for name, value in zip(names, result):
        if exercise.scalar:
            if isinstance(value, (bool, np.bool_)) or not (isinstance(value, (int, float, np.number))
                                                         or (isinstance(value, np.ndarray) and value.size == 1)):
                raise ExerciseError(f"{exercise.name}: expected {name} to be a number on {where}, got "
                                    f"{_kind(value)}")
            value = np.asarray(value, dtype=np.float64).reshape(())
        elif not isinstance(value, np.ndarray):
            raise ExerciseError(f"{exercise.name}: expected {name} to be a NumPy array on {where}, got "
                                f"{_kind(value)}")
        outputs.append(value)
    return tuple(outputs)


def _kind(value):
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)} items"
    return f"{type(value).__name__} {value!r}"[:120]


def _tolerances(dtype):
    return (1e-4, 1e-5) if np.dtype(dtype) == np.float32 else (1e-7, 1e-9)


def _close(got, expected, dtype):
    rtol, atol = _tolerances(dtype)
    scale = max(1.0, float(np.max(np.abs(expected), initial=0.0))) if np.all(np.isfinite(expected)) else 1.0
    return np.isclose(got, expected, rtol=rtol, atol=atol * scale, equal_nan=True)


def _check_case(exercise, fn, case, label):
    where = _describe_case(exercise, case, label)
    args = tuple(a.copy() if isinstance(a, np.ndarray) else a for a in case.args)
    try:
        result = fn(*args)
    except NotImplementedError as error:
        raise ExerciseError(f"{exercise.name}: not implemented yet (fn raised NotImplementedError on {where}); "
                            f"write {exercise.signature}") from error
    except Exception as error:
        raise ExerciseError(f"{exercise.name}: fn raised {type(error).__name__}: {error} on {where}") from error
    for arg_name, before, after in zip(exercise.arg_names, case.args, args):
        if isinstance(before, np.ndarray) and not np.array_equal(before, after, equal_nan=True):
            raise ExerciseError(f"{exercise.name}: fn changed its input {arg_name} in place on {where}; "
                                f"work on a copy")
    outputs = _as_outputs(exercise, result, where)
    expected = exercise.expected(*case.args)
    expected = expected if isinstance(expected, tuple) else (expected,)
    for k, (name, got, want) in enumerate(zip(exercise.output_names, outputs, expected)):
        want = np.asarray(want)
        if got.shape != want.shape:
            problem = f"wrong shape of {name}: expected {want.shape}, got {got.shape}"
        elif not exercise.scalar and got.dtype != np.dtype(case.dtype):
            raise ExerciseError(f"{exercise.name}: wrong dtype of {name} on {where}: expected "
                                f"{np.dtype(case.dtype).name} (the inputs' dtype), got {got.dtype.name}. "
                                f"Hint: create arrays with dtype=x.dtype (np.zeros defaults to float64)")
        else:
            close = _close(got, want, case.dtype)
            if close.all():
                continue
            index = tuple(int(i) for i in np.argwhere(~close)[0])
            position = f"{name}[{', '.join(map(str, index))}]" if index else name
            problem = (f"wrong value: first wrong element {position}: expected {want[index] + 0.0:.10g}, "
                       f"got {got[index] + 0.0:.10g} ({int((~close).sum())} of {close.size} elements wrong)")
        hints = _recognise(exercise, case, k, got)
        text = f"{exercise.name}: {problem} on {where}"
        if hints:
            text += "".join(f"\n  hint: {hint}" for hint in hints)
        raise ExerciseError(text)


def _recognise(exercise, case, k, got):
    """Hints of the planted mistakes whose output k equals ``got`` on this case."""
    hints = []
    for mistake in exercise.mistakes:
        try:
            with np.errstate(all="ignore"):
                planted = mistake.planted(*case.args)
        except Exception:       # a mistake that cannot even run on this case is not the one made
            continue
        planted = planted if isinstance(planted, tuple) else (planted,)
        candidate = np.asarray(planted[k])
        if candidate.shape == got.shape and _close(got, candidate.astype(np.float64), case.dtype).all():
            if mistake.hint not in hints:
                hints.append(mistake.hint)
    return hints
