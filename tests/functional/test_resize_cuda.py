"""The GPU kernels of upsample ("cuda": kernels/upsample.cu; "cupy"), nearest and bilinear, through F.upsample.

Without a GPU, "cuda" runs under the host emulation with guard bands, "cupy" is skipped.
Values against tinyseg.reference, gradients against the reference's adjoint and
ts.gradcheck (float64), float32 and float64, hypothesis shapes, NaN, launch records.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinyseg as ts
import tinyseg.functional as F
from tinyseg import backend
from tinyseg import reference as ref
from tinyseg.functional import resize

from ..kernel_backends import kernel_names, on_kernel
from .test_elementwise_kernels import nearest_backward_reference
from .test_resize_kernels import nan_reach, reference_backward, rounding_tolerance

GPU = ("cuda", "cupy")
NEAREST = [p for p in kernel_names(resize.UPSAMPLE_NEAREST_KERNELS) if p.id in GPU]
BILINEAR = [p for p in kernel_names(resize.UPSAMPLE_BILINEAR_KERNELS) if p.id in GPU]


def run(kernel, mode, x, scale, grad, align_corners=False):
    """(y, dx, kernels launched) of F.upsample on ``kernel``, as NumPy arrays."""
    with on_kernel(f"upsample_{mode}", kernel) as k:
        t = ts.Tensor(k.put(x), requires_grad=True)
        y = F.upsample(t, scale_factor=scale, mode=mode, align_corners=align_corners)
        y.backward(k.put(grad))
        launched = k.emulation.kernels() if k.emulation is not None else []
        return k.get(y.data), k.get(t.grad), launched


def upsampled(x, scale, seed=0):
    N, C, H, W = x.shape
    return np.random.default_rng(seed).standard_normal((N, C, H * scale[0], W * scale[1])).astype(x.dtype)


# ----- nearest

@pytest.mark.parametrize("kernel", NEAREST)
@pytest.mark.parametrize("scale", [(1, 1), (2, 2), (3, 2), (1, 3)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_nearest_matches_the_reference(kernel, scale, dtype):
    x = np.random.default_rng(1).standard_normal((2, 3, 4, 5)).astype(dtype)
    grad = upsampled(x, scale)
    y, dx, launched = run(kernel, "nearest", x, scale, grad)
    assert y.dtype == dtype and dx.dtype == dtype
    np.testing.assert_array_equal(y, ref.upsample_nearest(x, scale).astype(dtype))
    # The CPU kernels' order of additions: their result bit for bit.
    np.testing.assert_array_equal(dx, resize.NumpyNearestKernel.backward(grad, scale))
    tolerance = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(dx, nearest_backward_reference(grad.astype(np.float64), scale), rtol=tolerance,
                               atol=tolerance)
    if kernel == "cuda":
        ctype = "double" if dtype == np.float64 else "float"
        assert launched == [f"upsample_nearest_forward<{ctype}>", f"upsample_nearest_backward<{ctype}>"]


@pytest.mark.parametrize("kernel", NEAREST)
def test_nearest_gradcheck(kernel):
    with on_kernel("upsample_nearest", kernel) as k:
        x = ts.Tensor(k.put(np.random.default_rng(2).standard_normal((1, 2, 3, 4))), requires_grad=True)
        assert ts.gradcheck(lambda t: F.upsample(t, scale_factor=(2, 3), mode="nearest"), [x])


@pytest.mark.parametrize("kernel", NEAREST)
@settings(max_examples=6, deadline=None)
@given(n=st.integers(1, 2), c=st.integers(1, 3), h=st.integers(1, 6), w=st.integers(1, 6),
       sh=st.integers(1, 4), sw=st.integers(1, 4), seed=st.integers(0, 2 ** 16))
def test_nearest_hypothesis(kernel, n, c, h, w, sh, sw, seed):
    x = np.random.default_rng(seed).standard_normal((n, c, h, w))
    grad = upsampled(x, (sh, sw), seed)
    y, dx, _ = run(kernel, "nearest", x, (sh, sw), grad)
    np.testing.assert_array_equal(y, ref.upsample_nearest(x, (sh, sw)))
    np.testing.assert_allclose(dx, nearest_backward_reference(grad, (sh, sw)), rtol=1e-12, atol=1e-12)


# ----- bilinear

@pytest.mark.parametrize("kernel", BILINEAR)
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("shape, scale", [((2, 2, 3, 5), (2, 2)), ((1, 1, 1, 1), (3, 2)), ((1, 3, 4, 1), (1, 4)),
                                          ((1, 2, 5, 3), (3, 1))])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_bilinear_matches_the_reference(kernel, align_corners, shape, scale, dtype):
    x = np.random.default_rng(3).standard_normal(shape).astype(dtype)
    grad = upsampled(x, scale, 4)
    y, dx, launched = run(kernel, "bilinear", x, scale, grad, align_corners)
    assert y.dtype == dtype and dx.dtype == dtype
    y_ref = ref.upsample_bilinear(x, scale, align_corners)
    dx_ref = reference_backward(grad.astype(np.float64), scale, align_corners)
    np.testing.assert_allclose(y, y_ref, rtol=0, atol=rounding_tolerance(dtype, y_ref))
    np.testing.assert_allclose(dx, dx_ref, rtol=0, atol=rounding_tolerance(dtype, dx_ref))
    if kernel == "cuda":
        ctype = "double" if dtype == np.float64 else "float"
        assert launched == [f"upsample_bilinear_forward<{ctype}>", f"upsample_bilinear_backward<{ctype}>"]


@pytest.mark.parametrize("kernel", BILINEAR)
@pytest.mark.parametrize("align_corners", [False, True])
def test_bilinear_gradcheck(kernel, align_corners):
    with on_kernel("upsample_bilinear", kernel) as k:
        x = ts.Tensor(k.put(np.random.default_rng(5).standard_normal((1, 2, 3, 4))), requires_grad=True)
        assert ts.gradcheck(lambda t: F.upsample(t, (2, 3), "bilinear", align_corners), [x])


@pytest.mark.parametrize("kernel", BILINEAR)
@settings(max_examples=6, deadline=None)
@given(align_corners=st.booleans(),
       shape=st.tuples(st.integers(1, 2), st.integers(1, 2), st.integers(1, 5), st.integers(1, 5)),
       scale=st.tuples(st.integers(1, 4), st.integers(1, 4)),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2 ** 16))
def test_bilinear_hypothesis(kernel, align_corners, shape, scale, dtype, seed):
    x = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    grad = upsampled(x, scale, seed)
    y, dx, _ = run(kernel, "bilinear", x, scale, grad, align_corners)
    y_ref = ref.upsample_bilinear(x, scale, align_corners)
    dx_ref = reference_backward(grad.astype(np.float64), scale, align_corners)
    np.testing.assert_allclose(y, y_ref, rtol=0, atol=rounding_tolerance(dtype, y_ref))
    np.testing.assert_allclose(dx, dx_ref, rtol=0, atol=rounding_tolerance(dtype, dx_ref))


@pytest.mark.parametrize("align_corners", [False, True])
def test_bilinear_nan_reaches_only_what_reads_it(align_corners):
    # As the Numba kernel (and PyTorch): a NaN reaches exactly the outputs whose weight on it is non-zero.
    scale = (2, 3)
    x = np.random.default_rng(6).standard_normal((1, 2, 4, 5))
    x[0, 1, 2, 3] = np.nan
    grad = upsampled(x, scale, 7)
    grad[0, 0, 5, 7] = np.nan
    y, dx, _ = run("cuda", "bilinear", x, scale, grad, align_corners)
    y_numba, dx_numba, _ = run("numba", "bilinear", x, scale, grad, align_corners)
    np.testing.assert_array_equal(np.isnan(y), nan_reach(np.isnan(x), scale, align_corners, transposed=False))
    np.testing.assert_array_equal(np.isnan(dx), nan_reach(np.isnan(grad), scale, align_corners, transposed=True))
    np.testing.assert_allclose(y, y_numba, rtol=0, atol=1e-13)
    np.testing.assert_allclose(dx, dx_numba, rtol=0, atol=1e-13)


class _NotNumpy:
    """An array module that is not NumPy but computes with it: how "auto" sees CuPy, on a CPU."""

    def __getattr__(self, name):
        return getattr(np, name)


def test_auto_runs_the_cuda_kernels_on_gpu_arrays(monkeypatch):
    x = np.random.default_rng(8).standard_normal((1, 1, 2, 3))
    grad = upsampled(x, (2, 2))
    class BackendSeeingCupy:           # resize.py's view of the backend: every array on the GPU
        def __getattr__(self, name):
            return (lambda *arrays: _NotNumpy()) if name == "get_array_module" else getattr(backend, name)

    monkeypatch.setattr(resize, "backend", BackendSeeingCupy())
    with backend.cuda_emulation() as emulation:
        resize.AutoNearestKernel.forward(x, (2, 2))
        resize.AutoNearestKernel.backward(grad, (2, 2))
        y = resize.AutoBilinearKernel.forward(_NotNumpy(), x, (2, 2), False)
        resize.AutoBilinearKernel.backward(_NotNumpy(), grad, (2, 2), False)
    assert [name.split("<")[0] for name in emulation.kernels()] == [
        "upsample_nearest_forward", "upsample_nearest_backward", "upsample_bilinear_forward",
        "upsample_bilinear_backward"]
    np.testing.assert_allclose(y, ref.upsample_bilinear(x, 2), rtol=0, atol=1e-13)


def test_bilinear_tables_are_kept_per_gpu_device_and_fresh_on_the_cpu():
    from types import SimpleNamespace

    from tinyseg.functional import resize_kernels_cuda as gpu

    device = SimpleNamespace(id=0)
    fake_cupy = SimpleNamespace(cuda=SimpleNamespace(Device=lambda: device), array=np.array)
    first = gpu._tables(fake_cupy, 3, 4, (2, 2), True, np.float32, False)
    assert gpu._tables(fake_cupy, 3, 4, (2, 2), True, np.float32, False) is first
    device.id = 1
    assert gpu._tables(fake_cupy, 3, 4, (2, 2), True, np.float32, False) is not first
    on_cpu = gpu._tables(np, 3, 4, (2, 2), True, np.float32, False)
    assert on_cpu is not gpu._tables(np, 3, 4, (2, 2), True, np.float32, False)
    assert all(a.flags.writeable for a in on_cpu if isinstance(a, np.ndarray))
    gpu._DEVICE_TABLES.clear()
