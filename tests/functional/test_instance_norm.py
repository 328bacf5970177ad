"""instance_norm (nnU-Net's normalisation): F.instance_norm against tinyseg.reference,
float64 gradcheck (one-hot and random upstream gradients), hypothesis shapes, PyTorch
(F.instance_norm, nn.InstanceNorm2d), bad input; the layer, UNet(norm="instance"), the
CLI's --norm instance and the checkpoint round trip."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinyseg as ts
import tinyseg.functional as F
from tinyseg import reference as ref
from tinyseg.cli import main


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def leaf(array):
    return ts.Tensor(np.array(array), requires_grad=True)


def affine_params(channels, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return rng.uniform(0.5, 1.5, channels).astype(dtype), rng.standard_normal(channels).astype(dtype)


# ----------------------------------------------------------------------------- forward

@pytest.mark.parametrize("affine", [True, False])
def test_instance_norm_matches_reference(affine):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 4, 5, 6)) * 3 + rng.standard_normal((3, 4, 1, 1)) * 5
    weight, bias = affine_params(4) if affine else (None, None)
    y = F.instance_norm(x, weight, bias, eps=1e-3)
    assert y.dtype == np.float64 and y.shape == x.shape
    np.testing.assert_allclose(y.data, ref.instance_norm(x, weight, bias, eps=1e-3), rtol=0, atol=1e-12)


def test_each_image_is_normalised_on_its_own():
    """Unlike batch norm, an image's output does not depend on the rest of the batch."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 3, 6, 6)) * np.array([1, 10, 100, 1000]).reshape(4, 1, 1, 1)
    weight, bias = affine_params(3)
    whole = F.instance_norm(x, weight, bias).data
    for n in range(4):
        np.testing.assert_allclose(whole[n:n + 1], F.instance_norm(x[n:n + 1], weight, bias).data, atol=1e-13)
    plain = F.instance_norm(x).data
    np.testing.assert_allclose(plain.mean(axis=(2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose(plain.var(axis=(2, 3)), 1, atol=1e-3)     # var / (var + eps)


def test_float32_stays_float32():
    x = np.random.default_rng(3).standard_normal((2, 2, 4, 4)).astype(np.float32)
    w, b = affine_params(2, dtype=np.float32)
    y = F.instance_norm(x, w, b)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y.data, ref.instance_norm(x, w, b), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- gradients (float64)

def test_gradcheck_full_jacobian_with_weight_and_bias():
    rng = np.random.default_rng(4)
    weight, bias = affine_params(3, seed=4)
    x = rng.standard_normal((2, 3, 3, 2))
    assert ts.gradcheck(lambda a, w, b: F.instance_norm(a, w, b), [leaf(x), leaf(weight), leaf(bias)])


@pytest.mark.parametrize("which", ["none", "weight", "bias"])
def test_gradcheck_without_full_affine(which):
    rng = np.random.default_rng(5)
    x, v = rng.standard_normal((2, 2, 2, 3)), rng.uniform(0.5, 1.5, 2)
    if which == "none":
        assert ts.gradcheck(lambda a: F.instance_norm(a), [leaf(x)])
    elif which == "weight":
        assert ts.gradcheck(lambda a, g: F.instance_norm(a, g, None), [leaf(x), leaf(v)])
    else:
        assert ts.gradcheck(lambda a, b: F.instance_norm(a, None, b), [leaf(x), leaf(v)])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gradcheck_with_random_upstream_gradients(seed):
    """L = Σ R ⊙ instance_norm(x): the backward sees a random upstream gradient R, whose
    per-(n, c) mean and correlation with x̂ are not zero, so every term of dx counts."""
    rng = np.random.default_rng(10 + seed)
    x = rng.standard_normal((2, 3, 4, 3)) * 2 + 1
    upstream = rng.standard_normal(x.shape)
    weight, bias = affine_params(3, seed=seed)
    fn = lambda a, w, b: (F.instance_norm(a, w, b, eps=1e-4) * upstream).sum()  # noqa: E731
    assert ts.gradcheck(fn, [leaf(x), leaf(weight), leaf(bias)])
    # and the backward of the op itself given R directly gives the same gradients
    xs, ws, bs = leaf(x), leaf(weight), leaf(bias)
    F.instance_norm(xs, ws, bs, eps=1e-4).backward(upstream)
    xs2, ws2, bs2 = leaf(x), leaf(weight), leaf(bias)
    fn(xs2, ws2, bs2).backward()
    for a, b in ((xs.grad, xs2.grad), (ws.grad, ws2.grad), (bs.grad, bs2.grad)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_sum_over_each_image_and_channel_has_zero_gradient():
    # Σ_hw instance_norm(x)[n,c] = m·β_c does not depend on x: a correct backward gives ~0.
    x = leaf(np.random.default_rng(6).standard_normal((3, 2, 5, 5)))
    F.instance_norm(x).sum().backward()
    np.testing.assert_allclose(x.grad, 0.0, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 3), c=st.integers(1, 3), h=st.integers(1, 4), w=st.integers(1, 4),
       scale=st.floats(0.01, 100.0), affine=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_hypothesis_instance_norm(n, c, h, w, scale, affine, seed):
    if h * w < 2:
        with pytest.raises(ValueError, match="more than 1 spatial value"):
            F.instance_norm(np.zeros((n, c, h, w)))
        return
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)) * scale
    weight, bias = affine_params(c, seed=seed) if affine else (None, None)
    np.testing.assert_allclose(F.instance_norm(x, weight, bias).data, ref.instance_norm(x, weight, bias),
                               rtol=1e-10, atol=1e-10)
    if x.size <= 12:
        inputs = [leaf(x / scale)] + ([leaf(weight), leaf(bias)] if affine else [])
        assert ts.gradcheck(lambda a, *wb: F.instance_norm(a, *wb), inputs)


# ----------------------------------------------------------------------------- PyTorch

@pytest.mark.parametrize("shape", [(3, 4, 5, 6), (1, 2, 7, 3)])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("dtype, rtol, atol", [(np.float64, 0, 1e-10), (np.float32, 1e-5, 1e-5)])
def test_instance_norm_against_torch(torch, shape, affine, dtype, rtol, atol):
    rng = np.random.default_rng(20)
    x = (rng.standard_normal(shape) * 2 + 0.5).astype(dtype)
    upstream = rng.standard_normal(shape).astype(dtype)
    weight, bias = affine_params(shape[1], seed=20, dtype=dtype)

    xt = torch.tensor(x, requires_grad=True)
    wt, bt = (torch.tensor(a, requires_grad=True) for a in (weight, bias))
    yt = torch.nn.functional.instance_norm(xt, weight=wt if affine else None, bias=bt if affine else None, eps=1e-5)
    yt.backward(torch.tensor(upstream))

    xs, ws, bs = leaf(x), leaf(weight), leaf(bias)
    ys = F.instance_norm(xs, ws if affine else None, bs if affine else None, eps=1e-5)
    ys.backward(upstream)

    pairs = [(ys.data, yt), (xs.grad, xt.grad)] + ([(ws.grad, wt.grad), (bs.grad, bt.grad)] if affine else [])
    assert ys.dtype == dtype and xs.grad.dtype == dtype
    for ours, theirs in pairs:
        theirs = theirs.detach().numpy()
        np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=atol * max(1.0, np.abs(theirs).max()))


def test_layer_against_torch_instancenorm2d(torch):
    rng = np.random.default_rng(21)
    x = rng.standard_normal((2, 3, 6, 5)).astype(np.float32)
    ours, theirs = ts.nn.InstanceNorm2d(3, affine=True), torch.nn.InstanceNorm2d(3, affine=True)
    weight, bias = affine_params(3, seed=21, dtype=np.float32)
    with torch.no_grad():
        theirs.weight.copy_(torch.tensor(weight))
        theirs.bias.copy_(torch.tensor(bias))
    ours.load_state_dict({"weight": weight, "bias": bias})
    assert sorted(ours.state_dict()) == sorted(theirs.state_dict()) == ["bias", "weight"]
    for mode in ("train", "eval"):
        getattr(ours, mode)()
        getattr(theirs, mode)()
        np.testing.assert_allclose(ours(ts.Tensor(x)).data, theirs(torch.tensor(x)).detach().numpy(),
                                   rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- bad input

def test_instance_norm_bad_input():
    x = np.zeros((2, 3, 4, 4))
    with pytest.raises(ValueError, match=r"instance_norm: argument 'x' expected a tensor \(N, C, H, W\)"):
        F.instance_norm(np.zeros((2, 3)))
    with pytest.raises(TypeError, match="instance_norm: argument 'x' expected a floating-point tensor"):
        F.instance_norm(np.zeros((2, 3, 4, 4), dtype=np.int64))
    with pytest.raises(ValueError, match=r"instance_norm: argument 'weight' expected shape \(3,\)"):
        F.instance_norm(x, np.ones(4))
    with pytest.raises(TypeError, match="instance_norm: argument 'bias' expected dtype float64"):
        F.instance_norm(x, None, np.ones(3, dtype=np.float32))
    with pytest.raises(ValueError, match="instance_norm: needs more than 1 spatial value"):
        F.instance_norm(np.zeros((4, 3, 1, 1)))
    with pytest.raises(ValueError, match=r"instance_norm: argument 'eps' expected a value in \(0.0"):
        F.instance_norm(x, eps=0.0)
    with pytest.raises(ValueError, match="InstanceNorm2d: argument 'x' expected 3 channels"):
        ts.nn.InstanceNorm2d(3)(ts.Tensor(np.zeros((1, 2, 4, 4), np.float32)))


# ----------------------------------------------------------------------------- layer, model, CLI

def test_layer_parameters_follow_affine():
    assert ts.nn.InstanceNorm2d(4).parameters() == []
    layer = ts.nn.InstanceNorm2d(4, affine=True)
    assert [p.shape for p in layer.parameters()] == [(4,), (4,)]
    assert "InstanceNorm2d(4, eps=1e-05, affine=True)" in repr(layer)


def test_unet_with_instance_norm_trains_and_round_trips_through_a_checkpoint(tmp_path):
    ts.manual_seed(0)
    model = ts.models.UNet(1, 1, base_channels=4, depth=2, norm="instance")
    assert sum(isinstance(m, ts.nn.InstanceNorm2d) for m in model.modules()) == 2 * (2 * 2 + 1)
    x = ts.Tensor(np.random.default_rng(0).standard_normal((2, 1, 16, 16)).astype(np.float32))
    loss = F.binary_cross_entropy_with_logits(model(x), np.zeros((2, 1, 16, 16), np.float32))
    loss.backward()
    norms = [m for m in model.modules() if isinstance(m, ts.nn.InstanceNorm2d)]
    assert all(m.weight.grad is not None and np.any(m.weight.grad != 0) for m in norms)
    ts.optim.Adam(model.parameters(), lr=0.1).step()         # move γ, β away from 1, 0
    model.eval()
    ts.save({"model": model.state_dict(), "model_config": model.config}, tmp_path / "m.npz")
    again, _ = ts.models.from_checkpoint(tmp_path / "m.npz")
    assert again.config["norm"] == "instance"
    np.testing.assert_array_equal(again(x).data, model(x).data)


def test_cli_trains_with_norm_instance_and_evaluates_the_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--norm", "instance", "--epochs", "1", "--synthetic-count", "8", "--image-size", "32",
                 "--base-channels", "2", "--depth", "2", "--batch-size", "4", "--no-progress",
                 "--out", str(run)]) == 0
    model, state = ts.models.from_checkpoint(run / "last.npz")
    assert model.config["norm"] == "instance" and any(k.endswith("norm1.weight") for k in state["model"])
    assert main(["train", "--norm", "none", "--epochs", "1", "--synthetic-count", "8", "--image-size", "32",
                 "--base-channels", "2", "--depth", "2", "--batch-size", "4", "--no-progress",
                 "--out", str(tmp_path / "plain")]) == 0
    assert ts.models.from_checkpoint(tmp_path / "plain" / "last.npz")[0].config["norm"] is None
