"""Elementwise ops, reductions and reshaping against PyTorch: forward and backward,
random upstream gradients, float32 and float64."""
import zlib

import numpy as np
import pytest

import tinyseg as ts
import tinyseg.functional as F

torch = pytest.importorskip("torch")

# (name, tinyseg function, torch function, input shapes, low, high)
OPS = [
    ("add", lambda a, b: a + b, lambda a, b: a + b, [(2, 3, 4), (3, 1)], -2, 2),
    ("sub", lambda a, b: a - b, lambda a, b: a - b, [(2, 1, 4), (3, 4)], -2, 2),
    ("mul", lambda a, b: a * b, lambda a, b: a * b, [(4,), (2, 3, 4)], -2, 2),
    ("div", lambda a, b: a / b, lambda a, b: a / b, [(2, 3), (3,)], 0.5, 2),
    ("neg", lambda a: -a, lambda a: -a, [(3, 4)], -2, 2),
    ("pow", lambda a: a ** 2.5, lambda a: a ** 2.5, [(3, 4)], 0.5, 2),
    ("exp", F.exp, torch.exp, [(3, 4)], -2, 2),
    ("log", F.log, torch.log, [(3, 4)], 0.5, 2),
    ("sqrt", F.sqrt, torch.sqrt, [(3, 4)], 0.5, 2),
    ("abs", F.abs, torch.abs, [(3, 4)], -2, 2),
    ("maximum", F.maximum, torch.maximum, [(3, 4), (4,)], -2, 2),
    ("clip", lambda a: F.clip(a, -0.5, 0.7), lambda a: torch.clamp(a, -0.5, 0.7), [(3, 4)], -2, 2),
    ("sum", lambda a: F.sum(a, axis=(0, 2)), lambda a: a.sum(dim=(0, 2)), [(2, 3, 4)], -2, 2),
    ("mean", lambda a: F.mean(a, axis=1, keepdims=True), lambda a: a.mean(dim=1, keepdim=True), [(2, 3, 4)], -2, 2),
    ("max", lambda a: F.max(a, axis=2), lambda a: torch.amax(a, dim=2), [(2, 3, 5)], -2, 2),
    ("reshape", lambda a: a.reshape(4, 6), lambda a: a.reshape(4, 6), [(2, 3, 4)], -2, 2),
    ("transpose", lambda a: a.transpose((2, 0, 1)), lambda a: a.permute(2, 0, 1), [(2, 3, 4)], -2, 2),
    ("slicing", lambda a: a[1:, ::2, -1], lambda a: a[1:, ::2, -1], [(3, 4, 5)], -2, 2),
    ("fancy index", lambda a: a[[0, 2, 0]], lambda a: a[[0, 2, 0]], [(3, 4)], -2, 2),
    ("matmul", lambda a, b: a @ b, lambda a, b: a @ b, [(2, 3, 4), (4, 5)], -2, 2),
]


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
@pytest.mark.parametrize("name, ours, theirs, shapes, low, high", OPS, ids=[op[0] for op in OPS])
def test_forward_and_backward_match_pytorch(name, ours, theirs, shapes, low, high, dtype, tol):
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    arrays = [rng.uniform(low, high, s).astype(dtype) for s in shapes]
    inputs = [ts.Tensor(a, requires_grad=True) for a in arrays]
    torch_inputs = [torch.tensor(a, requires_grad=True) for a in arrays]
    out, torch_out = ours(*inputs), theirs(*torch_inputs)
    upstream = rng.standard_normal(out.shape).astype(dtype)
    out.backward(upstream)
    torch_out.backward(torch.tensor(upstream))

    def close(a, b):
        scale = max(1.0, float(np.abs(b).max(initial=0)))
        np.testing.assert_allclose(a, b, rtol=0, atol=tol * scale)

    assert out.dtype == dtype
    close(out.data, torch_out.detach().numpy())
    for t, tt in zip(inputs, torch_inputs):
        assert t.grad.dtype == dtype
        close(t.grad, tt.grad.numpy())


def test_maximum_splits_ties_like_pytorch():
    a = ts.Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    b = ts.Tensor(np.array([1.0, 5.0, 0.0]), requires_grad=True)
    F.maximum(a, b).backward(np.ones(3))
    ta, tb = torch.tensor([1.0, 2.0, 3.0], requires_grad=True), torch.tensor([1.0, 5.0, 0.0], requires_grad=True)
    torch.maximum(ta, tb).backward(torch.ones(3))
    np.testing.assert_array_equal(a.grad, ta.grad.numpy())
    np.testing.assert_array_equal(b.grad, tb.grad.numpy())
