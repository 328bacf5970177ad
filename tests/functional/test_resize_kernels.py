"""The kernels of upsample (bilinear): every one against the naive reference and each other.

For each kernel name ("numpy", "numba", "auto") and both align_corners: forward against
reference.upsample_bilinear and backward against that reference's adjoint (hypothesis
over shapes, h/w scales, float32 and float64), float64 gradcheck, numba against numpy,
non-contiguous inputs, NaN, which kernel "auto" runs, and the error for an unknown name.
"""
import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinyseg as ts
import tinyseg.functional as F
from tinyseg import backend
from tinyseg import reference as ref
from tinyseg.functional import resize

from ..kernel_backends import is_gpu_kernel

# The CPU kernels; the GPU ones ("cuda", "cupy") are tested in test_resize_cuda.py.
BILINEAR = [name for name in sorted(resize.UPSAMPLE_BILINEAR_KERNELS) if not is_gpu_kernel(name)]
ALIGN_CORNERS = [False, True]


def run_bilinear(kernel, x, scale, align_corners, grad):
    with backend.use_kernel("upsample_bilinear", kernel):
        t = ts.Tensor(x, requires_grad=True)
        y = F.upsample(t, scale_factor=scale, mode="bilinear", align_corners=align_corners)
        y.backward(grad)
    return y.data, t.grad


def reference_backward(grad, scale, align_corners):
    """dx = Jᵀ · dy, with the Jacobian J of reference.upsample_bilinear (linear in x)
    built column by column from its outputs on the H·W one-hot images."""
    N, C, Hs, Ws = grad.shape
    H, W = Hs // scale[0], Ws // scale[1]
    one_hot = np.eye(H * W).reshape(H * W, 1, H, W)
    jacobian_t = ref.upsample_bilinear(one_hot, scale, align_corners).reshape(H * W, Hs * Ws)
    return (grad.reshape(N * C, Hs * Ws) @ jacobian_t.T).reshape(N, C, H, W)


def rounding_tolerance(dtype, expected):
    # The kernels compute in the input's dtype (weights rounded to it, as PyTorch) and
    # each output is a sum of a few (≤ ~20) products: a few ulps of the largest value.
    return 32 * np.finfo(dtype).eps * max(1.0, float(np.abs(expected).max()))


# ----- against the reference

@settings(max_examples=40, deadline=None)
@given(kernel=st.sampled_from(BILINEAR), align_corners=st.booleans(),
       shape=st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 5), st.integers(1, 5)),
       scale=st.tuples(st.integers(1, 4), st.integers(1, 4)),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2 ** 16))
def test_hypothesis_forward_and_backward_match_the_reference(kernel, align_corners, shape, scale, dtype, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    grad = rng.standard_normal(shape[:2] + (shape[2] * scale[0], shape[3] * scale[1])).astype(dtype)
    y, dx = run_bilinear(kernel, x, scale, align_corners, grad)
    assert y.dtype == dtype and dx.dtype == dtype
    y_ref = ref.upsample_bilinear(x, scale, align_corners)
    dx_ref = reference_backward(grad.astype(np.float64), scale, align_corners)
    np.testing.assert_allclose(y, y_ref, rtol=0, atol=rounding_tolerance(dtype, y_ref))
    np.testing.assert_allclose(dx, dx_ref, rtol=0, atol=rounding_tolerance(dtype, dx_ref))


@pytest.mark.parametrize("kernel", BILINEAR)
@pytest.mark.parametrize("align_corners", ALIGN_CORNERS)
@pytest.mark.parametrize("shape, scale", [((1, 1, 1, 1), (3, 2)), ((2, 2, 1, 5), (2, 3)), ((1, 3, 4, 1), (1, 4)),
                                          ((1, 1, 3, 7), (4, 1)), ((2, 1, 6, 4), (1, 1))])
def test_edge_shapes_match_the_reference(kernel, align_corners, shape, scale):
    # 1×1 images, single rows and columns, scale 1 and different h/w scales.
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape)
    grad = rng.standard_normal(shape[:2] + (shape[2] * scale[0], shape[3] * scale[1]))
    y, dx = run_bilinear(kernel, x, scale, align_corners, grad)
    np.testing.assert_allclose(y, ref.upsample_bilinear(x, scale, align_corners), rtol=0, atol=1e-13)
    np.testing.assert_allclose(dx, reference_backward(grad, scale, align_corners), rtol=0, atol=1e-13)


@pytest.mark.parametrize("kernel", BILINEAR)
@pytest.mark.parametrize("align_corners", ALIGN_CORNERS)
@pytest.mark.parametrize("scale", [(2, 2), (2, 3), (1, 4)])
def test_gradcheck(kernel, align_corners, scale):
    x = ts.Tensor(np.random.default_rng(1).standard_normal((1, 2, 3, 4)), requires_grad=True)
    with backend.use_kernel("upsample_bilinear", kernel):
        assert ts.gradcheck(lambda t: F.upsample(t, scale, "bilinear", align_corners), [x])


# ----- numba against numpy

@settings(max_examples=30, deadline=None)
@given(align_corners=st.booleans(),
       shape=st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 24), st.integers(1, 24)),
       scale=st.tuples(st.integers(1, 4), st.integers(1, 4)),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2 ** 16))
def test_numba_matches_numpy(align_corners, shape, scale, dtype, seed):
    # Larger images than the reference can afford: many compiled chunks of rows, and
    # the transposed tables' padded rows (weight 0) near the clamped border.
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    grad = rng.standard_normal(shape[:2] + (shape[2] * scale[0], shape[3] * scale[1])).astype(dtype)
    y_numpy, dx_numpy = run_bilinear("numpy", x, scale, align_corners, grad)
    y_numba, dx_numba = run_bilinear("numba", x, scale, align_corners, grad)
    assert y_numba.dtype == dtype and dx_numba.dtype == dtype
    np.testing.assert_allclose(y_numba, y_numpy, rtol=0, atol=rounding_tolerance(dtype, y_numpy))
    np.testing.assert_allclose(dx_numba, dx_numpy, rtol=0, atol=rounding_tolerance(dtype, dx_numpy))


def test_numba_does_not_depend_on_the_thread_count():
    # One writer per output element: the same bits with one thread as with all of them.
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 20, 17)).astype(np.float32)
    grad = rng.standard_normal((2, 3, 40, 51)).astype(np.float32)
    threads = numba.get_num_threads()
    if threads < 2:
        pytest.skip("one thread only")
    y_all, dx_all = run_bilinear("numba", x, (2, 3), False, grad)
    numba.set_num_threads(1)
    try:
        y_one, dx_one = run_bilinear("numba", x, (2, 3), False, grad)
    finally:
        numba.set_num_threads(threads)
    np.testing.assert_array_equal(y_one, y_all)
    np.testing.assert_array_equal(dx_one, dx_all)


# ----- layouts, special values, selection

@pytest.mark.parametrize("kernel", BILINEAR)
@pytest.mark.parametrize("align_corners", ALIGN_CORNERS)
def test_non_contiguous_input_and_gradient(kernel, align_corners):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 2, 5, 4)).astype(np.float32).transpose(1, 0, 3, 2)     # (2, 3, 4, 5)
    grad = rng.standard_normal((2, 3, 8, 15)).astype(np.float32)[:, :, :, ::-1]
    assert not x.flags.c_contiguous and not grad.flags.c_contiguous
    x_before, grad_before = x.copy(), grad.copy()
    y, dx = run_bilinear(kernel, x, (2, 3), align_corners, grad)
    y_contiguous, dx_contiguous = run_bilinear(kernel, x.copy(), (2, 3), align_corners, grad.copy())
    np.testing.assert_array_equal(y, y_contiguous)
    np.testing.assert_array_equal(dx, dx_contiguous)
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(grad, grad_before)


def nan_reach(nan_mask, scale, align_corners, transposed):
    """Where a NaN at ``nan_mask`` meets a non-zero weight: forward (or, transposed, the
    adjoint) applied to the mask's indicator, whose weights are all ≥ 0."""
    indicator = nan_mask.astype(np.float64)
    if transposed:
        return reference_backward(indicator, scale, align_corners) > 0
    return ref.upsample_bilinear(indicator, scale, align_corners) > 0


@pytest.mark.parametrize("align_corners", ALIGN_CORNERS)
def test_nan_propagates(align_corners):
    # The Numba kernel sends a NaN exactly where its weight is non-zero (the 4 neighbours
    # each way). The NumPy kernel also spreads it along whole rows: its matrix product
    # along W multiplies the NaN by A_w's zeros too. On every other element the two agree.
    scale = (2, 3)
    x = np.random.default_rng(4).standard_normal((1, 2, 4, 5))
    x[0, 1, 2, 3] = np.nan
    grad = np.random.default_rng(5).standard_normal((1, 2, 8, 15))
    grad[0, 0, 5, 7] = np.nan
    reach_forward = nan_reach(np.isnan(x), scale, align_corners, transposed=False)
    reach_backward = nan_reach(np.isnan(grad), scale, align_corners, transposed=True)
    assert 0 < reach_forward.sum() < reach_forward[0, 1].size
    y_numba, dx_numba = run_bilinear("numba", x, scale, align_corners, grad)
    y_numpy, dx_numpy = run_bilinear("numpy", x, scale, align_corners, grad)
    np.testing.assert_array_equal(np.isnan(y_numba), reach_forward)
    np.testing.assert_array_equal(np.isnan(dx_numba), reach_backward)
    for numpy_value, reach in [(y_numpy, reach_forward), (dx_numpy, reach_backward)]:
        whole_rows = np.broadcast_to(reach.any(axis=3, keepdims=True), reach.shape)
        np.testing.assert_array_equal(np.isnan(numpy_value), whole_rows)
    np.testing.assert_allclose(y_numba[~np.isnan(y_numpy)], y_numpy[~np.isnan(y_numpy)], rtol=0, atol=1e-13)
    np.testing.assert_allclose(dx_numba[~np.isnan(dx_numpy)], dx_numpy[~np.isnan(dx_numpy)], rtol=0, atol=1e-13)


@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_auto_switches_at_its_thresholds(monkeypatch, direction):
    calls = []
    compiled = getattr(resize.NumbaBilinearKernel, direction)

    def spy(*args):
        calls.append(args)
        return compiled(*args)

    monkeypatch.setattr(resize.NumbaBilinearKernel, direction, staticmethod(spy))
    threshold = (resize.AUTO_BILINEAR_FORWARD_NUMBA_MIN_ELEMENTS if direction == "forward"
                 else resize.AUTO_BILINEAR_BACKWARD_NUMBA_MIN_ELEMENTS)
    auto = resize.AutoBilinearKernel
    for rows, uses_numba in [(threshold // 256 - 2, False), (threshold // 256, True)]:
        # upsampled (1, 1, rows, 256) from (1, 1, rows/2, 128): rows·256 elements
        if direction == "forward":
            out = auto.forward(np, np.ones((1, 1, rows // 2, 128), np.float32), (2, 2), False)
        else:
            out = auto.backward(np, np.ones((1, 1, rows, 256), np.float32), (2, 2), False)
        assert len(calls) == uses_numba
        # The interior of a constant image stays constant; the adjoint spreads its 4 weights.
        np.testing.assert_allclose(out[0, 0, 1:-1, 1:-1], 1.0 if direction == "forward" else 4.0, rtol=1e-6)
        calls.clear()


def test_cupy_like_arrays_take_the_numpy_path(monkeypatch):
    # Numba compiles for NumPy arrays only: for any other array module the "numba"
    # kernel hands over to the NumPy (or CuPy) operations.
    x = np.random.default_rng(6).standard_normal((1, 2, 3, 4))
    seen = []
    monkeypatch.setattr(resize.NumpyBilinearKernel, "forward",
                        staticmethod(lambda xp, *args: seen.append(xp) or "numpy path"))
    fake_xp = object()
    assert resize.NumbaBilinearKernel.forward(fake_xp, x, (2, 2), False) == "numpy path"
    assert seen == [fake_xp]


def test_unknown_kernel_is_a_clear_error():
    with backend.use_kernel("upsample_bilinear", "no-such-kernel"):
        with pytest.raises(ValueError, match="upsample_bilinear: unknown kernel 'no-such-kernel'; "
                                             "available kernels: 'auto', 'cuda', 'cupy', 'numba', 'numpy'"):
            F.upsample(ts.Tensor(np.zeros((1, 1, 2, 2))), scale_factor=2, mode="bilinear")
