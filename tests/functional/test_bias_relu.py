"""bias_relu(z, b) = max(z + b[c], 0): every relu kernel against the loop definition, gradients, errors."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinyseg as ts
import tinyseg.functional as F
from tinyseg.functional import activation

from ..kernel_backends import kernel_names, on_kernel

KERNELS = kernel_names(activation.RELU_KERNELS)


def bias_relu_definition(z, b, grad):
    """Loops over the definition: y = max(z + b[c], 0); dz = dy·[y > 0]; db[c] = Σ dz[:, c]."""
    y, dz, db = np.empty_like(z), np.zeros_like(z), np.zeros_like(b)
    for index in np.ndindex(z.shape):
        c = index[1]
        v = z[index] + b[c]
        y[index] = v if v > 0 else 0.0
        if v > 0:
            dz[index] = grad[index]
            db[c] += grad[index]
    return y, dz, db


def run(kernel, z, b, grad):
    with on_kernel("relu", kernel) as k:
        tz, tb = ts.Tensor(k.put(z), requires_grad=True), ts.Tensor(k.put(b), requires_grad=True)
        y = F.bias_relu(tz, tb)
        y.backward(k.put(grad))
        return k.get(y.data), k.get(tz.grad), k.get(tb.grad)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 1, 1, 1), (3, 2), (2, 4, 3, 3, 2)])
def test_bias_relu_matches_the_definition(kernel, dtype, shape):
    rng = np.random.default_rng(1)
    z = rng.standard_normal(shape).astype(dtype)
    b = rng.standard_normal(shape[1]).astype(dtype)
    grad = rng.standard_normal(shape).astype(dtype)
    y, dz, db = run(kernel, z, b, grad)
    y_ref, dz_ref, db_ref = bias_relu_definition(z, b, grad)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(dz, dz_ref)
    np.testing.assert_allclose(db, db_ref, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-6)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bias_relu_on_a_layer_sized_array(kernel, dtype):
    """Past NUMBA_BIAS_RELU_PARALLEL_MIN_ELEMENTS: the parallel fused loops (planes forward, channels backward)."""
    shape = (2, 5, 96, 80)
    assert np.prod(shape) >= activation.NUMBA_BIAS_RELU_PARALLEL_MIN_ELEMENTS
    rng = np.random.default_rng(3)
    z, grad = (rng.standard_normal(shape).astype(dtype) for _ in range(2))
    b = rng.standard_normal(shape[1]).astype(dtype)
    y, dz, db = run(kernel, z, b, grad)
    v = z + b[None, :, None, None]
    np.testing.assert_array_equal(y, np.where(v > 0, v, 0))
    np.testing.assert_array_equal(dz, np.where(v > 0, grad, 0))
    db_ref = np.where(v > 0, grad, 0).astype(np.float64).sum(axis=(0, 2, 3))
    np.testing.assert_allclose(db, db_ref, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-4)


@pytest.mark.parametrize("kernel", KERNELS)
def test_bias_relu_equals_relu_of_the_sum_and_keeps_nan(kernel):
    z = np.array([[[-1.0, 0.5, np.nan, np.inf]], [[2.0, -np.inf, 0.0, -0.25]]], dtype=np.float32)
    b = np.array([0.25], dtype=np.float32)
    y, _, _ = run(kernel, z, b, np.ones_like(z))
    np.testing.assert_array_equal(y, np.maximum(z + b[None, :, None], 0))


@pytest.mark.parametrize("kernel", KERNELS)
def test_bias_relu_gradcheck(kernel):
    rng = np.random.default_rng(2)
    z = rng.uniform(0.1, 1.0, (2, 3, 3, 4)) * rng.choice([-1.0, 1.0], (2, 3, 3, 4))
    b = rng.uniform(-0.05, 0.05, 3)
    with on_kernel("relu", kernel) as k:
        assert ts.gradcheck(F.bias_relu, [ts.Tensor(k.put(z), requires_grad=True),
                                          ts.Tensor(k.put(b), requires_grad=True)])


@settings(max_examples=15, deadline=None)
@given(kernel=st.sampled_from([p.values[0] for p in KERNELS if not p.marks]),
       shape=st.lists(st.integers(1, 5), min_size=2, max_size=4), seed=st.integers(0, 2 ** 16))
def test_bias_relu_hypothesis(kernel, shape, seed):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal(shape)
    b = rng.standard_normal(shape[1])
    grad = rng.standard_normal(shape)
    y, dz, db = run(kernel, z, b, grad)
    y_ref, dz_ref, db_ref = bias_relu_definition(z, b, grad)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(dz, dz_ref)
    np.testing.assert_allclose(db, db_ref, rtol=1e-12, atol=1e-12)


def test_bias_relu_bad_inputs_are_clear_errors():
    z = ts.Tensor(np.zeros((2, 3, 4, 4)))
    with pytest.raises(ValueError, match=r"bias_relu: expected z \(N, C, \.\.\.\) and b \(C,\), got z \(2, 3, 4, 4\) and b \(4,\)"):
        F.bias_relu(z, ts.Tensor(np.zeros(4)))
    with pytest.raises(TypeError, match="same dtype"):
        F.bias_relu(z, ts.Tensor(np.zeros(3, np.float32)))
    with pytest.raises(TypeError, match="float32 or float64"):
        F.bias_relu(z, ts.Tensor(np.zeros(3, np.int64)))


def test_unet_block_uses_the_fused_op_and_gives_the_unfused_values():
    ts.manual_seed(0)
    block = ts.models.unet.ConvBlock(2, 3, "same")
    x = ts.Tensor(np.random.default_rng(3).standard_normal((2, 2, 6, 6)).astype(np.float32))
    unfused = F.relu(block.conv2(F.relu(block.conv1(x))))
    np.testing.assert_array_equal(block(x).data, unfused.data)
