"""The source article's network (§5 listing): shapes, parameter count, the as-written
failure, the equations, gradients, and PyTorch as an oracle."""
import numpy as np
import pytest

import tinyseg as ts
from tinyseg import reference as ref
from tinyseg.models import unet_seed
from tinyseg.models.seed import SeedUNet


def test_shapes_through_each_level_of_the_minimal_repair():
    model = unet_seed(base_channels=2)
    trace = []
    with ts.no_grad():
        model(ts.Tensor(np.zeros((2, 1, 64, 48), np.float32)), trace=trace)
    assert trace == [
        ("conv1", (2, 2, 64, 48)), ("pool1", (2, 2, 32, 24)),
        ("conv2", (2, 4, 32, 24)), ("pool2", (2, 4, 16, 12)),
        ("conv3", (2, 8, 16, 12)), ("pool3", (2, 8, 8, 6)),
        ("conv4", (2, 16, 8, 6)),                                # the bottom: pool4 is not used
        ("up5", (2, 8, 16, 12)), ("conv5", (2, 8, 16, 12)),
        ("up6", (2, 4, 32, 24)), ("conv6", (2, 4, 32, 24)),
        ("up7", (2, 2, 64, 48)), ("conv7", (2, 2, 64, 48)),
        ("head", (2, 1, 64, 48)),
    ]


def test_full_width_layers_have_the_articles_filters():
    model = unet_seed()
    shapes = {name: p.shape for name, p in model.named_parameters() if name.endswith("weight")}
    assert shapes["conv1.conv1.weight"] == (64, 1, 3, 3)
    assert shapes["conv4.conv2.weight"] == (512, 512, 3, 3)
    assert shapes["up5.block.conv1.weight"] == (256, 512 + 256, 3, 3)     # [N(conv4), conv3]
    assert shapes["up6.block.conv1.weight"] == (128, 256 + 128, 3, 3)
    assert shapes["up7.block.conv1.weight"] == (64, 128 + 64, 3, 3)
    assert shapes["conv7.conv2.weight"] == (64, 64, 3, 3)
    assert shapes["head.weight"] == (1, 64, 1, 1)
    # 4 convs per decoder level (up block + conv block), 2 per encoder level, plus the head.
    assert len(shapes) == 4 * 2 + 3 * 4 + 1


def test_parameter_count_by_hand():
    def conv(c_in, c_out, k=3):                     # weight c_out·c_in·k·k, bias c_out
        return c_out * c_in * k * k + c_out

    def block(c_in, f):                             # conv_block: two 3×3 convs
        return conv(c_in, f) + conv(f, f)

    by_hand = (block(1, 64) + block(64, 128) + block(128, 256) + block(256, 512)       # conv1..conv4
               + block(512 + 256, 256) + block(256, 256)                             # up5, conv5
               + block(256 + 128, 128) + block(128, 128)                             # up6, conv6
               + block(128 + 64, 64) + block(64, 64)                                 # up7, conv7
               + conv(64, 1, k=1))                                                   # 1×1 head
    assert by_hand == 9_330_945
    assert unet_seed().num_parameters() == by_hand
    # The listing as printed has the same layers: only the spatial wiring differs.
    assert unet_seed(as_written=True).num_parameters() == by_hand


def test_as_written_fails_at_the_first_concatenation_naming_both_shapes():
    model = unet_seed(as_written=True)
    with ts.no_grad(), pytest.raises(ValueError) as caught:
        model(ts.Tensor(np.zeros((1, 1, 256, 256), np.float32)))
    message = str(caught.value)
    assert "up5 = upconv_block(pool4, conv3, 256)" in message
    assert "32×32 (shape (1, 512, 32, 32))" in message
    assert "64×64 (shape (1, 256, 64, 64))" in message
    assert "unet_seed()" in message
    # The shape check that fires is tinyseg's concat op, chained underneath.
    cause = caught.value.__cause__.__cause__
    assert "concat:" in str(cause) and "tensors[0] has (32, 32) and tensors[1] has (64, 64)" in str(cause)


@pytest.mark.parametrize("side", [16, 32, 48, 512])
def test_as_written_fails_at_every_input_size(side):
    # Upsampled pool4 has side/8 rows, conv3 has side/4: never equal.
    model = unet_seed(as_written=True, base_channels=1)
    with ts.no_grad(), pytest.raises(ValueError, match=f"{side // 8}×{side // 8} .* {side // 4}×{side // 4}"):
        model(ts.Tensor(np.zeros((1, 1, side, side), np.float32)))


def test_forward_and_backward_at_full_width_on_a_small_input():
    model = unet_seed()
    x = ts.Tensor(np.random.default_rng(0).standard_normal((1, 1, 32, 32)).astype(np.float32))
    target = (np.random.default_rng(1).random((1, 1, 32, 32)) > 0.5).astype(np.float32)
    logits = model(x)
    assert logits.shape == (1, 1, 32, 32)
    ts.functional.binary_cross_entropy_with_logits(logits, target).backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not np.any(p.grad)]
    assert not missing
    p = model.predict_proba(logits).data
    np.testing.assert_allclose(p, 1 / (1 + np.exp(-logits.data.astype(np.float64))), rtol=1e-6)


def test_seed_unet_computes_the_articles_equations():
    """The forward pass rebuilt from reference.py's loops, block by block as in §5."""
    ts.manual_seed(2)
    model = unet_seed(base_channels=1).double()
    x = np.random.default_rng(3).standard_normal((1, 1, 16, 8))
    W = {name: p.data for name, p in model.named_parameters()}

    def block(a, prefix):        # conv_block: σ(W₂ ∗ σ(W₁ ∗ a + b₁) + b₂), 3×3 'same'
        a = np.maximum(ref.conv2d(a, W[prefix + ".conv1.weight"], W[prefix + ".conv1.bias"], padding=1), 0)
        return np.maximum(ref.conv2d(a, W[prefix + ".conv2.weight"], W[prefix + ".conv2.bias"], padding=1), 0)

    def upconv(a, skip, prefix):  # upconv_block: conv_block([N(a), skip]), upsampled input first
        return block(np.concatenate([ref.upsample_nearest(a, 2), skip], axis=1), prefix + ".block")

    conv1 = block(x, "conv1")
    conv2 = block(ref.max_pool2d(conv1, 2), "conv2")
    conv3 = block(ref.max_pool2d(conv2, 2), "conv3")
    conv4 = block(ref.max_pool2d(conv3, 2), "conv4")
    conv5 = block(upconv(conv4, conv3, "up5"), "conv5")
    conv6 = block(upconv(conv5, conv2, "up6"), "conv6")
    conv7 = block(upconv(conv6, conv1, "up7"), "conv7")
    expected = ref.conv2d(conv7, W["head.weight"], W["head.bias"])
    with ts.no_grad():
        np.testing.assert_allclose(model(ts.Tensor(x)).data, expected, atol=1e-12)


def test_matches_pytorch_forward_and_gradients():
    torch = pytest.importorskip("torch")
    tF = torch.nn.functional
    ts.manual_seed(4)
    model = unet_seed(base_channels=2).double()
    x = np.random.default_rng(5).standard_normal((2, 1, 24, 16))
    target = (np.random.default_rng(6).random((2, 1, 24, 16)) > 0.7).astype(np.float64)
    W = {name: torch.tensor(p.data, requires_grad=True) for name, p in model.named_parameters()}

    def block(a, prefix):
        a = tF.relu(tF.conv2d(a, W[prefix + ".conv1.weight"], W[prefix + ".conv1.bias"], padding=1))
        return tF.relu(tF.conv2d(a, W[prefix + ".conv2.weight"], W[prefix + ".conv2.bias"], padding=1))

    def upconv(a, skip, prefix):
        return block(torch.cat([tF.interpolate(a, scale_factor=2, mode="nearest"), skip], 1), prefix + ".block")

    conv1 = block(torch.tensor(x), "conv1")
    conv2 = block(tF.max_pool2d(conv1, 2), "conv2")
    conv3 = block(tF.max_pool2d(conv2, 2), "conv3")
    conv4 = block(tF.max_pool2d(conv3, 2), "conv4")
    conv7 = block(upconv(block(upconv(block(upconv(conv4, conv3, "up5"), "conv5"), conv2, "up6"), "conv6"),
                         conv1, "up7"), "conv7")
    torch_logits = tF.conv2d(conv7, W["head.weight"], W["head.bias"])
    tF.binary_cross_entropy_with_logits(torch_logits, torch.tensor(target)).backward()

    logits = model(ts.Tensor(x))
    ts.functional.binary_cross_entropy_with_logits(logits, target).backward()
    np.testing.assert_allclose(logits.data, torch_logits.detach().numpy(), atol=1e-12)
    for name, p in model.named_parameters():
        np.testing.assert_allclose(p.grad, W[name].grad.numpy(), atol=1e-12, err_msg=name)


def test_sizes_and_arguments_are_checked():
    model = unet_seed(base_channels=1)
    assert model.output_size(256) == 256 and model.output_size(100) is None
    with pytest.raises(ValueError, match=r"100×96 .*multiple of 8 .*100 -> try \[96, 104\]"):
        model.check_input_size(100, 96)
    with pytest.raises(ValueError, match="base_channels expected a positive integer, got 0"):
        SeedUNet(base_channels=0)
    with pytest.raises(TypeError, match="as_written expected True or False"):
        SeedUNet(as_written="yes")


def test_summary_lists_every_layer_and_the_total():
    text = unet_seed(base_channels=2).summary((1, 1, 32, 32))
    assert "conv4     (1, 16, 4, 4)" in text and "up7       (1, 2, 32, 32)" in text
    assert "pool4" not in text
    assert f"{unet_seed(base_channels=2).num_parameters():,}" in text.splitlines()[-1]


def test_a_trained_seed_unet_checkpoint_loads_as_the_article_network(tmp_path):
    from tinyseg.data import ArrayDataset, DataLoader
    from tinyseg.train import TrainConfig, Trainer
    rng = np.random.default_rng(0)
    images = rng.standard_normal((4, 1, 16, 16)).astype(np.float32)
    masks = (rng.random((4, 16, 16)) > 0.5).astype(np.int64)
    loader = DataLoader(ArrayDataset(images, masks), 2)
    model = ts.models.unet_seed(base_channels=2)
    trainer = Trainer(model, loader, loader, TrainConfig(epochs=1, batch_size=2, progress=False), out_dir=str(tmp_path))
    trainer.fit()
    reloaded, _ = ts.models.from_checkpoint(tmp_path / "last.npz")
    assert type(reloaded).__name__ == "SeedUNet" and not reloaded.as_written
    for a, b in zip(reloaded.parameters(), model.parameters()):
        np.testing.assert_array_equal(a.data, b.data)
