"""concat, center_crop, pad: against plain slicing / the reference, finite differences, PyTorch."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinyseg as ts
import tinyseg.functional as F
from tinyseg import reference as ref

PAD_MODES = ["constant", "reflect", "replicate"]


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def transposed_view(x):
    """The same values as a non-contiguous array (a view with swapped last two strides)."""
    return np.ascontiguousarray(np.swapaxes(x, -1, -2)).swapaxes(-1, -2)


def leaves(*arrays):
    return [ts.Tensor(a, requires_grad=True) for a in arrays]


def check_adjoint(op, x, upstream, rng):
    """op is linear, so its backward must be its adjoint: <g, op(d)> = <opᵀ(g), d>."""
    leaf = ts.Tensor(x, requires_grad=True)
    op(leaf).backward(upstream)
    direction = rng.standard_normal(x.shape)
    lhs = np.sum(upstream * op(ts.Tensor(direction)).data)
    np.testing.assert_allclose(lhs, np.sum(leaf.grad * direction), rtol=1e-10, atol=1e-10)


# ============================== concat ==============================

def test_concat_matches_numpy_and_splits_the_gradient():
    rng = np.random.default_rng(0)
    a, b, c = (rng.standard_normal((2, k, 3, 4)) for k in (1, 3, 2))
    ta, tb, tc = leaves(a, b, c)
    y = F.concat([ta, tb, tc], axis=1)
    np.testing.assert_array_equal(y.data, np.concatenate([a, b, c], axis=1))
    upstream = rng.standard_normal(y.shape)
    y.backward(upstream)
    np.testing.assert_array_equal(ta.grad, upstream[:, 0:1])
    np.testing.assert_array_equal(tb.grad, upstream[:, 1:4])
    np.testing.assert_array_equal(tc.grad, upstream[:, 4:6])


@pytest.mark.parametrize("axis", [0, 1, 2, 3, -1, -3])
def test_concat_any_axis(axis):
    rng = np.random.default_rng(1)
    shape_a, shape_b = [2, 3, 4, 5], [2, 3, 4, 5]
    shape_b[axis] = 2
    a, b = rng.standard_normal(shape_a), rng.standard_normal(shape_b)
    ta, tb = leaves(a, b)
    y = F.concat((ta, tb), axis=axis)
    np.testing.assert_array_equal(y.data, np.concatenate([a, b], axis=axis))
    upstream = rng.standard_normal(y.shape)
    y.backward(upstream)
    np.testing.assert_array_equal(ta.grad, np.take(upstream, range(shape_a[axis]), axis=axis))
    np.testing.assert_array_equal(tb.grad, np.take(upstream, range(shape_a[axis], y.shape[axis]), axis=axis))


def test_concat_only_some_inputs_need_grad_and_arrays_are_accepted():
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((1, 2, 3, 3)), rng.standard_normal((1, 1, 3, 3))
    (ta,) = leaves(a)
    y = F.concat([ta, b])               # b: a plain array, no gradient
    y.backward(np.ones(y.shape))
    np.testing.assert_array_equal(ta.grad, np.ones(a.shape))


def test_concat_same_tensor_twice_accumulates():
    x = np.arange(6.0).reshape(1, 1, 2, 3)
    (tx,) = leaves(x)
    y = F.concat([tx, tx], axis=1)
    y.backward(np.concatenate([np.ones(x.shape), 2 * np.ones(x.shape)], axis=1))
    np.testing.assert_array_equal(tx.grad, 3 * np.ones(x.shape))


def test_concat_float32_stays_float32():
    a, b = np.ones((1, 1, 2, 2), np.float32), np.zeros((1, 2, 2, 2), np.float32)
    ta, tb = leaves(a, b)
    y = F.concat([ta, tb])
    y.backward(np.ones(y.shape, np.float32))
    assert y.dtype == np.float32 and ta.grad.dtype == np.float32 and tb.grad.dtype == np.float32


def test_concat_gradcheck():
    rng = np.random.default_rng(3)
    ta, tb = leaves(rng.standard_normal((1, 2, 2, 3)), rng.standard_normal((1, 1, 2, 3)))
    assert ts.gradcheck(lambda a, b: F.concat([a, b], axis=1), [ta, tb])


@settings(max_examples=30, deadline=None)
@given(base=st.lists(st.integers(1, 3), min_size=1, max_size=4), axis_index=st.integers(0, 3),
       sizes=st.lists(st.integers(1, 3), min_size=1, max_size=4), seed=st.integers(0, 2**16))
def test_concat_hypothesis(base, axis_index, sizes, seed):
    rng = np.random.default_rng(seed)
    axis = axis_index % len(base)
    arrays = []
    for size in sizes:
        shape = list(base)
        shape[axis] = size
        arrays.append(rng.standard_normal(shape))
    tensors = leaves(*arrays)
    y = F.concat(tensors, axis=axis)
    np.testing.assert_array_equal(y.data, np.concatenate(arrays, axis=axis))
    upstream = rng.standard_normal(y.shape)
    y.backward(upstream)
    np.testing.assert_array_equal(np.concatenate([t.grad for t in tensors], axis=axis), upstream)


def test_concat_non_contiguous_inputs():
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((2, 1, 3, 4)), rng.standard_normal((2, 2, 3, 4))
    y = F.concat([ts.Tensor(transposed_view(a)), ts.Tensor(transposed_view(b))])
    np.testing.assert_array_equal(y.data, np.concatenate([a, b], axis=1))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_concat_matches_torch(torch, dtype):
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((2, 3, 5, 4)).astype(dtype), rng.standard_normal((2, 2, 5, 4)).astype(dtype)
    ta, tb = leaves(a, b)
    y = F.concat([ta, tb])
    upstream = rng.standard_normal(y.shape).astype(dtype)
    y.backward(upstream)
    a_torch, b_torch = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    y_torch = torch.cat([a_torch, b_torch], dim=1)
    y_torch.backward(torch.tensor(upstream))
    np.testing.assert_array_equal(y.data, y_torch.detach().numpy())
    np.testing.assert_array_equal(ta.grad, a_torch.grad.numpy())
    np.testing.assert_array_equal(tb.grad, b_torch.grad.numpy())


@pytest.mark.parametrize("tensors, kwargs, error, message", [
    ([], {}, TypeError, "'tensors' expected a non-empty list or tuple"),
    (np.zeros((1, 2, 3, 3)), {}, TypeError, "'tensors' expected a non-empty list or tuple"),
    ([np.zeros((1, 2, 3, 3)), np.zeros((1, 2, 3, 4))], {}, ValueError,
     r"match except along axis 1, got shapes \[\(1, 2, 3, 3\), \(1, 2, 3, 4\)\]"),
    ([np.zeros((1, 2, 3, 3)), np.zeros((2, 3, 3))], {}, ValueError, "the same number of dimensions"),
    ([np.zeros((1, 2, 3, 3)), np.zeros((1, 2, 3, 3))], {"axis": 4}, ValueError, "'axis' expected an int in"),
    ([np.zeros((1, 2, 3, 3)), np.zeros((1, 2, 3, 3), np.float32)], {}, TypeError, "share one dtype"),
    ([np.zeros((1, 2, 3, 3)), np.zeros((1, 2, 3, 3), np.int64)], {}, TypeError,
     r"'tensors\[1\]' expected a floating-point tensor"),
])
def test_concat_bad_input(tensors, kwargs, error, message):
    with pytest.raises(error, match=f"concat: .*{message}"):
        F.concat(tensors, **kwargs)


# ============================== center_crop ==============================

@pytest.mark.parametrize("size", [(2, 3), 3, (5, 6), (1, 1), (4, 2)])
def test_center_crop_matches_reference_and_slicing(size):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 3, 5, 6))
    (tx,) = leaves(x)
    y = F.center_crop(tx, size)
    np.testing.assert_array_equal(y.data, ref.center_crop(x, size))
    H, W = (size, size) if isinstance(size, int) else size
    top, left = (5 - H) // 2, (6 - W) // 2
    np.testing.assert_array_equal(y.data, x[:, :, top:top + H, left:left + W])
    upstream = rng.standard_normal(y.shape)
    y.backward(upstream)
    expected = np.zeros(x.shape)
    expected[:, :, top:top + H, left:left + W] = upstream
    np.testing.assert_array_equal(tx.grad, expected)


def test_center_crop_odd_difference_drops_the_extra_row_at_the_bottom():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    np.testing.assert_array_equal(F.center_crop(ts.Tensor(x), (3, 3)).data[0, 0], x[0, 0, :3, :3])
    np.testing.assert_array_equal(F.center_crop(ts.Tensor(x), (1, 2)).data[0, 0], [[5.0, 6.0]])


def test_center_crop_gradcheck():
    (tx,) = leaves(np.random.default_rng(7).standard_normal((1, 2, 5, 4)))
    assert ts.gradcheck(lambda t: F.center_crop(t, (2, 3)), [tx])


@settings(max_examples=30, deadline=None)
@given(shape=st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 7), st.integers(1, 7)),
       fraction=st.tuples(st.floats(0, 1), st.floats(0, 1)), seed=st.integers(0, 2**16))
def test_center_crop_hypothesis(shape, fraction, seed):
    size = tuple(1 + int(f * (n - 1)) for f, n in zip(fraction, shape[2:]))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    np.testing.assert_array_equal(F.center_crop(ts.Tensor(x), size).data, ref.center_crop(x, size))
    check_adjoint(lambda t: F.center_crop(t, size), x, rng.standard_normal(shape[:2] + size), rng)


def test_center_crop_non_contiguous_and_float32():
    x = np.random.default_rng(8).standard_normal((1, 2, 6, 5)).astype(np.float32)
    y = F.center_crop(ts.Tensor(transposed_view(x)), (3, 4))
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y.data, x[:, :, 1:4, 0:4])


@pytest.mark.parametrize("x, size, error, message", [
    (np.zeros((2, 4, 4)), 2, ValueError, "'x' expected a 4-D tensor"),
    (np.zeros((1, 1, 4, 4), np.int64), 2, TypeError, "'x' expected a floating-point tensor"),
    (np.zeros((1, 1, 4, 4)), (5, 2), ValueError, r"'size' \(5, 2\) is larger than the input's \(H, W\) \(4, 4\)"),
    (np.zeros((1, 1, 4, 4)), (2, 0), ValueError, "'size' expected values >= 1"),
    (np.zeros((1, 1, 4, 4)), (2, 2, 2), TypeError, "'size' expected an int or a pair"),
])
def test_center_crop_bad_input(x, size, error, message):
    with pytest.raises(error, match=f"center_crop: .*{message}"):
        F.center_crop(ts.Tensor(x), size)


# ============================== pad ==============================

# (left, right, top, bottom), as torch.nn.functional.pad
PADS = [1, (1, 2, 0, 3), (3, 0, 2, 1), (0, 0, 0, 0), (4, 4, 3, 3)]


def torch_pads(pad):
    return (pad,) * 4 if isinstance(pad, int) else pad


@pytest.mark.parametrize("mode", PAD_MODES)
def test_pad_by_hand(mode):
    x = np.array([[[[1.0, 2.0, 3.0]]]])
    y = F.pad(ts.Tensor(x), (2, 2, 0, 0), mode=mode, **({"value": -1.0} if mode == "constant" else {}))
    expected = {"constant": [-1, -1, 1, 2, 3, -1, -1],
                "reflect": [3, 2, 1, 2, 3, 2, 1],
                "replicate": [1, 1, 1, 2, 3, 3, 3]}[mode]
    np.testing.assert_array_equal(y.data[0, 0, 0], expected)


@pytest.mark.parametrize("mode", ["reflect", "replicate"])
def test_pad_gradient_folds_back_onto_the_source_pixels(mode):
    # Row [a b c] padded by 2 on each side; every padded position sends its gradient
    # to the pixel it copied.
    (tx,) = leaves(np.zeros((1, 1, 1, 3)))
    F.pad(tx, (2, 2, 0, 0), mode=mode).backward(np.array([[[[1.0, 10, 100, 1000, 10000, 100000, 1000000]]]]))
    expected = {"reflect": [100 + 1000000, 10 + 1000 + 100000, 1 + 10000],      # [c b | a b c | b a]
                "replicate": [1 + 10 + 100, 1000, 10000 + 100000 + 1000000]}[mode]   # [a a | a b c | c c]
    np.testing.assert_array_equal(tx.grad[0, 0, 0], expected)


@pytest.mark.parametrize("mode", PAD_MODES)
@pytest.mark.parametrize("pad", [1, (2, 1, 0, 2)])
def test_pad_gradcheck(mode, pad):
    (tx,) = leaves(np.random.default_rng(9).standard_normal((1, 2, 3, 4)))
    assert ts.gradcheck(lambda t: F.pad(t, pad, mode=mode), [tx])


@st.composite
def pad_cases(draw):
    shape = draw(st.tuples(st.integers(1, 2), st.integers(1, 2), st.integers(1, 6), st.integers(1, 6)))
    mode = draw(st.sampled_from(PAD_MODES))
    H, W = shape[2:]
    # reflect needs pad < size; the others take any amount.
    limit_h, limit_w = (H - 1, W - 1) if mode == "reflect" else (6, 6)
    pads = (draw(st.integers(0, limit_w)), draw(st.integers(0, limit_w)),
            draw(st.integers(0, limit_h)), draw(st.integers(0, limit_h)))
    return shape, pads, mode, draw(st.integers(0, 2**16))


@settings(max_examples=40, deadline=None)
@given(case=pad_cases())
def test_pad_hypothesis(case):
    shape, pads, mode, seed = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    left, right, top, bottom = pads
    np_mode = {"constant": "constant", "reflect": "reflect", "replicate": "edge"}[mode]
    expected = np.pad(x, [(0, 0), (0, 0), (top, bottom), (left, right)], mode=np_mode)
    y = F.pad(ts.Tensor(x), pads, mode=mode)
    np.testing.assert_array_equal(y.data, expected)
    check_adjoint(lambda t: F.pad(t, pads, mode=mode), x, rng.standard_normal(expected.shape), rng)


@pytest.mark.parametrize("mode", PAD_MODES)
def test_pad_non_contiguous_and_other_ranks(mode):
    rng = np.random.default_rng(10)
    x = rng.standard_normal((2, 3, 4, 5))
    upstream = rng.standard_normal((2, 3, 7, 7))
    results = []
    for array in (x, transposed_view(x)):
        (tx,) = leaves(array)
        y = F.pad(tx, (1, 1, 2, 1), mode=mode)
        y.backward(upstream)
        results.append((y.data, tx.grad))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])
    # Only the last two axes are padded, whatever the rank.
    np.testing.assert_array_equal(F.pad(ts.Tensor(x[0, 0]), (1, 1, 2, 1), mode=mode).data, results[0][0][0, 0])


@pytest.mark.parametrize("dtype, tolerance", [(np.float64, dict(rtol=0, atol=1e-10)),
                                              (np.float32, dict(rtol=1e-5, atol=1e-5))])
@pytest.mark.parametrize("mode", PAD_MODES)
@pytest.mark.parametrize("pad", PADS)
def test_pad_matches_torch(torch, dtype, tolerance, mode, pad):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 3, 5, 7)).astype(dtype)
    value = 0.5 if mode == "constant" else 0.0
    (tx,) = leaves(x)
    y = F.pad(tx, pad, mode=mode, value=value)
    upstream = rng.standard_normal(y.shape).astype(dtype)
    y.backward(upstream)
    x_torch = torch.tensor(x, requires_grad=True)
    y_torch = torch.nn.functional.pad(x_torch, torch_pads(pad), mode=mode,
                                      **({"value": value} if mode == "constant" else {}))
    y_torch.backward(torch.tensor(upstream))
    assert y.dtype == dtype and tx.grad.dtype == dtype
    np.testing.assert_allclose(y.data, y_torch.detach().numpy(), **tolerance)
    np.testing.assert_allclose(tx.grad, x_torch.grad.numpy(), **tolerance)


def test_pad_does_not_touch_input_or_upstream_gradient():
    x = np.random.default_rng(12).standard_normal((1, 1, 3, 3))
    upstream = np.ones((1, 1, 5, 5))
    for mode in PAD_MODES:
        (tx,) = leaves(x.copy())
        F.pad(tx, 1, mode=mode).backward(upstream)
        np.testing.assert_array_equal(tx.data, x)
        np.testing.assert_array_equal(upstream, 1.0)


@pytest.mark.parametrize("x, kwargs, error, message", [
    (np.zeros(4), {}, ValueError, "'x' expected a tensor with at least 2 dimensions"),
    (np.zeros((1, 1, 4, 4), np.int64), {}, TypeError, "'x' expected a floating-point tensor"),
    (np.zeros((1, 1, 4, 4)), {"pad": (1, 1, 1)}, TypeError, r"'pad' expected an int or \(left, right, top, bottom\)"),
    (np.zeros((1, 1, 4, 4)), {"pad": 1.5}, TypeError, "'pad' expected an int"),
    (np.zeros((1, 1, 4, 4)), {"pad": (1, -1, 0, 0)}, ValueError, "'pad' expected non-negative amounts"),
    (np.zeros((1, 1, 4, 4)), {"mode": "circular"}, ValueError, "'mode' expected one of"),
    (np.zeros((1, 1, 4, 4)), {"mode": "reflect", "pad": (0, 4, 0, 0)}, ValueError,
     "with mode='reflect' must be smaller than the input's"),
    (np.zeros((1, 1, 4, 4)), {"mode": "reflect", "value": 1.0}, ValueError, "'value' is only used by mode='constant'"),
    (np.zeros((1, 1, 4, 4)), {"value": "0"}, TypeError, "'value' expected a real number"),
])
def test_pad_bad_input(x, kwargs, error, message):
    kwargs = {"pad": 1, **kwargs}
    with pytest.raises(error, match=f"pad: .*{message}"):
        F.pad(ts.Tensor(x), **kwargs)
