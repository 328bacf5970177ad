"""The GPU kernels of binary_cross_entropy_with_logits and dice_loss ("cuda": kernels/loss.cu; "cupy").

Without a GPU, "cuda" runs under the host emulation with guard bands, "cupy" is skipped.
Values against tinyseg.reference, gradients against the closed forms / the NumPy kernel
and ts.gradcheck (float64); weight and pos_weight; extreme logits; sizes that are not
multiples of the block (256) and span several blocks of partial sums; determinism;
launch records.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinyseg as ts
import tinyseg.functional as F
from tinyseg import backend
from tinyseg import reference as ref
from tinyseg.functional import loss

from ..kernel_backends import kernel_names, on_kernel
from .test_loss_kernels import RTOL, case, logits_gradient_reference

GPU = ("cuda", "cupy")
BCE = [p for p in kernel_names(loss.BCE_WITH_LOGITS_KERNELS) if p.id in GPU]
DICE = [p for p in kernel_names(loss.DICE_LOSS_KERNELS) if p.id in GPU]


def run_bce(kernel, logits, target, weight=None, pos_weight=None, upstream=1.7, target_grad=False):
    """(loss, dL/dz, dL/dt or None, kernels launched) as NumPy values."""
    with on_kernel("bce_with_logits", kernel) as k:
        z = ts.Tensor(k.put(logits), requires_grad=True)
        t = ts.Tensor(k.put(target), requires_grad=True) if target_grad else k.put(target)
        value = F.binary_cross_entropy_with_logits(z, t, k.put(weight), k.put(pos_weight))
        value.backward(k.put(np.asarray(upstream, dtype=value.dtype)))
        launched = k.emulation.kernels() if k.emulation is not None else []
        return k.get(value.data), k.get(z.grad), (k.get(t.grad) if target_grad else None), launched


# ----- BCE with logits

@pytest.mark.parametrize("kernel", BCE)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(1,), (7,), (2, 1, 5, 6), (3, 700)])
def test_bce_matches_the_reference(kernel, dtype, shape):
    logits, target = case(shape, dtype, seed=0)
    value, dz, _, launched = run_bce(kernel, logits, target)
    assert value.dtype == dtype and dz.dtype == dtype and dz.shape == shape
    np.testing.assert_allclose(float(value), ref.binary_cross_entropy_with_logits(logits, target), rtol=RTOL[dtype])
    expected = logits_gradient_reference(logits, target, 1.7)
    np.testing.assert_allclose(dz, expected, rtol=RTOL[dtype], atol=RTOL[dtype] * np.abs(expected).max())
    if kernel == "cuda":
        ctype = "double" if dtype == np.float64 else "float"
        assert launched == [f"bce_with_logits_partial_sums<{ctype}>", f"sum_rows<{ctype}>",
                            f"bce_with_logits_backward<{ctype}>"]


@pytest.mark.parametrize("kernel", BCE)
def test_bce_gradcheck_logits_and_target(kernel):
    logits, target = case((2, 1, 3, 4), np.float64, seed=1)
    with on_kernel("bce_with_logits", kernel) as k:
        z, t = ts.Tensor(k.put(logits), requires_grad=True), ts.Tensor(k.put(target), requires_grad=True)
        assert ts.gradcheck(F.binary_cross_entropy_with_logits, [z, t])


@pytest.mark.parametrize("kernel", BCE)
def test_bce_weight_and_pos_weight(kernel):
    # Handled by the kernel itself (a broadcast pos_weight expanded first): the NumPy kernel's results.
    logits, target = case((2, 3, 4, 5), np.float64, seed=2)
    rng = np.random.default_rng(3)
    weight, pos_weight = rng.random((2, 3, 4, 5)), rng.random((3, 1, 1)) + 0.5
    *got, _ = run_bce(kernel, logits, target, weight, pos_weight, target_grad=True)
    *expected, _ = run_bce("numpy", logits, target, weight, pos_weight, target_grad=True)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(float(got[0]), ref.binary_cross_entropy_with_logits(logits, target, weight, pos_weight),
                               rtol=1e-12)
    with on_kernel("bce_with_logits", kernel) as k:
        z = ts.Tensor(k.put(logits[:1, :1]), requires_grad=True)
        t = ts.Tensor(k.put(target[:1, :1]), requires_grad=True)
        w, pw = k.put(weight[:1, :1]), k.put(pos_weight[:1])
        assert ts.gradcheck(lambda x, y: F.binary_cross_entropy_with_logits(x, y, w, pw), [z, t])


@pytest.mark.parametrize("kernel", BCE)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_bce_extreme_logits_stay_finite_and_exact(kernel, dtype):
    logits = np.array([100.0, -100.0, 1e4, -1e4, 1e4, -1e4, 1e4, -1e4, 0.0], dtype=dtype)
    target = np.array([0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.3, 0.3, 0.5], dtype=dtype)
    value, dz, dt, _ = run_bce(kernel, logits, target, target_grad=True)
    assert np.isfinite(value) and np.all(np.isfinite(dz)) and np.all(np.isfinite(dt))
    np.testing.assert_allclose(float(value), ref.binary_cross_entropy_with_logits(logits, target), rtol=RTOL[dtype])
    expected = logits_gradient_reference(logits, target, 1.7)
    np.testing.assert_allclose(dz, expected, rtol=RTOL[dtype], atol=RTOL[dtype] * np.abs(expected).max())
    assert dz[4] == 0 and dz[5] == 0


@pytest.mark.parametrize("kernel", BCE)
@settings(max_examples=6, deadline=None)
@given(shape=st.lists(st.integers(1, 9), min_size=1, max_size=4), scale=st.floats(0.1, 50.0),
       dtype=st.sampled_from([np.float32, np.float64]), hard=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_bce_hypothesis(kernel, shape, scale, dtype, hard, seed):
    logits, target = case(tuple(shape), dtype, seed, scale, hard)
    value, dz, _, _ = run_bce(kernel, logits, target)
    np.testing.assert_allclose(float(value), ref.binary_cross_entropy_with_logits(logits, target), rtol=RTOL[dtype])
    expected = logits_gradient_reference(logits, target, 1.7)
    np.testing.assert_allclose(dz, expected, rtol=RTOL[dtype], atol=RTOL[dtype] * np.abs(expected).max())


def test_bce_partial_sums_are_deterministic_over_several_blocks():
    # 3 blocks of partial sums (not a multiple of 256): the same bits on every run.
    logits, target = case((700,), np.float32, seed=7)
    first, *_ = run_bce("cuda", logits, target)
    again, *_ = run_bce("cuda", logits, target)
    assert first.tobytes() == again.tobytes()
    np.testing.assert_allclose(float(first), ref.binary_cross_entropy_with_logits(logits, target), rtol=1e-5)


# ----- Dice

def dice_case(classes, shape=(2, 3, 4), seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    logits = (rng.standard_normal((shape[0], classes) + shape[1:]) * 2).astype(dtype)
    if classes == 1:
        return logits, (rng.random(shape) > 0.5).astype(np.int64)
    return logits, rng.integers(0, classes, shape)


def run_dice(kernel, logits, target, smooth=1.0):
    with on_kernel("dice_loss", kernel) as k:
        z = ts.Tensor(k.put(logits), requires_grad=True)
        value = F.dice_loss(z, k.put(target), smooth)
        value.backward(k.put(np.asarray(1.7, dtype=value.dtype)))
        launched = k.emulation.kernels() if k.emulation is not None else []
        return k.get(value.data), k.get(z.grad), launched


@pytest.mark.parametrize("kernel", DICE)
@pytest.mark.parametrize("classes", [1, 3])
@pytest.mark.parametrize("smooth", [1.0, 0.0])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_dice_matches_the_reference_and_the_numpy_gradient(kernel, classes, smooth, dtype):
    logits, target = dice_case(classes, shape=(2, 5, 7), dtype=dtype)
    value, dz, launched = run_dice(kernel, logits, target, smooth)
    value_numpy, dz_numpy, _ = run_dice("numpy", logits, target, smooth)
    assert value.dtype == dtype and dz.dtype == dtype
    tolerance = 1e-12 if dtype == np.float64 else 2e-6
    np.testing.assert_allclose(float(value), ref.dice_loss(logits, target, smooth), rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(dz, dz_numpy, rtol=tolerance * 10, atol=tolerance * np.abs(dz_numpy).max())
    if kernel == "cuda":
        ctype = "double" if dtype == np.float64 else "float"
        assert launched == [f"dice_probabilities<{ctype}>", f"dice_partial_sums<{ctype}>", f"sum_rows<{ctype}>",
                            f"dice_backward<{ctype}>"]


@pytest.mark.parametrize("kernel", DICE)
@pytest.mark.parametrize("classes", [1, 3])
def test_dice_gradcheck(kernel, classes):
    logits, target = dice_case(classes, shape=(2, 1, 3), seed=1)     # few elements: each is 2 emulated forwards
    with on_kernel("dice_loss", kernel) as k:
        z, t = ts.Tensor(k.put(logits), requires_grad=True), k.put(target)
        assert ts.gradcheck(lambda x: F.dice_loss(x, t), [z])
        assert ts.gradcheck(lambda x: F.dice_loss(x, t, smooth=0.5), [z])


@pytest.mark.parametrize("kernel", DICE)
def test_dice_one_channel_target_with_the_channel_axis_and_float_mask(kernel):
    logits, target = dice_case(1, shape=(2, 4, 5), seed=2)
    value, dz, _ = run_dice(kernel, logits, target[:, None].astype(np.float32))
    np.testing.assert_allclose(float(value), ref.dice_loss(logits, target), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kernel", DICE)
@settings(max_examples=6, deadline=None)
@given(classes=st.integers(1, 4), n=st.integers(1, 2), spatial=st.lists(st.integers(1, 23), min_size=1, max_size=2),
       smooth=st.sampled_from([0.0, 1.0]), seed=st.integers(0, 2 ** 16))
def test_dice_hypothesis(kernel, classes, n, spatial, smooth, seed):
    logits, target = dice_case(classes, shape=(n,) + tuple(spatial), seed=seed)
    value, dz, _ = run_dice(kernel, logits, target, smooth)
    expected = ref.dice_loss(logits, target, smooth)
    if not np.isfinite(expected):                # smooth 0 and an empty class: 0/0, as the CPU
        return
    np.testing.assert_allclose(float(value), expected, rtol=1e-12, atol=1e-12)
    _, dz_numpy, _ = run_dice("numpy", logits, target, smooth)
    np.testing.assert_allclose(dz, dz_numpy, rtol=1e-10, atol=1e-14)


def test_dice_unknown_kernel_is_a_clear_error():
    with backend.use_kernel("dice_loss", "no-such-kernel"):
        with pytest.raises(ValueError, match="dice_loss: unknown kernel 'no-such-kernel'; "
                                             "available kernels: 'auto', 'cuda', 'cupy', 'numpy'"):
            F.dice_loss(ts.Tensor(np.zeros((1, 1, 2, 2))), np.zeros((1, 2, 2)))


class _NotNumpy:
    """An array module that is not NumPy but computes with it: how "auto" sees CuPy, on a CPU."""

    def __getattr__(self, name):
        return getattr(np, name)


def test_auto_runs_the_cuda_kernels_on_gpu_arrays():
    logits, target = case((3, 5), np.float64, seed=9)
    z, labels = dice_case(2, seed=10)
    with backend.cuda_emulation() as emulation:
        loss.AutoBCEWithLogitsKernel.forward(logits, target, None, None, _NotNumpy())
        loss.AutoBCEWithLogitsKernel.backward(np.asarray(1.0), logits, target, None, None, True, False, _NotNumpy())
        _, state = loss.AutoDiceKernel.forward(z, labels, 1.0, _NotNumpy())
        loss.AutoDiceKernel.backward(np.asarray(1.0), state, _NotNumpy())
    assert [name.split("<")[0] for name in emulation.kernels()] == [
        "bce_with_logits_partial_sums", "sum_rows", "bce_with_logits_backward",
        "dice_probabilities", "dice_partial_sums", "sum_rows", "dice_backward"]
