"""The gradient checker itself: it passes correct backwards and catches wrong ones."""
import numpy as np
import pytest

import tinyseg as ts
from tinyseg.functional.math import unbroadcast


def leaf(shape, seed=0):
    return ts.Tensor(np.random.default_rng(seed).random(shape) + 0.5, requires_grad=True)


@pytest.mark.parametrize("fn, shapes", [
    (lambda a, b: a * b + a / b, [(3, 4), (4,)]),
    (lambda a, b: (a - b + 2).exp().log().sqrt(), [(2, 3), (2, 1)]),
    (lambda a: a.abs() ** 3, [(5,)]),
    (lambda a: a.clip(0.7, 1.2), [(6,)]),
    (lambda a: a.sum(axis=0) * a.mean(), [(3, 4)]),
    (lambda a: a.max(axis=1, keepdims=True), [(3, 4)]),
    (lambda a, b: a @ b, [(2, 3, 4), (4, 2)]),
    (lambda a: a.T.reshape(12)[::3], [(3, 4)]),
    (lambda a: a[[0, 0, 2], 1:], [(3, 4)]),
    (lambda a, b: ts.functional.maximum(a, b), [(4,), (4,)]),
])
def test_math_ops_pass_gradcheck(fn, shapes):
    inputs = [leaf(s, seed=i) for i, s in enumerate(shapes)]
    assert ts.gradcheck(fn, inputs)


class WrongMul(ts.Function):
    """A deliberately wrong backward: forgets the factor b for the first input."""

    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, g):
        return unbroadcast(g, self.a.shape), unbroadcast(g * self.a, self.b.shape)


class CancellingSquare(ts.Function):
    """y = x², with a backward whose errors cancel in sum(y): only one-hot rows catch it."""

    def forward(self, x):
        self.x = x
        return x * x

    def backward(self, g):
        wrong = 2 * self.x * g
        wrong[0] += g[1]
        wrong[1] -= g[1]
        return wrong


class NonDeterministic(ts.Function):
    def forward(self, x):
        return 2 * x

    def backward(self, g):
        return 2 * g + np.random.default_rng().normal(0, 1e-9, g.shape) * (g != 0)


class NonZeroForZero(ts.Function):
    def forward(self, x):
        return 2 * x

    def backward(self, g):
        return 2 * g + 1e-3


class WrongShape(ts.Function):
    def forward(self, x):
        return x.sum(axis=0)

    def backward(self, g):
        return g


def test_catches_a_wrong_backward_and_names_input_and_element():
    a, b = leaf((2, 3)), leaf((2, 3), seed=1)
    with pytest.raises(ts.GradcheckError, match=r"input 0, element \(\d, \d\), output element \d+: analytic .* numerical"):
        ts.gradcheck(lambda a, b: WrongMul()(a, b), [a, b])


def test_catches_errors_that_cancel_in_a_sum():
    x = leaf((3,))
    # The sum of the wrong rows equals the sum of the right ones ...
    y = CancellingSquare()(x)
    y.sum().backward()
    np.testing.assert_allclose(x.grad.sum(), (2 * x.data).sum())
    # ... but the full Jacobian does not.
    with pytest.raises(ts.GradcheckError):
        ts.gradcheck(lambda x: CancellingSquare()(x), [leaf((3,))])


def test_catches_nondeterministic_backward():
    with pytest.raises(ts.GradcheckError, match="not deterministic"):
        ts.gradcheck(lambda x: NonDeterministic()(x), [leaf((4,))])


def test_catches_nonzero_gradient_for_zero_upstream():
    with pytest.raises(ts.GradcheckError):
        ts.gradcheck(lambda x: NonZeroForZero()(x), [leaf((4,))])


def test_catches_a_gradient_of_the_wrong_shape():
    with pytest.raises((ts.GradcheckError, RuntimeError), match="shape"):
        ts.gradcheck(lambda x: WrongShape()(x), [leaf((3, 2))])


@pytest.mark.filterwarnings("ignore:invalid value encountered in sqrt:RuntimeWarning")
def test_nan_gradients_fail():
    with pytest.raises(ts.GradcheckError):
        ts.gradcheck(lambda x: (x - 10).sqrt(), [leaf((2,))])


def test_refuses_float32_inputs():
    x = ts.Tensor(np.ones(3, dtype=np.float32), requires_grad=True)
    with pytest.raises(TypeError, match="float64"):
        ts.gradcheck(lambda x: x * 2, [x])


def test_needs_an_input_that_requires_grad():
    with pytest.raises(ValueError, match="requires_grad"):
        ts.gradcheck(lambda x: x * 2, [ts.Tensor(np.ones(3))])


def test_does_not_touch_the_callers_tensors():
    x = leaf((3,))
    before = x.data.copy()
    ts.gradcheck(lambda x: x * x, [x])
    np.testing.assert_array_equal(x.data, before)
    assert x.grad is None


def test_the_gradcheck_table_passes_for_every_op(capsys):
    from tinyseg.cli import main
    assert main(["gradcheck"]) == 0
    out = capsys.readouterr().out
    for op in ("conv2d", "conv_transpose2d", "max_pool2d", "avg_pool2d", "upsample", "batch_norm",
               "bce_with_logits", "cross_entropy", "dice_loss", "softmax", "pad", "matmul"):
        assert op in out
    assert "FAIL" not in out
