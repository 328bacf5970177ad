"""The GPU kernels of the Adam/AdamW update ("cuda": kernels/adam.cu; "cupy"), through ts.optim.

Without a GPU, "cuda" runs under the host emulation with guard bands (compiled by g++
without fused multiply-adds: the CPU kernels' results bit for bit), "cupy" is skipped.
Against the NumPy kernel, the textbook loop in double precision, in-place updates of the
very same arrays, sizes that are not multiples of the block, the fallback for
non-contiguous parameters, launch records.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyseg import backend, nn, optim

from .kernel_backends import gpu_present, kernel_names, on_kernel
from .test_optim_kernels import CONFIGS, TOLERANCE, textbook_adam

GPU = ("cuda", "cupy")
KERNELS = [p for p in kernel_names(optim.ADAM_KERNELS) if p.id in GPU]


def run_adam(kernel, name, config, shapes, dtype, steps, seed=0):
    """(params, first moments, second moments, kernels launched) after ``steps`` steps, as NumPy arrays."""
    rng = np.random.default_rng(seed)
    with on_kernel("adam", kernel) as k:
        params = [nn.Parameter(k.put(rng.standard_normal(shape).astype(dtype))) for shape in shapes]
        optimizer = getattr(optim, name)(params, **config)
        for _ in range(steps):
            for p in params:
                p.grad = k.put(rng.standard_normal(p.shape).astype(dtype))
            optimizer.step()
        states = [optimizer.state[id(p)] for p in params]
        launched = k.emulation.kernels() if k.emulation is not None else []
        return ([k.get(p.data) for p in params], [k.get(s["exp_avg"]) for s in states],
                [k.get(s["exp_avg_sq"]) for s in states], launched)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name,config", CONFIGS, ids=str)
def test_matches_the_numpy_kernel(kernel, dtype, name, config):
    shapes = [(3, 5), (300,), ()]                 # not multiples of 256; a 0-d parameter
    *got, launched = run_adam(kernel, name, config, shapes, dtype, steps=3)
    *expected, _ = run_adam("numpy", name, config, shapes, dtype, steps=3)
    for got_arrays, expected_arrays in zip(got, expected):
        for g, e in zip(got_arrays, expected_arrays):
            assert g.dtype == dtype
            if kernel == "cuda" and not gpu_present():
                np.testing.assert_array_equal(g, e)          # g++, no FMA contraction: the same bits
            else:
                np.testing.assert_allclose(g, e, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype])
    if kernel == "cuda":
        ctype = "double" if dtype == np.float64 else "float"
        assert launched == [f"adam_update<{ctype}>"] * (3 * len(shapes))


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("name,config", CONFIGS, ids=str)
def test_matches_the_textbook_loop(kernel, name, config):
    rng = np.random.default_rng(1)
    start = rng.standard_normal((4, 5))
    grads = [rng.standard_normal((4, 5)) for _ in range(4)]
    with on_kernel("adam", kernel) as k:
        p = nn.Parameter(k.put(start.copy()))
        optimizer = getattr(optim, name)([p], **config)
        for g in grads:
            p.grad = k.put(g)
            optimizer.step()
        got = k.get(p.data)
    decay = optimizer.param_groups[0]["weight_decay"]
    expected = textbook_adam(start, grads, config["lr"], config.get("betas", (0.9, 0.999)), config.get("eps", 1e-8),
                             decay, decoupled=name == "AdamW")
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kernel", KERNELS)
def test_updates_the_very_same_arrays_in_place(kernel):
    with on_kernel("adam", kernel) as k:
        p = nn.Parameter(k.put(np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)))
        data = p.data
        p.grad = k.put(np.ones((3, 4), np.float32))
        optimizer = optim.AdamW([p], lr=0.1)
        optimizer.step()
        m, v = optimizer.state[id(p)]["exp_avg"], optimizer.state[id(p)]["exp_avg_sq"]
        optimizer.step()
        assert p.data is data and optimizer.state[id(p)]["exp_avg"] is m and optimizer.state[id(p)]["exp_avg_sq"] is v
        np.testing.assert_allclose(k.get(m), 0.19, rtol=1e-6)          # 0.9·0.1 + 0.1 after two steps of g = 1


@pytest.mark.parametrize("kernel", KERNELS)
@settings(max_examples=6, deadline=None)
@given(size=st.integers(1, 700), dtype=st.sampled_from([np.float32, np.float64]), config=st.sampled_from(CONFIGS),
       steps=st.integers(1, 3), seed=st.integers(0, 2 ** 16))
def test_hypothesis(kernel, size, dtype, config, steps, seed):
    name, hyperparameters = config
    *got, _ = run_adam(kernel, name, hyperparameters, [(size,)], dtype, steps, seed)
    *expected, _ = run_adam("numpy", name, hyperparameters, [(size,)], dtype, steps, seed)
    for got_arrays, expected_arrays in zip(got, expected):
        np.testing.assert_allclose(got_arrays[0], expected_arrays[0], rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype])


def test_non_contiguous_parameter_falls_back_to_the_array_expressions():
    rng = np.random.default_rng(2)
    base = rng.standard_normal((6, 4))
    grad = rng.standard_normal((4, 6))
    expected = base.T.copy()
    optim.NumpyAdamKernel.update(expected, grad, np.zeros((4, 6)), np.zeros((4, 6)), lambda: np.empty((4, 6)),
                                 optim.AdamHyperparameters(1e-2, 0.9, 0.999, 1e-8, 0.0, False, 1), np)
    param = base.copy().T                              # a transposed view: not C-contiguous
    with backend.cuda_emulation() as emulation:
        optim.CudaAdamKernel.update(param, grad, np.zeros((4, 6)), np.zeros((4, 6)), lambda: np.empty((4, 6)),
                                    optim.AdamHyperparameters(1e-2, 0.9, 0.999, 1e-8, 0.0, False, 1), np)
    assert emulation.launches == []
    np.testing.assert_array_equal(param, expected)


class _NotNumpy:
    """An array module that is not NumPy but computes with it: how "auto" sees CuPy, on a CPU."""

    def __getattr__(self, name):
        return getattr(np, name)


def test_auto_runs_the_cuda_kernel_on_gpu_arrays():
    param, m, v = np.ones(5), np.zeros(5), np.zeros(5)
    with backend.cuda_emulation() as emulation:
        optim.AutoAdamKernel.update(param, np.ones(5), m, v, lambda: np.empty(5),
                                    optim.AdamHyperparameters(1e-2, 0.9, 0.999, 1e-8, 0.0, False, 1), _NotNumpy())
    assert emulation.kernels() == ["adam_update<double>"]
    np.testing.assert_allclose(param, 1 - 1e-2, rtol=1e-6)
