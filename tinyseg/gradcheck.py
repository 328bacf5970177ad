"""A finite-difference gradient checker, in the manner of ``torch.autograd.gradcheck``.

For an op y = f(x₁, …, x_k) it builds, for every input that requires grad, the full
Jacobian ∂y/∂x twice:

* numerically, one column per input element, with central differences
      ∂y/∂x_j ≈ (f(x + ε e_j) − f(x − ε e_j)) / (2ε)      (error O(ε²));
* analytically, one row per output element, by calling backward with a one-hot
  upstream gradient e_i (so every row of the Jacobian is seen: checking only
  ``sum(f(x))`` would miss a wrong backward whose errors cancel in the sum, e.g.
  ``sum(batch_norm(x))`` does not depend on x at all).

Both must agree to ``atol + rtol·|numerical|`` in float64. It also checks that the
gradients have their inputs' shapes, that backward is deterministic (two runs with the
same random upstream gradient give identical results), and that a zero upstream
gradient gives zero gradients.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .tensor import Tensor


class GradcheckError(AssertionError):
    """The analytic and numerical gradients of an op disagree."""


@dataclass
class GradcheckReport:
    max_abs_error: float
    max_rel_error: float
    worst: str           # where the largest violation is, in words


def _fresh_inputs(inputs):
    """Copies of the inputs as new leaves, so runs do not share graphs or .grad."""
    return [Tensor(t.data.copy(), requires_grad=t.requires_grad) if isinstance(t, Tensor) else t
            for t in inputs]


def _output(fn, inputs) -> Tensor:
    out = fn(*inputs)
    if not isinstance(out, Tensor):
        raise TypeError(f"gradcheck: fn must return a single Tensor, got {type(out).__name__}")
    return out


def _backward_grads(fn, inputs, upstream, checked):
    leaves = _fresh_inputs(inputs)
    out = _output(fn, leaves)
    out.backward(upstream)
    grads = []
    for i in checked:
        g = leaves[i].grad
        if g is not None and g.shape != leaves[i].shape:
            raise GradcheckError(f"gradcheck: gradient of input {i} has shape {g.shape}, "
                                 f"expected the input's shape {leaves[i].shape}")
        grads.append(np.zeros(leaves[i].shape) if g is None else np.asarray(g, dtype=np.float64))
    return grads


def jacobians(fn, inputs, eps=1e-6):
    """(analytic, numerical) Jacobians, one (out.size, x.size) matrix per checked input."""
    checked = [i for i, t in enumerate(inputs) if isinstance(t, Tensor) and t.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input has requires_grad=True, so there is nothing to check")
    for i in checked:
        if inputs[i].dtype != np.float64:
            raise TypeError(f"gradcheck: input {i} is {inputs[i].dtype}; finite differences need float64 "
                            f"(float32 rounding, ~1e-7, divided by eps swamps the comparison)")
    out = _output(fn, _fresh_inputs(inputs))
    n_out = out.size

    analytic = [np.zeros((n_out, inputs[i].size)) for i in checked]
    for row in range(n_out):
        one_hot = np.zeros(n_out)
        one_hot[row] = 1.0
        for J, g in zip(analytic, _backward_grads(fn, inputs, one_hot.reshape(out.shape), checked)):
            J[row] = g.ravel()

    numerical = []
    for i in checked:
        x = inputs[i].data
        J = np.zeros((n_out, x.size))
        for col in range(x.size):
            values = []
            for step in (eps, -eps):
                shifted = x.copy()
                shifted.ravel()[col] += step   # .copy() is C-contiguous, so ravel() is a view
                args = list(inputs)
                args[i] = Tensor(shifted)
                values.append(np.asarray(_output(fn, args).data, dtype=np.float64).ravel())
            J[:, col] = (values[0] - values[1]) / (2 * eps)
        numerical.append(J)
    return checked, analytic, numerical


def compare(inputs, checked, analytic, numerical, atol, rtol) -> GradcheckReport:
    worst_abs = worst_rel = 0.0
    worst, worst_excess = "", -np.inf
    for i, A, N in zip(checked, analytic, numerical):
        err = np.abs(A - N)
        err[~(np.isfinite(A) & np.isfinite(N))] = np.inf   # a NaN must fail, not compare as False
        worst_abs = max(worst_abs, float(err.max(initial=0.0)))
        worst_rel = max(worst_rel, float((err / np.maximum(np.abs(N), 1e-12)).max(initial=0.0)))
        excess = err - (atol + rtol * np.abs(N))
        if excess.size and excess.max() > worst_excess:
            row, col = np.unravel_index(int(excess.argmax()), excess.shape)
            element = np.unravel_index(col, inputs[i].shape)
            worst_excess = float(excess.max())
            worst = (f"input {i}, element {tuple(int(e) for e in element)}, output element {int(row)}: "
                     f"analytic {A[row, col]:.10g}, numerical {N[row, col]:.10g}")
    return GradcheckReport(worst_abs, worst_rel, worst if worst_excess > 0 else "")



def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3) -> bool:
    """Check the backward of ``fn`` at ``inputs`` against finite differences.

    ``fn(*inputs)`` must return one Tensor; inputs with ``requires_grad=True`` are checked
    (all must be float64), others are passed through unchanged. Returns True, or raises
    ``GradcheckError`` naming the input, the element and both values.
    """
    inputs = list(inputs)
    checked, analytic, numerical = jacobians(fn, inputs, eps)
    report = compare(inputs, checked, analytic, numerical, atol, rtol)
    if report.worst:
        raise GradcheckError(f"gradcheck: backward disagrees with finite differences at {report.worst} "
                             f"(atol={atol}, rtol={rtol})")

    out_shape = _output(fn, _fresh_inputs(inputs)).shape
    upstream = np.random.default_rng(0).standard_normal(out_shape)
    first = _backward_grads(fn, inputs, upstream, checked)
    second = _backward_grads(fn, inputs, upstream, checked)
    for i, a, b in zip(checked, first, second):
        if not np.array_equal(a, b):
            raise GradcheckError(f"gradcheck: backward is not deterministic for input {i}: two runs differ by "
                                 f"up to {np.abs(a - b).max():.3g}")
    for i, g in zip(checked, _backward_grads(fn, inputs, np.zeros(out_shape), checked)):
        if np.any(g != 0):
            raise GradcheckError(f"gradcheck: a zero upstream gradient gave a non-zero gradient for input {i} "
                                 f"(max |g| = {np.abs(g).max():.3g})")
    return True
