"""The autograd core: graph building, backward order, accumulation, no_grad, dtypes."""
import gc
import weakref

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tinyseg as ts
import tinyseg.functional as F


def leaf(values, dtype=np.float64):
    return ts.Tensor(np.asarray(values, dtype=dtype), requires_grad=True)


def test_reused_node_gets_every_contribution():
    a = leaf([1.5, -2.0])
    b = a + a          # db/da = 2
    c = b * b          # dc/db = 2b = 4a  ->  dc/da = 8a
    c.sum().backward()
    np.testing.assert_allclose(a.grad, 8 * a.data)


def test_diamond_graph():
    x = leaf([0.3, 0.7])
    y = x.exp()
    z = y * x + y.log() - y / x    # x e^x + x - e^x / x
    z.sum().backward()
    xv = x.data
    expected = np.exp(xv) * (1 + xv) + 1 - np.exp(xv) * (xv - 1) / xv ** 2
    np.testing.assert_allclose(x.grad, expected)


def test_ten_thousand_op_chain_has_no_recursion_limit():
    x = leaf([1.0])
    y = x
    for _ in range(10_000):
        y = y * 1.0001
    y.backward()
    np.testing.assert_allclose(x.grad, [1.0001 ** 10_000], rtol=1e-10)


def test_two_backward_calls_accumulate_exactly_twice():
    w = leaf([[1.0, 2.0], [3.0, -1.0]])
    x = np.array([[0.5], [2.0]])
    for _ in range(2):
        (w @ x).sum().backward()
    np.testing.assert_array_equal(w.grad, 2 * np.broadcast_to(x.T, (2, 2)))


def test_retain_graph_allows_a_second_backward_and_accumulates():
    a = leaf([2.0])
    y = a * a
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_array_equal(a.grad, [8.0])


def test_second_backward_through_a_released_graph_is_a_clear_error():
    a = leaf([2.0])
    y = a * a
    y.backward()
    with pytest.raises(RuntimeError, match="already released"):
        y.backward()


def test_backward_releases_saved_buffers():
    a = leaf(np.ones((4, 4)))
    y = a.exp()
    fn = weakref.ref(y._creator)
    y.sum().backward()
    gc.collect()
    assert fn() is None
    assert y._creator is None


def test_backward_frees_intermediate_activations_during_the_walk():
    """An intermediate tensor nobody holds is freed once the walk has passed it, not at the
    end of backward (the activations of a U-Net then do not all stay alive with the gradients)."""
    seen_alive = []

    class Probe(ts.Function):       # identity; its backward runs after every node above it
        def forward(self, x):
            return x

        def backward(self, grad):
            seen_alive.append(intermediate() is not None)
            return grad

    x = leaf(np.ones((8, 8)))
    p = Probe()(x)
    a = p * 2.0
    intermediate = weakref.ref(a)
    loss = (a * 3.0).sum()
    del a
    assert intermediate() is not None          # still held by the graph
    loss.backward()
    assert seen_alive == [False]
    np.testing.assert_allclose(x.grad, 6.0)


def test_no_grad_builds_no_graph():
    a = leaf([1.0, 2.0])
    with ts.no_grad():
        y = (a * 3).exp()
    assert not y.requires_grad and y._creator is None
    assert ts.is_grad_enabled()


def test_detach_cuts_the_graph_and_shares_memory():
    a = leaf([1.0, 2.0])
    d = (a * 2).detach()
    assert not d.requires_grad and d.is_leaf
    y = (a * d).sum()
    y.backward()
    np.testing.assert_array_equal(a.grad, d.data)


def test_requires_grad_propagates_only_from_inputs_that_need_it():
    a = leaf([1.0])
    b = ts.Tensor(np.array([2.0]))
    assert (a * b).requires_grad
    assert not (b * b).requires_grad
    assert (b * b).is_leaf


def test_gradient_flows_only_to_inputs_that_require_it():
    a = leaf([1.0, 2.0])
    b = ts.Tensor(np.array([3.0, 4.0]))
    (a * b).sum().backward()
    assert b.grad is None
    np.testing.assert_array_equal(a.grad, b.data)


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_broadcasting_gradients_sum_over_broadcast_axes(data):
    shape_a, shape_b = data.draw(hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4,
                                                                   max_side=3)).input_shapes
    a = leaf(data.draw(hnp.arrays(np.float64, shape_a, elements=st.floats(-2, 2))))
    b = leaf(data.draw(hnp.arrays(np.float64, shape_b, elements=st.floats(0.5, 2))))
    out = a * b + a / b - b
    out.sum().backward()
    full = np.broadcast_shapes(shape_a, shape_b)
    ga = np.broadcast_to(b.data + 1 / b.data, full)
    gb = np.broadcast_to(a.data - a.data / b.data ** 2 - 1, full)

    def reduce_to(g, shape):
        g = g.sum(axis=tuple(range(g.ndim - len(shape))))
        return g.sum(axis=tuple(i for i, n in enumerate(shape) if n == 1), keepdims=True).reshape(shape)

    np.testing.assert_allclose(a.grad, reduce_to(ga, shape_a), atol=1e-12)
    np.testing.assert_allclose(b.grad, reduce_to(gb, shape_b), atol=1e-12)
    assert a.grad.shape == shape_a and b.grad.shape == shape_b


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_kept_through_ops_and_gradients(dtype):
    a = leaf(np.random.default_rng(0).random((2, 3)) + 0.5, dtype)
    y = ((a * 2 + 1) / 3 - a.sqrt()).exp().log().mean()
    assert y.dtype == dtype
    y.backward()
    assert a.grad.dtype == dtype


def test_python_scalars_do_not_upcast_float32():
    a = leaf([1.0, 2.0], np.float32)
    assert (a * 2.5 + 1).dtype == np.float32
    assert (2.5 - a).dtype == np.float32
    assert (1 / a).dtype == np.float32


def test_python_lists_default_to_float32_and_arrays_keep_their_dtype():
    assert ts.Tensor([1.0, 2.0]).dtype == np.float32
    assert ts.Tensor(np.zeros(2)).dtype == np.float64
    assert ts.Tensor(np.zeros(2, dtype=np.int64)).dtype == np.int64


def test_integer_tensors_cannot_require_grad():
    with pytest.raises(TypeError, match="floating-point"):
        ts.Tensor(np.arange(3), requires_grad=True)


def test_backward_needs_grad_for_non_scalar_outputs():
    y = leaf([1.0, 2.0]) * 2
    with pytest.raises(RuntimeError, match="single-element"):
        y.backward()
    with pytest.raises(ValueError, match="shape"):
        y.backward(np.ones(3))


def test_backward_on_a_tensor_without_grad_is_a_clear_error():
    with pytest.raises(RuntimeError, match="does not require grad"):
        ts.Tensor(np.ones(1)).backward()


def test_ndarray_on_the_left_uses_tensor_operators():
    a = leaf([1.0, 2.0])
    y = np.array([3.0, 4.0]) * a
    assert isinstance(y, ts.Tensor)
    y.sum().backward()
    np.testing.assert_array_equal(a.grad, [3.0, 4.0])


def test_numpy_item_and_repr():
    t = ts.Tensor(np.array([[1.5]]))
    assert t.numpy() is t.data or np.array_equal(t.numpy(), t.data)
    assert t.item() == 1.5
    assert "Tensor" in repr(t)
    assert t.to("cpu") is t
    with pytest.raises(ValueError, match="device"):
        t.to("tpu")


def test_cuda_without_cupy_is_a_clear_error():
    pytest.importorskip("numpy")
    try:
        import cupy  # noqa: F401
        pytest.skip("CuPy is installed here")
    except ImportError:
        pass
    with pytest.raises(RuntimeError, match="CuPy"):
        ts.Tensor(np.ones(2)).to("cuda")


def test_elementwise_ops_match_numpy():
    rng = np.random.default_rng(1)
    x = rng.random((3, 4)) + 0.1
    t = ts.Tensor(x)
    np.testing.assert_array_equal(F.exp(t).data, np.exp(x))
    np.testing.assert_array_equal(F.log(t).data, np.log(x))
    np.testing.assert_array_equal(F.sqrt(t).data, np.sqrt(x))
    np.testing.assert_array_equal(F.abs(t - 0.5).data, np.abs(x - 0.5))
    np.testing.assert_array_equal(F.clip(t, 0.3, 0.6).data, np.clip(x, 0.3, 0.6))
    np.testing.assert_array_equal(F.maximum(t, 0.5).data, np.maximum(x, 0.5))
    np.testing.assert_array_equal((t ** 3).data, x ** 3)
    np.testing.assert_array_equal(F.sum(t, axis=1).data, x.sum(axis=1))
    np.testing.assert_array_equal(F.mean(t, axis=(0, 1), keepdims=True).data, x.mean(axis=(0, 1), keepdims=True))
    np.testing.assert_array_equal(F.max(t, axis=0).data, x.max(axis=0))
    np.testing.assert_array_equal(t[1:, ::2].data, x[1:, ::2])
    np.testing.assert_array_equal(t.T.data, x.T)
    np.testing.assert_array_equal(t.reshape(2, 6).data, x.reshape(2, 6))
    np.testing.assert_array_equal((t @ t.T).data, x @ x.T)


def test_matmul_shape_errors_are_clear():
    with pytest.raises(ValueError, match="inner dimensions"):
        ts.Tensor(np.ones((2, 3))) @ ts.Tensor(np.ones((2, 3)))
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        ts.Tensor(np.ones(3)) @ ts.Tensor(np.ones((3, 2)))


def test_non_contiguous_inputs_are_accepted():
    base = np.random.default_rng(0).random((4, 3))
    view = ts.Tensor(base.T, requires_grad=True)          # a transposed, non-contiguous view
    (view.exp() * view).sum().backward()
    np.testing.assert_allclose(view.grad, np.exp(base.T) * (1 + base.T))
