"""The kernels of upsample (nearest) and relu: every one against the naive reference or the definition.

For each kernel name ("numpy", "numba", "auto"): forward and backward values, finite
differences in float64, hypothesis over shapes and scales, float32, non-contiguous
inputs; and the error for an unknown kernel name.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinyseg as ts
import tinyseg.functional as F
from tinyseg import backend
from tinyseg import reference as ref
from tinyseg.functional import activation, resize

from ..kernel_backends import is_gpu_kernel, kernel_names, on_kernel

# The CPU kernels of nearest upsampling; the GPU ones are tested in test_resize_cuda.py.
NEAREST = [name for name in sorted(resize.UPSAMPLE_NEAREST_KERNELS) if not is_gpu_kernel(name)]
RELU = kernel_names(activation.RELU_KERNELS)
RELU_CPU = [name for name in sorted(activation.RELU_KERNELS) if not is_gpu_kernel(name)]


def nearest_backward_reference(grad, scale):
    """dx[n,c,a,b] = Σ of grad over the s_h × s_w block of output pixel (a, b)."""
    sh, sw = scale
    N, C, Hs, Ws = grad.shape
    return grad.reshape(N, C, Hs // sh, sh, Ws // sw, sw).sum(axis=(3, 5))


def run_upsample(kernel, x, scale, grad):
    with backend.use_kernel("upsample_nearest", kernel):
        t = ts.Tensor(x, requires_grad=True)
        y = F.upsample(t, scale_factor=scale, mode="nearest")
        y.backward(grad)
    return y.data, t.grad


def run_relu(kernel, x, grad):
    with on_kernel("relu", kernel) as k:
        t = ts.Tensor(k.put(x), requires_grad=True)
        y = F.relu(t)
        y.backward(k.put(grad))
        return k.get(y.data), k.get(t.grad)


# ----- nearest upsampling

@pytest.mark.parametrize("kernel", NEAREST)
@pytest.mark.parametrize("scale", [1, 2, 3, (2, 3), (3, 1)])
def test_nearest_matches_the_reference(kernel, scale):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4, 5))
    pair = scale if isinstance(scale, tuple) else (scale, scale)
    grad = rng.standard_normal((2, 3, 4 * pair[0], 5 * pair[1]))
    y, dx = run_upsample(kernel, x, scale, grad)
    np.testing.assert_array_equal(y, ref.upsample_nearest(x, scale))
    np.testing.assert_allclose(dx, nearest_backward_reference(grad, pair), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kernel", ["numpy", "numba"])
def test_nearest_large_input_uses_each_path_of_auto(kernel):
    # Above AUTO_NEAREST_NUMBA_MIN_ELEMENTS: "auto" takes its numba branch; all agree.
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 2, 512, 512)).astype(np.float32)
    grad = rng.standard_normal((1, 2, 1024, 1024)).astype(np.float32)
    assert grad.size >= resize.AUTO_NEAREST_NUMBA_MIN_ELEMENTS
    y, dx = run_upsample(kernel, x, 2, grad)
    y_auto, dx_auto = run_upsample("auto", x, 2, grad)
    np.testing.assert_array_equal(y, y_auto)
    np.testing.assert_allclose(dx, dx_auto, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kernel", NEAREST)
def test_nearest_gradcheck(kernel):
    x = ts.Tensor(np.random.default_rng(2).standard_normal((1, 2, 3, 4)), requires_grad=True)
    with backend.use_kernel("upsample_nearest", kernel):
        assert ts.gradcheck(lambda t: F.upsample(t, scale_factor=(2, 3), mode="nearest"), [x])


@pytest.mark.parametrize("kernel", NEAREST)
def test_nearest_float32_and_non_contiguous(kernel):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 2, 5, 4)).astype(np.float32).transpose(1, 0, 3, 2)     # (2, 3, 4, 5)
    grad = rng.standard_normal((2, 3, 8, 10)).astype(np.float32)[:, :, :, ::-1]
    assert not x.flags.c_contiguous and not grad.flags.c_contiguous
    y, dx = run_upsample(kernel, x, 2, grad)
    assert y.dtype == np.float32 and dx.dtype == np.float32
    np.testing.assert_array_equal(y, ref.upsample_nearest(x, 2).astype(np.float32))
    np.testing.assert_allclose(dx, nearest_backward_reference(grad.astype(np.float64), (2, 2)), rtol=1e-5, atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(kernel=st.sampled_from(NEAREST), n=st.integers(1, 2), c=st.integers(1, 3), h=st.integers(1, 6),
       w=st.integers(1, 6), sh=st.integers(1, 4), sw=st.integers(1, 4), seed=st.integers(0, 2 ** 16))
def test_nearest_hypothesis(kernel, n, c, h, w, sh, sw, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w))
    grad = rng.standard_normal((n, c, h * sh, w * sw))
    y, dx = run_upsample(kernel, x, (sh, sw), grad)
    np.testing.assert_array_equal(y, ref.upsample_nearest(x, (sh, sw)))
    np.testing.assert_allclose(dx, nearest_backward_reference(grad, (sh, sw)), rtol=1e-12, atol=1e-12)


def test_nearest_unknown_kernel_is_a_clear_error():
    with backend.use_kernel("upsample_nearest", "no-such-kernel"):
        with pytest.raises(ValueError, match="upsample_nearest: unknown kernel 'no-such-kernel'; "
                                             "available kernels: 'auto', 'cuda', 'cupy', 'numba', 'numpy'"):
            F.upsample(ts.Tensor(np.zeros((1, 1, 2, 2))), scale_factor=2)


# ----- relu

def relu_definition(x, grad):
    return np.maximum(x, 0), grad * (x > 0)


@pytest.mark.parametrize("kernel", RELU)
@pytest.mark.parametrize("shape", [(), (7,), (2, 3, 4, 5), (3, 40000)])
def test_relu_matches_the_definition(kernel, shape):
    rng = np.random.default_rng(4)
    x = np.asarray(rng.standard_normal(shape))
    if x.ndim:
        x[..., :1] = 0.0                       # exact zeros: the gradient there is 0
    grad = np.asarray(rng.standard_normal(shape))
    y, dx = run_relu(kernel, x, grad)
    y_ref, dx_ref = relu_definition(x, grad)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(dx, dx_ref)


@pytest.mark.parametrize("kernel", ["numpy", "numba"])
def test_relu_large_input_matches_auto(kernel):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 8, 256, 256)).astype(np.float32)
    assert x.size >= activation.AUTO_RELU_NUMBA_MIN_ELEMENTS
    grad = rng.standard_normal(x.shape).astype(np.float32)
    y, dx = run_relu(kernel, x, grad)
    y_auto, dx_auto = run_relu("auto", x, grad)
    np.testing.assert_array_equal(y, y_auto)
    np.testing.assert_array_equal(dx, dx_auto)
    np.testing.assert_array_equal(dx, relu_definition(x, grad)[1])


def test_relu_parallel_size_matches_the_definition():
    # From NUMBA_RELU_PARALLEL_MIN_ELEMENTS the "numba" kernel runs its parallel loops.
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 8, 512, 512)).astype(np.float32)
    assert x.size >= activation.NUMBA_RELU_PARALLEL_MIN_ELEMENTS
    grad = rng.standard_normal(x.shape).astype(np.float32)
    for kernel in RELU_CPU:
        y, dx = run_relu(kernel, x, grad)
        y_ref, dx_ref = relu_definition(x, grad)
        np.testing.assert_array_equal(y, y_ref)
        np.testing.assert_array_equal(dx, dx_ref)


@settings(max_examples=20, deadline=None)
@given(size=st.integers(0, 3 * 16384 + 5), dtype=st.sampled_from([np.float32, np.float64]),
       seed=st.integers(0, 2 ** 16))
def test_relu_serial_and_parallel_loops_agree(size, dtype, seed):
    # The two compiled versions, called directly on sizes around the chunk boundaries.
    from tinyseg.functional import elementwise_kernels_numba as compiled
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(size).astype(dtype)
    x[::7] = 0.0
    grad = rng.standard_normal(size).astype(dtype)
    y_ref, dx_ref = relu_definition(x, grad)
    for forward, backward in [(compiled.relu_forward, compiled.relu_backward),
                              (compiled.relu_forward_serial, compiled.relu_backward_serial)]:
        y = np.full_like(x, np.nan)
        forward(x, y)
        np.testing.assert_array_equal(y, y_ref)
        dx = np.full_like(x, np.nan)
        backward(grad, y, dx)
        np.testing.assert_array_equal(dx, dx_ref)


@pytest.mark.parametrize("kernel", RELU)
def test_relu_special_values(kernel):
    x = np.array([-1.0, 0.0, -0.0, 2.0, np.nan, np.inf, -np.inf], dtype=np.float32)
    grad = np.array([1.0, 2.0, 3.0, np.inf, 5.0, 6.0, -7.0], dtype=np.float32)
    y, dx = run_relu(kernel, x, grad)
    y_ref, _ = relu_definition(x, grad)
    np.testing.assert_array_equal(y, y_ref)
    assert not np.signbit(y[2])                 # max(−0, 0) = +0, as NumPy
    np.testing.assert_array_equal(dx, grad * (y_ref > 0))


@pytest.mark.parametrize("kernel", RELU)
def test_relu_gradcheck(kernel):
    rng = np.random.default_rng(6)
    values = rng.uniform(0.1, 1.0, (2, 3, 4)) * rng.choice([-1.0, 1.0], (2, 3, 4))     # away from 0
    with on_kernel("relu", kernel) as k:
        assert ts.gradcheck(F.relu, [ts.Tensor(k.put(values), requires_grad=True)])


@pytest.mark.parametrize("kernel", RELU)
def test_relu_float32_and_non_contiguous(kernel):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((5, 6, 7)).astype(np.float32).transpose(2, 0, 1)[:, ::2]
    grad = rng.standard_normal((7, 3, 6)).astype(np.float32)[..., ::-1]
    y, dx = run_relu(kernel, x, np.ascontiguousarray(grad))
    assert y.dtype == np.float32 and dx.dtype == np.float32
    y_ref, dx_ref = relu_definition(x, grad)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(dx, dx_ref)
    # The kernels directly, with non-contiguous grad and y.
    with on_kernel("relu", kernel) as k:
        xp = ts.backend.get_array_module(k.put(grad))
        dx = activation.RELU_KERNELS[kernel].backward(k.put(grad), k.put(y_ref[..., ::-1].copy())[..., ::-1], xp)
        np.testing.assert_array_equal(k.get(dx), dx_ref)


@settings(max_examples=25, deadline=None)
@given(kernel=st.sampled_from([p.values[0] for p in RELU if not p.marks]), shape=st.lists(st.integers(0, 6), min_size=0, max_size=4),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2 ** 16))
def test_relu_hypothesis(kernel, shape, dtype, seed):
    rng = np.random.default_rng(seed)
    x = np.asarray(rng.standard_normal(shape), dtype=dtype)
    grad = np.asarray(rng.standard_normal(shape), dtype=dtype)
    y, dx = run_relu(kernel, x, grad)
    y_ref, dx_ref = relu_definition(x, grad)
    assert y.shape == x.shape and y.dtype == dtype
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(dx, dx_ref)


def test_relu_unknown_kernel_is_a_clear_error():
    with backend.use_kernel("relu", "no-such-kernel"):
        with pytest.raises(ValueError, match="relu: unknown kernel 'no-such-kernel'; "
                                             "available kernels: 'auto', 'cuda', 'cupy', 'numba', 'numpy'"):
            F.relu(ts.Tensor(np.zeros(3)))


def test_relu_saves_its_output():
    fn = activation.ReLU()
    x = ts.Tensor(np.array([-1.0, 2.0]), requires_grad=True)
    y = fn(x)
    assert fn.y is y.data or np.array_equal(fn.y, y.data)
