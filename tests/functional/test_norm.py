"""batch_norm and dropout.

batch_norm: forward and running statistics against tinyseg.reference, gradcheck with
one-hot upstream gradients (training and evaluation), hypothesis, non-contiguous input,
PyTorch (F.batch_norm, BatchNorm2d running statistics), bad input.
dropout: statistics, seeded repeatability, evaluation identity, gradient, bad input.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinyseg as ts
import tinyseg.functional as F
from tinyseg import reference as ref


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def leaf(array):
    return ts.Tensor(np.array(array), requires_grad=True)


def channel_params(channels, seed=0, dtype=np.float64):
    """(running_mean, running_var, weight, bias) arrays for ``channels`` channels."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(channels).astype(dtype), rng.uniform(0.5, 2.0, channels).astype(dtype),
            rng.uniform(0.5, 1.5, channels).astype(dtype), rng.standard_normal(channels).astype(dtype))


# ===================================================================== batch_norm

# ----- (a) forward and running statistics against the reference

@pytest.mark.parametrize("shape", [(3, 4, 5, 6), (6, 3)])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_matches_reference(shape, training, affine):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape) * 3 + 1
    mean, var, weight, bias = channel_params(shape[1])
    if not affine:
        weight = bias = None
    running_mean, running_var = mean.copy(), var.copy()
    y = F.batch_norm(x, running_mean, running_var, weight, bias, training, momentum=0.2, eps=1e-3)
    expected, expected_mean, expected_var = ref.batch_norm(x, mean, var, weight, bias, training, 0.2, 1e-3)
    assert y.dtype == np.float64 and y.shape == shape
    np.testing.assert_allclose(y.data, expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(running_mean, expected_mean, rtol=0, atol=1e-13)
    np.testing.assert_allclose(running_var, expected_var, rtol=0, atol=1e-13)


def test_batch_norm_without_running_stats_in_training():
    x = np.random.default_rng(2).standard_normal((4, 2, 3, 3))
    y = F.batch_norm(x, None, None, None, None, True)
    np.testing.assert_allclose(y.data, ref.batch_norm(x, None, None, None, None, True)[0], rtol=0, atol=1e-12)


def test_running_stats_given_as_tensors_are_updated_in_place():
    x = np.random.default_rng(3).standard_normal((4, 2, 3, 3))
    running_mean, running_var = ts.Tensor(np.zeros(2)), ts.Tensor(np.ones(2))
    mean_array, var_array = running_mean.data, running_var.data
    F.batch_norm(x, running_mean, running_var, None, None, True)
    _, expected_mean, expected_var = ref.batch_norm(x, np.zeros(2), np.ones(2), None, None, True)
    assert running_mean.data is mean_array and running_var.data is var_array
    np.testing.assert_allclose(mean_array, expected_mean, rtol=0, atol=1e-14)
    np.testing.assert_allclose(var_array, expected_var, rtol=0, atol=1e-14)


def test_batch_norm_leaves_inputs_and_upstream_gradient_untouched():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 4, 4))
    _, _, weight, bias = channel_params(3)
    upstream = rng.standard_normal(x.shape)
    copies = [a.copy() for a in (x, weight, bias, upstream)]
    xt, wt, bt = leaf(x), leaf(weight), leaf(bias)
    F.batch_norm(xt, None, None, wt, bt, True).backward(upstream)
    for original, copy in zip((xt.data, wt.data, bt.data, upstream), copies):
        np.testing.assert_array_equal(original, copy)


# ----- (b) gradcheck: full Jacobian with one-hot upstream gradients

@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_gradcheck_with_weight_and_bias(training):
    rng = np.random.default_rng(5)
    mean, var, weight, bias = channel_params(3, seed=5)
    x = rng.standard_normal((2, 3, 3, 2))
    fn = lambda a, w, b: F.batch_norm(a, mean.copy(), var.copy(), w, b, training)  # noqa: E731
    assert ts.gradcheck(fn, [leaf(x), leaf(weight), leaf(bias)])


@pytest.mark.parametrize("shape", [(5, 3), (3, 2, 2, 2)])
def test_batch_norm_gradcheck_without_affine(shape):
    x = np.random.default_rng(6).standard_normal(shape)
    assert ts.gradcheck(lambda a: F.batch_norm(a, None, None, None, None, True), [leaf(x)])


def test_batch_norm_gradcheck_weight_only_and_bias_only():
    rng = np.random.default_rng(7)
    x, w = rng.standard_normal((3, 2, 2, 2)), rng.uniform(0.5, 1.5, 2)
    assert ts.gradcheck(lambda a, g: F.batch_norm(a, None, None, g, None, True), [leaf(x), leaf(w)])
    assert ts.gradcheck(lambda a, b: F.batch_norm(a, None, None, None, b, True), [leaf(x), leaf(w)])


def test_batch_norm_sum_of_output_has_zero_gradient():
    # Σ batch_norm(x) = Σ β·m does not depend on x: a correct backward gives exactly ~0.
    x = leaf(np.random.default_rng(8).standard_normal((4, 3, 5, 5)))
    F.batch_norm(x, None, None, None, None, True).sum().backward()
    np.testing.assert_allclose(x.grad, 0.0, atol=1e-12)


# ----- (c) hypothesis

@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 3), c=st.integers(1, 3), h=st.integers(1, 3), w=st.integers(1, 3),
       training=st.booleans(), momentum=st.floats(0.0, 1.0), scale=st.floats(0.01, 100.0),
       seed=st.integers(0, 2**16))
def test_hypothesis_batch_norm(n, c, h, w, training, momentum, scale, seed):
    if training and n * h * w < 2:
        return
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)) * scale
    mean, var, weight, bias = channel_params(c, seed=seed)
    running_mean, running_var = mean.copy(), var.copy()
    y = F.batch_norm(x, running_mean, running_var, weight, bias, training, momentum)
    expected, expected_mean, expected_var = ref.batch_norm(x, mean, var, weight, bias, training, momentum)
    np.testing.assert_allclose(y.data, expected, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(running_mean, expected_mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(running_var, expected_var, rtol=1e-12, atol=1e-12)
    if x.size <= 12:
        fn = lambda a, g, b: F.batch_norm(a, mean.copy(), var.copy(), g, b, training)  # noqa: E731
        assert ts.gradcheck(fn, [leaf(x / scale), leaf(weight), leaf(bias)])


# ----- (d) non-contiguous input

@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_non_contiguous_input(training):
    rng = np.random.default_rng(9)
    base = rng.standard_normal((2, 3, 5, 4))
    strided = np.ascontiguousarray(base.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)
    assert not strided.flags.c_contiguous
    mean, var, weight, bias = channel_params(3)
    upstream = rng.standard_normal(base.shape)
    results = []
    for array in (base, strided):
        x, w = leaf(array), leaf(weight)
        y = F.batch_norm(x, mean.copy(), var.copy(), w, bias, training)
        y.backward(upstream)
        results.append((y.data, x.grad, w.grad))
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


# ----- (e) PyTorch

@pytest.mark.parametrize("shape", [(3, 4, 5, 6), (8, 3)])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("dtype, rtol, atol", [(np.float64, 0, 1e-10), (np.float32, 1e-5, 1e-5)])
def test_batch_norm_against_torch(torch, shape, training, dtype, rtol, atol):
    rng = np.random.default_rng(10)
    x = (rng.standard_normal(shape) * 2 + 0.5).astype(dtype)
    upstream = rng.standard_normal(shape).astype(dtype)
    mean, var, weight, bias = channel_params(shape[1], seed=10, dtype=dtype)

    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, weight, bias))
    mean_t, var_t = torch.tensor(mean), torch.tensor(var)
    yt = torch.nn.functional.batch_norm(xt, mean_t, var_t, wt, bt, training, 0.1, 1e-5)
    yt.backward(torch.tensor(upstream))

    xs, ws, bs = leaf(x), leaf(weight), leaf(bias)
    mean_s, var_s = mean.copy(), var.copy()
    ys = F.batch_norm(xs, mean_s, var_s, ws, bs, training, 0.1, 1e-5)
    ys.backward(upstream)

    assert ys.dtype == dtype and xs.grad.dtype == dtype and ws.grad.dtype == dtype
    for ours, theirs in ((ys.data, yt), (xs.grad, xt.grad), (ws.grad, wt.grad), (bs.grad, bt.grad),
                         (mean_s, mean_t), (var_s, var_t)):
        theirs = theirs.detach().numpy()
        np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=atol * max(1.0, np.abs(theirs).max()))


@pytest.mark.parametrize("dtype, tolerance", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_running_stats_after_several_steps_match_torch_batchnorm2d(torch, dtype, tolerance):
    rng = np.random.default_rng(11)
    layer = torch.nn.BatchNorm2d(3, momentum=0.1).to(torch.float64 if dtype == np.float64 else torch.float32)
    running_mean, running_var = np.zeros(3, dtype=dtype), np.ones(3, dtype=dtype)
    weight, bias = leaf(np.ones(3, dtype=dtype)), leaf(np.zeros(3, dtype=dtype))
    for step in range(5):
        x = (rng.standard_normal((4, 3, 6, 5)) * (step + 1) + step).astype(dtype)
        y_torch = layer(torch.tensor(x))
        y = F.batch_norm(x, running_mean, running_var, weight, bias, True, momentum=0.1)
        np.testing.assert_allclose(y.data, y_torch.detach().numpy(), rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(running_mean, layer.running_mean.numpy(), rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(running_var, layer.running_var.numpy(), rtol=tolerance, atol=tolerance)
    layer.eval()
    x = rng.standard_normal((2, 3, 4, 4)).astype(dtype)
    y = F.batch_norm(x, running_mean, running_var, weight, bias, False)
    np.testing.assert_allclose(y.data, layer(torch.tensor(x)).detach().numpy(), rtol=tolerance, atol=tolerance)


# ----- (f) bad input

def test_batch_norm_bad_input():
    x = np.zeros((2, 3, 4, 4))
    ones = np.ones(3)
    with pytest.raises(ValueError, match=r"batch_norm: argument 'x' expected a 4-D tensor \(N, C, H, W\)"):
        F.batch_norm(np.zeros((2, 3, 4)), None, None, None, None, True)
    with pytest.raises(TypeError, match="batch_norm: argument 'x' expected a floating-point tensor"):
        F.batch_norm(np.zeros((2, 3, 4, 4), dtype=np.int64), None, None, None, None, True)
    with pytest.raises(ValueError, match=r"batch_norm: argument 'weight' expected shape \(3,\)"):
        F.batch_norm(x, None, None, np.ones(4), None, True)
    with pytest.raises(ValueError, match=r"batch_norm: argument 'running_var' expected shape \(3,\)"):
        F.batch_norm(x, ones, np.ones((3, 1)), None, None, True)
    with pytest.raises(TypeError, match="batch_norm: argument 'bias' expected dtype float64"):
        F.batch_norm(x, None, None, None, np.ones(3, dtype=np.float32), True)
    with pytest.raises(TypeError, match="batch_norm: argument 'running_mean' expected a floating-point"):
        F.batch_norm(x, np.zeros(3, dtype=np.int64), ones, None, None, True)
    with pytest.raises(ValueError, match=r"batch_norm: evaluation mode \(training=False\) needs running_mean"):
        F.batch_norm(x, None, ones, None, None, False)
    with pytest.raises(ValueError, match="batch_norm: training needs more than 1 value per channel"):
        F.batch_norm(np.zeros((1, 3, 1, 1)), None, None, None, None, True)
    with pytest.raises(ValueError, match=r"batch_norm: argument 'momentum' expected a value in \[0.0, 1.0\]"):
        F.batch_norm(x, None, None, None, None, True, momentum=1.5)
    with pytest.raises(ValueError, match=r"batch_norm: argument 'eps' expected a value in \(0.0"):
        F.batch_norm(x, None, None, None, None, True, eps=0.0)
    with pytest.raises(TypeError, match="batch_norm: argument 'training' expected a bool"):
        F.batch_norm(x, None, None, None, None, 1)
    with pytest.raises(TypeError, match="batch_norm: argument 'weight' expected an array or Tensor"):
        F.batch_norm(x, None, None, [1.0, 1.0, 1.0], None, True)


# ===================================================================== dropout

def test_dropout_statistics_preserve_the_mean():
    ts.manual_seed(0)
    p = 0.3
    y = F.dropout(ts.Tensor(np.ones((200, 500))), p, True).data
    kept = y != 0
    np.testing.assert_allclose(y[kept], 1 / (1 - p))
    assert abs(kept.mean() - (1 - p)) < 0.005        # 1e5 Bernoulli draws: std ≈ 0.0015
    assert abs(y.mean() - 1.0) < 0.01


def test_dropout_is_repeatable_with_a_seed():
    x = ts.Tensor(np.ones((4, 3, 8, 8), dtype=np.float32))
    ts.manual_seed(42)
    first = F.dropout(x, 0.5, True).data
    second = F.dropout(x, 0.5, True).data
    ts.manual_seed(42)
    again = F.dropout(x, 0.5, True).data
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, second)
    assert first.dtype == np.float32


def test_dropout_evaluation_and_p_zero_are_the_identity():
    x = leaf(np.random.default_rng(12).standard_normal((2, 3, 4, 4)))
    assert F.dropout(x, 0.5, False) is x
    assert F.dropout(x, 0.0, True) is x
    np.testing.assert_array_equal(F.dropout(x.data, 0.7, False).data, x.data)


def test_dropout_p_one_gives_zeros_and_zero_gradient():
    x = leaf(np.random.default_rng(13).standard_normal((3, 4)))
    y = F.dropout(x, 1.0, True)
    y.backward(np.ones((3, 4)))
    np.testing.assert_array_equal(y.data, 0.0)
    np.testing.assert_array_equal(x.grad, 0.0)


def test_dropout_gradient_is_the_scaled_mask():
    x = leaf(np.random.default_rng(14).uniform(1, 2, (5, 6)))
    ts.manual_seed(1)
    y = F.dropout(x, 0.4, True)
    upstream = np.random.default_rng(15).standard_normal((5, 6))
    y.backward(upstream)
    np.testing.assert_allclose(x.grad, upstream * y.data / x.data, rtol=1e-14)


def test_dropout_gradcheck():
    def seeded_dropout(a):
        ts.manual_seed(7)
        return F.dropout(a, 0.5, True)
    assert ts.gradcheck(seeded_dropout, [leaf(np.random.default_rng(16).standard_normal((2, 3, 2)))])


@settings(max_examples=20, deadline=None)
@given(p=st.floats(0.0, 1.0), shape=st.lists(st.integers(1, 5), min_size=1, max_size=4), seed=st.integers(0, 99))
def test_hypothesis_dropout_outputs_are_zero_or_scaled(p, shape, seed):
    x = np.random.default_rng(seed).uniform(1, 2, shape)
    ts.manual_seed(seed)
    y = F.dropout(x, p, True).data
    assert y.shape == x.shape
    if p == 1.0:
        np.testing.assert_array_equal(y, 0.0)
    else:
        kept = y != 0
        np.testing.assert_allclose(y[kept], x[kept] / (1 - p), rtol=1e-14)


def test_dropout_non_contiguous_input():
    base = np.random.default_rng(17).uniform(1, 2, (2, 3, 5, 4))
    strided = np.ascontiguousarray(base.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)
    outputs = []
    for array in (base, strided):
        ts.manual_seed(3)
        outputs.append(F.dropout(array, 0.5, True).data)
    np.testing.assert_array_equal(outputs[0], outputs[1])


def test_dropout_bad_input():
    x = np.ones((2, 3))
    for p in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"dropout: argument 'p' expected a value in \[0.0, 1.0\]"):
            F.dropout(x, p, True)
    with pytest.raises(TypeError, match="dropout: argument 'p' expected a real number"):
        F.dropout(x, "0.5", True)
    with pytest.raises(TypeError, match="dropout: argument 'training' expected a bool"):
        F.dropout(x, 0.5, "yes")
    with pytest.raises(TypeError, match="dropout: argument 'x' expected a floating-point tensor"):
        F.dropout(np.ones((2, 3), dtype=np.int32), 0.5, True)
