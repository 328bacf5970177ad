"""Every max_pool2d kernel ("numpy", "numba", "auto") against the naive reference.

Distinct values (a shuffled arange) so that no window has a tie and the winner, hence
the gradient, is unique; the tie rule itself is tested in test_pool.py.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinyseg as ts
import tinyseg.functional as F
from tinyseg import backend
from tinyseg import reference as ref
from tinyseg.functional.pool import MAX_POOL2D_KERNELS

KERNELS = sorted(MAX_POOL2D_KERNELS)
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
        with pytest.raises(ValueError, match=r"max_pool2d: unknown kernel 'x'; available kernels: 'auto', 'numba', 'numpy'"):
            F.max_pool2d(x, 2)
