"""Losses: binary_cross_entropy_with_logits, cross_entropy, dice_loss, mse_loss, and
the U-Net weight map.

For each: forward against tinyseg.reference, gradcheck, hypothesis, non-contiguous
inputs, PyTorch forward and backward (float64 and float32, edge configurations:
logits at ±1e4, pos_weight, class weights, ignore_index, 2-D and 4-D), bad input.
"""
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinyseg as ts
import tinyseg.functional as F
from tinyseg import reference as ref
from tinyseg.functional.loss import _connected_components


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def leaf(array):
    return ts.Tensor(np.array(array), requires_grad=True)


def transposed_copy(array):
    """The same values in a non-contiguous layout (last two axes swapped in memory)."""
    strided = np.ascontiguousarray(np.swapaxes(array, -1, -2)).swapaxes(-1, -2)
    assert not strided.flags.c_contiguous
    return strided


def assert_scalar_close(actual, expected, rtol=0, atol=1e-12):
    assert actual.shape == ()
    np.testing.assert_allclose(float(actual.data), float(expected), rtol=rtol, atol=atol)


def loss_and_grads(loss_fn, *inputs):
    """Run loss_fn on leaves made from ``inputs``, backward with an upstream gradient of 1.7."""
    leaves = [leaf(x) for x in inputs]
    loss = loss_fn(*leaves)
    loss.backward(np.asarray(1.7, dtype=loss.dtype))
    return loss, [t.grad for t in leaves]


def torch_loss_and_grads(torch, loss_fn, *inputs):
    tensors = [torch.tensor(x, requires_grad=True) for x in inputs]
    loss = loss_fn(*tensors)
    loss.backward(torch.tensor(1.7, dtype=loss.dtype))
    return loss.detach().numpy(), [t.grad.numpy() for t in tensors]


def assert_matches_torch(ours, theirs, dtype):
    (loss, grads), (loss_t, grads_t) = ours, theirs
    assert loss.dtype == dtype and all(g.dtype == dtype for g in grads)
    rtol, atol = (0, 1e-10) if dtype == np.float64 else (1e-5, 1e-7)
    np.testing.assert_allclose(float(loss.data), float(loss_t), rtol=rtol, atol=atol)
    for g, g_t in zip(grads, grads_t):
        np.testing.assert_allclose(g, g_t, rtol=rtol, atol=atol * max(1.0, np.abs(g_t).max()))


# ===================================================================== binary cross-entropy

def bce_case(shape=(2, 3, 4, 5), seed=0, soft=True):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal(shape) * 3
    target = rng.random(shape) if soft else (rng.random(shape) > 0.5).astype(np.float64)
    return logits, target


@pytest.mark.parametrize("weight_shape, pos_weight_shape", [
    (None, None), ((2, 3, 4, 5), None), (None, (3, 1, 1)), ((4, 5), (1,)), ((3, 1, 1), (5,))])
def test_bce_matches_reference(weight_shape, pos_weight_shape):
    logits, target = bce_case()
    rng = np.random.default_rng(1)
    weight = None if weight_shape is None else rng.random(weight_shape)
    pos_weight = None if pos_weight_shape is None else rng.random(pos_weight_shape) * 3
    loss = F.binary_cross_entropy_with_logits(logits, target, weight, pos_weight)
    assert_scalar_close(loss, ref.binary_cross_entropy_with_logits(logits, target, weight, pos_weight))


def test_bce_gradcheck_logits_and_target_with_weights():
    logits, target = bce_case((2, 2, 2, 3), seed=2)
    rng = np.random.default_rng(3)
    weight, pos_weight = rng.random((2, 1, 3)), rng.random((2, 1, 1)) + 0.5
    fn = lambda z, t: F.binary_cross_entropy_with_logits(z, t, weight, pos_weight)  # noqa: E731
    assert ts.gradcheck(fn, [leaf(logits), leaf(target)])
    assert ts.gradcheck(lambda z: F.binary_cross_entropy_with_logits(z, target), [leaf(logits)])


@settings(max_examples=20, deadline=None)
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=4), scale=st.floats(0.1, 50.0),
       use_pos_weight=st.booleans(), seed=st.integers(0, 2**16))
def test_hypothesis_bce(shape, scale, use_pos_weight, seed):
    rng = np.random.default_rng(seed)
    logits, target = rng.standard_normal(shape) * scale, rng.random(shape)
    weight = rng.random(shape[-1:])
    pos_weight = rng.random(shape[-1:]) + 0.5 if use_pos_weight else None
    loss = F.binary_cross_entropy_with_logits(logits, target, weight, pos_weight)
    assert_scalar_close(loss, ref.binary_cross_entropy_with_logits(logits, target, weight, pos_weight),
                        rtol=1e-12, atol=1e-12)
    if logits.size <= 8:
        fn = lambda z, t: F.binary_cross_entropy_with_logits(z, t, weight, pos_weight)  # noqa: E731
        assert ts.gradcheck(fn, [leaf(logits / scale), leaf(target)])


def test_bce_non_contiguous_inputs():
    logits, target = bce_case(seed=4)
    pos_weight = np.random.default_rng(5).random((3, 1, 1))
    fn = lambda z, t: F.binary_cross_entropy_with_logits(z, t, pos_weight=pos_weight)  # noqa: E731
    plain = loss_and_grads(fn, logits, target)
    strided = loss_and_grads(fn, transposed_copy(logits), transposed_copy(target))
    np.testing.assert_allclose(float(plain[0].data), float(strided[0].data), rtol=1e-14)
    for a, b in zip(plain[1], strided[1]):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-15)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("pos_weight_shape", [None, (3, 1, 1), (1,)])
def test_bce_against_torch(torch, dtype, pos_weight_shape):
    logits, target = (a.astype(dtype) for a in bce_case(seed=6))
    rng = np.random.default_rng(7)
    weight = rng.random((1, 3, 4, 5)).astype(dtype)
    pos_weight = None if pos_weight_shape is None else (rng.random(pos_weight_shape) * 3).astype(dtype)
    ours = loss_and_grads(lambda z, t: F.binary_cross_entropy_with_logits(z, t, weight, pos_weight),
                          logits, target)
    pos_weight_t = None if pos_weight is None else torch.tensor(pos_weight)
    theirs = torch_loss_and_grads(
        torch, lambda z, t: torch.nn.functional.binary_cross_entropy_with_logits(
            z, t, torch.tensor(weight), pos_weight=pos_weight_t), logits, target)
    assert_matches_torch(ours, theirs, dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_bce_exact_and_finite_at_logits_1e4(torch, dtype):
    logits = np.array([1e4, -1e4, 1e4, -1e4, 1e4, -1e4, 30.0, -30.0], dtype=dtype)
    target = np.array([1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 0.0, 1.0], dtype=dtype)
    pos_weight = np.array([2.5], dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours = loss_and_grads(lambda z, t: F.binary_cross_entropy_with_logits(z, t, pos_weight=pos_weight),
                              logits, target)
    theirs = torch_loss_and_grads(
        torch, lambda z, t: torch.nn.functional.binary_cross_entropy_with_logits(
            z, t, pos_weight=torch.tensor(pos_weight)), logits, target)
    assert np.isfinite(float(ours[0].data)) and all(np.all(np.isfinite(g)) for g in ours[1])
    assert_matches_torch(ours, theirs, dtype)
    # exact: per element 0, 0, 1e4, 2.5e4, 0.5e4, 0.5e4, softplus(30), 2.5·softplus(30)
    softplus_30 = 30.0 + np.log1p(np.exp(-30.0))
    exact = (1e4 + 2.5e4 + 0.5e4 + 0.5e4 * 2.5 + softplus_30 * 3.5) / 8
    np.testing.assert_allclose(float(ours[0].data), exact, rtol=1e-7 if dtype == np.float32 else 1e-15)


def test_bce_accepts_integer_masks_and_tensors():
    logits, target = bce_case(soft=False, seed=8)
    expected = ref.binary_cross_entropy_with_logits(logits, target)
    assert_scalar_close(F.binary_cross_entropy_with_logits(logits, target.astype(np.uint8)), expected)
    assert_scalar_close(F.binary_cross_entropy_with_logits(ts.Tensor(logits), ts.Tensor(target > 0.5)), expected)
    loss32 = F.binary_cross_entropy_with_logits(logits.astype(np.float32), target)
    assert loss32.dtype == np.float32


def test_bce_bad_input():
    op = "binary_cross_entropy_with_logits"
    logits, target = bce_case(seed=9)
    with pytest.raises(ValueError, match=rf"{op}: argument 'target' expected the shape of 'logits' "
                                         r"\(2, 3, 4, 5\), got \(2, 4, 5\)"):
        F.binary_cross_entropy_with_logits(logits, target[:, 0])
    with pytest.raises(ValueError, match=rf"{op}: argument 'target' expected values in \[0, 1\]"):
        F.binary_cross_entropy_with_logits(logits, target * 2)
    with pytest.raises(TypeError, match=rf"{op}: argument 'logits' expected a floating-point tensor"):
        F.binary_cross_entropy_with_logits(logits.astype(np.int64), target)
    with pytest.raises(ValueError, match=rf"{op}: argument 'pos_weight' of shape \(4,\) does not broadcast"):
        F.binary_cross_entropy_with_logits(logits, target, pos_weight=np.ones(4))
    with pytest.raises(ValueError, match=rf"{op}: argument 'weight' of shape \(2, 1, 3, 4, 5\) does not"):
        F.binary_cross_entropy_with_logits(logits, target, weight=np.ones((2, 1, 3, 4, 5)))
    with pytest.raises(TypeError, match=rf"{op}: argument 'target' requires grad, so it must have"):
        F.binary_cross_entropy_with_logits(logits, leaf(target.astype(np.float32)))
    with pytest.raises(TypeError, match=rf"{op}: argument 'target' expected a real numeric array"):
        F.binary_cross_entropy_with_logits(logits, target.astype(np.complex128))


# ===================================================================== cross-entropy

def ce_case(shape=(2, 4, 3, 5), seed=0, ignore_index=None):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal(shape) * 2
    target = rng.integers(0, shape[1], (shape[0],) + shape[2:])
    if ignore_index is not None:
        target[rng.random(target.shape) < 0.3] = ignore_index
    return logits, target


@pytest.mark.parametrize("shape", [(2, 4, 3, 5), (7, 4)])
@pytest.mark.parametrize("use_weight", [False, True])
@pytest.mark.parametrize("ignore_index", [None, -100, 2])
def test_cross_entropy_matches_reference(shape, use_weight, ignore_index):
    logits, target = ce_case(shape, ignore_index=ignore_index)
    weight = np.random.default_rng(1).uniform(0.2, 3, shape[1]) if use_weight else None
    loss = F.cross_entropy(logits, target, weight, ignore_index)
    assert_scalar_close(loss, ref.cross_entropy(logits, target, weight, ignore_index))


@pytest.mark.parametrize("shape", [(2, 3, 2, 2), (5, 3)])
def test_cross_entropy_gradcheck(shape):
    logits, target = ce_case(shape, seed=2, ignore_index=-1)
    weight = np.array([0.5, 2.0, 1.5])
    assert ts.gradcheck(lambda z: F.cross_entropy(z, target, weight, ignore_index=-1), [leaf(logits)])
    assert ts.gradcheck(lambda z: F.cross_entropy(z, target % 3), [leaf(logits)])


def test_cross_entropy_per_pixel_weight_map():
    logits, target = ce_case(seed=3)
    pixel_weight = np.random.default_rng(4).random(target.shape)
    log_p = ref.log_softmax(logits, axis=1)
    picked = np.take_along_axis(log_p, target[:, None], axis=1)[:, 0]
    expected = -(pixel_weight * picked).sum() / pixel_weight.sum()
    assert_scalar_close(F.cross_entropy(logits, target, pixel_weight), expected)
    assert ts.gradcheck(lambda z: F.cross_entropy(z, target[:, :2, :2], pixel_weight[:, :2, :2]),
                        [leaf(logits[:, :, :2, :2])])


def test_cross_entropy_all_ignored_is_nan_with_zero_gradient():
    logits, target = ce_case((2, 3, 2, 2), seed=5)
    z = leaf(logits)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss = F.cross_entropy(z, np.full(target.shape, 7), ignore_index=7)
        loss.backward()
    assert np.isnan(float(loss.data))
    np.testing.assert_array_equal(z.grad, 0.0)


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 3), c=st.integers(1, 4), spatial=st.lists(st.integers(1, 3), max_size=2),
       use_weight=st.booleans(), ignore=st.booleans(), seed=st.integers(0, 2**16))
def test_hypothesis_cross_entropy(n, c, spatial, use_weight, ignore, seed):
    shape = (n, c) + tuple(spatial)
    logits, target = ce_case(shape, seed=seed, ignore_index=-1 if ignore else None)
    if ignore:
        target.ravel()[0] = 0                      # keep at least one element counted
    weight = np.random.default_rng(seed).uniform(0.5, 2, c) if use_weight else None
    ignore_index = -1 if ignore else None
    loss = F.cross_entropy(logits, target, weight, ignore_index)
    assert_scalar_close(loss, ref.cross_entropy(logits, target, weight, ignore_index), rtol=1e-12, atol=1e-12)
    if logits.size <= 12:
        assert ts.gradcheck(lambda z: F.cross_entropy(z, target, weight, ignore_index), [leaf(logits)])


def test_cross_entropy_non_contiguous_inputs():
    logits, target = ce_case(seed=6, ignore_index=-1)
    fn = lambda z: F.cross_entropy(z, target, ignore_index=-1)  # noqa: E731
    plain = loss_and_grads(fn, logits)
    strided_logits = leaf(transposed_copy(logits))
    loss = F.cross_entropy(strided_logits, transposed_copy(target), ignore_index=-1)
    loss.backward(np.asarray(1.7))
    np.testing.assert_allclose(float(loss.data), float(plain[0].data), rtol=1e-14)
    np.testing.assert_allclose(strided_logits.grad, plain[1][0], rtol=0, atol=1e-15)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(2, 4, 3, 5), (9, 4)])
@pytest.mark.parametrize("use_weight, ignore_index", [(False, None), (True, None), (True, 1), (False, -100)])
def test_cross_entropy_against_torch(torch, dtype, shape, use_weight, ignore_index):
    logits, target = ce_case(shape, seed=7, ignore_index=ignore_index)
    logits = logits.astype(dtype)
    weight = np.random.default_rng(8).uniform(0.2, 3, shape[1]).astype(dtype) if use_weight else None
    ours = loss_and_grads(lambda z: F.cross_entropy(z, target, weight, ignore_index), logits)
    theirs = torch_loss_and_grads(
        torch, lambda z: torch.nn.functional.cross_entropy(
            z, torch.tensor(target), None if weight is None else torch.tensor(weight),
            ignore_index=-100 if ignore_index is None else ignore_index), logits)
    assert_matches_torch(ours, theirs, dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_cross_entropy_stable_at_logits_1e4(torch, dtype):
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4], [0.0, 0.0, -1e4]], dtype=dtype)
    target = np.array([1, 0, 2])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours = loss_and_grads(lambda z: F.cross_entropy(z, target), logits)
    theirs = torch_loss_and_grads(torch, lambda z: torch.nn.functional.cross_entropy(z, torch.tensor(target)),
                                  logits)
    assert_matches_torch(ours, theirs, dtype)


def test_cross_entropy_bad_input():
    logits, target = ce_case()
    with pytest.raises(TypeError, match="cross_entropy: argument 'target' expected an integer class map, "
                                        "got dtype float64"):
        F.cross_entropy(logits, target.astype(np.float64))
    with pytest.raises(ValueError, match=r"cross_entropy: argument 'target' holds values outside the class "
                                         r"range \[0, 4\): \[-3, 4, 9\]"):
        bad = target.copy()
        bad.ravel()[:4] = [4, 9, -3, 4]
        F.cross_entropy(logits, bad)
    with pytest.raises(ValueError, match=r"cross_entropy: argument 'target' expected shape \(2, 3, 5\) for "
                                         r"logits of shape \(2, 4, 3, 5\), got \(2, 5, 3\)"):
        F.cross_entropy(logits, target.transpose(0, 2, 1))
    with pytest.raises(ValueError, match=r"cross_entropy: argument 'weight' expected class weights of shape "
                                         r"\(4,\)"):
        F.cross_entropy(logits, target, weight=np.ones(3))
    with pytest.raises(ValueError, match="cross_entropy: argument 'logits' expected a tensor"):
        F.cross_entropy(logits[0, 0, 0], np.array(1))
    with pytest.raises(TypeError, match="cross_entropy: argument 'logits' expected a floating-point tensor"):
        F.cross_entropy(target[:, None], target)
    with pytest.raises(TypeError, match="cross_entropy: argument 'ignore_index' expected an int or None"):
        F.cross_entropy(logits, target, ignore_index=1.5)


# ===================================================================== dice

def dice_case(classes, shape=(2, 3, 4), seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((shape[0], classes) + shape[1:]) * 2
    if classes == 1:
        return logits, (rng.random(shape) > 0.5).astype(np.int64)
    return logits, rng.integers(0, classes, shape)


@pytest.mark.parametrize("classes", [1, 3])
@pytest.mark.parametrize("smooth", [1.0, 0.0, 1e-5])
def test_dice_matches_reference(classes, smooth):
    logits, target = dice_case(classes)
    assert_scalar_close(F.dice_loss(logits, target, smooth), ref.dice_loss(logits, target, smooth))
    if classes == 1:      # the (N, 1, H, W) target form, as floats
        target4 = target[:, None].astype(np.float64)
        assert_scalar_close(F.dice_loss(logits, target4, smooth), ref.dice_loss(logits, target, smooth))


@pytest.mark.parametrize("classes", [1, 3])
def test_dice_gradcheck(classes):
    logits, target = dice_case(classes, shape=(2, 2, 3), seed=1)
    assert ts.gradcheck(lambda z: F.dice_loss(z, target), [leaf(logits)])
    assert ts.gradcheck(lambda z: F.dice_loss(z, target, smooth=0.5), [leaf(logits)])


@settings(max_examples=20, deadline=None)
@given(classes=st.integers(1, 4), n=st.integers(1, 3), spatial=st.lists(st.integers(1, 3), max_size=2),
       smooth=st.floats(0.01, 10.0), seed=st.integers(0, 2**16))
def test_hypothesis_dice(classes, n, spatial, smooth, seed):
    logits, target = dice_case(classes, shape=(n,) + tuple(spatial), seed=seed)
    loss = F.dice_loss(logits, target, smooth)
    assert_scalar_close(loss, ref.dice_loss(logits, target, smooth), rtol=1e-12, atol=1e-12)
    if logits.size <= 12:
        assert ts.gradcheck(lambda z: F.dice_loss(z, target, smooth), [leaf(logits)])


@pytest.mark.parametrize("classes", [1, 3])
def test_dice_non_contiguous_inputs(classes):
    logits, target = dice_case(classes, shape=(2, 4, 5), seed=2)
    plain = loss_and_grads(lambda z: F.dice_loss(z, target), logits)
    strided = leaf(transposed_copy(logits))
    loss = F.dice_loss(strided, transposed_copy(target))
    loss.backward(np.asarray(1.7))
    np.testing.assert_allclose(float(loss.data), float(plain[0].data), rtol=1e-14)
    np.testing.assert_allclose(strided.grad, plain[1][0], rtol=0, atol=1e-15)


def torch_dice(torch, logits, target, smooth):
    """Dice written with torch ops, as the definition: an independent forward and autograd."""
    classes = logits.shape[1]
    if classes == 1:
        p, t = torch.sigmoid(logits), torch.tensor(target, dtype=logits.dtype).reshape(logits.shape)
    else:
        p = torch.softmax(logits, dim=1)
        t = torch.nn.functional.one_hot(torch.tensor(target), classes).movedim(-1, 1).to(logits.dtype)
    axes = (0,) + tuple(range(2, logits.ndim))
    dice = (2 * (p * t).sum(axes) + smooth) / (p.sum(axes) + t.sum(axes) + smooth)
    return 1 - dice.mean()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("classes", [1, 3])
def test_dice_against_torch(torch, dtype, classes):
    logits, target = dice_case(classes, shape=(2, 5, 6), seed=3)
    logits = logits.astype(dtype)
    ours = loss_and_grads(lambda z: F.dice_loss(z, target, 1.0), logits)
    theirs = torch_loss_and_grads(torch, lambda z: torch_dice(torch, z, target, 1.0), logits)
    assert_matches_torch(ours, theirs, dtype)


def test_dice_bad_input():
    logits1, target1 = dice_case(1)
    logits3, target3 = dice_case(3)
    with pytest.raises(ValueError, match=r"dice_loss: argument 'target' expected a binary mask with values in "
                                         r"\{0, 1\}"):
        F.dice_loss(logits1, target1 * 255)
    with pytest.raises(ValueError, match=r"dice_loss: argument 'target' expected shape \(2, 1, 3, 4\) or "
                                         r"\(2, 3, 4\) for logits of shape \(2, 1, 3, 4\), got \(2, 4, 3\)"):
        F.dice_loss(logits1, target1.transpose(0, 2, 1))
    with pytest.raises(TypeError, match="dice_loss: argument 'target' expected an integer class map, got "
                                        "dtype float64"):
        F.dice_loss(logits3, target3.astype(np.float64))
    with pytest.raises(ValueError, match=r"dice_loss: argument 'target' holds values outside the class range "
                                         r"\[0, 3\): \[3\]"):
        F.dice_loss(logits3, np.full(target3.shape, 3))
    with pytest.raises(ValueError, match=r"dice_loss: argument 'target' expected an integer class map of shape "
                                         r"\(2, 3, 4\)"):
        F.dice_loss(logits3, target3[:, None])
    with pytest.raises(ValueError, match="dice_loss: argument 'smooth' expected a value >= 0.0"):
        F.dice_loss(logits3, target3, smooth=-1.0)
    with pytest.raises(TypeError, match="dice_loss: argument 'logits' expected a floating-point tensor"):
        F.dice_loss(target3[:, None], target3)
    with pytest.raises(ValueError, match="dice_loss: argument 'logits' expected a tensor"):
        F.dice_loss(np.zeros(3), np.zeros(3))


# ===================================================================== mse

def test_mse_matches_reference_and_gradcheck():
    rng = np.random.default_rng(0)
    x, t = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 3, 4))
    assert_scalar_close(F.mse_loss(x, t), ref.mse_loss(x, t))
    assert ts.gradcheck(F.mse_loss, [leaf(x), leaf(t)])
    assert ts.gradcheck(lambda a: F.mse_loss(a, t), [leaf(x)])


@settings(max_examples=15, deadline=None)
@given(shape=st.lists(st.integers(1, 4), max_size=4), seed=st.integers(0, 2**16))
def test_hypothesis_mse(shape, seed):
    rng = np.random.default_rng(seed)
    x, t = rng.standard_normal(shape) * 10, rng.standard_normal(shape)
    assert_scalar_close(F.mse_loss(x, t), ref.mse_loss(x, t), rtol=1e-12, atol=1e-12)


def test_mse_non_contiguous_inputs():
    rng = np.random.default_rng(1)
    x, t = rng.standard_normal((3, 4, 5)), rng.standard_normal((3, 4, 5))
    plain = loss_and_grads(F.mse_loss, x, t)
    strided = loss_and_grads(F.mse_loss, transposed_copy(x), transposed_copy(t))
    np.testing.assert_allclose(float(strided[0].data), float(plain[0].data), rtol=1e-14)
    for a, b in zip(plain[1], strided[1]):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-15)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_mse_against_torch(torch, dtype):
    rng = np.random.default_rng(2)
    x, t = (rng.standard_normal((2, 3, 4, 5)).astype(dtype) for _ in range(2))
    ours = loss_and_grads(F.mse_loss, x, t)
    theirs = torch_loss_and_grads(torch, torch.nn.functional.mse_loss, x, t)
    assert_matches_torch(ours, theirs, dtype)


def test_mse_bad_input():
    with pytest.raises(ValueError, match=r"mse_loss: argument 'target' expected the shape of 'input' \(2, 3\), "
                                         r"got \(3,\)"):
        F.mse_loss(np.zeros((2, 3)), np.zeros(3))
    with pytest.raises(TypeError, match="mse_loss: argument 'input' expected a floating-point tensor"):
        F.mse_loss(np.zeros(3, dtype=np.int64), np.zeros(3))


# ===================================================================== U-Net weight map

def test_connected_components_by_hand():
    mask = np.array([[1, 1, 0, 1],
                     [0, 1, 0, 1],
                     [1, 0, 0, 0],
                     [1, 1, 0, 1]], dtype=bool)
    expected = np.array([[1, 1, 0, 2],
                         [0, 1, 0, 2],
                         [3, 0, 0, 0],
                         [3, 3, 0, 4]])
    np.testing.assert_array_equal(_connected_components(mask), expected)


def test_connected_components_match_scipy():
    ndimage = pytest.importorskip("scipy.ndimage")
    rng = np.random.default_rng(3)
    for _ in range(30):
        mask = rng.random(tuple(rng.integers(1, 16, 2))) < rng.random()
        np.testing.assert_array_equal(_connected_components(mask), ndimage.label(mask)[0])
    spiral = np.zeros((21, 21), dtype=bool)       # one long snake: many union-find rounds
    spiral[::2] = True
    spiral[1::4, -1] = spiral[3::4, 0] = True
    assert _connected_components(spiral).max() == 1


def test_weight_map_matches_reference_on_labelled_masks():
    rng = np.random.default_rng(4)
    for _ in range(6):
        labels = rng.integers(0, 4, (7, 9))                    # touching instances
        np.testing.assert_allclose(F.unet_weight_map(labels), ref.weighted_map_unet(labels), rtol=0, atol=1e-12)
        np.testing.assert_allclose(F.unet_weight_map(labels, w0=5.0, sigma=2.0, class_weights=(0.3, 1.0)),
                                   ref.weighted_map_unet(labels, 5.0, 2.0, (0.3, 1.0)), rtol=0, atol=1e-12)


def test_weight_map_of_a_binary_mask_uses_its_connected_components():
    rng = np.random.default_rng(5)
    for dtype in (bool, np.uint8):
        mask = (rng.random((10, 12)) < 0.35).astype(dtype)
        labels = _connected_components(mask.astype(bool))
        assert labels.max() >= 2
        np.testing.assert_allclose(F.unet_weight_map(mask, sigma=3.0), ref.weighted_map_unet(labels, sigma=3.0),
                                   rtol=0, atol=1e-12)


def test_weight_map_by_hand_two_objects():
    # Two single pixels at columns 0 and 4 of a 1×5 row: a background pixel at column j
    # has d1 + d2 = j + (4 − j) = 4, so w = w_c + w0·exp(−16 / (2σ²)).
    mask = np.array([[1, 0, 0, 0, 2]])
    w_background = 2 / 3            # frequencies 3/5 and 2/5: inverse 5/3 and 5/2, scaled by 2/5
    expected_border = 10.0 * np.exp(-16 / (2 * 5.0**2))
    np.testing.assert_allclose(F.unet_weight_map(mask), [[1.0] + [w_background + expected_border] * 3 + [1.0]],
                               rtol=1e-14)


def test_weight_map_batches_and_feeds_the_losses():
    rng = np.random.default_rng(6)
    masks = (rng.random((2, 1, 8, 8)) < 0.3).astype(np.uint8)
    weights = F.unet_weight_map(masks)
    assert weights.shape == (2, 1, 8, 8) and weights.dtype == np.float64
    for n in range(2):
        np.testing.assert_allclose(weights[n, 0], F.unet_weight_map(masks[n, 0]), rtol=0, atol=0)
    np.testing.assert_array_equal(F.unet_weight_map(masks[:, 0]), weights[:, 0])
    logits = ts.Tensor(rng.standard_normal((2, 1, 8, 8)).astype(np.float32), requires_grad=True)
    loss = F.binary_cross_entropy_with_logits(logits, masks, weight=weights)
    assert loss.dtype == np.float32
    assert_scalar_close(loss, ref.binary_cross_entropy_with_logits(logits.data, masks, weights), rtol=1e-6)
    ce_logits = rng.standard_normal((2, 2, 8, 8))
    assert np.isfinite(F.cross_entropy(ce_logits, masks[:, 0].astype(np.int64), weights[:, 0]).item())


def test_weight_map_bad_input():
    with pytest.raises(TypeError, match="unet_weight_map: argument 'mask' expected an integer or bool label mask"):
        F.unet_weight_map(np.zeros((4, 4)))
    with pytest.raises(ValueError, match=r"unet_weight_map: argument 'mask' expected shape \(H, W\)"):
        F.unet_weight_map(np.zeros(4, dtype=np.int64))
    with pytest.raises(ValueError, match="unet_weight_map: argument 'mask' expected non-negative labels"):
        F.unet_weight_map(-np.ones((3, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="unet_weight_map: argument 'sigma' expected a value > 0.0"):
        F.unet_weight_map(np.zeros((3, 3), dtype=np.int64), sigma=0)
    with pytest.raises(TypeError, match="unet_weight_map: argument 'class_weights' expected a pair"):
        F.unet_weight_map(np.zeros((3, 3), dtype=np.int64), class_weights=1.0)
