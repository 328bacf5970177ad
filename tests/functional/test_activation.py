"""Activations: relu, leaky_relu, sigmoid, tanh, softmax, log_softmax.

For each op: forward against tinyseg.reference (or the NumPy definition where the
reference has none), gradcheck, hypothesis-drawn shapes and values, non-contiguous
inputs, PyTorch forward and backward (float64 and float32), and bad input.
"""
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tinyseg as ts
import tinyseg.functional as F
from tinyseg import reference as ref


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def leaf(array):
    return ts.Tensor(np.array(array), requires_grad=True)


# name -> (tinyseg op, float64 definition, torch op given the torch module)
OPS = {
    "relu": (F.relu, lambda x: np.maximum(x, 0.0), lambda torch: torch.relu),
    "leaky_relu": (lambda x: F.leaky_relu(x, 0.2), lambda x: np.where(x > 0, x, 0.2 * x),
                   lambda torch: lambda x: torch.nn.functional.leaky_relu(x, 0.2)),
    "sigmoid": (F.sigmoid, ref.sigmoid, lambda torch: torch.sigmoid),
    "tanh": (F.tanh, np.tanh, lambda torch: torch.tanh),
    "softmax": (lambda x: F.softmax(x, axis=1), lambda x: ref.softmax(x, axis=1),
                lambda torch: lambda x: torch.softmax(x, dim=1)),
    "log_softmax": (lambda x: F.log_softmax(x, axis=1), lambda x: ref.log_softmax(x, axis=1),
                    lambda torch: lambda x: torch.log_softmax(x, dim=1)),
}
NAMES = list(OPS)


def random_input(shape, seed=0, dtype=np.float64, scale=2.0):
    """Random values kept at least 1e-3 away from 0, where relu's derivative jumps."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-scale, scale, shape)
    x[np.abs(x) < 1e-3] = 0.5
    return x.astype(dtype)


# ----- (a) forward against the definitions

@pytest.mark.parametrize("name", NAMES)
def test_forward_matches_reference(name):
    op, definition, _ = OPS[name]
    x = random_input((2, 3, 4, 5))
    y = op(ts.Tensor(x))
    assert y.dtype == np.float64 and y.shape == x.shape
    np.testing.assert_allclose(y.data, definition(x), rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_float32_stays_float32(name):
    op, definition, _ = OPS[name]
    x = random_input((2, 3, 4), dtype=np.float32)
    y = op(ts.Tensor(x, requires_grad=True))
    assert y.dtype == np.float32
    y.backward(np.ones(y.shape, dtype=np.float32))
    np.testing.assert_allclose(y.data, definition(x.astype(np.float64)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("axis", [0, 1, -1, 2])
def test_softmax_axes_match_reference(axis):
    x = random_input((3, 4, 2))
    np.testing.assert_allclose(F.softmax(x, axis=axis).data, ref.softmax(x, axis=axis), rtol=0, atol=1e-12)
    np.testing.assert_allclose(F.log_softmax(x, axis=axis).data, ref.log_softmax(x, axis=axis), rtol=0, atol=1e-12)


# ----- (b) gradcheck

@pytest.mark.parametrize("name", NAMES)
def test_gradcheck(name):
    assert ts.gradcheck(OPS[name][0], [leaf(random_input((2, 3, 2, 2), seed=1))])


@pytest.mark.parametrize("axis", [0, -1])
def test_gradcheck_softmax_other_axes(axis):
    x = leaf(random_input((3, 4), seed=2))
    assert ts.gradcheck(lambda a: F.softmax(a, axis=axis), [x])
    assert ts.gradcheck(lambda a: F.log_softmax(a, axis=axis), [x])


def test_relu_gradient_is_zero_at_zero_and_leaky_gets_the_slope():
    x = leaf([-1.0, 0.0, 2.0])
    F.relu(x).backward(np.ones(3))
    np.testing.assert_array_equal(x.grad, [0.0, 0.0, 1.0])
    x = leaf([-1.0, 0.0, 2.0])
    F.leaky_relu(x, 0.1).backward(np.ones(3))
    np.testing.assert_array_equal(x.grad, [0.1, 0.1, 1.0])


# ----- (c) hypothesis: shapes and values drawn

small_arrays = hnp.arrays(
    np.float64, hnp.array_shapes(min_dims=2, max_dims=4, min_side=1, max_side=4),
    elements=st.floats(-30, 30, allow_nan=False).filter(lambda v: abs(v) > 1e-3))


@settings(max_examples=25, deadline=None)
@given(x=small_arrays, name=st.sampled_from(NAMES))
def test_hypothesis_forward_and_gradcheck(x, name):
    op, definition, _ = OPS[name]
    np.testing.assert_allclose(op(ts.Tensor(x)).data, definition(x), rtol=1e-12, atol=1e-12)
    if x.size <= 16:
        assert ts.gradcheck(op, [leaf(x)], atol=1e-6)


@settings(max_examples=15, deadline=None)
@given(slope=st.floats(-2, 2), x=small_arrays)
def test_hypothesis_leaky_relu_slopes(slope, x):
    y = F.leaky_relu(leaf(x), slope)
    np.testing.assert_array_equal(y.data, np.where(x > 0, x, slope * x))


# ----- (d) non-contiguous inputs

@pytest.mark.parametrize("name", NAMES)
def test_non_contiguous_input(name):
    op = OPS[name][0]
    base = random_input((2, 3, 5, 4), seed=3)
    strided = np.ascontiguousarray(base.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)
    assert not strided.flags.c_contiguous
    upstream = np.random.default_rng(4).standard_normal(base.shape)
    grads = []
    for array in (base, strided):
        x = ts.Tensor(array, requires_grad=True)
        y = op(x)
        y.backward(upstream)
        grads.append(x.grad)
        np.testing.assert_array_equal(y.data, op(ts.Tensor(base)).data)
    np.testing.assert_allclose(grads[0], grads[1], rtol=0, atol=1e-14)


# ----- (e) PyTorch, forward and backward with random upstream gradients

def against_torch(torch, name, x, upstream):
    """(tinyseg output, torch output, tinyseg grad, torch grad) as float64 arrays."""
    op, _, torch_op = OPS[name]
    xt = torch.tensor(x, requires_grad=True)
    yt = torch_op(torch)(xt)
    yt.backward(torch.tensor(upstream))
    xs = ts.Tensor(x, requires_grad=True)
    ys = op(xs)
    ys.backward(upstream)
    return ys.data, yt.detach().numpy(), xs.grad, xt.grad.numpy()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype, rtol, atol", [(np.float64, 0, 1e-10), (np.float32, 1e-5, 1e-6)])
def test_against_torch(torch, name, dtype, rtol, atol):
    rng = np.random.default_rng(5)
    x = random_input((2, 4, 3, 3), seed=5, scale=6.0).astype(dtype)
    x.ravel()[:3] = [0.0, 1e4, -1e4]          # the kink of relu and far saturation
    upstream = rng.standard_normal(x.shape).astype(dtype)
    y, y_torch, g, g_torch = against_torch(torch, name, x, upstream)
    assert y.dtype == dtype and g.dtype == dtype
    np.testing.assert_allclose(y, y_torch, rtol=rtol, atol=atol)
    np.testing.assert_allclose(g, g_torch, rtol=rtol, atol=atol)


@pytest.mark.parametrize("name", ["sigmoid", "softmax", "log_softmax"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stable_at_1e4_without_warnings(torch, name, dtype):
    x = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1e4, 1e4 - 1.0, 5.0]], dtype=dtype)
    upstream = np.arange(9, dtype=dtype).reshape(3, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y, y_torch, g, g_torch = against_torch(torch, name, x, upstream)
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(g))
    # float32: relative to the largest value, since torch rounds an exact 0 to ~2e-7 here.
    rtol, atol = (1e-5, 1e-6 * np.abs(g_torch).max()) if dtype == np.float32 else (1e-10, 1e-12)
    np.testing.assert_allclose(y, y_torch, rtol=rtol, atol=atol)
    np.testing.assert_allclose(g, g_torch, rtol=rtol, atol=atol)


def test_sigmoid_derivative_has_no_cancellation():
    # σ'(30) = e^-30/(1+e^-30)^2 ≈ 9.36e-14; the 1 − σ form would lose most digits.
    x = leaf([30.0, -30.0])
    F.sigmoid(x).backward(np.ones(2))
    exact = np.exp(-30.0) / (1 + np.exp(-30.0)) ** 2
    np.testing.assert_allclose(x.grad, [exact, exact], rtol=1e-14)


# ----- (f) bad input

@pytest.mark.parametrize("name", ["relu", "leaky_relu", "sigmoid", "tanh", "softmax", "log_softmax"])
def test_integer_input_is_a_type_error(name):
    op = getattr(F, name)
    with pytest.raises(TypeError, match=rf"{name}: argument 'x' expected a floating-point tensor"):
        op(np.arange(6).reshape(2, 3))


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_bad_axis(name):
    op = getattr(F, name)
    with pytest.raises(ValueError, match=rf"{name}: argument 'axis' expected a value in \[-2, 2\)"):
        op(np.zeros((2, 3)), axis=2)
    with pytest.raises(TypeError, match=rf"{name}: argument 'axis' expected an int"):
        op(np.zeros((2, 3)), axis=1.0)
    with pytest.raises(ValueError, match=rf"{name}: argument 'x' expected a tensor with at least 1 dimension"):
        op(np.float64(1.0), axis=0)


def test_leaky_relu_bad_slope():
    with pytest.raises(TypeError, match="leaky_relu: argument 'negative_slope' expected a real number"):
        F.leaky_relu(np.zeros(3), "0.1")
