"""The GPU kernels of max_pool2d and avg_pool2d ("cuda": kernels/pool.cu; "cupy"), through F.

Without a GPU, "cuda" runs the same .cu source under the host emulation with guard bands
(any write outside an array fails), "cupy" is skipped. Each test checks values against
tinyseg.reference, gradients against the reference's (or ts.gradcheck in float64), and
the launches made. Shapes stay tiny: an emulated thread costs about a microsecond.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinyseg as ts
import tinyseg.functional as F
from tinyseg import backend
from tinyseg import reference as ref
from tinyseg.functional import pool

from ..kernel_backends import kernel_names, on_kernel
from .test_pool_kernels import distinct_values, reference_avg_grad, reference_grad

GPU = ("cuda", "cupy")
MAX = [p for p in kernel_names(pool.MAX_POOL2D_KERNELS) if p.id in GPU]
AVG = [p for p in kernel_names(pool.AVG_POOL2D_KERNELS) if p.id in GPU]
CONFIGS = [(2, None, 0), (3, 2, 1), (2, 1, 0), (2, 3, 1), ((2, 3), (1, 2), (1, 1))]


def run(op, kernel, x, upstream, **kwargs):
    """(y, dx, kernels launched) of F.<op> on ``kernel``, as NumPy arrays."""
    with on_kernel(op, kernel) as k:
        leaf = ts.Tensor(k.put(x), requires_grad=True)
        y = getattr(F, op)(leaf, **kwargs)
        y.backward(k.put(upstream))
        launched = k.emulation.kernels() if k.emulation is not None else []
        return k.get(y.data), k.get(leaf.grad), launched


@pytest.mark.parametrize("kernel", MAX)
@pytest.mark.parametrize("kernel_size,stride,padding", CONFIGS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_max_pool_matches_reference(kernel, kernel_size, stride, padding, dtype):
    kwargs = dict(kernel_size=kernel_size, stride=stride, padding=padding)
    x = distinct_values((2, 3, 7, 6))
    expected = ref.max_pool2d(x, **kwargs)
    upstream = np.random.default_rng(1).standard_normal(expected.shape)
    y, dx, launched = run("max_pool2d", kernel, x.astype(dtype), upstream.astype(dtype), **kwargs)
    assert y.dtype == dtype and dx.dtype == dtype
    np.testing.assert_array_equal(y, expected.astype(dtype))
    tolerance = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(dx, reference_grad(x, upstream.astype(dtype), **kwargs), rtol=tolerance, atol=tolerance)
    if kernel == "cuda":
        ctype = "double" if dtype == np.float64 else "float"
        assert launched == [f"max_pool2d_forward<{ctype}, unsigned char>",      # uint8 winners
                            f"max_pool2d_backward<{ctype}, unsigned char>"]


@pytest.mark.parametrize("kernel", MAX)
def test_max_pool_nan_ties_and_winners_as_the_cpu(kernel):
    # Ties, NaN, ±inf: the values and the winners (hence the gradients) of the NumPy kernel.
    x = np.random.default_rng(2).integers(-2, 3, size=(1, 2, 6, 6)).astype(np.float64)
    x[0, 0, 1, 1] = np.nan
    x[0, 0, 0, :4] = [np.nan, 1.0, 1.0, np.nan]
    x[0, 1, 2:4, 0:2] = -np.inf
    x[0, 1, 4, 4] = np.inf
    upstream = np.arange(2 * 3 * 3, dtype=np.float64).reshape(1, 2, 3, 3) + 1
    kwargs = dict(kernel_size=3, stride=2, padding=1)
    y, dx, _ = run("max_pool2d", kernel, x, upstream, **kwargs)
    y_numpy, dx_numpy, _ = run("max_pool2d", "numba", x, upstream, **kwargs)
    np.testing.assert_array_equal(y, y_numpy)
    np.testing.assert_array_equal(dx, dx_numpy)


@pytest.mark.parametrize("kernel", MAX)
def test_max_pool_winner_types_and_inference(kernel):
    # 17×17 windows need uint16 winners; without grad no winner is kept (the CPU's rule).
    x = distinct_values((1, 1, 17, 18))
    upstream = np.ones((1, 1, 1, 1))
    y, dx, launched = run("max_pool2d", kernel, x, upstream, kernel_size=17)
    np.testing.assert_array_equal(y, ref.max_pool2d(x, 17))
    np.testing.assert_array_equal(dx, reference_grad(x, upstream, kernel_size=17, stride=None, padding=0))
    if kernel == "cuda":
        assert launched == ["max_pool2d_forward<double, unsigned short>", "max_pool2d_backward<double, unsigned short>"]
    with on_kernel("max_pool2d", kernel) as k, ts.no_grad():
        geometry = pool._WindowGeometry(x.shape, (2, 2), (2, 2), (0, 0))
        y, winner = pool.MAX_POOL2D_KERNELS[kernel].forward(backend.get_array_module(k.put(x)), k.put(x),
                                                            geometry, False)
        assert winner is None
        np.testing.assert_array_equal(k.get(y), ref.max_pool2d(x, 2))


@pytest.mark.parametrize("kernel", MAX)
def test_max_pool_gradcheck(kernel):
    x = distinct_values((1, 2, 5, 4))
    with on_kernel("max_pool2d", kernel) as k:
        leaf = ts.Tensor(k.put(x), requires_grad=True)
        assert ts.gradcheck(lambda t: F.max_pool2d(t, 3, stride=1, padding=1), [leaf])


@pytest.mark.parametrize("kernel", MAX)
@settings(max_examples=6, deadline=None)
@given(n=st.integers(1, 2), c=st.integers(1, 2), h=st.integers(1, 7), w=st.integers(1, 7),
       kh=st.integers(1, 3), kw=st.integers(1, 3), sh=st.integers(1, 3), sw=st.integers(1, 3), pad=st.data())
def test_max_pool_hypothesis(kernel, n, c, h, w, kh, kw, sh, sw, pad):
    ph, pw = pad.draw(st.integers(0, kh // 2)), pad.draw(st.integers(0, kw // 2))
    if kh > h + 2 * ph or kw > w + 2 * pw:
        return
    kwargs = dict(kernel_size=(kh, kw), stride=(sh, sw), padding=(ph, pw))
    x = distinct_values((n, c, h, w), seed=h * 31 + w)
    expected = ref.max_pool2d(x, **kwargs)
    upstream = np.random.default_rng(3).standard_normal(expected.shape)
    y, dx, _ = run("max_pool2d", kernel, x, upstream, **kwargs)
    np.testing.assert_array_equal(y, expected)
    np.testing.assert_allclose(dx, reference_grad(x, upstream, **kwargs), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kernel", AVG)
@pytest.mark.parametrize("kernel_size,stride,padding", CONFIGS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_avg_pool_matches_reference(kernel, kernel_size, stride, padding, dtype):
    kwargs = dict(kernel_size=kernel_size, stride=stride, padding=padding)
    x = np.random.default_rng(4).standard_normal((2, 3, 7, 6))
    expected = ref.avg_pool2d(x, **kwargs)
    upstream = np.random.default_rng(5).standard_normal(expected.shape)
    y, dx, launched = run("avg_pool2d", kernel, x.astype(dtype), upstream.astype(dtype), **kwargs)
    assert y.dtype == dtype and dx.dtype == dtype
    tolerance = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(y, expected, rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(dx, reference_avg_grad(x.shape, upstream, **kwargs), rtol=tolerance, atol=tolerance)
    if kernel == "cuda":
        ctype = "double" if dtype == np.float64 else "float"
        assert launched == [f"avg_pool2d_forward<{ctype}>", f"avg_pool2d_backward<{ctype}>"]


@pytest.mark.parametrize("kernel", AVG)
def test_avg_pool_forward_is_the_cpu_kernels_bit_for_bit_and_special_values(kernel):
    x = np.random.default_rng(6).standard_normal((1, 2, 6, 6)).astype(np.float32)
    x[0, 0, 0, 0] = np.nan
    x[0, 0, 4, 4], x[0, 0, 5, 5] = np.inf, np.inf
    x[0, 1, 2, 2], x[0, 1, 3, 3] = np.inf, -np.inf
    upstream = np.random.default_rng(7).standard_normal((1, 2, 3, 3)).astype(np.float32)
    upstream[0, 0, 1, 1] = np.inf
    with np.errstate(invalid="ignore"):
        y, dx, _ = run("avg_pool2d", kernel, x, upstream, kernel_size=2)
        y_cpu, dx_cpu, _ = run("avg_pool2d", "numpy", x, upstream, kernel_size=2)
    np.testing.assert_array_equal(y, y_cpu)
    np.testing.assert_array_equal(dx, dx_cpu)
    assert np.isnan(y[0, 0, 0, 0]) and y[0, 0, 2, 2] == np.inf and np.isnan(y[0, 1, 1, 1])


@pytest.mark.parametrize("kernel", AVG)
def test_avg_pool_gradcheck(kernel):
    x = np.random.default_rng(8).standard_normal((1, 2, 5, 4))
    with on_kernel("avg_pool2d", kernel) as k:
        leaf = ts.Tensor(k.put(x), requires_grad=True)
        assert ts.gradcheck(lambda t: F.avg_pool2d(t, (3, 2), stride=(1, 2), padding=1), [leaf])


@pytest.mark.parametrize("kernel", AVG)
@settings(max_examples=6, deadline=None)
@given(n=st.integers(1, 2), c=st.integers(1, 2), h=st.integers(1, 7), w=st.integers(1, 7),
       kh=st.integers(1, 3), kw=st.integers(1, 3), sh=st.integers(1, 3), sw=st.integers(1, 3), pad=st.data())
def test_avg_pool_hypothesis(kernel, n, c, h, w, kh, kw, sh, sw, pad):
    ph, pw = pad.draw(st.integers(0, kh // 2)), pad.draw(st.integers(0, kw // 2))
    if kh > h + 2 * ph or kw > w + 2 * pw:
        return
    kwargs = dict(kernel_size=(kh, kw), stride=(sh, sw), padding=(ph, pw))
    x = np.random.default_rng(h * 31 + w).standard_normal((n, c, h, w))
    expected = ref.avg_pool2d(x, **kwargs)
    upstream = np.random.default_rng(9).standard_normal(expected.shape)
    y, dx, _ = run("avg_pool2d", kernel, x, upstream, **kwargs)
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, reference_avg_grad(x.shape, upstream, **kwargs), rtol=1e-12, atol=1e-12)


class _NotNumpy:
    """An array module that is not NumPy but computes with it: how "auto" sees CuPy, on a CPU."""

    def __getattr__(self, name):
        return getattr(np, name)


def test_auto_runs_the_cuda_kernels_on_gpu_arrays():
    x = distinct_values((1, 2, 4, 4))
    geometry = pool._WindowGeometry(x.shape, (2, 2), (2, 2), (0, 0))
    with backend.cuda_emulation() as emulation:
        y, winner = pool.AutoMaxPoolKernel.forward(_NotNumpy(), x, geometry, True)
        pool.AutoMaxPoolKernel.backward(_NotNumpy(), np.ones_like(y), winner, geometry)
        pool.AutoAvgPoolKernel.forward(_NotNumpy(), x, geometry)
        pool.AutoAvgPoolKernel.backward(_NotNumpy(), np.ones_like(y), geometry)
    assert [name.split("<")[0] for name in emulation.kernels()] == [
        "max_pool2d_forward", "max_pool2d_backward", "avg_pool2d_forward", "avg_pool2d_backward"]
    np.testing.assert_array_equal(y, ref.max_pool2d(x, 2))
