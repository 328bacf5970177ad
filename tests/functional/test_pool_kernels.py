"""Every max_pool2d and avg_pool2d kernel ("numpy", "numba", "auto") against the naive reference.

Max pooling: distinct values (a shuffled arange) so that no window has a tie and the
winner, hence the gradient, is unique; the tie rule itself is tested in test_pool.py.
"""
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinyseg as ts
import tinyseg.functional as F
from tinyseg import backend
from tinyseg import reference as ref
from tinyseg.functional import pool
from tinyseg.functional.pool import AVG_POOL2D_KERNELS, MAX_POOL2D_KERNELS

from ..kernel_backends import is_gpu_kernel

# The CPU kernels; the GPU ones ("cuda", "cupy", ...) are tested in test_pool_cuda.py.
KERNELS = [name for name in sorted(MAX_POOL2D_KERNELS) if not is_gpu_kernel(name)]
AVG_KERNELS = [name for name in sorted(AVG_POOL2D_KERNELS) if not is_gpu_kernel(name)]
CONFIGS = [(2, None, 0), (2, 2, 1), (3, 1, 1), (3, 2, 1), (2, 1, 0), (2, 3, 1),
           ((2, 3), (1, 2), (1, 1)), ((3, 2), (2, 1), (0, 1))]


def distinct_values(shape, seed=0, spacing=0.1):
    rng = np.random.default_rng(seed)
    size = int(np.prod(shape))
    return (rng.permutation(size) - size / 2).reshape(shape) * spacing


def reference_grad(x, upstream, **kwargs):
    """dx of the reference: each window's gradient to its (unique) maximum."""
    k = kwargs["kernel_size"]
    kh, kw = (k, k) if isinstance(k, int) else k
    s = kwargs["stride"] if kwargs["stride"] is not None else k
    sh, sw = (s, s) if isinstance(s, int) else s
    p = kwargs["padding"]
    ph, pw = (p, p) if isinstance(p, int) else p
    N, C, H, W = x.shape
    dx = np.zeros_like(x, dtype=np.float64)
    y = ref.max_pool2d(x, **kwargs)
    for n, c, i, j in np.ndindex(*y.shape):
        for u in range(kh):
            for v in range(kw):
                r, q = sh * i + u - ph, sw * j + v - pw
                if 0 <= r < H and 0 <= q < W and x[n, c, r, q] == y[n, c, i, j]:
                    dx[n, c, r, q] += upstream[n, c, i, j]
    return dx


def run(kernel, x, upstream, **kwargs):
    with backend.use_kernel("max_pool2d", kernel):
        leaf = ts.Tensor(x, requires_grad=True)
        y = F.max_pool2d(leaf, **kwargs)
        y.backward(upstream)
    return y.data, leaf.grad


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("kernel_size,stride,padding", CONFIGS)
def test_forward_backward_match_reference(kernel, kernel_size, stride, padding):
    kwargs = dict(kernel_size=kernel_size, stride=stride, padding=padding)
    x = distinct_values((2, 3, 7, 8))
    expected = ref.max_pool2d(x, **kwargs)
    upstream = np.random.default_rng(1).standard_normal(expected.shape)
    y, dx = run(kernel, x, upstream, **kwargs)
    np.testing.assert_array_equal(y, expected)
    np.testing.assert_allclose(dx, reference_grad(x, upstream, **kwargs), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kernel", KERNELS)
def test_large_input_backward_matches_numpy_kernel(kernel):
    """Big enough for "auto" to take its Numba backward (>= NUMBA_BACKWARD_MIN_OUTPUTS outputs)."""
    x = distinct_values((2, 32, 64, 64)).astype(np.float32)
    upstream = np.random.default_rng(2).standard_normal((2, 32, 32, 32)).astype(np.float32)
    y, dx = run(kernel, x, upstream, kernel_size=2, stride=None, padding=0)
    y0, dx0 = run("numpy", x, upstream, kernel_size=2, stride=None, padding=0)
    np.testing.assert_array_equal(y, y0)
    np.testing.assert_array_equal(dx, dx0)


@pytest.mark.parametrize("kernel", KERNELS)
def test_gradcheck_float64(kernel):
    x = ts.Tensor(distinct_values((1, 2, 6, 6)), requires_grad=True)
    with backend.use_kernel("max_pool2d", kernel):
        assert ts.gradcheck(lambda t: F.max_pool2d(t, 3, stride=2, padding=1), (x,))


@pytest.mark.parametrize("kernel", KERNELS)
def test_float32_agrees_with_float64(kernel):
    x = distinct_values((2, 4, 9, 10), spacing=0.25)        # exact in float32
    upstream = np.random.default_rng(3).standard_normal((2, 4, 5, 5))
    kwargs = dict(kernel_size=3, stride=2, padding=1)
    y64, dx64 = run(kernel, x, upstream, **kwargs)
    y32, dx32 = run(kernel, x.astype(np.float32), upstream.astype(np.float32), **kwargs)
    assert y32.dtype == np.float32 and dx32.dtype == np.float32
    np.testing.assert_array_equal(y32, y64.astype(np.float32))
    np.testing.assert_allclose(dx32, dx64, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kernel", KERNELS)
def test_non_contiguous_input(kernel):
    x = distinct_values((2, 3, 8, 7))
    view = np.ascontiguousarray(x.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)
    assert not view.flags.c_contiguous
    upstream = np.random.default_rng(4).standard_normal((2, 3, 5, 4))
    kwargs = dict(kernel_size=2, stride=2, padding=1)
    y, dx = run(kernel, view, upstream, **kwargs)
    np.testing.assert_array_equal(y, ref.max_pool2d(x, **kwargs))
    np.testing.assert_allclose(dx, reference_grad(x, upstream, **kwargs), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kernel", KERNELS)
def test_nan_and_winners_match_numpy_kernel(kernel):
    """NaN windows give NaN, and the winners (hence gradients) equal the NumPy kernel's."""
    x = distinct_values((1, 2, 6, 6))
    x[0, 0, 1, 1] = np.nan
    x[0, 1, 0, 4] = np.nan
    upstream = np.arange(2 * 3 * 3, dtype=np.float64).reshape(1, 2, 3, 3) + 1
    kwargs = dict(kernel_size=3, stride=2, padding=1)
    y, dx = run(kernel, x, upstream, **kwargs)
    y0, dx0 = run("numpy", x, upstream, **kwargs)
    np.testing.assert_array_equal(y, y0)
    np.testing.assert_array_equal(dx, dx0)


@pytest.mark.parametrize("kernel", KERNELS)
@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 2), c=st.integers(1, 3), h=st.integers(1, 9), w=st.integers(1, 9),
       kh=st.integers(1, 4), kw=st.integers(1, 4), sh=st.integers(1, 3), sw=st.integers(1, 3),
       pad=st.data())
def test_hypothesis_matches_reference(kernel, n, c, h, w, kh, kw, sh, sw, pad):
    ph = pad.draw(st.integers(0, kh // 2))
    pw = pad.draw(st.integers(0, kw // 2))
    if kh > h + 2 * ph or kw > w + 2 * pw:
        return
    kwargs = dict(kernel_size=(kh, kw), stride=(sh, sw), padding=(ph, pw))
    x = distinct_values((n, c, h, w), seed=h * 31 + w)
    expected = ref.max_pool2d(x, **kwargs)
    upstream = np.random.default_rng(5).standard_normal(expected.shape)
    y, dx = run(kernel, x, upstream, **kwargs)
    np.testing.assert_array_equal(y, expected)
    np.testing.assert_allclose(dx, reference_grad(x, upstream, **kwargs), rtol=1e-12, atol=1e-12)


def test_unknown_kernel_error():
    x = ts.Tensor(np.zeros((1, 1, 4, 4)))
    with backend.use_kernel("max_pool2d", "x"):
        with pytest.raises(ValueError, match=re.escape("max_pool2d: unknown kernel 'x'; available kernels: "
                                                  + ", ".join(repr(k) for k in sorted(MAX_POOL2D_KERNELS)))):
            F.max_pool2d(x, 2)


# ----- avg_pool2d

def triples(kernel_size, stride, padding):
    """((k_h, k_w), (s_h, s_w), (p_h, p_w)) with ints spread and stride defaulting to the kernel."""
    both = lambda a: (a, a) if isinstance(a, int) else tuple(a)
    return both(kernel_size), both(kernel_size if stride is None else stride), both(padding)


def reference_avg_grad(x_shape, upstream, **kwargs):
    """dx of the reference: every element of window (i, j) inside x receives g[i, j]/(k_h·k_w)."""
    (kh, kw), (sh, sw), (ph, pw) = triples(kwargs["kernel_size"], kwargs["stride"], kwargs["padding"])
    N, C, H, W = x_shape
    dx = np.zeros(x_shape)
    for n, c, i, j in np.ndindex(*upstream.shape):
        for u in range(kh):
            for v in range(kw):
                r, q = sh * i + u - ph, sw * j + v - pw
                if 0 <= r < H and 0 <= q < W:
                    dx[n, c, r, q] += upstream[n, c, i, j] / (kh * kw)
    return dx


def run_avg(kernel, x, upstream, **kwargs):
    with backend.use_kernel("avg_pool2d", kernel):
        leaf = ts.Tensor(x, requires_grad=True)
        y = F.avg_pool2d(leaf, **kwargs)
        y.backward(upstream)
    return y.data, leaf.grad


@pytest.mark.parametrize("kernel", AVG_KERNELS)
@pytest.mark.parametrize("kernel_size,stride,padding", CONFIGS)
def test_avg_forward_backward_match_reference(kernel, kernel_size, stride, padding):
    kwargs = dict(kernel_size=kernel_size, stride=stride, padding=padding)
    x = np.random.default_rng(10).standard_normal((2, 3, 7, 8))
    expected = ref.avg_pool2d(x, **kwargs)
    upstream = np.random.default_rng(11).standard_normal(expected.shape)
    y, dx = run_avg(kernel, x, upstream, **kwargs)
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, reference_avg_grad(x.shape, upstream, **kwargs), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kernel", AVG_KERNELS)
@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 2), c=st.integers(1, 3), h=st.integers(1, 9), w=st.integers(1, 9),
       kh=st.integers(1, 4), kw=st.integers(1, 4), sh=st.integers(1, 5), sw=st.integers(1, 5),
       dtype=st.sampled_from([np.float32, np.float64]), data=st.data())
def test_avg_hypothesis_matches_reference_and_numpy_kernel(kernel, n, c, h, w, kh, kw, sh, sw, dtype, data):
    """Any geometry (overlapping, gapped, padded, 1×1, non-square) in float32 and float64.

    Against the float64 reference up to the rounding of the input's dtype: a float32 window
    sum of at most 16 standard-normal terms is off by a few ulps of the terms' magnitude,
    far inside rtol = atol = 1e-5 (float64: 1e-12). And bit for bit against the NumPy
    kernel, whose additions every kernel repeats in the same order.
    """
    ph = data.draw(st.integers(0, kh // 2), label="ph")
    pw = data.draw(st.integers(0, kw // 2), label="pw")
    if kh > h + 2 * ph or kw > w + 2 * pw:
        return
    kwargs = dict(kernel_size=(kh, kw), stride=(sh, sw), padding=(ph, pw))
    rng = np.random.default_rng(h * 31 + w)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    expected = ref.avg_pool2d(x, **kwargs)
    upstream = rng.standard_normal(expected.shape).astype(dtype)
    y, dx = run_avg(kernel, x, upstream, **kwargs)
    assert y.dtype == dtype and dx.dtype == dtype and y.shape == expected.shape
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(y, expected, rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(dx, reference_avg_grad(x.shape, upstream.astype(np.float64), **kwargs),
                               rtol=tolerance, atol=tolerance)
    y0, dx0 = run_avg("numpy", x, upstream, **kwargs)
    np.testing.assert_array_equal(y, y0)
    np.testing.assert_array_equal(dx, dx0)


@pytest.mark.parametrize("kernel", AVG_KERNELS)
@pytest.mark.parametrize("kernel_size,stride,padding", [(3, 2, 1), ((2, 3), 1, (1, 1)), (2, 3, 1)])
def test_avg_gradcheck_float64(kernel, kernel_size, stride, padding):
    x = ts.Tensor(np.random.default_rng(12).standard_normal((1, 2, 6, 7)), requires_grad=True)
    with backend.use_kernel("avg_pool2d", kernel):
        assert ts.gradcheck(lambda t: F.avg_pool2d(t, kernel_size, stride=stride, padding=padding), (x,))


@pytest.mark.parametrize("kernel", AVG_KERNELS)
@pytest.mark.parametrize("shape,kernel_size,stride,padding", [((2, 64, 128, 128), 2, 2, 0),
                                                              ((1, 64, 128, 128), 3, 1, 1)])
def test_avg_large_input_matches_numpy_kernel(kernel, shape, kernel_size, stride, padding):
    """Big enough for "auto" to take Numba (2×2: both directions, 3×3: the backward); identical results."""
    kwargs = dict(kernel_size=kernel_size, stride=stride, padding=padding)
    rng = np.random.default_rng(13)
    x = rng.standard_normal(shape).astype(np.float32)
    H_out = (shape[2] + 2 * padding - kernel_size) // stride + 1
    W_out = (shape[3] + 2 * padding - kernel_size) // stride + 1
    upstream = rng.standard_normal(shape[:2] + (H_out, W_out)).astype(np.float32)
    y, dx = run_avg(kernel, x, upstream, **kwargs)
    y0, dx0 = run_avg("numpy", x, upstream, **kwargs)
    np.testing.assert_array_equal(y, y0)
    np.testing.assert_array_equal(dx, dx0)


@pytest.mark.parametrize("shape,kernel_size,stride,padding,expected", [
    ((1, 1, 1024, 2048), 2, 2, 0, ["forward", "backward"]),   # 2^21 inputs, 2^21 window elements
    ((1, 1, 1024, 2046), 2, 2, 0, []),                        # just below both
    ((1, 1, 512, 512), 3, 1, 1, ["backward"]),                # 2^18 inputs, 9·2^18 window elements
    ((1, 1, 256, 512), 3, 1, 1, []),                          # 9·2^17 window elements
])
def test_avg_auto_switches_at_its_thresholds(monkeypatch, shape, kernel_size, stride, padding, expected):
    assert (pool.NUMBA_FORWARD_MIN_INPUTS, pool.NUMBA_BACKWARD_MIN_TERMS) == (2**21, 2**21)
    calls = []
    for direction in ("forward", "backward"):
        numba_half = getattr(pool.NumbaAvgPoolKernel, direction)
        monkeypatch.setattr(pool.NumbaAvgPoolKernel, direction,
                            staticmethod(lambda *args, d=direction, f=numba_half: calls.append(d) or f(*args)))
    kwargs = dict(kernel_size=kernel_size, stride=stride, padding=padding)
    x = np.ones(shape, np.float32)
    H_out = (shape[2] + 2 * padding - kernel_size) // stride + 1
    W_out = (shape[3] + 2 * padding - kernel_size) // stride + 1
    run_avg("auto", x, np.ones(shape[:2] + (H_out, W_out), np.float32), **kwargs)
    assert calls == expected


@pytest.mark.parametrize("kernel", AVG_KERNELS)
def test_avg_nan_and_inf_match_numpy_kernel(kernel):
    x = np.random.default_rng(14).standard_normal((1, 2, 6, 6))
    x[0, 0, 0, 0] = np.nan                          # window (0, 0) of plane 0
    x[0, 0, 4, 4], x[0, 0, 5, 5] = np.inf, np.inf   # window (2, 2): +inf
    x[0, 1, 2, 2], x[0, 1, 3, 3] = np.inf, -np.inf  # window (1, 1) of plane 1: inf − inf = NaN
    x[0, 1, 0, 5] = -np.inf                         # window (0, 2): −inf
    upstream = np.random.default_rng(15).standard_normal((1, 2, 3, 3))
    upstream[0, 0, 1, 1] = np.inf
    upstream[0, 1, 2, 0] = np.nan
    with np.errstate(invalid="ignore"):     # inf − inf, on purpose
        y, dx = run_avg(kernel, x, upstream, kernel_size=2, stride=2, padding=0)
        y0, dx0 = run_avg("numpy", x, upstream, kernel_size=2, stride=2, padding=0)
    assert np.isnan(y[0, 0, 0, 0]) and y[0, 0, 2, 2] == np.inf
    assert np.isnan(y[0, 1, 1, 1]) and y[0, 1, 0, 2] == -np.inf
    assert np.isfinite(y).sum() == y.size - 4
    assert np.all(dx[0, 0, 2:4, 2:4] == np.inf) and np.all(np.isnan(dx[0, 1, 4:6, 0:2]))
    np.testing.assert_array_equal(y, y0)
    np.testing.assert_array_equal(dx, dx0)


@pytest.mark.parametrize("kernel", AVG_KERNELS)
def test_avg_non_contiguous_input(kernel):
    x = np.random.default_rng(16).standard_normal((2, 3, 8, 14))
    transposed = np.ascontiguousarray(x.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)
    for view, values in [(transposed, x), (x[:, :, :, ::2], x[:, :, :, ::2].copy())]:
        assert not view.flags.c_contiguous
        kwargs = dict(kernel_size=3, stride=2, padding=1)
        expected = ref.avg_pool2d(values, **kwargs)
        upstream = np.random.default_rng(17).standard_normal(expected.shape)
        y, dx = run_avg(kernel, view, upstream, **kwargs)
        np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(dx, reference_avg_grad(values.shape, upstream, **kwargs), rtol=1e-12, atol=1e-12)


def test_avg_unknown_kernel_error():
    x = ts.Tensor(np.zeros((1, 1, 4, 4)))
    with backend.use_kernel("avg_pool2d", "x"):
        with pytest.raises(ValueError, match=re.escape("avg_pool2d: unknown kernel 'x'; available kernels: "
                                                  + ", ".join(repr(k) for k in sorted(AVG_POOL2D_KERNELS)))):
            F.avg_pool2d(x, 2)


# ----- max_pool2d: the compiled 2×2-stride-2 forward (the U-Net's pooling)

@pytest.mark.parametrize("shape", [(2, 3, 8, 6), (1, 2, 7, 9), (1, 1, 2, 2), (1, 2, 3, 130), (1, 1, 5, 256)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_2x2_stride_2_forward_matches_reference_and_numpy(shape, dtype):
    # Odd sizes: the last row/column is read by no window.
    x = distinct_values(shape, seed=3).astype(dtype)
    upstream = np.random.default_rng(4).standard_normal((shape[0], shape[1], shape[2] // 2, shape[3] // 2))
    kwargs = dict(kernel_size=2, stride=None, padding=0)
    y_numpy, dx_numpy = run("numpy", x, upstream.astype(dtype), **kwargs)
    for kernel in ("numba", "auto"):
        y, dx = run(kernel, x, upstream.astype(dtype), **kwargs)
        np.testing.assert_array_equal(y, ref.max_pool2d(x, **kwargs).astype(dtype))
        np.testing.assert_array_equal(y, y_numpy)
        np.testing.assert_array_equal(dx, dx_numpy)
        np.testing.assert_allclose(dx, reference_grad(x, upstream.astype(dtype), **kwargs), rtol=0, atol=0)


@pytest.mark.parametrize("width", [8, 256])
def test_2x2_stride_2_ties_nan_and_winners_as_numpy(width):
    # Ties (the first maximum in row-major order wins), NaN, ±inf: winners and values
    # identical to the NumPy kernel's, for the compiled special case directly.
    rng = np.random.default_rng(5)
    x = rng.integers(-2, 3, size=(2, 3, 6, width)).astype(np.float32)
    x[0, 0, 0, :4] = [np.nan, 1.0, 1.0, np.nan]
    x[0, 1, 2:4, 0:2] = [[-np.inf, -np.inf], [-np.inf, -np.inf]]
    x[1, 2, 4:6, 2:4] = [[1.0, np.inf], [np.nan, 2.0]]
    geometry = pool._WindowGeometry(x.shape, (2, 2), (2, 2), (0, 0))
    y_numpy, winner_numpy = pool.NumpyMaxPoolKernel.forward(np, x, geometry, True)
    y, winner = pool.NumbaMaxPoolKernel.forward(np, x, geometry, True)
    np.testing.assert_array_equal(y, y_numpy)        # (NaN == NaN for assert_array_equal)
    np.testing.assert_array_equal(winner, winner_numpy)
    assert np.isnan(y[0, 0, 0, 0]) and np.isnan(y[0, 0, 0, 1]) and np.isnan(y[1, 2, 2, 1])
    y_only, none = pool.NumbaMaxPoolKernel.forward(np, x, geometry, False)
    assert none is None
    np.testing.assert_array_equal(y_only, y_numpy)


def test_auto_runs_the_2x2_loop_from_its_width(monkeypatch):
    calls = []
    original = pool.NumbaMaxPoolKernel.forward
    monkeypatch.setattr(pool.NumbaMaxPoolKernel, "forward",
                        staticmethod(lambda *args: calls.append(args[1].shape) or original(*args)))
    monkeypatch.setattr(pool, "NUMBA_2X2_FORWARD_MIN_ELEMENTS", 4 * 256)
    width = pool.NUMBA_2X2_FORWARD_MIN_WIDTH
    with backend.use_kernel("max_pool2d", "auto"):
        for w in (width - 2, width, 2 * width):
            F.max_pool2d(ts.Tensor(np.zeros((1, 1, 4, w), dtype=np.float32)), 2)               # 4·w elements
            F.max_pool2d(ts.Tensor(np.zeros((1, 1, 6, w), dtype=np.float32)), 3, stride=2)   # not 2×2: NumPy
    assert calls == [(1, 1, 4, 2 * width)]       # width 128 alone is not enough: 512 elements
