"""The kernels of the Adam/AdamW update ("numpy", "numba", "auto"): each against the others,
a plain-Python loop over the textbook formula and torch.optim; in-place updates of the
very same arrays, non-contiguous parameters and gradients, and the error for an unknown
kernel name.

The numba kernel runs the NumPy kernel's operations in the same order and dtype, so the
two are compared bit for bit (assert_array_equal), not to a tolerance.
"""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyseg import backend, nn, optim

from .kernel_backends import is_gpu_kernel

# The CPU kernels; the GPU ones ("cuda", "cupy") are tested in test_optim_cuda.py.
KERNELS = [name for name in sorted(optim.ADAM_KERNELS) if not is_gpu_kernel(name)]
CONFIGS = [("Adam", dict(lr=1e-2)), ("Adam", dict(lr=1e-2, weight_decay=0.1)),
           ("AdamW", dict(lr=1e-2)), ("AdamW", dict(lr=3e-2, weight_decay=0.2, betas=(0.8, 0.99), eps=1e-6))]
TOLERANCE = {np.float64: 1e-12, np.float32: 1e-5}


def run_adam(kernel, name, config, shapes, dtype, steps, seed=0):
    """Parameters, first moments and second moments after ``steps`` steps with ``kernel``."""
    rng = np.random.default_rng(seed)
    params = [nn.Parameter(rng.standard_normal(shape).astype(dtype)) for shape in shapes]
    optimizer = getattr(optim, name)(params, **config)
    with backend.use_kernel("adam", kernel):
        for _ in range(steps):
            for p in params:
                p.grad = rng.standard_normal(p.shape).astype(dtype)
            optimizer.step()
    states = [optimizer.state[id(p)] for p in params]
    return [p.data for p in params], [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states]


def textbook_adam(param, grads, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled=False):
    """Kingma & Ba's Adam element by element, in Python floats (double precision):
    m̂ = m / (1 − β1^t), v̂ = v / (1 − β2^t), p ← p − lr · m̂ / (√v̂ + eps)."""
    beta1, beta2 = betas
    p = [float(value) for value in param.ravel()]
    m, v = [0.0] * len(p), [0.0] * len(p)
    for t, grad in enumerate(grads, start=1):
        for k, g in enumerate(float(value) for value in grad.ravel()):
            if decoupled:
                p[k] *= 1 - lr * weight_decay
            else:
                g += weight_decay * p[k]
            m[k] = beta1 * m[k] + (1 - beta1) * g
            v[k] = beta2 * v[k] + (1 - beta2) * g * g
            m_hat, v_hat = m[k] / (1 - beta1 ** t), v[k] / (1 - beta2 ** t)
            p[k] -= lr * m_hat / (math.sqrt(v_hat) + eps)
    return np.array(p).reshape(param.shape)


@settings(max_examples=20, deadline=None)
@given(size=st.one_of(st.just(1), st.integers(1, 40000)), dtype=st.sampled_from([np.float32, np.float64]),
       config=st.sampled_from(CONFIGS), steps=st.integers(1, 4), seed=st.integers(0, 2 ** 16))
def test_numba_and_auto_match_numpy_bit_for_bit(size, dtype, config, steps, seed):
    name, hyperparameters = config
    shapes = [(size,), (3, 5)]
    expected = run_adam("numpy", name, hyperparameters, shapes, dtype, steps, seed)
    for kernel in ("numba", "auto"):
        got = run_adam(kernel, name, hyperparameters, shapes, dtype, steps, seed)
        for expected_arrays, got_arrays in zip(expected, got):
            for e, g in zip(expected_arrays, got_arrays):
                assert g.dtype == dtype
                np.testing.assert_array_equal(g, e)


@settings(max_examples=20, deadline=None)
@given(size=st.one_of(st.just(1), st.integers(1, 3 * 16384 + 5)), dtype=st.sampled_from([np.float32, np.float64]),
       decay=st.sampled_from(["none", "l2", "decoupled"]), seed=st.integers(0, 2 ** 16))
def test_serial_and_parallel_loops_match_numpy(size, dtype, decay, seed):
    # The two compiled loops called directly, on sizes around the chunk boundaries
    # (the "numba" kernel runs the parallel one only on parameters of millions of elements).
    from tinyseg import optim_kernels_numba as compiled
    rng = np.random.default_rng(seed)
    param, grad = rng.standard_normal((2, size)).astype(dtype)
    m, v = rng.standard_normal(size).astype(dtype), rng.uniform(0, 2, size).astype(dtype)
    hyper = optim.AdamHyperparameters(lr=0.01, beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=0.0 if decay == "none"
                                      else 0.1, decoupled_weight_decay=decay == "decoupled", step=3)
    expected = [param.copy(), m.copy(), v.copy()]
    optim.NumpyAdamKernel.update(expected[0], grad, expected[1], expected[2], lambda: np.empty_like(param), hyper, np)
    scalar = np.dtype(dtype).type
    for loop in (compiled.adam_update, compiled.adam_update_serial):
        got = [param.copy(), m.copy(), v.copy()]
        loop(got[0], grad, got[1], got[2], decay == "l2", scalar(0.1), decay == "decoupled", scalar(1 - 0.01 * 0.1),
             scalar(0.9), scalar(1 - 0.99), scalar(0.99), scalar(math.sqrt(1 - 0.99 ** 3)), scalar(1e-8),
             scalar(0.01 / (1 - 0.9 ** 3)))
        for e, g in zip(expected, got):
            np.testing.assert_array_equal(g, e)


def test_parallel_size_goes_through_the_parallel_loop_and_matches_numpy():
    size = optim.NUMBA_ADAM_PARALLEL_MIN_ELEMENTS + 7
    expected = run_adam("numpy", "AdamW", dict(lr=1e-2, weight_decay=0.1), [(size,)], np.float32, steps=2)
    got = run_adam("numba", "AdamW", dict(lr=1e-2, weight_decay=0.1), [(size,)], np.float32, steps=2)
    for e, g in zip(expected, got):
        np.testing.assert_array_equal(g[0], e[0])


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name,config", CONFIGS, ids=str)
def test_matches_the_textbook_loop(kernel, dtype, name, config):
    rng = np.random.default_rng(1)
    start = rng.standard_normal((4, 5)).astype(dtype)
    grads = [rng.standard_normal((4, 5)).astype(dtype) for _ in range(4)]
    p = nn.Parameter(start.copy())
    optimizer = getattr(optim, name)([p], **config)
    with backend.use_kernel("adam", kernel):
        for g in grads:
            p.grad = g
            optimizer.step()
    decay = optimizer.param_groups[0]["weight_decay"]
    expected = textbook_adam(start, grads, config["lr"], config.get("betas", (0.9, 0.999)), config.get("eps", 1e-8),
                             decay, decoupled=name == "AdamW")
    np.testing.assert_allclose(p.data, expected, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype])


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name,config", CONFIGS, ids=str)
def test_matches_torch(kernel, dtype, name, config):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    shapes = [(16, 3, 3, 3), (16,), (1,)]
    ours = [nn.Parameter(rng.standard_normal(shape).astype(dtype)) for shape in shapes]
    theirs = [torch.tensor(p.data.copy(), requires_grad=True) for p in ours]
    opt_ours, opt_theirs = getattr(optim, name)(ours, **config), getattr(torch.optim, name)(theirs, **config)
    with backend.use_kernel("adam", kernel):
        for _ in range(5):
            for p, q in zip(ours, theirs):
                g = rng.standard_normal(p.shape).astype(dtype)
                p.grad, q.grad = g, torch.from_numpy(g.copy())
            opt_ours.step()
            opt_theirs.step()
    for p, q in zip(ours, theirs):
        np.testing.assert_allclose(p.data, q.detach().numpy(), rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype])


@pytest.mark.parametrize("kernel", KERNELS)
def test_updates_the_same_arrays_in_place(kernel):
    rng = np.random.default_rng(3)
    p = nn.Parameter(rng.standard_normal((8, 3, 3, 3)).astype(np.float32))
    data = p.data
    optimizer = optim.Adam([p], lr=0.1)
    with backend.use_kernel("adam", kernel):
        p.grad = grad = rng.standard_normal(p.shape).astype(np.float32)
        grad_before = grad.copy()
        optimizer.step()
        state = optimizer.state[id(p)]
        m, v = state["exp_avg"], state["exp_avg_sq"]
        before = [a.copy() for a in (data, m, v)]
        optimizer.step()
    assert p.data is data and state["exp_avg"] is m and state["exp_avg_sq"] is v
    for a, b in zip((data, m, v), before):
        assert not np.array_equal(a, b)                # each one was written
    np.testing.assert_array_equal(grad, grad_before)   # the gradient only read


@pytest.mark.parametrize("kernel", KERNELS)
def test_non_contiguous_parameters_and_gradients(kernel):
    start_base = np.random.default_rng(4).standard_normal((6, 10)).astype(np.float32)
    expected = {}
    for run in ("numpy", kernel):
        base = start_base.copy()
        strided = nn.Parameter(base[:, ::2])            # a view: the update must land in base
        transposed = nn.Parameter(base.T.copy().T)      # F-contiguous, so are its m and v
        contiguous = nn.Parameter(np.ones((5, 6), np.float32))
        assert not strided.data.flags.c_contiguous and not transposed.data.flags.c_contiguous
        optimizer = optim.AdamW([strided, transposed, contiguous], lr=0.05)
        grads = np.random.default_rng(5).standard_normal((3, 6, 10)).astype(np.float32)
        with backend.use_kernel("adam", run):
            for g in grads:
                strided.grad, transposed.grad = g[:, 1::2], g
                contiguous.grad = g[:, :5].T                 # a non-contiguous gradient
                optimizer.step()
        assert np.shares_memory(strided.data, base)
        expected[run] = (base.copy(), transposed.data.copy(), contiguous.data.copy())
    assert not np.array_equal(expected[kernel][0][:, ::2], start_base[:, ::2])
    np.testing.assert_array_equal(expected[kernel][0][:, 1::2], start_base[:, 1::2])   # untouched
    for e, g in zip(expected["numpy"], expected[kernel]):
        np.testing.assert_array_equal(g, e)


def test_unknown_kernel_is_a_clear_error():
    p = nn.Parameter(np.zeros(3, np.float32))
    p.grad = np.ones(3, np.float32)
    optimizer = optim.Adam([p])
    with backend.use_kernel("adam", "no-such-kernel"):
        with pytest.raises(ValueError, match="adam: unknown kernel 'no-such-kernel'; "
                                             "available kernels: 'auto', 'cuda', 'cupy', 'numba', 'numpy'"):
            optimizer.step()


def test_cupy_arrays_use_the_array_module_path():
    cp = pytest.importorskip("cupy")
    if not backend.gpu_available():
        pytest.skip("no CUDA device")
    expected = run_adam("numpy", "AdamW", dict(lr=1e-2, weight_decay=0.1), [(5, 7)], np.float32, steps=3)
    rng = np.random.default_rng(0)
    p = nn.Parameter(rng.standard_normal((5, 7)).astype(np.float32)).to("cuda")
    optimizer = optim.AdamW([p], lr=1e-2, weight_decay=0.1)
    with backend.use_kernel("adam", "numba"):
        for _ in range(3):
            p.grad = cp.asarray(rng.standard_normal(p.shape).astype(np.float32))
            optimizer.step()
    assert backend.is_cupy_array(p.data)
    # CuPy compiles its ufuncs with fused multiply-adds: equal to rounding, not bit for bit.
    np.testing.assert_allclose(cp.asnumpy(p.data), expected[0][0], rtol=1e-6, atol=1e-6)
