"""upsample (nearest, bilinear): against the naive reference, finite differences, PyTorch."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinyseg as ts
import tinyseg.functional as F
from tinyseg import reference as ref

# (mode, align_corners): every meaningful combination.
MODES = [("nearest", False), ("bilinear", False), ("bilinear", True)]
SCALES = [1, 2, 3, (2, 3), (3, 1)]


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def reference_upsample(x, scale_factor, mode, align_corners):
    if mode == "nearest":
        return ref.upsample_nearest(x, scale_factor)
    return ref.upsample_bilinear(x, scale_factor, align_corners)


def transposed_view(x):
    """The same values as a non-contiguous array (a view with swapped H/W strides)."""
    return np.ascontiguousarray(x.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)


def forward_backward(x, upstream, **kwargs):
    leaf = ts.Tensor(x, requires_grad=True)
    y = F.upsample(leaf, **kwargs)
    y.backward(upstream)
    return y.data, leaf.grad


# ----- (a) forward against reference.py

@pytest.mark.parametrize("mode, align_corners", MODES)
@pytest.mark.parametrize("scale_factor", SCALES)
@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 2, 1, 4), (1, 1, 4, 1)])
def test_forward_matches_reference(mode, align_corners, scale_factor, shape):
    x = np.random.default_rng(0).standard_normal(shape)
    y = F.upsample(ts.Tensor(x), scale_factor, mode, align_corners)
    expected = reference_upsample(x, scale_factor, mode, align_corners)
    assert y.shape == expected.shape and y.dtype == np.float64
    np.testing.assert_allclose(y.data, expected, rtol=0, atol=1e-12)


def test_integral_float_scale_factor_is_accepted():
    x = np.random.default_rng(0).standard_normal((1, 1, 3, 3))
    np.testing.assert_array_equal(F.upsample(ts.Tensor(x), 2.0).data, F.upsample(ts.Tensor(x), 2).data)


@pytest.mark.parametrize("mode, align_corners", MODES)
def test_float32_stays_float32_and_inputs_untouched(mode, align_corners):
    x = np.random.default_rng(0).standard_normal((2, 2, 3, 4)).astype(np.float32)
    x_before = x.copy()
    upstream = np.ones((2, 2, 6, 8), dtype=np.float32)
    y, grad = forward_backward(x, upstream, scale_factor=2, mode=mode, align_corners=align_corners)
    assert y.dtype == np.float32 and grad.dtype == np.float32
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(upstream, 1.0)


def test_nearest_gradient_is_the_block_sum():
    upstream = np.arange(24.0).reshape(1, 1, 4, 6)
    _, grad = forward_backward(np.zeros((1, 1, 2, 2)), upstream, scale_factor=(2, 3))
    expected = upstream.reshape(2, 2, 2, 3).sum(axis=(1, 3))
    np.testing.assert_array_equal(grad[0, 0], expected)


@pytest.mark.parametrize("mode, align_corners", MODES)
def test_constant_image_is_kept_and_weights_sum_to_one(mode, align_corners):
    # Each output is a convex combination of inputs (its weights sum to 1): a constant
    # image upsamples to itself, and an all-ones upstream gradient sums to the output count.
    y, grad = forward_backward(np.full((1, 1, 4, 5), 3.0), np.ones((1, 1, 12, 10)), scale_factor=(3, 2),
                               mode=mode, align_corners=align_corners)
    np.testing.assert_allclose(y, 3.0, rtol=0, atol=1e-14)
    np.testing.assert_allclose(grad.sum(), 120.0, rtol=1e-14)


# ----- (b) gradcheck

@pytest.mark.parametrize("mode, align_corners", MODES)
@pytest.mark.parametrize("scale_factor", [2, 3, (2, 3)])
def test_gradcheck(mode, align_corners, scale_factor):
    x = ts.Tensor(np.random.default_rng(1).standard_normal((1, 2, 3, 4)), requires_grad=True)
    assert ts.gradcheck(lambda t: F.upsample(t, scale_factor, mode, align_corners), [x])


# ----- (c) hypothesis: shapes, factors, modes

@settings(max_examples=40, deadline=None)
@given(shape=st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 6), st.integers(1, 6)),
       scale=st.tuples(st.integers(1, 4), st.integers(1, 4)),
       mode=st.sampled_from(MODES), seed=st.integers(0, 2**16))
def test_hypothesis_forward_and_adjoint(shape, scale, mode, seed):
    mode, align_corners = mode
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    y = F.upsample(ts.Tensor(x), scale, mode, align_corners)
    np.testing.assert_allclose(y.data, reference_upsample(x, scale, mode, align_corners), rtol=0, atol=1e-12)
    # Upsampling is linear, so backward must be its adjoint: <g, U d> = <Uᵀ g, d>.
    direction = rng.standard_normal(shape)
    upstream = rng.standard_normal(y.shape)
    _, grad = forward_backward(x, upstream, scale_factor=scale, mode=mode, align_corners=align_corners)
    lhs = np.sum(upstream * F.upsample(ts.Tensor(direction), scale, mode, align_corners).data)
    np.testing.assert_allclose(lhs, np.sum(grad * direction), rtol=1e-10, atol=1e-10)


# ----- (d) non-contiguous inputs

@pytest.mark.parametrize("mode, align_corners", MODES)
def test_non_contiguous_input(mode, align_corners):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 4, 5))
    view = transposed_view(x)
    assert not view.flags.c_contiguous
    upstream = rng.standard_normal((2, 3, 8, 10))
    kwargs = dict(scale_factor=2, mode=mode, align_corners=align_corners)
    expected_y, expected_grad = forward_backward(x, upstream, **kwargs)
    view_y, view_grad = forward_backward(view, upstream, **kwargs)
    np.testing.assert_array_equal(view_y, expected_y)
    np.testing.assert_allclose(view_grad, expected_grad, rtol=0, atol=1e-14)
    # A non-contiguous upstream gradient (e.g. a slice from concat's backward) works too.
    _, strided_grad = forward_backward(x, transposed_view(upstream), **kwargs)
    np.testing.assert_allclose(strided_grad, expected_grad, rtol=0, atol=1e-14)


# ----- (e) against PyTorch, forward and backward

@pytest.mark.parametrize("dtype, tolerance", [(np.float64, dict(rtol=0, atol=1e-10)),
                                              (np.float32, dict(rtol=1e-5, atol=1e-5))])
@pytest.mark.parametrize("mode, align_corners", MODES)
@pytest.mark.parametrize("scale_factor", [2, 3, (2, 3), (3, 2)])
@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 2, 8, 8), (1, 1, 1, 3)])
def test_matches_torch(torch, dtype, tolerance, mode, align_corners, scale_factor, shape):
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape).astype(dtype)
    sh, sw = scale_factor if isinstance(scale_factor, tuple) else (scale_factor, scale_factor)
    upstream = rng.standard_normal(shape[:2] + (shape[2] * sh, shape[3] * sw)).astype(dtype)
    ours_y, ours_grad = forward_backward(x, upstream, scale_factor=scale_factor, mode=mode,
                                         align_corners=align_corners)
    x_torch = torch.tensor(x, requires_grad=True)
    y_torch = torch.nn.functional.interpolate(x_torch, scale_factor=scale_factor, mode=mode,
                                              align_corners=align_corners if mode == "bilinear" else None)
    y_torch.backward(torch.tensor(upstream))
    assert ours_y.dtype == dtype and ours_grad.dtype == dtype
    np.testing.assert_allclose(ours_y, y_torch.detach().numpy(), **tolerance)
    np.testing.assert_allclose(ours_grad, x_torch.grad.numpy(), **tolerance)


# ----- (f) bad input

@pytest.mark.parametrize("x, kwargs, error, message", [
    (np.zeros((2, 4, 4)), {}, ValueError, "'x' expected a 4-D tensor"),
    (np.zeros((1, 1, 4, 4), dtype=np.int32), {}, TypeError, "'x' expected a floating-point tensor"),
    (np.zeros((1, 1, 4, 4)), {"scale_factor": 1.5}, ValueError, "only integer scale factors are supported"),
    (np.zeros((1, 1, 4, 4)), {"scale_factor": (2, 0.5)}, ValueError, "only integer scale factors"),
    (np.zeros((1, 1, 4, 4)), {"scale_factor": 0}, ValueError, "'scale_factor' expected integers >= 1"),
    (np.zeros((1, 1, 4, 4)), {"scale_factor": "2"}, TypeError, "'scale_factor' expected an int or a pair"),
    (np.zeros((1, 1, 4, 4)), {"scale_factor": True}, TypeError, "'scale_factor' expected an int or a pair"),
    (np.zeros((1, 1, 4, 4)), {"scale_factor": (2, 2, 2)}, TypeError, "'scale_factor' expected an int or a pair"),
    (np.zeros((1, 1, 4, 4)), {"mode": "bicubic"}, ValueError, "'mode' expected one of"),
    (np.zeros((1, 1, 4, 4)), {"align_corners": True}, ValueError, "'align_corners' can only be True with"),
    (np.zeros((1, 1, 4, 4)), {"mode": "bilinear", "align_corners": "yes"}, TypeError,
     "'align_corners' expected a bool"),
])
def test_bad_input(x, kwargs, error, message):
    with pytest.raises(error, match=f"upsample: .*{message}"):
        F.upsample(ts.Tensor(x), **kwargs)
