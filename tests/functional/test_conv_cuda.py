"""The GPU conv2d kernels ("cuda_v1", "cuda_v2", "cuda_v3", "cuda", "cuda_im2col", "cupy") against the definitions.

Each runs where tests/kernel_backends.py puts it: on CuPy arrays with a GPU, otherwise
the CUDA C through the host emulation (with guard bands: a write outside any array
fails). Checked: each primitive (forward, input_grad, weight_grad) against its
definition written with loops over the kernel taps, in float64 and float32, on
geometries with stride, padding (asymmetric, beyond the kernel, negative), dilation,
1×1, non-square kernels and sizes that are not multiples of the tile sizes (edge blocks
of v2's 16×16 / 8-channel tiles and v3's 64×64 tiles); conv2d and conv_transpose2d
against reference.py (fixed cases and hypothesis); float64 gradcheck through both ops;
the launch records (which kernels, on which grid and block); v2's launches split over
samples and v3's split-K weight gradient; bit-identical reruns; and the GPU "auto"
choice with an injected timer. Shapes are tiny: the emulation costs ~1 µs per thread.
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
from tinyseg.functional import conv_kernels_cuda as cuda_conv
from tinyseg.functional.conv import _ConvGeometry

from ..kernel_backends import gpu_present, is_gpu_kernel, kernel_names, on_kernel
from .test_conv_kernels import conv2d_configs, forward_definition, weight_grad_definition

GPU_NAMES = [name for name in sorted(conv.CONV2D_KERNELS) if is_gpu_kernel(name) and not name.startswith("numba")]
KERNELS = kernel_names({name: None for name in GPU_NAMES})
CUDA_C = [name for name in GPU_NAMES if name.startswith("cuda")]


def test_the_gpu_kernels_are_registered():
    assert {"cuda_v1", "cuda_v2", "cuda_v3", "cuda", "cuda_im2col", "cupy"} <= set(GPU_NAMES)
    assert conv.CONV2D_KERNELS["cuda"].__mro__[1] is cuda_conv.ConvV3Kernel     # "cuda" = the expected best
    assert conv.DEFAULT_CONV2D_KERNEL == "auto"


GEOMETRIES = [
    # (N, C, O, H, W), kernel, stride, ((top, bottom), (left, right)), dilation
    ((2, 3, 4, 9, 7), (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1)),         # U-Net's 3×3, odd sizes
    ((1, 2, 3, 7, 10), (3, 3), (1, 1), ((0, 2), (2, 1)), (1, 1)),        # asymmetric padding
    ((2, 2, 2, 11, 9), (3, 3), (1, 1), ((3, 3), (2, 2)), (1, 1)),        # padding beyond the kernel
    ((1, 2, 3, 10, 11), (3, 3), (2, 2), ((1, 1), (1, 1)), (1, 1)),       # stride 2
    ((2, 2, 2, 12, 9), (3, 3), (1, 1), ((2, 2), (2, 2)), (2, 2)),        # dilation 2
    ((2, 2, 3, 13, 12), (2, 2), (2, 2), ((0, 0), (0, 0)), (1, 1)),       # U-Net's up-convolution geometry
    ((2, 4, 5, 8, 8), (1, 1), (1, 1), ((0, 0), (0, 0)), (1, 1)),         # 1×1 head
    ((1, 3, 2, 9, 14), (2, 3), (3, 1), ((1, 0), (0, 1)), (1, 2)),        # everything asymmetric
    ((1, 2, 2, 9, 8), (3, 3), (2, 1), ((-1, 0), (0, -2)), (1, 1)),       # negative padding (a crop)
    ((1, 2, 70, 9, 8), (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1)),        # v3 edge tiles: 70 = 64 + 6 rows
    ((1, 10, 11, 9, 8), (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1)),       # v2 edge groups: 10, 11 = 8 + 2, 8 + 3
    ((1, 3, 2, 19, 18), (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1)),       # edge tiles: 19×18 = 16 + 3, 16 + 2
]
CASE_IDS = ["x{}-k{}-s{}-p{}-d{}".format(*case) for case in GEOMETRIES]


def geometry_case(case, dtype=np.float64):
    (N, C, O, H, W), kernel, stride, padding, dilation = case
    geometry = _ConvGeometry.for_conv2d((H, W), kernel, stride, padding, dilation)
    rng = np.random.default_rng(H * W + C + O)
    x = rng.standard_normal((N, C, H, W))
    w = rng.standard_normal((O, C, *kernel))
    dy = rng.standard_normal((N, O, *geometry.output_size))
    return geometry, x, w, dy


def assert_close(actual, expected, dtype):
    """float64: to rounding (1e-12 of the largest term sum); float32: 1e-5 of the largest value."""
    assert actual.dtype == dtype and actual.shape == expected.shape
    scale = max(1.0, np.abs(expected).max())
    tolerance = 1e-12 * 50 * scale if dtype == np.float64 else 1e-5 * scale
    np.testing.assert_allclose(actual, expected, rtol=0, atol=tolerance)


def input_grad_definition(dy, w, geometry):
    """dx[n,c,h,w] = Σ_{o,u,v,i,j: h = s·i+d·u−p_top, w = s·j+d·v−p_left} W[o,c,u,v] · dY[n,o,i,j]:
    per tap, the rows and columns its windows read, kept where they fall inside x (any padding,
    negative included)."""
    (top, _), (left, _) = geometry.padding
    (H, W), (Ho, Wo) = geometry.input_size, geometry.output_size
    (kh, kw), (sh, sw), (dh, dw) = geometry.kernel, geometry.stride, geometry.dilation
    dx = np.zeros((dy.shape[0], w.shape[1], H, W))
    for u in range(kh):
        for v in range(kw):
            rows, cols = sh * np.arange(Ho) + dh * u - top, sw * np.arange(Wo) + dw * v - left
            i, j = (rows >= 0) & (rows < H), (cols >= 0) & (cols < W)
            contribution = np.einsum("noij,oc->ncij", dy, w[:, :, u, v])[:, :, i][:, :, :, j]
            dx[:, :, rows[i][:, None], cols[j][None, :]] += contribution
    return dx


# ----- each primitive against its definition

@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("case", GEOMETRIES, ids=CASE_IDS)
@pytest.mark.parametrize("name", KERNELS)
def test_primitives_match_their_definitions(name, case, dtype):
    if name in ("cuda",) and case is not GEOMETRIES[0]:
        pytest.skip("'cuda' is v3 (tested in full as 'cuda_v3')")
    geometry, x, w, dy = geometry_case(case)
    kernel = conv.CONV2D_KERNELS[name]
    with on_kernel("conv2d", name) as k:
        args = [k.put(a.astype(dtype)) for a in (x, w, dy)]
        y = k.get(kernel.forward(args[0], args[1], geometry))
        dx = k.get(kernel.input_grad(args[2], args[1], geometry))
        dw = k.get(kernel.weight_grad(args[0], args[2], geometry))
    assert_close(y, forward_definition(x, w, geometry), dtype)
    assert_close(dx, input_grad_definition(dy, w, geometry), dtype)
    assert_close(dw, weight_grad_definition(x, dy, geometry), dtype)


@pytest.mark.parametrize("name", KERNELS)
def test_reruns_are_bit_identical(name):
    """One writer per element and fixed summation orders: the same bits every run (on a GPU too)."""
    geometry, x, w, dy = geometry_case(GEOMETRIES[3], np.float32)
    kernel = conv.CONV2D_KERNELS[name]
    with on_kernel("conv2d", name) as k:
        x, w, dy = (k.put(a.astype(np.float32)) for a in (x, w, dy))
        runs = [[k.get(kernel.forward(x, w, geometry)), k.get(kernel.input_grad(dy, w, geometry)),
                 k.get(kernel.weight_grad(x, dy, geometry))] for _ in range(2)]
    for first, second in zip(*runs):
        np.testing.assert_array_equal(first, second)


# ----- the ops: conv2d and conv_transpose2d against reference.py

def check_op(name, op, reference, x, w, b, params, seed, dtype=np.float64):
    """Forward equals the reference; dX, dW satisfy the adjoint identities (the op is bilinear)
    <dX, δx> = <dY, op(δx, W)>, <dW, δW> = <dY, op(x, δW)>; db = Σ dY."""
    rng = np.random.default_rng(seed)
    with on_kernel("conv2d", name) as k:
        xt = ts.Tensor(k.put(x.astype(dtype)), requires_grad=True)
        wt = ts.Tensor(k.put(w.astype(dtype)), requires_grad=True)
        bt = None if b is None else ts.Tensor(k.put(b.astype(dtype)), requires_grad=True)
        y = op(xt, wt, bt, **params)
        upstream = rng.standard_normal(y.shape)
        y.backward(k.put(upstream.astype(dtype)))
        y, dx, dw = k.get(y.data), k.get(xt.grad), k.get(wt.grad)
        db = None if b is None else k.get(bt.grad)
    expected = reference(x, w, b, **params)
    assert_close(y, expected, dtype)
    directions = rng.standard_normal(x.shape), rng.standard_normal(w.shape)
    tolerance = 1e-10 if dtype == np.float64 else 1e-4
    np.testing.assert_allclose(np.vdot(dx, directions[0]), np.vdot(upstream, reference(directions[0], w, None, **params)),
                               rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(np.vdot(dw, directions[1]), np.vdot(upstream, reference(x, directions[1], None, **params)),
                               rtol=tolerance, atol=tolerance)
    if b is not None:
        np.testing.assert_allclose(db, upstream.sum(axis=(0, 2, 3)), rtol=tolerance, atol=tolerance)


OP_CASES = [
    pytest.param(F.conv2d, ref.conv2d, (2, 3, 7, 6), (4, 3, 3, 3), dict(padding=1), id="conv2d-3x3-pad1"),
    pytest.param(F.conv2d, ref.conv2d, (1, 2, 9, 8), (3, 2, 3, 3), dict(stride=2, padding=(1, 0)), id="conv2d-stride2"),
    pytest.param(F.conv2d, ref.conv2d, (1, 2, 6, 7), (2, 2, 2, 2), dict(padding="same"), id="conv2d-same-even"),
    pytest.param(F.conv2d, ref.conv2d, (1, 2, 9, 9), (2, 2, 3, 2), dict(dilation=(2, 1), padding=2), id="conv2d-dilation"),
    pytest.param(F.conv2d, ref.conv2d, (2, 5, 4, 3), (3, 5, 1, 1), dict(), id="conv2d-1x1"),
    pytest.param(F.conv_transpose2d, ref.conv_transpose2d, (2, 3, 4, 5), (3, 2, 2, 2), dict(stride=2),
                 id="conv_transpose2d-2x2-stride2"),
    pytest.param(F.conv_transpose2d, ref.conv_transpose2d, (1, 3, 5, 4), (3, 2, 3, 3),
                 dict(stride=2, padding=1, output_padding=1), id="conv_transpose2d-output_padding"),
    pytest.param(F.conv_transpose2d, ref.conv_transpose2d, (1, 2, 4, 4), (2, 3, 3, 2),
                 dict(padding=1, dilation=2), id="conv_transpose2d-dilation"),
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("op, reference, x_shape, w_shape, params", OP_CASES)
@pytest.mark.parametrize("name", KERNELS)
def test_ops_against_the_reference(name, op, reference, x_shape, w_shape, params, dtype):
    rng = np.random.default_rng(len(params) + x_shape[2])
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    b = rng.standard_normal(w_shape[0] if op is F.conv2d else w_shape[1])
    check_op(name, op, reference, x, w, b, params, 3, dtype)


@pytest.mark.parametrize("name", KERNELS)
@settings(max_examples=6, deadline=None)
@given(config=conv2d_configs())
def test_hypothesis_conv2d(name, config):
    x_shape, w_shape, params, seed = config
    rng = np.random.default_rng(seed)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    try:
        ref.conv2d(x, w, None, **params)
    except ValueError:
        return                         # an empty output: test_conv.py checks that conv2d refuses it
    check_op(name, F.conv2d, ref.conv2d, x, w, None, params, seed + 1)


@pytest.mark.parametrize("name", KERNELS)
@pytest.mark.parametrize("op, w_shape, params", [
    (F.conv2d, (2, 2, 3, 3), dict(stride=2, padding=1)),
    (F.conv_transpose2d, (2, 2, 3, 3), dict(stride=2, padding=1, output_padding=1)),
], ids=["conv2d-stride2", "conv_transpose2d-stride2"])
def test_gradcheck(name, op, w_shape, params):
    # ts.gradcheck works on NumPy arrays: the CUDA C runs in the emulation here, GPU or not.
    rng = np.random.default_rng(7)
    with backend.cuda_emulation(guard_band=True), backend.use_kernel("conv2d", name):
        x = ts.Tensor(rng.standard_normal((1, 2, 4, 3)), requires_grad=True)
        w = ts.Tensor(rng.standard_normal(w_shape), requires_grad=True)
        b = ts.Tensor(rng.standard_normal(2), requires_grad=True)
        assert ts.gradcheck(lambda x, w, b: op(x, w, b, **params), [x, w, b])


# ----- launch records: how each version maps the work to threads

def launches_of(name, x_shape, w_shape, params):
    rng = np.random.default_rng(0)
    with backend.cuda_emulation() as emu, backend.use_kernel("conv2d", name):
        x = ts.Tensor(rng.standard_normal(x_shape), requires_grad=True)
        w = ts.Tensor(rng.standard_normal(w_shape), requires_grad=True)
        y = F.conv2d(x, w, **params)
        y.backward(np.ones(y.shape))
    return y.shape, emu.launches


@pytest.mark.skipif(gpu_present(), reason="reads the emulation's launch records of NumPy runs")
def test_launch_records():
    # conv2d (2, 3, 9, 7) -> (2, 70, 9, 7) with a 3×3 kernel, padding 1: forward, then dX, dW.
    shape, launches = launches_of("cuda_v1", (2, 3, 9, 7), (70, 3, 3, 3), dict(padding=1))
    assert [(l.kernel, l.grid, l.block) for l in launches] == [
        ("conv2d_v1_forward<double>", (-(-2 * 70 * 63 // 256), 1, 1), (256, 1, 1)),      # one thread per y
        ("conv2d_v1_input_grad<double>", (-(-2 * 3 * 63 // 256), 1, 1), (256, 1, 1)),    # one per dx
        ("conv2d_v1_weight_grad<double>", (-(-70 * 27 // 256), 1, 1), (256, 1, 1))]      # one per dW

    _, launches = launches_of("cuda_v2", (2, 3, 9, 7), (70, 3, 3, 3), dict(padding=1))
    patch = (16 + 2) * (16 + 2)
    assert [(l.kernel, l.grid, l.block, l.shared_mem) for l in launches] == [
        # 16×16 output tiles (one covers 9×7) × 9 groups of 8 channels × 2 samples; patch + 8 kernels staged
        ("conv2d_v2_forward<double>", (1, 1, 2 * 9), (16, 16, 1), (patch + 8 * 9) * 8),
        ("conv2d_v2_input_grad<double>", (1, 1, 2 * 1), (16, 16, 1), (patch + 8 * 9) * 8),
        ("conv2d_v2_weight_grad<double>", (3, 70, 1), (256, 1, 1), 0)]                  # one block per (c, o)

    _, launches = launches_of("cuda_v3", (2, 3, 9, 7), (70, 3, 3, 3), dict(padding=1))
    assert [(l.kernel, l.grid, l.block) for l in launches] == [
        ("conv2d_v3_forward<double>", (2, 2, 1), (16, 16, 1)),        # 126 columns, 70 rows: 2 × 2 tiles of 64×64
        ("conv2d_v3_input_grad<double>", (2, 1, 1), (16, 16, 1)),     # 126 columns, 3 rows
        ("conv2d_v3_weight_grad<double>", (1, 2, 1), (16, 16, 1))]    # 27 columns, 70 rows; K = 126: no split

    _, launches = launches_of("cuda_im2col", (2, 3, 9, 7), (70, 3, 3, 3), dict(padding=1))
    assert [l.kernel for l in launches] == ["im2col<double>", "col2im_gather<double>", "im2col<double>"]


def test_v2_splits_its_launches_over_samples_when_grid_z_is_short(monkeypatch):
    monkeypatch.setattr(cuda_conv, "MAX_GRID_Z", 2)      # 2 blocks in z: one sample (2 groups of 8 channels) per launch
    geometry, x, w, dy = geometry_case(((3, 9, 10, 6, 5), (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1)))
    with on_kernel("conv2d", "cuda_v2") as k:
        y = k.get(cuda_conv.ConvV2Kernel.forward(k.put(x), k.put(w), geometry))
        dx = k.get(cuda_conv.ConvV2Kernel.input_grad(k.put(dy), k.put(w), geometry))
        if not gpu_present():
            assert [l.grid[2] for l in k.emulation.launches] == [2, 2, 2, 2, 2, 2]
    assert_close(y, forward_definition(x, w, geometry), np.float64)
    assert_close(dx, input_grad_definition(dy, w, geometry), np.float64)


def test_v3_split_k_weight_gradient(monkeypatch):
    monkeypatch.setattr(cuda_conv, "SPLIT_K_MIN_DEPTH", 24)
    geometry, x, w, dy = geometry_case(((2, 3, 4, 9, 7), (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1)))
    assert cuda_conv.ConvV3Kernel.splits(4, 27, 126) == (4, 32)     # 126 positions: 3 splits of 32 and one of 30
    with on_kernel("conv2d", "cuda_v3") as k:
        dws = [k.get(cuda_conv.ConvV3Kernel.weight_grad(k.put(x), k.put(dy), geometry)) for _ in range(2)]
        launches = [(l.kernel, l.grid) for l in k.emulation.launches]
    assert launches[:2] == [("conv2d_v3_weight_grad<double>", (1, 1, 4)), ("conv2d_v3_sum_splits<double>", (1, 1, 1))]
    assert_close(dws[0], weight_grad_definition(x, dy, geometry), np.float64)
    np.testing.assert_array_equal(dws[0], dws[1])


def test_v2_picks_smaller_tiles_for_small_images_and_large_patches():
    tile = cuda_conv.ConvV2Kernel.tile
    assert tile(64, 64, lambda t: 1000) == 16
    assert tile(7, 8, lambda t: 1000) == 8
    assert tile(3, 4, lambda t: 1000) == 4
    assert tile(64, 64, lambda t: 60000 if t == 16 else 1000) == 8
    with pytest.raises(ValueError, match="cuda_v3"):
        tile(64, 64, lambda t: 10**6)


# ----- "auto" on the GPU: the fastest measured, with an injected timer

class ScriptedTimer:
    """Runs each candidate (so its launches happen) and reports the scripted seconds."""

    def __init__(self, seconds):
        self.seconds, self.calls = seconds, []

    def __call__(self, name, run):
        run()
        self.calls.append(name)
        return self.seconds[name]


def test_gpu_auto_measures_once_per_shape_and_keeps_the_fastest():
    candidates = ("cuda_v3", "cuda_v2", "cuda_im2col")
    timer = ScriptedTimer({"cuda_v3": 2e-3, "cuda_v2": 1e-3, "cuda_im2col": 3e-3})
    choice = cuda_conv.MeasuredChoice(conv.CONV2D_KERNELS, candidates, timer)
    geometry, x, w, dy = geometry_case(GEOMETRIES[0])
    with backend.cuda_emulation(guard_band=True) as emu:
        y = choice.forward(x, w, geometry)
        assert timer.calls == list(candidates)                 # each candidate timed once
        emu.clear()
        y_again = choice.forward(x, w, geometry)
        assert timer.calls == list(candidates)                 # cached: no new measurement
        assert emu.kernels() == ["conv2d_v2_forward<double>"]  # the winner alone ran
        dw = choice.weight_grad(x, dy, geometry)               # another primitive: measured on its own
        assert timer.calls == 2 * list(candidates)
        x2 = x[:1].copy()
        choice.forward(x2, w, geometry.for_conv2d(x2.shape[2:], (3, 3), (1, 1), geometry.padding, (1, 1)))
        assert timer.calls == 3 * list(candidates)             # another shape: measured again
    np.testing.assert_array_equal(y, y_again)
    assert_close(y, forward_definition(x, w, geometry), np.float64)
    assert_close(dw, weight_grad_definition(x, dy, geometry), np.float64)
    key = choice.key("forward", x, w, geometry)
    assert choice.winners[key] == "cuda_v2"
    assert choice.timings[key] == {"cuda_v3": 2e-3, "cuda_v2": 1e-3, "cuda_im2col": 3e-3}
    choice.clear()
    assert not choice.winners


def test_gpu_auto_passes_over_a_kernel_that_refuses_the_geometry():
    def refuse(name, run):
        if name == "cuda_v2":
            raise ValueError("the staged patch needs more shared memory")
        run()
        return {"cuda_v3": 2.0, "cuda_im2col": 1.0}[name]

    choice = cuda_conv.MeasuredChoice(conv.CONV2D_KERNELS, ("cuda_v2", "cuda_v3", "cuda_im2col"), refuse)
    geometry, x, w, dy = geometry_case(GEOMETRIES[0])
    with backend.cuda_emulation():
        dx = choice.input_grad(dy, w, geometry)
        assert choice.timings[choice.key("input_grad", dy, w, geometry)]["cuda_v2"] == np.inf
        assert choice.winners[choice.key("input_grad", dy, w, geometry)] == "cuda_im2col"
        with pytest.raises(ValueError, match="no GPU kernel among cuda_v2 takes"):
            cuda_conv.MeasuredChoice(conv.CONV2D_KERNELS, ("cuda_v2",), refuse).forward(x, w, geometry)
    assert_close(dx, input_grad_definition(dy, w, geometry), np.float64)


def test_gpu_auto_candidates_and_the_cpu_auto_untouched():
    assert isinstance(conv.GPU_AUTO, cuda_conv.MeasuredChoice)
    assert set(conv.GPU_AUTO.candidates) == {"cuda_v3", "cuda_v2", "cuda_im2col", "cupy"}
    assert all(name in conv.CONV2D_KERNELS for name in conv.GPU_AUTO.candidates)
    before = dict(conv.GPU_AUTO.winners)
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((1, 2, 6, 5)), rng.standard_normal((3, 2, 3, 3))
    with backend.use_kernel("conv2d", "auto"):
        y = F.conv2d(x, w, padding=1)                          # NumPy arrays: the CPU "auto", no measuring
    assert conv.GPU_AUTO.winners == before
    assert_close(y.data, ref.conv2d(x, w, None, padding=1), np.float64)


@pytest.mark.skipif(not gpu_present(), reason="needs CuPy and a GPU: 'auto' measures only on CuPy arrays")
def test_gpu_auto_on_cupy_arrays_measures_with_cuda_events():
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal((2, 8, 16, 16)), rng.standard_normal((8, 8, 3, 3))
    conv.GPU_AUTO.clear()
    with backend.use_kernel("conv2d", "auto"):
        y = F.conv2d(ts.Tensor(backend.to_device(x, "cuda")), ts.Tensor(backend.to_device(w, "cuda")), padding=1)
    assert_close(backend.to_device(y.data, "cpu"), ref.conv2d(x, w, None, padding=1), np.float64)
    (timings,) = conv.GPU_AUTO.timings.values()
    assert set(timings) == set(conv.GPU_AUTO.candidates) and all(t > 0 for t in timings.values())


@pytest.mark.parametrize("name", KERNELS)
def test_an_empty_batch(name):
    with on_kernel("conv2d", name) as k:
        x = ts.Tensor(k.put(np.zeros((0, 2, 5, 5))), requires_grad=True)
        w = ts.Tensor(k.put(np.ones((3, 2, 3, 3))), requires_grad=True)
        y = F.conv2d(x, w, padding=1)
        y.backward(k.put(np.ones(y.shape)))
        assert y.shape == (0, 3, 5, 5) and x.grad.shape == (0, 2, 5, 5)
        np.testing.assert_array_equal(k.get(w.grad), np.zeros((3, 2, 3, 3)))
