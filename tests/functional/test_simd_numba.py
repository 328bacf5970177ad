"""The explicit SIMD intrinsics (tinyseg/functional/simd_numba.py) and the register-blocked direct convolution built on them."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyseg import reference as ref
from tinyseg.functional import conv
from tinyseg.functional import simd_numba as simd

numba = pytest.importorskip("numba")


@numba.njit
def _three_accumulators(x, x_offset, w, w_offset, out, stride):
    """out.flat[b·stride : b·stride + lanes] = 1·x[...] · w[w_offset + b] + x[...] · w[w_offset + b] for b < 3."""
    acc = simd.zeros(x, 3)
    acc = simd.fma_broadcast(acc, simd.load(x, x_offset), w, w_offset)
    acc = simd.fma_broadcast(acc, simd.load(x, x_offset), w, w_offset)
    simd.store_rows(out, 0, stride, acc)


@numba.njit
def _dot(a, b):
    acc = simd.zeros(a, 1)[0]
    lanes = simd.VECTOR_BYTES // a.itemsize
    for k in range(0, a.size, lanes):
        acc = simd.fma(acc, simd.load(a, k), simd.load(b, k))
    return simd.lane_sum(acc)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_intrinsics_compute_their_definitions(dtype):
    lanes = simd.lanes(np.dtype(dtype).itemsize)
    assert lanes * np.dtype(dtype).itemsize == simd.VECTOR_BYTES and simd.VECTOR_BYTES in (16, 32, 64)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(3 * lanes).astype(dtype)
    w = rng.standard_normal(7).astype(dtype)
    stride = lanes + 5
    out = np.full(3 * stride, np.nan, dtype=dtype)
    _three_accumulators(x, 2, w, 4, out, stride)
    for b in range(3):
        np.testing.assert_allclose(out[b * stride:b * stride + lanes], 2 * x[2:2 + lanes] * w[4 + b], rtol=1e-6)
        assert np.isnan(out[b * stride + lanes:(b + 1) * stride]).all()        # nothing written between rows
    a, c = rng.standard_normal(4 * lanes).astype(dtype), rng.standard_normal(4 * lanes).astype(dtype)
    expected = float(np.dot(a.astype(np.float64), c.astype(np.float64)))
    assert _dot(a, c) == pytest.approx(expected, rel=1e-5 if dtype == np.float32 else 1e-12)


@settings(max_examples=25, deadline=None)
@given(c_in=st.integers(1, 20), c_out=st.integers(1, 2 * 16 + 3), height=st.integers(1, 9), width=st.integers(1, 40),
       kernel=st.sampled_from([(3, 3), (1, 1), (2, 3), (5, 5)]), dilation=st.sampled_from([(1, 1), (2, 1)]),
       padding=st.sampled_from([((1, 1), (1, 1)), ((0, 2), (3, 0)), ((2, 2), (2, 2))]), seed=st.integers(0, 2**16))
def test_direct_primitives_in_float32(c_in, c_out, height, width, kernel, dilation, padding, seed):
    """Channel counts past one and two register blocks, widths past whole vectors, float32 (the U-Net's dtype):
    forward, input gradient and weight gradient against float64 references."""
    geometry = conv._ConvGeometry.for_conv2d((height, width), kernel, (1, 1), padding, dilation)
    if min(geometry.output_size) < 1:
        return
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, c_in, height, width)).astype(np.float32)
    w = rng.standard_normal((c_out, c_in, *kernel)).astype(np.float32)
    pad = dict(padding=0)
    expected = ref.conv2d(np.pad(x.astype(np.float64), ((0, 0), (0, 0), *padding)), w.astype(np.float64), None,
                          dilation=dilation, **pad)
    y = conv.DirectKernel.forward(x, w, geometry)
    assert y.dtype == np.float32 and y.shape == expected.shape and y.flags.c_contiguous
    scale = np.abs(x).max() * np.abs(w).max() * c_in * kernel[0] * kernel[1]
    np.testing.assert_allclose(y, expected, rtol=0, atol=1e-6 * scale)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = conv.DirectKernel.input_grad(dy, w, geometry)
    dx_im2col = conv.Im2colKernel.input_grad(dy.astype(np.float64), w.astype(np.float64), geometry)
    np.testing.assert_allclose(dx, dx_im2col, rtol=0, atol=1e-6 * np.abs(dy).max() * np.abs(w).max() * c_out * 25)
    dw = conv.DirectKernel.weight_grad(x, dy, geometry)
    dw_im2col = conv.Im2colKernel.weight_grad(x.astype(np.float64), dy.astype(np.float64), geometry)
    assert dw.dtype == np.float32 and dw.shape == w.shape
    pixels = 2 * geometry.output_size[0] * geometry.output_size[1]
    np.testing.assert_allclose(dw, dw_im2col, rtol=0, atol=1e-6 * np.abs(dy).max() * np.abs(x).max() * pixels)


def test_direct_kernels_give_the_same_bits_for_any_thread_count():
    """Each output (and each partial sum of the weight gradient) has one writer, in an order fixed by the shapes."""
    geometry = conv._ConvGeometry.for_conv2d((37, 45), (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1))
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 7, 37, 45)).astype(np.float32)
    w = rng.standard_normal((19, 7, 3, 3)).astype(np.float32)
    dy = rng.standard_normal((3, 19, 37, 45)).astype(np.float32)
    threads = numba.get_num_threads()
    results = []
    try:
        for count in sorted({1, threads}):
            numba.set_num_threads(count)
            results.append((conv.DirectKernel.forward(x, w, geometry), conv.DirectKernel.weight_grad(x, dy, geometry)))
    finally:
        numba.set_num_threads(threads)
    for y, dw in results[1:]:
        np.testing.assert_array_equal(y, results[0][0])
        np.testing.assert_array_equal(dw, results[0][1])
