"""conv2d_bias_relu(x, W, b) = max(conv2d(x, W) + b, 0) as one op: the same values and gradients as
relu(conv2d(x, W, b)) with every conv2d kernel, the fused stores of "direct", gradcheck, errors."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinyseg as ts
import tinyseg.functional as F
from tinyseg import backend
from tinyseg import reference as ref
from tinyseg.functional import activation, conv

from ..kernel_backends import kernel_names, on_kernel

KERNELS = kernel_names(conv.CONV2D_KERNELS)


def unfused_and_fused(kernel, x, w, b, grad, **params):
    """(y, dx, dw, db) of relu(conv2d(x, W, b)) and of conv2d_bias_relu(x, W, b), on ``kernel``."""
    results = []
    with on_kernel("conv2d", kernel) as k:
        for op in (lambda *a: F.relu(F.conv2d(*a, **params)), lambda *a: F.conv2d_bias_relu(*a, **params)):
            tensors = [ts.Tensor(k.put(a), requires_grad=True) for a in (x, w, b)]
            y = op(*tensors)
            y.backward(k.put(grad))
            results.append([k.get(y.data)] + [k.get(t.grad) for t in tensors])
    return results


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("params", [dict(padding=1), dict(padding=0, stride=2), dict(padding=2, dilation=2)],
                         ids=["same", "strided", "dilated"])
def test_same_values_and_gradients_as_relu_of_conv2d(kernel, params):
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((2, 3, 9, 11)), rng.standard_normal((5, 3, 3, 3)), rng.standard_normal(5)
    y_shape = ref.conv2d(x, w, b, **params).shape
    grad = rng.standard_normal(y_shape)
    (y0, *grads0), (y1, *grads1) = unfused_and_fused(kernel, x, w, b, grad, **params)
    np.testing.assert_allclose(y1, np.maximum(ref.conv2d(x, w, b, **params), 0), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(y1, y0, rtol=1e-12, atol=1e-12)
    for g0, g1 in zip(grads0, grads1):
        np.testing.assert_allclose(g1, g0, rtol=1e-10, atol=1e-10)


@settings(max_examples=25, deadline=None)
@given(c_in=st.integers(1, 20), c_out=st.integers(1, 40), height=st.integers(1, 12), width=st.integers(1, 40),
       kernel=st.sampled_from(["direct", "auto", "im2col", "winograd"]), seed=st.integers(0, 2**16))
def test_float32_layers_equal_the_unfused_layer_bit_for_bit(c_in, c_out, height, width, kernel, seed):
    """The fused stores add the bias and clamp exactly as bias_relu does after the conv: the same bits."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, c_in, height, width)).astype(np.float32)
    w = rng.standard_normal((c_out, c_in, 3, 3)).astype(np.float32)
    b = rng.standard_normal(c_out).astype(np.float32)
    with on_kernel("conv2d", kernel):
        fused = F.conv2d_bias_relu(ts.Tensor(x), ts.Tensor(w), ts.Tensor(b), padding=1).data
        unfused = F.bias_relu(F.conv2d(ts.Tensor(x), ts.Tensor(w), None, padding=1), ts.Tensor(b)).data
    assert fused.dtype == np.float32 and fused.flags.c_contiguous
    np.testing.assert_array_equal(fused, unfused)


def test_direct_applies_bias_and_relu_in_its_stores(monkeypatch):
    """On "direct" (stride 1) no separate bias + ReLU pass runs; NaN stays NaN and −0.0 becomes +0.0, as relu."""
    calls = []
    for kernel in activation.RELU_KERNELS.values():
        original = kernel.forward_with_bias
        monkeypatch.setattr(kernel, "forward_with_bias",
                            staticmethod(lambda *a, f=original: calls.append(1) or f(*a)))
    x = np.zeros((1, 1, 3, 20), np.float32)
    x[0, 0, 1, 4] = np.nan
    w = np.zeros((2, 1, 1, 1), np.float32)
    w[:, 0, 0, 0] = 1
    b = np.array([-0.0, 1.0], np.float32)
    with on_kernel("conv2d", "direct"):
        y = F.conv2d_bias_relu(ts.Tensor(x), ts.Tensor(w), ts.Tensor(b)).data
        expected = F.relu(F.conv2d(ts.Tensor(x), ts.Tensor(w), ts.Tensor(b))).data
    assert calls == [] and np.isnan(y[0, :, 1, 4]).all()
    assert not np.signbit(y[0, 0]).any() and (y[0, 1][~np.isnan(y[0, 1])] == 1).all()
    np.testing.assert_array_equal(y, expected)
    with on_kernel("conv2d", "im2col"):
        F.conv2d_bias_relu(ts.Tensor(x), ts.Tensor(w), ts.Tensor(b))
    assert calls                               # kernels without fused stores: conv, then bias + ReLU


@pytest.mark.parametrize("kernel", ["direct", "im2col", "auto"])
def test_gradcheck(kernel):
    rng = np.random.default_rng(1)
    x, w, b = rng.standard_normal((2, 2, 5, 6)), rng.standard_normal((3, 2, 3, 3)), rng.standard_normal(3)
    with backend.use_kernel("conv2d", kernel):
        assert ts.gradcheck(lambda *a: F.conv2d_bias_relu(*a, padding=1),
                            [ts.Tensor(a, requires_grad=True) for a in (x, w, b)])


def test_bad_inputs_are_clear_errors():
    x, w = ts.Tensor(np.zeros((1, 2, 5, 5))), ts.Tensor(np.zeros((3, 2, 3, 3)))
    with pytest.raises(ValueError, match="conv2d_bias_relu: argument 'bias' is required"):
        F.conv2d_bias_relu(x, w, None)
    with pytest.raises(ValueError, match=r"conv2d_bias_relu: argument 'bias' expected shape \(3,\)"):
        F.conv2d_bias_relu(x, w, ts.Tensor(np.zeros(2)))
    with pytest.raises(ValueError, match="conv2d_bias_relu: input has 2 channels but weight expects 4"):
        F.conv2d_bias_relu(x, ts.Tensor(np.zeros((3, 4, 3, 3))), ts.Tensor(np.zeros(3)))
    with pytest.raises(ValueError, match="larger than the padded input"):
        F.conv2d_bias_relu(ts.Tensor(np.zeros((1, 2, 2, 2))), w, ts.Tensor(np.zeros(3)))
