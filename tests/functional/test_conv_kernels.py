"""Every conv2d kernel ("im2col", "numba-im2col", "winograd", "auto") against the definitions.

The fast kernels must compute what the teaching kernel and ``tinyseg.reference`` compute,
for every geometry, whether a convolution runs in one block or is cut into blocks of
samples or bands of output rows (``conv.BLOCK_BYTES`` made tiny forces the cuts).
Checked three ways: each primitive (forward, weight_grad, input_grad) against its
definition written with loops over the kernel taps; the ops conv2d / conv_transpose2d
against ``reference.py`` with the adjoint identities (hypothesis); and gradcheck in
float64. Also: float32 accuracy of Winograd, which convolutions "auto" sends to
Winograd, and how convolutions are cut into blocks.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinyseg as ts
import tinyseg.functional as F
from tinyseg import backend
from tinyseg import reference as ref
from tinyseg.functional import conv
from tinyseg.functional.conv import _ConvGeometry

from ..kernel_backends import is_gpu_kernel

# The CPU kernels; the GPU ones ("numba_cuda", ...) are tested in test_numba_cuda.py.
KERNELS = [name for name in sorted(conv.CONV2D_KERNELS) if not is_gpu_kernel(name)]
BLOCKS = {"one block": None, "sample blocks": 6000, "row bands": 256}


@pytest.fixture(params=list(BLOCKS))
def block_bytes(request, monkeypatch):
    """Run with the default block size, or one small enough to cut the work into blocks."""
    if BLOCKS[request.param] is not None:
        monkeypatch.setattr(conv, "BLOCK_BYTES", BLOCKS[request.param])
    return request.param


# ----- the definitions, written with a loop over the kernel taps (u, v)

def padded(x, padding):
    """x with ((top, bottom), (left, right)) zeros around; a negative amount crops."""
    (top, bottom), (left, right) = padding
    H, W = x.shape[2:]
    x = x[:, :, max(-top, 0):H - max(-bottom, 0), max(-left, 0):W - max(-right, 0)]
    return np.pad(x, ((0, 0), (0, 0), (max(top, 0), max(bottom, 0)), (max(left, 0), max(right, 0))))


def taps(geometry):
    """For each kernel tap (u, v): the padded rows and columns it reads for all windows."""
    (kh, kw), (sh, sw), (dh, dw) = geometry.kernel, geometry.stride, geometry.dilation
    Ho, Wo = geometry.output_size
    for u in range(kh):
        for v in range(kw):
            yield u, v, slice(dh * u, dh * u + sh * (Ho - 1) + 1, sh), slice(dw * v, dw * v + sw * (Wo - 1) + 1, sw)


def forward_definition(x, w, geometry):
    """y[n,o,i,j] = Σ_{c,u,v} W[o,c,u,v] · x_pad[n,c, s·i+d·u, s·j+d·v]."""
    xp = padded(x, geometry.padding)
    return sum(np.einsum("oc,ncij->noij", w[:, :, u, v], xp[:, :, rows, cols]) for u, v, rows, cols in taps(geometry))


def weight_grad_definition(x, dy, geometry):
    """dW[o,c,u,v] = Σ_{n,i,j} dY[n,o,i,j] · x_pad[n,c, s·i+d·u, s·j+d·v]."""
    xp = padded(x, geometry.padding)
    dw = np.zeros((dy.shape[1], x.shape[1], *geometry.kernel))
    for u, v, rows, cols in taps(geometry):
        dw[:, :, u, v] = np.einsum("noij,ncij->oc", dy, xp[:, :, rows, cols])
    return dw


def input_grad_definition(dy, w, geometry):
    """dX: each window's Wᵀ·dY scattered back where the window read x_pad, the padding cut off."""
    (top, _), (left, _) = geometry.padding
    H, W = geometry.input_size
    dx_pad = np.zeros((dy.shape[0], w.shape[1], H + sum(geometry.padding[0]), W + sum(geometry.padding[1])))
    for u, v, rows, cols in taps(geometry):
        dx_pad[:, :, rows, cols] += np.einsum("noij,oc->ncij", dy, w[:, :, u, v])
    return dx_pad[:, :, top:top + H, left:left + W]


GEOMETRIES = [
    # (N, C, O, H, W), kernel, stride, ((top, bottom), (left, right)), dilation
    ((2, 3, 4, 9, 7), (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1)),        # U-Net's 3×3, odd sizes
    ((2, 3, 4, 8, 8), (3, 3), (1, 1), ((0, 0), (0, 0)), (1, 1)),        # valid
    ((1, 2, 3, 7, 10), (3, 3), (1, 1), ((0, 2), (2, 1)), (1, 1)),       # asymmetric padding
    ((2, 2, 2, 11, 9), (3, 3), (1, 1), ((3, 3), (2, 2)), (1, 1)),       # padding beyond the kernel
    ((3, 2, 3, 10, 11), (3, 3), (2, 2), ((1, 1), (1, 1)), (1, 1)),      # stride 2
    ((2, 2, 2, 12, 9), (3, 3), (1, 1), ((2, 2), (2, 2)), (2, 2)),       # dilation 2
    ((2, 2, 3, 13, 12), (2, 2), (2, 2), ((0, 0), (0, 0)), (1, 1)),      # U-Net's up-convolution geometry
    ((2, 4, 5, 8, 8), (1, 1), (1, 1), ((0, 0), (0, 0)), (1, 1)),        # 1×1 head
    ((1, 3, 2, 9, 14), (2, 3), (3, 1), ((1, 0), (0, 1)), (1, 2)),       # everything asymmetric
    ((1, 32, 32, 33, 32), (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1)),    # wider layers
    ((2, 33, 40, 34, 31), (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1)),    # (odd output width)
    ((4, 128, 128, 16, 15), (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1)),  # "auto" takes Winograd here
]


def geometry_case(case):
    (N, C, O, H, W), kernel, stride, padding, dilation = case
    geometry = _ConvGeometry.for_conv2d((H, W), kernel, stride, padding, dilation)
    rng = np.random.default_rng(H * W + C)
    x = rng.standard_normal((N, C, H, W))
    w = rng.standard_normal((O, C, *kernel))
    dy = rng.standard_normal((N, O, *geometry.output_size))
    return geometry, x, w, dy


@pytest.mark.parametrize("name", KERNELS)
@pytest.mark.parametrize("case", GEOMETRIES, ids=lambda c: "x{}-k{}-s{}-p{}-d{}".format(*c))
def test_primitives_match_their_definitions(name, case, block_bytes):
    kernel = conv.CONV2D_KERNELS[name]
    geometry, x, w, dy = geometry_case(case)
    np.testing.assert_allclose(kernel.forward(x, w, geometry), forward_definition(x, w, geometry),
                               rtol=0, atol=1e-12 * np.abs(x).sum(axis=(1, 2, 3)).max())
    np.testing.assert_allclose(kernel.weight_grad(x, dy, geometry), weight_grad_definition(x, dy, geometry),
                               rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(kernel.input_grad(dy, w, geometry), input_grad_definition(dy, w, geometry),
                               rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("case", GEOMETRIES, ids=lambda c: "x{}-k{}-s{}-p{}-d{}".format(*c))
def test_auto_with_numba_im2col_for_every_size(case, monkeypatch):
    """"auto" builds small im2col matrices with NumPy and large ones with Numba: force Numba."""
    monkeypatch.setattr(conv, "NUMBA_IM2COL_MIN_BYTES", 0)
    monkeypatch.setattr(conv, "BLOCK_BYTES", 3000)
    geometry, x, w, dy = geometry_case(case)
    np.testing.assert_allclose(conv.AutoKernel.forward(x, w, geometry), forward_definition(x, w, geometry),
                               rtol=0, atol=1e-12 * np.abs(x).sum(axis=(1, 2, 3)).max())
    np.testing.assert_allclose(conv.AutoKernel.weight_grad(x, dy, geometry), weight_grad_definition(x, dy, geometry),
                               rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(conv.AutoKernel.input_grad(dy, w, geometry), input_grad_definition(dy, w, geometry),
                               rtol=1e-11, atol=1e-11)


@settings(max_examples=200, deadline=None)
@given(N=st.integers(1, 5), rows=st.integers(1, 40), bytes_per_row=st.integers(1, 5000),
       limit=st.integers(1, 20000))
def test_blocks_cover_every_sample_row_once_within_the_limit(N, rows, bytes_per_row, limit):
    saved = conv.BLOCK_BYTES
    conv.BLOCK_BYTES = limit
    try:
        blocks = list(conv._blocks(np, N, rows, bytes_per_row))
    finally:
        conv.BLOCK_BYTES = saved
    covered = np.zeros((N, rows), int)
    for n0, n1, i0, i1 in blocks:
        assert 0 <= n0 < n1 <= N and 0 <= i0 < i1 <= rows
        assert n1 - n0 == 1 or (i0, i1) == (0, rows)         # a band of rows belongs to one sample
        covered[n0:n1, i0:i1] += 1
        assert (n1 - n0) * (i1 - i0) * bytes_per_row <= max(limit, bytes_per_row)   # one row may exceed it
    assert (covered == 1).all()
    if N * rows * bytes_per_row <= limit:
        assert blocks == [(0, N, 0, rows)]


def test_winograd_float32_accuracy():
    """Winograd adds and halves before multiplying: float32 must stay within the 1e-5
    relative tolerance we hold every float32 op to, measured against float64."""
    geometry, x, w, dy = geometry_case(GEOMETRIES[-1])
    kernel = conv.WinogradKernel
    exact = forward_definition(x, w, geometry)
    y32 = kernel.forward(x.astype(np.float32), w.astype(np.float32), geometry)
    assert y32.dtype == np.float32
    assert np.abs(y32 - exact).max() <= 1e-5 * np.abs(exact).max()
    dx32 = kernel.input_grad(dy.astype(np.float32), w.astype(np.float32), geometry)
    exact_dx = input_grad_definition(dy, w, geometry)
    assert np.abs(dx32 - exact_dx).max() <= 1e-5 * np.abs(exact_dx).max()
    dw32 = kernel.weight_grad(x.astype(np.float32), dy.astype(np.float32), geometry)
    exact_dw = weight_grad_definition(x, dy, geometry)
    assert np.abs(dw32 - exact_dw).max() <= 1e-5 * np.abs(exact_dw).max()


def test_auto_sends_only_large_3x3_stride_1_convolutions_to_winograd():
    auto = conv.AutoKernel

    def winograd(N, C, O, S, primitive="forward", stride=1):
        geometry = _ConvGeometry.for_conv2d((S, S), (3, 3), (stride, stride), ((1, 1), (1, 1)), (1, 1))
        return auto.uses_winograd(np.zeros((N, C, S, S), np.float32), O, geometry, primitive)

    assert winograd(4, 64, 64, 32) and winograd(4, 64, 64, 32, "weight_grad")   # 1024 tiles, 2^22 per GEMM
    assert not winograd(1, 32, 32, 64)            # 1024 tiles, 2^20 per GEMM: too little
    assert winograd(1, 64, 32, 64)                # 2^21: enough for the forward
    assert not winograd(1, 64, 32, 64, "weight_grad")         # not for the weight gradient (2^22)
    assert winograd(1, 32, 16, 128)               # 16 output channels are fine
    assert not winograd(4, 16, 64, 64)            # 16 input channels are not
    assert not winograd(4, 64, 8, 64)             # nor 8 output channels
    assert winograd(1, 512, 512, 16)              # 64 tiles, 2^24 per GEMM, U = 16 MB
    assert not winograd(1, 512, 512, 16, "weight_grad")       # the weight gradient wants 256 tiles
    assert not winograd(1, 1024, 1024, 16)        # U = 64 MB: more than WINOGRAD_MAX_KERNEL_BYTES
    assert not winograd(4, 64, 64, 32, stride=2)
    geometry, x, w, dy = geometry_case(GEOMETRIES[-1])        # the test case meant to take Winograd
    assert auto.uses_winograd(x, w.shape[0], geometry) and auto.uses_winograd(x, w.shape[0], geometry, "weight_grad")
    assert conv.DEFAULT_CONV2D_KERNEL == "auto"


# ----- the ops with each kernel: against reference.py (hypothesis) and gradcheck

@st.composite
def conv2d_configs(draw):
    c_in, c_out = draw(st.integers(1, 3)), draw(st.integers(1, 9))     # 4 or more: the direct weight gradient's 4-channel blocks
    padding = draw(st.sampled_from([0, 1, 2, (0, 1), (2, 1), "same"]))
    stride = 1 if padding == "same" else draw(st.sampled_from([1, 1, 2, (1, 2)]))
    kernel = draw(st.sampled_from([(3, 3), (3, 3), (1, 1), (2, 3), (2, 2)]))
    dilation = draw(st.sampled_from([1, 1, 2]))
    shape = (draw(st.integers(1, 3)), c_in, draw(st.integers(3, 9)), draw(st.integers(3, 9)))
    return shape, (c_out, c_in, *kernel), dict(stride=stride, padding=padding, dilation=dilation), draw(st.integers(0, 2**16))


def check_op_against_reference(op, reference, x, w, params, seed):
    """Forward equals the reference; dX and dW satisfy the adjoint identities (the op is bilinear):
    <dX, δx> = <dY, op(δx, W)> and <dW, δW> = <dY, op(x, δW)> for random directions."""
    rng = np.random.default_rng(seed)
    xt, wt = ts.Tensor(x, requires_grad=True), ts.Tensor(w, requires_grad=True)
    y = op(xt, wt, None, **params)
    expected = reference(x, w, None, **params)
    np.testing.assert_allclose(y.data, expected, rtol=0, atol=1e-12 * max(1.0, np.abs(expected).max()))
    upstream = rng.standard_normal(y.shape)
    y.backward(upstream)
    dx_direction, dw_direction = rng.standard_normal(x.shape), rng.standard_normal(w.shape)
    np.testing.assert_allclose(np.vdot(xt.grad, dx_direction), np.vdot(upstream, reference(dx_direction, w, None, **params)),
                               rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(np.vdot(wt.grad, dw_direction), np.vdot(upstream, reference(x, dw_direction, None, **params)),
                               rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", KERNELS)
@settings(max_examples=30, deadline=None)
@given(config=conv2d_configs(), small_blocks=st.booleans())
def test_hypothesis_conv2d_with_each_kernel(name, config, small_blocks):
    x_shape, w_shape, params, seed = config
    rng = np.random.default_rng(seed)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    try:
        ref.conv2d(x, w, None, **params)
    except ValueError:
        return                       # an empty output: test_conv.py checks that conv2d refuses it
    saved = conv.BLOCK_BYTES
    conv.BLOCK_BYTES = 200 if small_blocks else saved
    try:
        with backend.use_kernel("conv2d", name):
            check_op_against_reference(F.conv2d, ref.conv2d, x, w, params, seed + 1)
    finally:
        conv.BLOCK_BYTES = saved


@pytest.mark.parametrize("name", KERNELS)
@pytest.mark.parametrize("params", [dict(stride=1, padding=1), dict(stride=2, padding=1, output_padding=1),
                                    dict(stride=2, padding=0)])
def test_conv_transpose2d_with_each_kernel(name, params, block_bytes):
    rng = np.random.default_rng(5)
    x, w = rng.standard_normal((2, 3, 6, 5)), rng.standard_normal((3, 2, 3, 3))
    with backend.use_kernel("conv2d", name):
        check_op_against_reference(F.conv_transpose2d, ref.conv_transpose2d, x, w, params, 6)


@pytest.mark.parametrize("name", KERNELS)
@pytest.mark.parametrize("op, w_shape, params", [
    (F.conv2d, (3, 2, 3, 3), dict(padding=1)),
    (F.conv2d, (3, 2, 3, 3), dict(stride=2, padding=1)),
    (F.conv_transpose2d, (2, 3, 3, 3), dict(padding=1)),
], ids=["conv2d-3x3", "conv2d-stride2", "conv_transpose2d-3x3"])
def test_gradcheck_with_each_kernel(name, op, w_shape, params):
    rng = np.random.default_rng(7)
    x = ts.Tensor(rng.standard_normal((2, 2, 5, 6)), requires_grad=True)
    w = ts.Tensor(rng.standard_normal(w_shape), requires_grad=True)
    b = ts.Tensor(rng.standard_normal(w_shape[0] if op is F.conv2d else w_shape[1]), requires_grad=True)
    with backend.use_kernel("conv2d", name):
        assert ts.gradcheck(lambda x, w, b: op(x, w, b, **params), [x, w, b])


def test_float32_layer_with_each_kernel_agrees():
    """A U-Net-sized float32 layer: every kernel within 1e-5 relative of the float64 definition."""
    rng = np.random.default_rng(8)
    x, w = rng.standard_normal((2, 32, 40, 36)), rng.standard_normal((48, 32, 3, 3))
    exact = F.conv2d(x, w, padding=1).data
    for name in KERNELS:
        with backend.use_kernel("conv2d", name):
            y = F.conv2d(x.astype(np.float32), w.astype(np.float32), padding=1).data
        assert np.abs(y - exact).max() <= 1e-5 * np.abs(exact).max(), name
