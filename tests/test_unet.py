"""The U-Net: the paper's sizes, every option, size errors and summary (the article's
network, unet_seed(), is tested in test_unet_seed.py)."""
import numpy as np
import pytest

import tinyseg as ts
from tinyseg.models import UNet


def run(model, shape):
    with ts.no_grad():
        return model(ts.Tensor(np.random.default_rng(0).standard_normal(shape).astype(np.float32)))


def test_valid_padding_reproduces_the_papers_572_to_388():
    model = UNet(1, 2, base_channels=64, depth=4, padding="valid", upsample="transpose")
    assert model.output_size(572) == 388
    # The same arithmetic at a smaller width runs quickly: 188 -> 4 at depth 4.
    small = UNet(1, 2, base_channels=2, depth=4, padding="valid", upsample="transpose")
    assert small.output_size(188) == 4
    assert run(small, (1, 1, 188, 188)).shape == (1, 2, 4, 4)


@pytest.mark.parametrize("upsample", ["nearest", "bilinear", "transpose"])
@pytest.mark.parametrize("norm, block", [(None, "plain"), ("batch", "residual")])
def test_same_padding_keeps_the_size_for_every_option(upsample, norm, block):
    model = UNet(3, 4, base_channels=4, depth=2, upsample=upsample, norm=norm, block=block, dropout=0.2)
    assert run(model, (2, 3, 24, 16)).shape == (2, 4, 24, 16)


def test_valid_padding_with_every_upsampling_mode():
    for upsample in ("nearest", "bilinear", "transpose"):
        model = UNet(1, 1, base_channels=2, depth=2, padding="valid", upsample=upsample, block="residual")
        side = model.valid_sizes_near(60)[0]
        out = run(model, (1, 1, side, side))
        assert out.shape[2] == model.output_size(side)


def test_channel_doubling_and_parameter_count():
    model = UNet(1, 1, base_channels=8, depth=3)
    assert model.encoder[3].conv2.weight.shape == (64, 64, 3, 3)       # 8 · 2^3 at the bottleneck
    expected = sum(p.size for p in model.parameters())
    assert model.num_parameters() == expected


def test_gradients_reach_every_parameter():
    model = UNet(2, 3, base_channels=2, depth=2, norm="batch")
    x = ts.Tensor(np.random.default_rng(1).standard_normal((2, 2, 16, 16)).astype(np.float32))
    target = np.random.default_rng(2).integers(0, 3, (2, 16, 16))
    ts.functional.cross_entropy(model(x), target).backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not np.any(p.grad)]
    assert not missing


def test_whole_unet_gradcheck_in_float64():
    ts.manual_seed(0)
    model = UNet(1, 1, base_channels=2, depth=1, norm="batch").double()
    x = ts.Tensor(np.random.default_rng(3).standard_normal((2, 1, 4, 4)), requires_grad=True)
    assert ts.gradcheck(lambda x: model(x), [x])


def test_unsupported_sizes_name_the_nearest_valid_ones():
    model = UNet(1, 1, base_channels=2, depth=4)
    with pytest.raises(ValueError, match=r"100.*\[(80, )?96, 112"):
        model.check_input_size(100, 96)
    valid = UNet(1, 1, base_channels=2, depth=4, padding="valid")
    with pytest.raises(ValueError, match=r"570 -> try \[540, 556, 572, 588\]"):
        valid.check_input_size(570, 570)


def test_bad_options_are_clear_errors():
    with pytest.raises(ValueError, match="padding"):
        UNet(padding="full")
    with pytest.raises(ValueError, match="upsample"):
        UNet(upsample="cubic")
    with pytest.raises(ValueError, match="base_channels"):
        UNet(base_channels=0)
    with pytest.raises(ValueError, match="dropout"):
        UNet(dropout=1.0)


def test_summary_lists_layers_shapes_and_params():
    model = UNet(1, 1, base_channels=4, depth=2)
    text = model.summary((1, 1, 32, 32))
    assert "encoder.2" in text and "(1, 16, 8, 8)" in text and "head" in text
    assert f"{model.num_parameters():,}" in text


def test_unet_computes_the_equations_of_docs_math_unet():
    """The forward pass rebuilt from reference.py's loop definitions, equation by equation."""
    from tinyseg import reference as ref
    ts.manual_seed(4)
    model = UNet(2, 1, base_channels=2, depth=1).double()
    x = np.random.default_rng(5).standard_normal((1, 2, 6, 8))
    W = {name: p.data for name, p in model.named_parameters()}

    def relu(a):
        return np.maximum(a, 0)

    def block(a, prefix):      # y = σ(W₂ ∗ σ(W₁ ∗ a + b₁) + b₂), σ = ReLU, 3×3, padding 1
        a = relu(ref.conv2d(a, W[prefix + ".conv1.weight"], W[prefix + ".conv1.bias"], padding=1))
        return relu(ref.conv2d(a, W[prefix + ".conv2.weight"], W[prefix + ".conv2.bias"], padding=1))

    e0 = block(x, "encoder.0")                                    # level 0
    e1 = block(ref.max_pool2d(e0, 2), "encoder.1")                # 2×2 max-pool, then the bottleneck
    u = relu(ref.conv2d(ref.upsample_nearest(e1, 2), W["ups.0.conv.weight"], W["ups.0.conv.bias"], padding=1))
    d = block(np.concatenate([e0, u], axis=1), "decoder.0")       # skip concatenation
    expected = ref.conv2d(d, W["head.weight"], W["head.bias"])    # 1×1 head: logits
    with ts.no_grad():
        np.testing.assert_allclose(model(ts.Tensor(x)).data, expected, atol=1e-12)
