"""The kernels of binary_cross_entropy_with_logits ("numpy", "numba", "auto"), each selected with
``backend.use_kernel("bce_with_logits", name)``: forward against tinyseg.reference, backward
by float64 gradcheck, hypothesis over shapes and scales, extreme logits, numba against numpy
(serial and parallel loops, around the chunk boundaries), weight / pos_weight (which the
numba kernel leaves to numpy), non-contiguous inputs, and the error for an unknown name.
"""
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import tinyseg as ts
import tinyseg.functional as F
from tinyseg import backend
from tinyseg import reference as ref
from tinyseg.functional import loss

from ..kernel_backends import is_gpu_kernel

# The CPU kernels; the GPU ones ("cuda", "cupy") are tested in test_loss_cuda.py.
KERNELS = [name for name in sorted(loss.BCE_WITH_LOGITS_KERNELS) if not is_gpu_kernel(name)]
# float32 against the float64 reference: a few float32 roundings per element, and NumPy
# sums float32 pairwise (error ~ log2(n)·eps): 1e-5 relative covers both with margin.
RTOL = {np.float64: 1e-12, np.float32: 1e-5}


def subnormal_atol(dtype, units):
    """An absolute tolerance of ``units`` steps of the dtype's subnormal spacing. Below the
    smallest normal number (1.2e-38 in float32) a value keeps absolute, not relative,
    precision: a float32 loss of 1.04e-41 is a multiple of 1.4e-45, so no rtol of 1e-5 can
    hold there (hypothesis found it: scale 34, seed 684). Each rounding step of the
    computation (exp, division, product, the sum's terms) may cost one such step."""
    return units * np.finfo(dtype).smallest_subnormal


def run_bce(kernel, logits, target, weight=None, pos_weight=None, upstream=1.7, target_grad=False):
    """(loss, dL/dz, dL/dt or None) with ``kernel`` selected."""
    z = ts.Tensor(logits, requires_grad=True)
    t = ts.Tensor(target, requires_grad=True) if target_grad else target
    with backend.use_kernel("bce_with_logits", kernel):
        value = F.binary_cross_entropy_with_logits(z, t, weight, pos_weight)
        value.backward(np.asarray(upstream, dtype=value.dtype))
    return value.data, z.grad, (t.grad if target_grad else None)


def logits_gradient_reference(logits, target, upstream):
    """dL/dz = g · (σ(z) − t) / n, σ from the stable form, in extended precision.

    σ(z) − t cancels when σ(z) ≈ t (a saturated, correct logit: z = 10.5, t = 1 leaves
    five of float64's sixteen digits). Long double (64-bit mantissa on x86) alone does not
    cure it: at z = 19.25, t = 1, σ(z) − 1 = −7.4e-9 kept only 4e-12 relative accuracy (5.6e-7 at z = 30),
    and a hypothesis run (scale 9, seed 16458) failed the kernels' 1e-12 against it. So
    σ(z) − t is written as (1 − t)·σ(z) − t·σ(−z) (σ(z) + σ(−z) = 1), which for a hard
    target has no subtraction at all, and evaluated in long double.
    """
    z = logits.astype(np.longdouble)
    t = target.astype(np.longdouble)
    e = np.exp(-np.abs(z))
    sigma = np.where(z >= 0, 1 / (1 + e), e / (1 + e))
    sigma_neg = np.where(z >= 0, e / (1 + e), 1 / (1 + e))
    return (upstream * ((1 - t) * sigma - t * sigma_neg) / z.size).astype(np.float64)


def case(shape, dtype, seed, scale=3.0, hard=False):
    rng = np.random.default_rng(seed)
    logits = (rng.standard_normal(shape) * scale).astype(dtype)
    target = (rng.random(shape) > 0.5) if hard else rng.random(shape)
    return logits, target.astype(dtype)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(1,), (7,), (2, 1, 5, 6), (3, 40000)])
def test_forward_and_backward_match_the_reference(kernel, dtype, shape):
    logits, target = case(shape, dtype, seed=0)
    value, dz, _ = run_bce(kernel, logits, target)
    assert value.dtype == dtype and dz.dtype == dtype and dz.shape == shape
    np.testing.assert_allclose(float(value), ref.binary_cross_entropy_with_logits(logits, target), rtol=RTOL[dtype])
    expected = logits_gradient_reference(logits, target, 1.7)
    np.testing.assert_allclose(dz, expected, rtol=RTOL[dtype], atol=RTOL[dtype] * np.abs(expected).max())


@pytest.mark.parametrize("kernel", KERNELS)
def test_gradcheck_logits_and_target(kernel):
    logits, target = case((2, 1, 3, 4), np.float64, seed=1)
    z, t = ts.Tensor(logits, requires_grad=True), ts.Tensor(target, requires_grad=True)
    with backend.use_kernel("bce_with_logits", kernel):
        assert ts.gradcheck(F.binary_cross_entropy_with_logits, [z, t])
        assert ts.gradcheck(lambda x: F.binary_cross_entropy_with_logits(x, target), [z])


@pytest.mark.parametrize("kernel", KERNELS)
def test_weight_and_pos_weight(kernel):
    # The numba kernel hands these to numpy: the same results, bit for bit.
    logits, target = case((2, 3, 4, 5), np.float64, seed=2)
    rng = np.random.default_rng(3)
    weight, pos_weight = rng.random((2, 3, 4, 5)), rng.random((3, 1, 1)) + 0.5
    got = run_bce(kernel, logits, target, weight, pos_weight, target_grad=True)
    expected = run_bce("numpy", logits, target, weight, pos_weight, target_grad=True)
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g, e)
    np.testing.assert_allclose(float(got[0]), ref.binary_cross_entropy_with_logits(logits, target, weight, pos_weight),
                               rtol=1e-12)
    z, t = ts.Tensor(logits[:1, :1], requires_grad=True), ts.Tensor(target[:1, :1], requires_grad=True)
    with backend.use_kernel("bce_with_logits", kernel):
        assert ts.gradcheck(lambda x, y: F.binary_cross_entropy_with_logits(x, y, weight[:1, :1], pos_weight[:1]),
                            [z, t])


@settings(max_examples=25, deadline=None)
@example(kernel="auto", shape=[1], scale=32.0, dtype=np.float64, hard=True, seed=1)   # σ(z) − t cancels
@example(kernel="auto", shape=[1], scale=9.0, dtype=np.float64, hard=True, seed=16458)   # z = 19.25, t = 1
@example(kernel="auto", shape=[1], scale=34.0, dtype=np.float32, hard=True, seed=684)   # a subnormal loss
@given(kernel=st.sampled_from(KERNELS), shape=st.lists(st.integers(1, 6), min_size=1, max_size=4),
       scale=st.floats(0.1, 50.0), dtype=st.sampled_from([np.float32, np.float64]), hard=st.booleans(),
       seed=st.integers(0, 2 ** 16))
def test_hypothesis(kernel, shape, scale, dtype, hard, seed):
    logits, target = case(tuple(shape), dtype, seed, scale, hard)
    value, dz, _ = run_bce(kernel, logits, target)
    np.testing.assert_allclose(float(value), ref.binary_cross_entropy_with_logits(logits, target), rtol=RTOL[dtype],
                               atol=subnormal_atol(dtype, 2 * logits.size))
    expected = logits_gradient_reference(logits, target, 1.7)
    np.testing.assert_allclose(dz, expected, rtol=RTOL[dtype],
                               atol=max(RTOL[dtype] * np.abs(expected).max(), subnormal_atol(dtype, 4)))
    if dtype == np.float64 and logits.size <= 8:
        z = ts.Tensor(logits / scale, requires_grad=True)
        with backend.use_kernel("bce_with_logits", kernel):
            assert ts.gradcheck(lambda x: F.binary_cross_entropy_with_logits(x, target), [z])


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_extreme_logits_stay_finite_and_exact(kernel, dtype):
    logits = np.array([100.0, -100.0, 1e4, -1e4, 1e4, -1e4, 1e4, -1e4, 0.0], dtype=dtype)
    target = np.array([0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.3, 0.3, 0.5], dtype=dtype)
    value, dz, dt = run_bce(kernel, logits, target, target_grad=True)
    assert np.isfinite(value) and np.all(np.isfinite(dz)) and np.all(np.isfinite(dt))
    # n·loss = 100 + 100 + 1e4 + 1e4 + 0 + 0 + 7e3 + 3e3 + log 2, up to softplus terms below rounding.
    np.testing.assert_allclose(float(value), ref.binary_cross_entropy_with_logits(logits, target), rtol=RTOL[dtype])
    expected = logits_gradient_reference(logits, target, 1.7)
    np.testing.assert_allclose(dz, expected, rtol=RTOL[dtype], atol=RTOL[dtype] * np.abs(expected).max())
    assert dz[4] == 0 and dz[5] == 0                  # saturated and right: exactly no gradient


@settings(max_examples=20, deadline=None)
@given(size=st.one_of(st.just(1), st.integers(1, 3 * 16384 + 5)), dtype=st.sampled_from([np.float32, np.float64]),
       scale=st.sampled_from([1.0, 30.0, 1e4]), seed=st.integers(0, 2 ** 16))
def test_numba_loops_match_the_numpy_kernel(size, dtype, scale, seed):
    # The serial and the parallel loops called directly, on sizes around the chunk
    # boundaries: the same result bit for bit (same chunks, same order), and NumPy's to
    # rounding (exp, log1p from the C library; the sum accumulated in float64 by chunk
    # rather than pairwise in the dtype).
    from tinyseg.functional import loss_kernels_numba as compiled
    logits, target = case((size,), dtype, seed, scale)
    one = dtype(1)
    coefficient = dtype(dtype(1.7) / dtype(size))
    total = compiled.bce_with_logits_sum(logits, target, one)
    assert compiled.bce_with_logits_sum_serial(logits, target, one) == total
    dz = compiled.bce_with_logits_backward(logits, target, one, coefficient)
    np.testing.assert_array_equal(compiled.bce_with_logits_backward_serial(logits, target, one, coefficient), dz)

    numpy_kernel = loss.NumpyBCEWithLogitsKernel
    expected_value = numpy_kernel.forward(logits, target, None, None, np)
    expected_dz, _ = numpy_kernel.backward(np.asarray(1.7, dtype), logits, target, None, None, True, False, np)
    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(dtype(total) / dtype(size), expected_value, rtol=RTOL[dtype])
    np.testing.assert_allclose(dz, expected_dz, rtol=4 * eps, atol=4 * eps * abs(coefficient))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_parallel_size_matches_numpy_and_auto(dtype):
    # From NUMBA_BCE_PARALLEL_MIN_ELEMENTS the numba kernel runs its parallel loops, and
    # "auto" its numba forward.
    size = max(loss.NUMBA_BCE_PARALLEL_MIN_ELEMENTS, loss.AUTO_BCE_FORWARD_NUMBA_MIN_ELEMENTS) + 3
    logits, target = case((size,), dtype, seed=4, hard=True)
    results = {kernel: run_bce(kernel, logits, target) for kernel in KERNELS}
    for kernel in ("numba", "auto"):
        np.testing.assert_array_equal(results[kernel][0], results["numba"][0])
        np.testing.assert_allclose(results[kernel][0], results["numpy"][0], rtol=RTOL[dtype])
        np.testing.assert_allclose(results[kernel][1], results["numpy"][1], rtol=4 * np.finfo(dtype).eps)


@pytest.mark.parametrize("kernel", KERNELS)
def test_non_contiguous_inputs(kernel):
    logits, target = case((3, 4, 5), np.float32, seed=5)
    strided_logits = np.ascontiguousarray(logits.swapaxes(1, 2)).swapaxes(1, 2)
    strided_target = np.ascontiguousarray(target[:, ::-1])[:, ::-1]
    assert not strided_logits.flags.c_contiguous and not strided_target.flags.c_contiguous
    plain = run_bce(kernel, logits, target)
    strided = run_bce(kernel, strided_logits, strided_target)
    np.testing.assert_array_equal(strided[0], plain[0])
    np.testing.assert_array_equal(strided[1], plain[1])


def test_unknown_kernel_is_a_clear_error():
    with backend.use_kernel("bce_with_logits", "no-such-kernel"):
        with pytest.raises(ValueError, match="bce_with_logits: unknown kernel 'no-such-kernel'; "
                                             "available kernels: 'auto', 'cuda', 'cupy', 'numba', 'numpy'"):
            F.binary_cross_entropy_with_logits(ts.Tensor(np.zeros(3)), np.zeros(3))
