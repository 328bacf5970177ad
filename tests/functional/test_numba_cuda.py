"""The Numba CUDA kernels ("numba_cuda", "numba_cuda_v1") of conv2d and max_pool2d.

Without a GPU they run in Numba's CUDA simulator (conftest.py sets NUMBA_ENABLE_CUDASIM=1),
on NumPy arrays, inside ``cuda_emulation()`` (tests/kernel_backends.py); on a GPU the same
tests run on CuPy arrays. Checked: each conv primitive against its definition (any
geometry, tiles and channel groups cut at the edges), conv2d / conv_transpose2d /
max_pool2d against tinyseg.reference (float32 and float64), a float64 gradcheck, the
launch records, agreement with the CUDA C kernels under the emulation (the same bits),
and, in a process without the simulator, the one clear error and a PTX compile for
sm_80. In the simulator a negative index into a kernel's array fails (it would wrap in
NumPy and run outside the array on a GPU): the counterpart of the emulation's guard bands.

The simulator runs every CUDA thread as a Python thread (about a millisecond each, a
block's syncthreads() far more): shapes stay tiny.
"""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import assume, given, settings
from numba import cuda
from hypothesis import strategies as st

import tinyseg as ts
import tinyseg.functional as F
from tinyseg import reference as ref
from tinyseg.functional import conv, pool
from tinyseg.functional.conv import _ConvGeometry

from ..kernel_backends import gpu_present, kernel_names, on_kernel
from .test_conv_kernels import forward_definition, input_grad_definition, weight_grad_definition
from .test_pool_kernels import distinct_values, reference_grad


def _numba_cuda_usable():
    from tinyseg.cuda.numba_cuda import numba_cuda
    try:
        numba_cuda()
    except RuntimeError:
        return False
    return True


pytestmark = pytest.mark.skipif(not _numba_cuda_usable(),
                                reason="numba.cuda needs a GPU or NUMBA_ENABLE_CUDASIM=1 (set by conftest.py "
                                       "when no GPU is present)")

@pytest.fixture(autouse=True)
def negative_indices_fail(monkeypatch):
    """In the simulator, make an index below 0 into a kernel's global array an IndexError.

    An index past the end already is one (NumPy's), but a negative index would silently
    wrap to the other end, where a GPU reads or writes outside the array. The kernels never
    index from the end, so any negative index is a bug: the simulator's guard band.
    """
    from tinyseg.cuda.numba_cuda import simulated
    if not simulated():
        yield
        return
    from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

    def checked(method):
        def access(self, idx, *value):
            if any(isinstance(i, (int, np.integer)) and i < 0 for i in (idx if isinstance(idx, tuple) else (idx,))):
                raise IndexError(f"negative index {idx} into an array of shape {self._ary.shape}")
            return method(self, idx, *value)
        return access

    monkeypatch.setattr(FakeCUDAArray, "__getitem__", checked(FakeCUDAArray.__getitem__))
    monkeypatch.setattr(FakeCUDAArray, "__setitem__", checked(FakeCUDAArray.__setitem__))
    yield


def _off_by_one(a):
    """A wrong kernel body (thread 0 writes a[0, -1]), for the guard's own test. (The simulator
    swaps the module-level name ``cuda`` for its fake module, so the body refers to that.)"""
    a[0, cuda.threadIdx.x - 1] = 1.0


@pytest.mark.skipif(gpu_present(), reason="the simulator's guard")
def test_the_simulator_guard_catches_a_negative_index():
    with pytest.raises(IndexError, match="negative index"):
        cuda.jit(_off_by_one)[1, 2](np.zeros((1, 2)))


CONV = [p for p in kernel_names(conv.CONV2D_KERNELS) if p.id.startswith("numba_cuda")]
WHERE = "numba-cuda" if gpu_present() else "numba-cuda-simulator"


def tolerance(dtype):
    return 1e-12 if dtype == np.float64 else 2e-5


# ----- conv2d's primitives against their definitions

PRIMITIVE_CASES = [
    # (N, C, O, H, W), kernel, stride, ((top, bottom), (left, right)), dilation, dtype
    ((1, 3, 2, 9, 14), (2, 3), (3, 1), ((1, 0), (0, 1)), (1, 2), np.float64),   # everything asymmetric
    ((1, 2, 2, 11, 9), (3, 3), (1, 1), ((3, 3), (2, 2)), (1, 1), np.float64),   # padding beyond the kernel
    ((1, 1, 9, 17, 10), (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), np.float32),  # 2 tiles of 16, 2 groups of y
    ((1, 9, 1, 6, 5), (5, 5), (1, 1), ((2, 2), (2, 2)), (1, 1), np.float64),    # 2 groups of dx, 25 taps of dW
]


def _case(case):
    (N, C, O, H, W), kernel, stride, padding, dilation, dtype = case
    geometry = _ConvGeometry.for_conv2d((H, W), kernel, stride, padding, dilation)
    rng = np.random.default_rng(H * W + C)
    x = rng.standard_normal((N, C, H, W))
    w = rng.standard_normal((O, C, *kernel))
    dy = rng.standard_normal((N, O, *geometry.output_size))
    return geometry, x, w, dy, dtype


def _check_primitives(name, geometry, x, w, dy, dtype, input_grad=True):
    kernel = conv.CONV2D_KERNELS[name]
    with on_kernel("conv2d", name) as k:
        y = k.get(kernel.forward(k.put(x.astype(dtype)), k.put(w.astype(dtype)), geometry))
        dw = k.get(kernel.weight_grad(k.put(x.astype(dtype)), k.put(dy.astype(dtype)), geometry))
        dx = k.get(kernel.input_grad(k.put(dy.astype(dtype)), k.put(w.astype(dtype)), geometry)) if input_grad else x
    assert y.dtype == dw.dtype == dx.dtype == dtype
    assert dx.shape == x.shape and dw.shape == w.shape
    tol = tolerance(dtype)
    np.testing.assert_allclose(y, forward_definition(x, w, geometry), rtol=tol, atol=tol * 10)
    np.testing.assert_allclose(dw, weight_grad_definition(x, dy, geometry), rtol=tol, atol=tol * 10)
    if input_grad:
        np.testing.assert_allclose(dx, input_grad_definition(dy, w, geometry), rtol=tol, atol=tol * 10)


@pytest.mark.parametrize("case", PRIMITIVE_CASES, ids=lambda c: "x{}-k{}-s{}-p{}-d{}-{}".format(
    *c[:5], np.dtype(c[5]).name))
def test_primitives_match_their_definitions(case):
    _check_primitives("numba_cuda", *_case(case))


def test_primitives_with_negative_padding_and_v1():
    # The flipped-kernel geometry of a stride-1 input gradient crops (negative padding):
    # forward and weight gradient there (input_grad_definition pads, it cannot crop);
    # then the v1 kernels on the asymmetric case.
    geometry, x, w, dy, dtype = _case(PRIMITIVE_CASES[1])
    flipped = conv._flipped_geometry(geometry)
    assert min(flipped.padding[0] + flipped.padding[1]) < 0
    flipped_w = np.ascontiguousarray(conv._flipped_kernel(w))
    _check_primitives("numba_cuda", flipped, dy, flipped_w, x, np.float64, input_grad=False)
    _check_primitives("numba_cuda_v1", *_case(PRIMITIVE_CASES[0]))


# ----- the ops through F, against tinyseg.reference

OP_CASES = [
    # (N, C, O, H, W), k, stride, padding, dilation
    ((2, 2, 3, 7, 6), 3, 1, 1, 1),
    ((1, 2, 2, 9, 8), 3, 2, 1, 1),
    ((1, 1, 2, 9, 8), 3, 1, 2, 2),
]


def _conv2d_run(name, x, w, b, upstream, **kwargs):
    with on_kernel("conv2d", name) as k:
        leaves = [ts.Tensor(k.put(a), requires_grad=True) for a in (x, w, b)]
        y = F.conv2d(*leaves, **kwargs)
        y.backward(k.put(upstream))
        launched = list(k.emulation.launches)
        return (k.get(y.data),) + tuple(k.get(leaf.grad) for leaf in leaves) + (launched,)


def _cpu_grads(op, x, w, b, upstream, **kwargs):
    """dx, dw, db of ``op`` in float64 with the CPU's teaching kernel ("im2col", itself tested against
    the definitions in test_conv_kernels.py)."""
    with on_kernel("conv2d", "im2col"):
        leaves = [ts.Tensor(a.astype(np.float64), requires_grad=True) for a in (x, w, b)]
        op(*leaves, **kwargs).backward(upstream.astype(np.float64))
        return [leaf.grad for leaf in leaves]


@pytest.mark.parametrize("name,case,dtype", [
    ("numba_cuda", OP_CASES[0], np.float32), ("numba_cuda", OP_CASES[1], np.float64),
    ("numba_cuda", OP_CASES[2], np.float32),
    ("numba_cuda_v1", OP_CASES[0], np.float64), ("numba_cuda_v1", OP_CASES[1], np.float32),
], ids=lambda v: getattr(v, "__name__", str(v)))
def test_conv2d_matches_reference(name, case, dtype):
    (N, C, O, H, W), k, s, p, d = case
    kwargs = dict(stride=s, padding=p, dilation=d)
    rng = np.random.default_rng(H + W)
    x, w, b = rng.standard_normal((N, C, H, W)), rng.standard_normal((O, C, k, k)), rng.standard_normal(O)
    expected = ref.conv2d(x, w, b, **kwargs)
    upstream = rng.standard_normal(expected.shape)
    y, dx, dw, db, _ = _conv2d_run(name, *(a.astype(dtype) for a in (x, w, b, upstream)), **kwargs)
    assert y.dtype == dx.dtype == dw.dtype == db.dtype == dtype
    tol = tolerance(dtype)
    np.testing.assert_allclose(y, expected, rtol=tol, atol=tol * 10)
    for got, want in zip((dx, dw, db), _cpu_grads(F.conv2d, x, w, b, upstream, **kwargs)):
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * 10)


@settings(max_examples=4, deadline=None)
@given(N=st.integers(1, 2), C=st.integers(1, 2), O=st.integers(1, 3), H=st.integers(1, 12), W=st.integers(1, 12),
       k=st.integers(1, 3), stride=st.integers(1, 2), padding=st.integers(0, 2), dilation=st.integers(1, 2),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**16))
def test_conv2d_any_shape_matches_reference(N, C, O, H, W, k, stride, padding, dilation, dtype, seed):
    """Shapes drawn across the v2 tile sizes (4, 8, 16); channel groups: PRIMITIVE_CASES."""
    assume(dilation * (k - 1) + 1 <= min(H, W) + 2 * padding)
    kwargs = dict(stride=stride, padding=padding, dilation=dilation)
    rng = np.random.default_rng(seed)
    x, w, b = rng.standard_normal((N, C, H, W)), rng.standard_normal((O, C, k, k)), rng.standard_normal(O)
    expected = ref.conv2d(x, w, b, **kwargs)
    upstream = rng.standard_normal(expected.shape)
    *got, _ = _conv2d_run("numba_cuda", *(a.astype(dtype) for a in (x, w, b, upstream)), **kwargs)
    tol = tolerance(dtype)
    for g, want in zip(got, [expected] + _cpu_grads(F.conv2d, x, w, b, upstream, **kwargs)):
        assert g.dtype == dtype
        np.testing.assert_allclose(g, want, rtol=tol, atol=tol * 10)


@pytest.mark.parametrize("shape,k,stride,padding,output_padding,dtype", [
    ((1, 3, 2, 4, 3), 3, 2, 1, 1, np.float64),     # (N, C_in, C_out, H, W)
    ((2, 2, 3, 3, 4), 2, 2, 0, 0, np.float32),     # U-Net's up-convolution
])
def test_conv_transpose2d_matches_reference(shape, k, stride, padding, output_padding, dtype):
    N, Cin, Cout, H, W = shape
    kwargs = dict(stride=stride, padding=padding, output_padding=output_padding)
    rng = np.random.default_rng(7)
    x, w, b = rng.standard_normal((N, Cin, H, W)), rng.standard_normal((Cin, Cout, k, k)), rng.standard_normal(Cout)
    expected = ref.conv_transpose2d(x, w, b, **kwargs)
    upstream = rng.standard_normal(expected.shape)
    with on_kernel("conv2d", "numba_cuda") as kernel:
        leaves = [ts.Tensor(kernel.put(a.astype(dtype)), requires_grad=True) for a in (x, w, b)]
        y = F.conv_transpose2d(*leaves, **kwargs)
        y.backward(kernel.put(upstream.astype(dtype)))
        got = [kernel.get(y.data)] + [kernel.get(leaf.grad) for leaf in leaves]
        launched = [launch.kernel.split("[")[0] for launch in kernel.emulation.launches]
    # forward = input_grad, dX = forward, dW = weight_grad with the roles swapped
    assert launched == ["conv2d_v2_input_grad", "conv2d_v2_forward", "conv2d_v2_weight_grad"]
    tol = tolerance(dtype)
    np.testing.assert_allclose(got[0], expected, rtol=tol, atol=tol * 10)
    for g, want in zip(got[1:], _cpu_grads(F.conv_transpose2d, x, w, b, upstream, **kwargs)):
        assert g.dtype == dtype
        np.testing.assert_allclose(g, want, rtol=tol, atol=tol * 10)


GRADCHECK_NEEDS_NUMPY = pytest.mark.skipif(
    gpu_present(), reason="ts.gradcheck works on NumPy arrays, and on a GPU numba_cuda takes CuPy arrays (the "
                          "float64 gradients are compared with the CPU's in the tests above)")


@GRADCHECK_NEEDS_NUMPY
def test_conv2d_gradcheck_float64():
    rng = np.random.default_rng(3)
    x, w, b = rng.standard_normal((1, 1, 3, 3)), rng.standard_normal((1, 1, 2, 2)), rng.standard_normal(1)
    with on_kernel("conv2d", "numba_cuda") as k:
        inputs = [ts.Tensor(k.put(a), requires_grad=True) for a in (x, w, b)]
        assert ts.gradcheck(lambda *t: F.conv2d(*t, padding=0), inputs)


def test_conv2d_launch_records():
    rng = np.random.default_rng(4)
    arrays = [rng.standard_normal(shape).astype(np.float32) for shape in ((1, 2, 9, 10), (3, 2, 3, 3), (3,),
                                                                           (1, 3, 9, 10))]
    *_, v2 = _conv2d_run("numba_cuda", *arrays, padding=1)
    *_, v1 = _conv2d_run("numba_cuda_v1", *arrays, padding=1)
    assert [launch.kernel for launch in v2 + v1] == [
        "conv2d_v2_forward[float32]", "conv2d_v2_input_grad[float32]", "conv2d_v2_weight_grad[float32]",
        "conv2d_v1_forward[float32]", "conv2d_v1_input_grad[float32]", "conv2d_v1_weight_grad[float32]"]
    assert all(launch.where == WHERE for launch in v2 + v1)
    forward, input_grad, weight_grad = v2
    # 16×16 threads (9×10 is larger than one 8×8 tile), one group of 8 channels; shared memory:
    # an 18×18 patch (of x; of dy) and 8·3·3 weights, 4 bytes each.
    for launch in (forward, input_grad):
        assert launch.grid == (1, 1, 1) and launch.block == (16, 16, 1)
        assert launch.shared_mem == (18 * 18 + 8 * 9) * 4
    # One block per (c, o), 9 taps × threads partial sums.
    threads = weight_grad.block[0]
    assert weight_grad.grid == (2, 3, 1) and threads == (256 if gpu_present() else 32)
    assert weight_grad.shared_mem == 9 * threads * 4
    forward, input_grad, weight_grad = v1
    assert forward.grid == (2, 1, 1) and forward.block == (256, 1, 1)               # 270 outputs
    assert input_grad.block == (192, 1, 1) and input_grad.threads >= 2 * 9 * 10     # 180 dx elements
    assert weight_grad.block == (64, 1, 1) and weight_grad.threads >= 3 * 2 * 9     # 54 dW elements
    assert forward.shared_mem == input_grad.shared_mem == weight_grad.shared_mem == 0


def test_v2_tile_choice_as_the_cuda_c_launcher():
    from tinyseg.functional import conv_kernels_cuda
    from tinyseg.functional import conv_kernels_numba_cuda as gpu
    kernel = (4, 4, 3, 3)
    for size, stride, dilation, itemsize in [(64, 1, 1, 4), (9, 1, 1, 4), (8, 1, 1, 4), (5, 1, 1, 8),
                                             (4, 1, 1, 4), (2, 1, 1, 8), (200, 1, 8, 8), (40, 2, 1, 4)]:
        geometry = _ConvGeometry.for_conv2d((size, size), (3, 3), (stride, stride), ((dilation,) * 2,) * 2,
                                            (dilation,) * 2)
        for primitive, image in (("forward", geometry.output_size), ("input_grad", geometry.input_size)):
            tile = gpu.v2_tile(image, kernel, geometry, itemsize, primitive)
            assert tile == conv_kernels_cuda.ConvV2Kernel.tile(
                *image, lambda t: gpu.v2_shared_memory_bytes(t, kernel, geometry, itemsize, primitive))
    huge = _ConvGeometry.for_conv2d((1000, 1000), (3, 3), (1, 1), ((0, 0), (0, 0)), (200, 200))
    assert gpu.v2_tile(huge.output_size, kernel, huge, 8) is None      # no tile fits in 48 KB: v1 runs it


# ----- the CUDA C kernels, emulated, compute the same

def _cuda_c_conv_kernels():
    return [name for name in ("cuda_v1", "cuda_v2") if name in conv.CONV2D_KERNELS]


@pytest.mark.skipif(gpu_present() or not _cuda_c_conv_kernels(),
                    reason="needs the CUDA C conv kernels ('cuda_v1', 'cuda_v2') and no GPU (emulation)")
def test_numba_cuda_and_emulated_cuda_c_agree():
    """Each Numba kernel against its CUDA C twin ("numba_cuda_v1" / "cuda_v1", "numba_cuda" /
    "cuda_v2"). Numba's simulator (Python arithmetic) and the emulated CUDA C (g++, no FMA
    contraction) add the same products in the same order, so they give the same bits — except
    v2's weight gradient, whose reduction tree is 32 threads wide in the simulator (256 in
    the CUDA C): equal to rounding."""
    rng = np.random.default_rng(5)
    x, w, b = (rng.standard_normal(s).astype(np.float32) for s in ((1, 2, 9, 10), (3, 2, 3, 3), (3,)))
    upstream = rng.standard_normal((1, 3, 5, 5)).astype(np.float32)
    kwargs = dict(stride=2, padding=1)
    for numba_name, c_name in (("numba_cuda_v1", "cuda_v1"), ("numba_cuda", "cuda_v2")):
        if c_name not in conv.CONV2D_KERNELS:
            continue
        *numba_results, numba_launches = _conv2d_run(numba_name, x, w, b, upstream, **kwargs)
        *c_results, c_launches = _conv2d_run(c_name, x, w, b, upstream, **kwargs)
        # The same kernels, by name: conv2d_v1_forward[float32] and conv2d_v1_forward<float>, ...
        assert [launch.kernel.split("[")[0] for launch in numba_launches] == \
            [launch.kernel.split("<")[0] for launch in c_launches]
        y, dx, dw, db = numba_results
        np.testing.assert_array_equal(y, c_results[0])
        np.testing.assert_array_equal(dx, c_results[1])
        np.testing.assert_array_equal(db, c_results[3])
        if c_name == "cuda_v1":
            np.testing.assert_array_equal(dw, c_results[2])
        else:
            np.testing.assert_allclose(dw, c_results[2], rtol=1e-6, atol=1e-6)


@pytest.mark.skipif(gpu_present() or "cuda" not in pool.MAX_POOL2D_KERNELS,
                    reason="needs the CUDA C max_pool2d kernel ('cuda') and no GPU (emulation)")
def test_max_pool2d_numba_cuda_and_emulated_cuda_c_agree_bit_for_bit():
    x = np.random.default_rng(6).integers(-2, 3, size=(1, 2, 7, 6)).astype(np.float32)
    x[0, 0, 1, 1] = np.nan
    upstream = np.arange(2 * 4 * 3, dtype=np.float32).reshape(1, 2, 4, 3)
    results = [_max_pool_run(name, x, upstream, kernel_size=3, stride=2, padding=1)
               for name in ("numba_cuda", "cuda")]
    for a, b in zip(results[0][:2], results[1][:2]):
        np.testing.assert_array_equal(a, b)


# ----- max_pool2d

POOL_CONFIGS = [(2, None, 0), (3, 2, 1), (2, 1, 0), ((2, 3), (1, 2), (1, 1))]


def _max_pool_run(name, x, upstream, **kwargs):
    with on_kernel("max_pool2d", name) as k:
        leaf = ts.Tensor(k.put(x), requires_grad=True)
        y = F.max_pool2d(leaf, **kwargs)
        y.backward(k.put(upstream))
        launches = list(k.emulation.launches) if k.emulation is not None else []
        return k.get(y.data), k.get(leaf.grad), launches


@pytest.mark.parametrize("kernel_size,stride,padding", POOL_CONFIGS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_max_pool2d_matches_reference(kernel_size, stride, padding, dtype):
    kwargs = dict(kernel_size=kernel_size, stride=stride, padding=padding)
    x = distinct_values((2, 3, 7, 6))
    expected = ref.max_pool2d(x, **kwargs)
    upstream = np.random.default_rng(1).standard_normal(expected.shape)
    y, dx, launches = _max_pool_run("numba_cuda", x.astype(dtype), upstream.astype(dtype), **kwargs)
    assert y.dtype == dx.dtype == dtype
    np.testing.assert_array_equal(y, expected.astype(dtype))
    np.testing.assert_allclose(dx, reference_grad(x, upstream.astype(dtype), **kwargs),
                               rtol=tolerance(dtype), atol=tolerance(dtype))
    name = np.dtype(dtype).name
    assert [launch.kernel for launch in launches] == [f"max_pool2d_forward[{name},uint8]",
                                                      f"max_pool2d_backward[{name},uint8]"]
    assert all(launch.where == WHERE for launch in launches)


@settings(max_examples=10, deadline=None)
@given(shape=st.tuples(st.integers(1, 2), st.integers(1, 2), st.integers(1, 9), st.integers(1, 9)),
       kh=st.integers(1, 3), kw=st.integers(1, 3), sh=st.integers(1, 3), sw=st.integers(1, 3),
       ph=st.integers(0, 1), pw=st.integers(0, 1), seed=st.integers(0, 2**16))
def test_max_pool2d_any_shape_matches_reference(shape, kh, kw, sh, sw, ph, pw, seed):
    assume(2 * ph <= kh and 2 * pw <= kw and kh <= shape[2] + 2 * ph and kw <= shape[3] + 2 * pw)
    kwargs = dict(kernel_size=(kh, kw), stride=(sh, sw), padding=(ph, pw))
    x = distinct_values(shape, seed=seed)
    expected = ref.max_pool2d(x, **kwargs)
    upstream = np.random.default_rng(seed).standard_normal(expected.shape)
    y, dx, _ = _max_pool_run("numba_cuda", x, upstream, **kwargs)
    np.testing.assert_array_equal(y, expected)
    np.testing.assert_allclose(dx, reference_grad(x, upstream, **kwargs), rtol=1e-12, atol=1e-12)


def test_max_pool2d_nan_ties_and_winners_as_the_cpu():
    x = np.random.default_rng(2).integers(-2, 3, size=(1, 2, 6, 6)).astype(np.float64)
    x[0, 0, 1, 1] = np.nan
    x[0, 0, 0, :4] = [np.nan, 1.0, 1.0, np.nan]
    x[0, 1, 2:4, 0:2] = -np.inf
    x[0, 1, 4, 4] = np.inf
    upstream = np.arange(2 * 3 * 3, dtype=np.float64).reshape(1, 2, 3, 3) + 1
    kwargs = dict(kernel_size=3, stride=2, padding=1)
    y, dx, _ = _max_pool_run("numba_cuda", x, upstream, **kwargs)
    y_cpu, dx_cpu, _ = _max_pool_run("numba", x, upstream, **kwargs)
    np.testing.assert_array_equal(y, y_cpu)
    np.testing.assert_array_equal(dx, dx_cpu)       # the same winners, the same additions in the same order


def test_max_pool2d_uint16_winners_and_inference():
    # 17×17 windows need uint16 winners; without grad the forward keeps none (the CPU's rule).
    x = distinct_values((1, 1, 17, 18))
    upstream = np.ones((1, 1, 1, 1))
    y, dx, launches = _max_pool_run("numba_cuda", x, upstream, kernel_size=17)
    np.testing.assert_array_equal(y, ref.max_pool2d(x, 17))
    np.testing.assert_array_equal(dx, reference_grad(x, upstream, kernel_size=17, stride=None, padding=0))
    assert launches[0].kernel == "max_pool2d_forward[float64,uint16]"
    with on_kernel("max_pool2d", "numba_cuda") as k, ts.no_grad():
        y = F.max_pool2d(ts.Tensor(k.put(x), requires_grad=True), 17)
        np.testing.assert_array_equal(k.get(y.data), ref.max_pool2d(x, 17))


@GRADCHECK_NEEDS_NUMPY
def test_max_pool2d_gradcheck_float64():
    x = distinct_values((1, 2, 5, 4), seed=3)
    with on_kernel("max_pool2d", "numba_cuda") as k:
        assert ts.gradcheck(lambda t: F.max_pool2d(t, 3, stride=2, padding=1),
                            [ts.Tensor(k.put(x), requires_grad=True)])


# ----- without the simulator and without a GPU: one clear error; the kernels compile for sm_80

_NO_SIMULATOR_SCRIPT = textwrap.dedent("""
    import shutil, sys
    import numpy as np
    import tinyseg as ts, tinyseg.functional as F
    from tinyseg import backend
    assert "numba.cuda" not in sys.modules, "import tinyseg imported numba.cuda"
    x = ts.Tensor(np.ones((1, 1, 4, 4)))
    F.max_pool2d(F.conv2d(x, ts.Tensor(np.ones((1, 1, 3, 3)))), 2)     # the CPU kernels
    assert "numba.cuda" not in sys.modules, "a CPU kernel imported numba.cuda"
    for op, run in (("conv2d", lambda: F.conv2d(x, ts.Tensor(np.ones((1, 1, 3, 3))))),
                    ("max_pool2d", lambda: F.max_pool2d(x, 2))):
        with backend.use_kernel(op, "numba_cuda"):
            try:
                run()
            except RuntimeError as error:
                assert "NUMBA_ENABLE_CUDASIM=1" in str(error) and "GPU" in str(error), error
            else:
                raise AssertionError(op + ": numba_cuda ran without a GPU or the simulator")
    print("clear error")

    # Compile every kernel to PTX for sm_80, as on a GPU (needs CUDA's NVVM, not a GPU).
    import numba
    from numba import cuda
    try:
        cuda.compile_ptx(lambda a: None, (numba.float32[::1],), cc=(8, 0))
    except Exception as error:
        print("no NVVM:", type(error).__name__)
        sys.exit(0)
    import tinyseg.cuda.numba_cuda as launcher
    launcher._cuda = cuda           # compile only: nothing is launched
    from tinyseg.functional import conv_kernels_numba_cuda as conv_k, pool_kernels_numba_cuda as pool_k
    # float32 (float64 is the same code with another T): no float64 arithmetic may creep in.
    i64, A, I = numba.int64, numba.float32[:, :, :, ::1], numba.uint8[:, :, :, ::1]
    for kernel in (conv_k.conv2d_v1_forward, conv_k.conv2d_v2_forward, conv_k.conv2d_v1_input_grad,
                   conv_k.conv2d_v2_input_grad, conv_k.conv2d_v1_weight_grad, conv_k.conv2d_v2_weight_grad):
        ptx, _ = cuda.compile_ptx(kernel.py_func, (A, A, A) + (i64,) * 6, cc=(8, 0))
        assert ".f64" not in ptx, kernel.py_func.__name__ + ": float64 arithmetic in float32 code"
    for kernel, signature in ((pool_k.max_pool2d_forward, (A, A, I, numba.boolean) + (i64,) * 6 + (numba.float32,)),
                              (pool_k.max_pool2d_backward, (A, I, A) + (i64,) * 6)):
        ptx, _ = cuda.compile_ptx(kernel.py_func, signature, cc=(8, 0))
        assert ".f64" not in ptx, kernel.py_func.__name__ + ": float64 arithmetic in float32 code"
    print("ptx ok")
""")


@pytest.mark.skipif(gpu_present(), reason="on a GPU numba.cuda is usable")
def test_without_simulator_or_gpu_one_clear_error_and_ptx_compiles():
    env = {key: value for key, value in os.environ.items() if key != "NUMBA_ENABLE_CUDASIM"}
    result = subprocess.run([sys.executable, "-c", _NO_SIMULATOR_SCRIPT], env=env, capture_output=True, text=True,
                            timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "clear error" in result.stdout
    assert "ptx ok" in result.stdout or "no NVVM" in result.stdout
