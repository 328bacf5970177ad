"""max_pool2d and avg_pool2d: against the naive reference, finite differences, PyTorch.

Max pooling is only piecewise linear: where two elements of a window tie, the gradient
depends on the tie rule. Random checks therefore draw DISTINCT values (a shuffled
arange), and ties get their own tests, compared with PyTorch's rule (the first maximum
in row-major window order takes the whole gradient).
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinyseg as ts
import tinyseg.functional as F
from tinyseg import reference as ref

POOLS = {"max_pool2d": F.max_pool2d, "avg_pool2d": F.avg_pool2d}
REFERENCES = {"max_pool2d": ref.max_pool2d, "avg_pool2d": ref.avg_pool2d}

# (kernel_size, stride, padding): the U-Net 2×2 case, overlapping windows, padding,
# stride > kernel (skipped pixels), rectangular windows.
CONFIGS = [
    (2, None, 0),
    (2, 2, 1),
    (3, 1, 1),
    (3, 2, 1),
    (3, 3, 0),
    (2, 1, 0),
    (2, 3, 1),
    ((2, 3), (1, 2), (1, 1)),
    ((3, 2), (2, 1), (0, 1)),
]


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def distinct_values(shape, seed=0, spacing=0.1):
    """Values spaced by ``spacing`` in random order: no window has a tie."""
    rng = np.random.default_rng(seed)
    size = int(np.prod(shape))
    return (rng.permutation(size) - size / 2).reshape(shape) * spacing


def transposed_view(x):
    """The same values as a non-contiguous array (a view with swapped H/W strides)."""
    return np.ascontiguousarray(x.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)


def forward_backward(op, x, upstream, **kwargs):
    leaf = ts.Tensor(x, requires_grad=True)
    y = op(leaf, **kwargs)
    y.backward(upstream)
    return y.data, leaf.grad


def directional_derivative_gap(op, x, direction, upstream, eps=1e-3, **kwargs):
    """|<g, J·d> − <Jᵀg, d>|, J·d by central differences: exact (up to rounding) for an
    op that is linear or, as max pooling with distinct values, linear near x."""
    y_plus = op(ts.Tensor(x + eps * direction), **kwargs).data
    y_minus = op(ts.Tensor(x - eps * direction), **kwargs).data
    jvp = np.sum(upstream * (y_plus - y_minus)) / (2 * eps)
    _, grad = forward_backward(op, x, upstream, **kwargs)
    return abs(jvp - np.sum(grad * direction)), abs(jvp)


# ----- (a) forward against reference.py

@pytest.mark.parametrize("name", POOLS)
@pytest.mark.parametrize("kernel_size, stride, padding", CONFIGS)
def test_forward_matches_reference(name, kernel_size, stride, padding):
    x = distinct_values((2, 3, 7, 8), seed=1)
    y = POOLS[name](ts.Tensor(x), kernel_size, stride, padding)
    expected = REFERENCES[name](x, kernel_size, stride, padding)
    assert y.shape == expected.shape and y.dtype == np.float64
    np.testing.assert_allclose(y.data, expected, rtol=0, atol=1e-12)


def test_max_pool_padding_is_minus_infinity():
    # All values negative: zero padding would win every border window.
    x = -1.0 - distinct_values((1, 1, 4, 4), spacing=1.0) ** 2
    y = F.max_pool2d(ts.Tensor(x), 3, stride=1, padding=1)
    np.testing.assert_array_equal(y.data, ref.max_pool2d(x, 3, 1, 1))
    assert np.all(y.data < 0)


def test_avg_pool_counts_padding_in_divisor():
    # 3×3 windows over a 3×3 image of ones, padding 1: a corner window sees 4 ones of 9.
    y = F.avg_pool2d(ts.Tensor(np.ones((1, 1, 3, 3))), 3, stride=1, padding=1)
    np.testing.assert_allclose(y.data[0, 0], [[4 / 9, 6 / 9, 4 / 9], [6 / 9, 1, 6 / 9], [4 / 9, 6 / 9, 4 / 9]])


def test_max_pool_propagates_nan():
    x = distinct_values((1, 1, 4, 4))
    x[0, 0, 1, 1] = np.nan
    y = F.max_pool2d(ts.Tensor(x), 2).data
    assert np.isnan(y[0, 0, 0, 0]) and not np.isnan(y[0, 0, 1, 1])


@pytest.mark.parametrize("name", POOLS)
def test_float32_stays_float32_and_inputs_untouched(name):
    x = distinct_values((2, 2, 6, 6)).astype(np.float32)
    x_before = x.copy()
    upstream = np.ones((2, 2, 3, 3), dtype=np.float32)
    y, grad = forward_backward(POOLS[name], x, upstream, kernel_size=2)
    assert y.dtype == np.float32 and grad.dtype == np.float32
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(upstream, 1.0)


@pytest.mark.parametrize("name", POOLS)
def test_no_grad_gives_the_same_values(name):
    x = distinct_values((1, 2, 7, 7))
    with_graph = POOLS[name](ts.Tensor(x, requires_grad=True), 3, 2, 1)
    with ts.no_grad():
        without = POOLS[name](ts.Tensor(x, requires_grad=True), 3, 2, 1)
    assert without.requires_grad is False
    np.testing.assert_array_equal(with_graph.data, without.data)


def test_max_pool_window_larger_than_16_by_16_needs_a_wider_winner_index():
    # 17·16 = 272 window positions do not fit the uint8 index used for small windows.
    x = distinct_values((1, 2, 19, 17), seed=6)
    y = F.max_pool2d(ts.Tensor(x), (17, 16), stride=(2, 1))
    np.testing.assert_array_equal(y.data, ref.max_pool2d(x, (17, 16), (2, 1)))
    rng = np.random.default_rng(6)
    gap, scale = directional_derivative_gap(F.max_pool2d, x, rng.uniform(-1, 1, x.shape),
                                            rng.standard_normal(y.shape), kernel_size=(17, 16), stride=(2, 1))
    assert gap <= 1e-8 * (1 + scale)


# ----- (b) gradcheck

@pytest.mark.parametrize("name", POOLS)
@pytest.mark.parametrize("kernel_size, stride, padding", [(2, None, 0), (3, 1, 1), (3, 2, 1), ((2, 3), (1, 2), (1, 1))])
def test_gradcheck(name, kernel_size, stride, padding):
    x = ts.Tensor(distinct_values((1, 2, 5, 5), seed=2), requires_grad=True)
    assert ts.gradcheck(lambda t: POOLS[name](t, kernel_size, stride, padding), [x])


# ----- max-pool ties: one winner per window

def test_max_pool_tie_goes_to_first_maximum_in_row_major_order():
    # Window [[1, 5], [5, 5]]: the first 5 in row-major order is (0, 1).
    x = np.array([[[[1.0, 5.0], [5.0, 5.0]]]])
    _, grad = forward_backward(F.max_pool2d, x, np.array([[[[3.0]]]]), kernel_size=2)
    np.testing.assert_array_equal(grad[0, 0], [[0.0, 3.0], [0.0, 0.0]])
    # Window [[1, 2], [5, 5]]: the max only appears in the second row; its first column wins.
    x = np.array([[[[1.0, 2.0], [5.0, 5.0]]]])
    _, grad = forward_backward(F.max_pool2d, x, np.array([[[[3.0]]]]), kernel_size=2)
    np.testing.assert_array_equal(grad[0, 0], [[0.0, 0.0], [3.0, 0.0]])


@pytest.mark.parametrize("kernel_size, stride, padding", CONFIGS)
def test_max_pool_constant_input_has_one_winner_per_window(kernel_size, stride, padding):
    x = np.full((1, 1, 6, 7), 2.5)
    y = F.max_pool2d(ts.Tensor(x), kernel_size, stride, padding)
    _, grad = forward_backward(F.max_pool2d, x, np.ones(y.shape), kernel_size=kernel_size, stride=stride,
                               padding=padding)
    # Each window gives its whole gradient (1) to one pixel, none to the padding.
    assert grad.sum() == y.size


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kernel_size, stride, padding", CONFIGS)
def test_max_pool_ties_match_torch(torch, dtype, kernel_size, stride, padding):
    rng = np.random.default_rng(3)
    x = np.full((2, 2, 7, 6), 1.0, dtype=dtype)
    x[:, :, ::3, 1::2] = 4.0          # several tied maxima per window
    y = F.max_pool2d(ts.Tensor(x), kernel_size, stride, padding)
    upstream = rng.standard_normal(y.shape).astype(dtype)
    ours_y, ours_grad = forward_backward(F.max_pool2d, x, upstream, kernel_size=kernel_size, stride=stride,
                                         padding=padding)
    x_torch = torch.tensor(x, requires_grad=True)
    y_torch = torch.nn.functional.max_pool2d(x_torch, kernel_size, stride, padding)
    y_torch.backward(torch.tensor(upstream))
    torch_grad = x_torch.grad.numpy()
    np.testing.assert_array_equal(ours_y, y_torch.detach().numpy())
    # The same pixels win; overlapping windows may add their shares in another order.
    np.testing.assert_array_equal(ours_grad != 0, torch_grad != 0)
    tolerance = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours_grad, torch_grad, **tolerance)


# ----- (c) hypothesis: shapes, kernels, strides, paddings

@st.composite
def pool_cases(draw):
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, kernel[0] // 2)), draw(st.integers(0, kernel[1] // 2)))
    H = draw(st.integers(max(1, kernel[0] - 2 * padding[0]), 8))
    W = draw(st.integers(max(1, kernel[1] - 2 * padding[1]), 8))
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)), H, W)
    return shape, kernel, stride, padding, draw(st.integers(0, 2**16))


@settings(max_examples=40, deadline=None)
@given(case=pool_cases(), name=st.sampled_from(sorted(POOLS)))
def test_hypothesis_forward_and_backward(case, name):
    shape, kernel, stride, padding, seed = case
    x = distinct_values(shape, seed)
    y = POOLS[name](ts.Tensor(x), kernel, stride, padding)
    np.testing.assert_allclose(y.data, REFERENCES[name](x, kernel, stride, padding), rtol=0, atol=1e-12)
    rng = np.random.default_rng(seed)
    gap, scale = directional_derivative_gap(POOLS[name], x, rng.uniform(-1, 1, shape), rng.standard_normal(y.shape),
                                            kernel_size=kernel, stride=stride, padding=padding)
    assert gap <= 1e-8 * (1 + scale)


# ----- (d) non-contiguous inputs

@pytest.mark.parametrize("name", POOLS)
@pytest.mark.parametrize("kernel_size, stride, padding", [(2, None, 0), (3, 1, 1)])
def test_non_contiguous_input(name, kernel_size, stride, padding):
    x = distinct_values((2, 3, 6, 6), seed=4)
    view = transposed_view(x)
    assert not view.flags.c_contiguous
    y = POOLS[name](ts.Tensor(x), kernel_size, stride, padding)
    upstream = np.random.default_rng(0).standard_normal(y.shape)
    expected_y, expected_grad = forward_backward(POOLS[name], x, upstream, kernel_size=kernel_size, stride=stride,
                                                 padding=padding)
    view_y, view_grad = forward_backward(POOLS[name], view, upstream, kernel_size=kernel_size, stride=stride,
                                         padding=padding)
    np.testing.assert_array_equal(view_y, expected_y)
    np.testing.assert_array_equal(view_grad, expected_grad)


# ----- (e) against PyTorch, forward and backward

TORCH_CONFIGS = CONFIGS + [(3, 1, 0), (2, 1, 1), (3, 2, 0), (3, 3, 1), (2, 2, 0)]


@pytest.mark.parametrize("dtype, tolerance", [(np.float64, dict(rtol=0, atol=1e-10)),
                                              (np.float32, dict(rtol=1e-5, atol=1e-6))])
@pytest.mark.parametrize("name", POOLS)
@pytest.mark.parametrize("kernel_size, stride, padding", TORCH_CONFIGS)
@pytest.mark.parametrize("shape", [(2, 3, 7, 9), (1, 2, 8, 8)])
def test_matches_torch(torch, dtype, tolerance, name, kernel_size, stride, padding, shape):
    rng = np.random.default_rng(5)
    x = rng.standard_normal(shape).astype(dtype)
    y = POOLS[name](ts.Tensor(x), kernel_size, stride, padding)
    upstream = rng.standard_normal(y.shape).astype(dtype)
    ours_y, ours_grad = forward_backward(POOLS[name], x, upstream, kernel_size=kernel_size, stride=stride,
                                         padding=padding)
    x_torch = torch.tensor(x, requires_grad=True)
    y_torch = getattr(torch.nn.functional, name)(x_torch, kernel_size, stride, padding)
    y_torch.backward(torch.tensor(upstream))
    assert ours_y.dtype == dtype and ours_grad.dtype == dtype
    np.testing.assert_allclose(ours_y, y_torch.detach().numpy(), **tolerance)
    np.testing.assert_allclose(ours_grad, x_torch.grad.numpy(), **tolerance)


# ----- (f) bad input

@pytest.mark.parametrize("name", POOLS)
@pytest.mark.parametrize("x, kwargs, error, message", [
    (np.zeros((2, 4, 4)), {}, ValueError, "'x' expected a 4-D tensor"),
    (np.zeros((1, 1, 4, 4), dtype=np.int64), {}, TypeError, "'x' expected a floating-point tensor"),
    (np.zeros((1, 1, 4, 4)), {"kernel_size": 0}, ValueError, "'kernel_size' expected values >= 1"),
    (np.zeros((1, 1, 4, 4)), {"kernel_size": 2.5}, TypeError, "'kernel_size' expected an int or a pair"),
    (np.zeros((1, 1, 4, 4)), {"stride": 0}, ValueError, "'stride' expected values >= 1"),
    (np.zeros((1, 1, 4, 4)), {"stride": (1, 2, 3)}, TypeError, "'stride' expected an int or a pair"),
    (np.zeros((1, 1, 4, 4)), {"padding": -1}, ValueError, "'padding' expected values >= 0"),
    (np.zeros((1, 1, 4, 4)), {"padding": 2}, ValueError, "'padding' expected at most half the kernel size"),
    (np.zeros((1, 1, 4, 4)), {"kernel_size": 5}, ValueError, "'kernel_size' .* is larger than the padded input"),
    (np.zeros((1, 1, 2, 8)), {"kernel_size": (3, 2), "padding": 0}, ValueError, "larger than the padded input"),
])
def test_bad_input(name, x, kwargs, error, message):
    kwargs = {"kernel_size": 2, **kwargs}
    with pytest.raises(error, match=f"{name}: .*{message}"):
        POOLS[name](ts.Tensor(x), **kwargs)
