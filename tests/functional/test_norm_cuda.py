"""The compiled kernels of batch_norm (GPU: "cuda", kernels/batchnorm.cu, and "cupy"; CPU: "numba") and the op's kernel registry.

Without a GPU, "cuda" runs under the host emulation with guard bands, "cupy" is skipped.
y and the running statistics against tinyseg.reference, gradients against the NumPy
kernel and ts.gradcheck (float64, random upstream gradients through a weighted sum),
training and evaluation, with and without γ/β, (N, C) and (N, C, H, W) inputs, sizes
spanning several partial-sum blocks, determinism, launch records.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinyseg as ts
import tinyseg.functional as F
from tinyseg import backend
from tinyseg import reference as ref
from tinyseg.functional import norm

from ..kernel_backends import kernel_names, on_kernel

GPU = ("cuda", "cupy")
KERNELS = [p for p in kernel_names(norm.BATCH_NORM_KERNELS) if p.id in GPU]


def channel_params(channels, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(channels).astype(dtype), (rng.random(channels) + 0.5).astype(dtype),
            rng.standard_normal(channels).astype(dtype), rng.standard_normal(channels).astype(dtype))


def run(kernel, x, training, affine=True, upstream=None, seed=0):
    """(y, dx, dγ, dβ, running mean, running var, kernels launched), as NumPy arrays."""
    C = x.shape[1]
    running_mean, running_var, gamma, beta = channel_params(C, seed, x.dtype)
    with on_kernel("batch_norm", kernel) as k:
        rm, rv = k.put(running_mean.copy()), k.put(running_var.copy())
        leaves = [ts.Tensor(k.put(a), requires_grad=True) for a in ([x, gamma, beta] if affine else [x])]
        y = F.batch_norm(leaves[0], rm, rv, *(leaves[1:] if affine else (None, None)), training=training)
        if upstream is None:
            upstream = np.random.default_rng(seed + 1).standard_normal(x.shape).astype(x.dtype)
        y.backward(k.put(upstream))
        launched = k.emulation.kernels() if k.emulation is not None else []
        grads = [k.get(t.grad) for t in leaves] + [None] * (3 - len(leaves))
        return (k.get(y.data), *grads, k.get(rm), k.get(rv), launched)


@pytest.mark.parametrize("kernel", KERNELS + ["numpy", "numba", "auto"])
@pytest.mark.parametrize("shape", [(3, 4, 5, 6), (7, 3), (2, 1, 17, 19), (2, 3, 130, 131)])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_batch_norm_matches_the_reference(kernel, shape, training, affine, dtype):
    x = (np.random.default_rng(2).standard_normal(shape) * 3 + 1).astype(dtype)
    y, dx, dgamma, dbeta, rm, rv, launched = run(kernel, x, training, affine)
    running_mean, running_var, gamma, beta = channel_params(shape[1], 0, dtype)
    y_ref, rm_ref, rv_ref = ref.batch_norm(x, running_mean, running_var, gamma if affine else None,
                                           beta if affine else None, training)
    tolerance = 1e-12 if dtype == np.float64 else 2e-5
    assert y.dtype == dtype and dx.dtype == dtype
    np.testing.assert_allclose(y, y_ref, rtol=tolerance, atol=tolerance * 10)
    np.testing.assert_allclose(rm, rm_ref, rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(rv, rv_ref, rtol=tolerance, atol=tolerance)
    expected = run("numpy", x, training, affine)
    for got, want in zip((dx, dgamma, dbeta), expected[1:4]):
        if want is not None:
            np.testing.assert_allclose(got, want, rtol=tolerance * 10, atol=tolerance * 10 * np.abs(want).max())
    if kernel == "cuda":
        names = [name.split("<")[0] for name in launched]
        statistics = ["channel_sum_partials", "channel_sums_finish", "channel_centred_square_partials",
                      "channel_sums_finish"] if training else []
        sums = ["batch_norm_backward_partials", "channel_sums_finish"] if (training or affine) else []
        assert names == statistics + ["batch_norm_forward_apply"] + sums + ["batch_norm_backward_dx"]


@pytest.mark.parametrize("kernel", KERNELS + ["numba"])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_gradcheck(kernel, training):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 2, 2, 3))
    weights = rng.standard_normal(x.shape)        # a random upstream gradient, not sum(y)
    _, running_var, gamma, beta = channel_params(2)
    with on_kernel("batch_norm", kernel) as k:
        w = k.put(weights)
        rm, rv = k.put(np.zeros(2)), k.put(running_var)
        leaves = [ts.Tensor(k.put(a), requires_grad=True) for a in (x, gamma, beta)]
        assert ts.gradcheck(lambda t, g, b: (F.batch_norm(t, rm, rv, g, b, training=training) * w).sum(), leaves)


@pytest.mark.parametrize("kernel", KERNELS + ["numba"])
@settings(max_examples=6, deadline=None)
@given(n=st.integers(1, 3), c=st.integers(1, 3), h=st.integers(1, 9), w=st.integers(1, 9),
       training=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_batch_norm_hypothesis(kernel, n, c, h, w, training, seed):
    if training and n * h * w < 2:
        return
    x = np.random.default_rng(seed).standard_normal((n, c, h, w)) * 2
    y, dx, dgamma, dbeta, rm, rv, _ = run(kernel, x, training, seed=seed)
    running_mean, running_var, gamma, beta = channel_params(c, seed)
    y_ref, rm_ref, rv_ref = ref.batch_norm(x, running_mean, running_var, gamma, beta, training)
    np.testing.assert_allclose(y, y_ref, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(rv, rv_ref, rtol=1e-12, atol=1e-12)
    expected = run("numpy", x, training, seed=seed)
    for got, want in zip((dx, dgamma, dbeta), expected[1:4]):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


def test_batch_norm_reductions_span_several_blocks_and_are_deterministic():
    # 2·3·300 = 1800 values per channel: 8 partial sums per channel, the last block partial.
    x = (np.random.default_rng(4).standard_normal((2, 2, 3, 300)) + 5).astype(np.float32)
    first = run("cuda", x, True)
    again = run("cuda", x, True)
    for a, b in zip(first[:6], again[:6]):
        assert a.tobytes() == b.tobytes()
    y_ref, _, _ = ref.batch_norm(x, *channel_params(2, 0, np.float32), training=True)
    np.testing.assert_allclose(first[0], y_ref, rtol=1e-5, atol=1e-5)


def test_batch_norm_unknown_kernel_is_a_clear_error():
    with backend.use_kernel("batch_norm", "no-such-kernel"):
        with pytest.raises(ValueError, match="batch_norm: unknown kernel 'no-such-kernel'; "
                                             "available kernels: 'auto', 'cuda', 'cupy', 'numba', 'numpy'"):
            F.batch_norm(ts.Tensor(np.zeros((2, 1))), None, None, None, None, training=True)


class _NotNumpy:
    """An array module that is not NumPy but computes with it: how "auto" sees CuPy, on a CPU."""

    def __getattr__(self, name):
        return getattr(np, name)


def test_auto_runs_the_cuda_kernels_on_gpu_arrays():
    x = np.random.default_rng(5).standard_normal((2, 3, 2, 2))
    with backend.cuda_emulation() as emulation:
        y, mean, var, inv_std = norm.AutoBatchNormKernel.forward(x, None, None, None, None, 1e-5, (0, 2, 3),
                                                                 _NotNumpy())
        norm.AutoBatchNormKernel.backward(np.ones_like(x), x, mean, inv_std, None, True, 8, (0, 2, 3), True,
                                          False, False, _NotNumpy())
    assert "batch_norm_forward_apply<double>" in emulation.kernels()
    assert "batch_norm_backward_dx<double>" in emulation.kernels()
    np.testing.assert_allclose(y, ref.batch_norm(x, None, None, None, None, True)[0], rtol=1e-12, atol=1e-12)


def test_numba_batch_norm_gives_the_same_bits_for_any_thread_count():
    """One channel per parallel iteration, summed in an order fixed by the code."""
    numba = pytest.importorskip("numba")
    x = (np.random.default_rng(6).standard_normal((3, 5, 21, 23)) + 4).astype(np.float32)
    threads = numba.get_num_threads()
    results = []
    try:
        for count in sorted({1, threads}):
            numba.set_num_threads(count)
            results.append(run("numba", x, training=True))
    finally:
        numba.set_num_threads(threads)
    for result in results[1:]:
        for got, want in zip(result[:6], results[0][:6]):
            np.testing.assert_array_equal(got, want)
