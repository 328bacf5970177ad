"""``tinyseg gradcheck``: every op, in several configurations, against finite differences.

Prints one row per (op, configuration): the largest absolute and relative differences
between the analytic Jacobian (backward with one-hot upstream gradients) and the
central-difference one, and whether ``ts.gradcheck`` passes (which also checks
determinism, zero upstream → zero gradient, and gradient shapes).
"""
from __future__ import annotations

import time

import numpy as np

from . import functional as F
from .gradcheck import GradcheckError, compare, gradcheck, jacobians
from .random import manual_seed
from .tensor import Tensor


def _cases():
    rng = np.random.default_rng(0)

    def t(*shape, low=-1.0, high=1.0, grad=True):
        return Tensor(rng.uniform(low, high, shape), requires_grad=grad)

    def distinct(*shape):
        # A permutation, so max-pooling never sees ties (a tie has no derivative).
        return Tensor(rng.permutation(int(np.prod(shape))).reshape(shape) / 7.0, requires_grad=True)

    labels = rng.integers(0, 3, (2, 3, 3))
    binary = rng.integers(0, 2, (2, 1, 3, 3)).astype(np.float64)

    def running_stats():
        return np.zeros(3), np.ones(3)

    def dropout(x):
        manual_seed(0)   # the same mask on every call, so finite differences make sense
        return F.dropout(x, 0.3, training=True)

    return [
        ("add", "broadcast (2,3)+(3,)", lambda a, b: a + b, [t(2, 3), t(3)]),
        ("sub", "broadcast (2,1)-(2,3)", lambda a, b: a - b, [t(2, 1), t(2, 3)]),
        ("mul", "broadcast", lambda a, b: a * b, [t(2, 3), t(1, 3)]),
        ("div", "broadcast", lambda a, b: a / b, [t(2, 3), t(3, low=0.5, high=2)]),
        ("neg", "", lambda a: -a, [t(4)]),
        ("pow", "x^3, x^-1.5", lambda a: a ** 3 + a ** -1.5, [t(4, low=0.5, high=2)]),
        ("exp", "", F.exp, [t(4)]),
        ("log", "", F.log, [t(4, low=0.5, high=2)]),
        ("sqrt", "", F.sqrt, [t(4, low=0.5, high=2)]),
        ("abs", "", F.abs, [t(5)]),
        ("maximum", "elementwise", F.maximum, [t(5), t(5)]),
        ("clip", "[-0.5, 0.5]", lambda a: F.clip(a, -0.5, 0.5), [t(6)]),
        ("sum", "axis=(0,2)", lambda a: F.sum(a, axis=(0, 2)), [t(2, 3, 2)]),
        ("mean", "axis=1 keepdims", lambda a: F.mean(a, axis=1, keepdims=True), [t(2, 3, 2)]),
        ("max", "axis=1", lambda a: F.max(a, axis=1), [distinct(2, 3, 2)]),
        ("reshape", "", lambda a: F.reshape(a, (3, 4)), [t(2, 6)]),
        ("transpose", "(1,2,0)", lambda a: F.transpose(a, (1, 2, 0)), [t(2, 3, 2)]),
        ("slicing", "[1:, ::2]", lambda a: a[1:, ::2], [t(3, 5)]),
        ("matmul", "batched", F.matmul, [t(2, 2, 3), t(3, 4)]),
        ("pad", "constant (1,2,0,1)", lambda a: F.pad(a, (1, 2, 0, 1)), [t(1, 2, 3, 3)]),
        ("pad", "reflect 2", lambda a: F.pad(a, 2, mode="reflect"), [t(1, 1, 4, 4)]),
        ("pad", "replicate 1", lambda a: F.pad(a, 1, mode="replicate"), [t(1, 1, 3, 4)]),
        ("conv2d", "3x3 pad 1 bias", lambda x, w, b: F.conv2d(x, w, b, padding=1), [t(2, 2, 5, 5), t(3, 2, 3, 3), t(3)]),
        ("conv2d", "stride 2, 7x6 input", lambda x, w: F.conv2d(x, w, stride=2), [t(1, 2, 7, 6), t(2, 2, 3, 3)]),
        ("conv2d", "dilation 2 pad 2", lambda x, w: F.conv2d(x, w, padding=2, dilation=2), [t(1, 2, 5, 5), t(2, 2, 3, 3)]),
        ("conv2d", "stride 3 (rows unreached)", lambda x, w: F.conv2d(x, w, stride=3), [t(1, 1, 8, 8), t(2, 1, 2, 2)]),
        ("conv2d", "same, even 2x4 kernel", lambda x, w: F.conv2d(x, w, padding="same"), [t(1, 2, 4, 5), t(2, 2, 2, 4)]),
        ("conv_transpose2d", "2x2 stride 2 (U-Net up)", lambda x, w, b: F.conv_transpose2d(x, w, b, stride=2),
         [t(1, 3, 3, 3), t(3, 2, 2, 2), t(2)]),
        ("conv_transpose2d", "3x3 s2 p1 out_pad 1", lambda x, w: F.conv_transpose2d(x, w, stride=2, padding=1, output_padding=1),
         [t(1, 2, 3, 4), t(2, 2, 3, 3)]),
        ("conv_transpose2d", "dilation 2", lambda x, w: F.conv_transpose2d(x, w, dilation=2), [t(1, 2, 3, 3), t(2, 1, 3, 3)]),
        ("max_pool2d", "2x2 (U-Net down)", lambda x: F.max_pool2d(x, 2), [distinct(2, 2, 4, 6)]),
        ("max_pool2d", "3x3 stride 2 pad 1", lambda x: F.max_pool2d(x, 3, stride=2, padding=1), [distinct(1, 2, 5, 5)]),
        ("avg_pool2d", "3x3 stride 2 pad 1", lambda x: F.avg_pool2d(x, 3, stride=2, padding=1), [t(1, 2, 5, 5)]),
        ("upsample", "nearest x2", lambda x: F.upsample(x, 2), [t(1, 2, 3, 3)]),
        ("upsample", "nearest x(2,3)", lambda x: F.upsample(x, (2, 3)), [t(1, 1, 2, 3)]),
        ("upsample", "bilinear x2", lambda x: F.upsample(x, 2, mode="bilinear"), [t(1, 2, 3, 4)]),
        ("upsample", "bilinear x3 align_corners", lambda x: F.upsample(x, 3, mode="bilinear", align_corners=True),
         [t(1, 1, 3, 3)]),
        ("concat", "axis=1", lambda a, b: F.concat([a, b], axis=1), [t(1, 2, 3, 3), t(1, 1, 3, 3)]),
        ("center_crop", "5x6 -> 2x3", lambda a: F.center_crop(a, (2, 3)), [t(1, 2, 5, 6)]),
        ("relu", "", F.relu, [t(8)]),
        ("leaky_relu", "slope 0.1", lambda a: F.leaky_relu(a, 0.1), [t(8)]),
        ("sigmoid", "", F.sigmoid, [t(6, low=-4, high=4)]),
        ("tanh", "", F.tanh, [t(6, low=-3, high=3)]),
        ("softmax", "axis=1", lambda a: F.softmax(a, axis=1), [t(2, 3, 2, 2)]),
        ("log_softmax", "axis=1", lambda a: F.log_softmax(a, axis=1), [t(2, 3, 2, 2)]),
        ("batch_norm", "training, affine", lambda x, g, b: F.batch_norm(x, *running_stats(), g, b, training=True),
         [t(3, 3, 2, 2), t(3, low=0.5, high=1.5), t(3)]),
        ("batch_norm", "eval, affine", lambda x, g, b: F.batch_norm(x, np.full(3, 0.1), np.full(3, 2.0), g, b, training=False),
         [t(2, 3, 2, 2), t(3, low=0.5, high=1.5), t(3)]),
        ("instance_norm", "affine", lambda x, g, b: F.instance_norm(x, g, b),
         [t(2, 3, 2, 3), t(3, low=0.5, high=1.5), t(3)]),
        ("dropout", "p=0.3, training", dropout, [t(3, 4)]),
        ("bce_with_logits", "weight + pos_weight",
         lambda z: F.binary_cross_entropy_with_logits(z, binary, weight=np.linspace(0.5, 1.5, 3).reshape(1, 1, 1, 3),
                                                      pos_weight=np.array([2.0]).reshape(1, 1, 1)),
         [t(2, 1, 3, 3, low=-4, high=4)]),
        ("cross_entropy", "class weights, ignore_index", lambda z: F.cross_entropy(
            z, labels, weight=np.array([0.5, 1.0, 2.0]), ignore_index=1),
         [t(2, 3, 3, 3, low=-3, high=3)]),
        ("dice_loss", "1 channel (sigmoid)", lambda z: F.dice_loss(z, binary), [t(2, 1, 3, 3, low=-3, high=3)]),
        ("dice_loss", "3 classes (softmax)", lambda z: F.dice_loss(z, labels), [t(2, 3, 3, 3, low=-3, high=3)]),
        ("mse_loss", "", lambda a, b: F.mse_loss(a, b), [t(2, 3), t(2, 3)]),
    ]


def run(print_fn=print) -> bool:
    """Check every case, print the table, and return True when all pass."""
    rows, all_passed = [], True
    start = time.perf_counter()
    for op, config, fn, inputs in _cases():
        try:
            checked, analytic, numerical = jacobians(fn, inputs)
            report = compare(inputs, checked, analytic, numerical, atol=1e-5, rtol=1e-3)
            gradcheck(fn, inputs)
            status = "pass"
        except (GradcheckError, NotImplementedError, ValueError, TypeError) as exc:
            status, all_passed = f"FAIL: {str(exc)[:60]}", False
            report = None
        abs_err = f"{report.max_abs_error:.2e}" if report else "-"
        rel_err = f"{report.max_rel_error:.2e}" if report else "-"
        rows.append((op, config, abs_err, rel_err, status))

    widths = [max(len(r[i]) for r in rows + [("op", "configuration", "max abs err", "max rel err", "result")])
              for i in range(5)]
    line = "  ".join("{:<%d}" % w for w in widths)
    print_fn(line.format("op", "configuration", "max abs err", "max rel err", "result"))
    print_fn(line.format(*("-" * w for w in widths)))
    for row in rows:
        print_fn(line.format(*row))
    passed = sum(r[4] == "pass" for r in rows)
    print_fn(f"\n{passed}/{len(rows)} passed (float64, central differences eps=1e-6, full Jacobians, "
             f"atol=1e-5, rtol=1e-3) in {time.perf_counter() - start:.1f} s")
    return all_passed
