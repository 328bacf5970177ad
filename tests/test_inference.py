"""Tests of tinyseg.inference: whole-image and overlap-tile prediction, TTA, errors.

The central check is the overlap-tile equivalence of docs/inference.md: with tiles placed
on the 2^depth grid, a tiled prediction equals the whole-image one wherever both see the
same pixels -- everywhere for a valid-padding U-Net, and away from the image border for a
same-padding U-Net whose tile margin covers its receptive field.
"""
import numpy as np
import pytest

import tinyseg as ts
from tinyseg.inference import Prediction, predict, predict_batch

HEIGHT, WIDTH = 100, 90          # a multiple of nothing the networks care about


def make_unet(**kwargs):
    ts.manual_seed(0)
    model = ts.models.UNet(**{"base_channels": 4, "depth": 2, **kwargs})
    model.eval()
    return model


def receptive_radius(depth: int) -> int:
    """How far (in pixels) an output pixel of a plain same-padding U-Net with nearest
    upsampling and 3×3 up-convs can see, docs/inference.md: 8·2^depth - 6.

    Each 3×3 conv at level l reaches 2^l pixels further (two in each encoder and decoder
    block, one after each upsampling), and each nearest upsampling to level l can add up
    to 2^l more, depending on where the pixel sits in its pooling cell.
    """
    return 8 * 2 ** depth - 6


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(0).normal(size=(HEIGHT, WIDTH)).astype(np.float32)


@pytest.fixture(scope="module")
def same_unet():
    return make_unet(depth=2, padding="same")


@pytest.fixture(scope="module")
def whole_same(same_unet, image):
    return predict(same_unet, image).probabilities


# ---------------------------------------------------------------------------------------
# overlap-tile == whole image


@pytest.mark.parametrize("blend", ["constant", "gaussian"])
@pytest.mark.parametrize("depth, tile", [(1, 32), (2, 64)])
def test_tiled_equals_whole_image_same_padding(image, depth, tile, blend):
    model = make_unet(depth=depth, padding="same")
    whole = predict(model, image).probabilities
    radius = receptive_radius(depth)
    tiled = predict(model, image, tile=tile, blend=blend, margin=radius).probabilities
    assert tiled.shape == whole.shape == (1, HEIGHT, WIDTH)
    # Within one radius of the image border the whole-image pass sees zero padding where
    # the tiles see mirrored pixels; everywhere else both see the same pixels.
    interior = (slice(None), slice(radius, -radius), slice(radius, -radius))
    difference = np.abs(tiled - whole)[interior].max()
    assert difference < 1e-5, f"max |tiled - whole| in the interior = {difference:.2e}"


def test_tiled_with_default_margin_stays_close(same_unet, image, whole_same):
    """The default margin (To//8) is smaller than the receptive field, so tiles differ
    from the whole-image pass a little near their edges, but only a little."""
    radius = receptive_radius(same_unet.depth)
    tiled = predict(same_unet, image, tile=64).probabilities
    interior = (slice(None), slice(radius, -radius), slice(radius, -radius))
    assert np.abs(tiled - whole_same)[interior].max() < 0.05


@pytest.mark.parametrize("depth", [1, 2])
def test_tiled_equals_whole_image_valid_padding(image, depth):
    # The paper's 2×2 up-convolution keeps the network free of padding everywhere.
    model = make_unet(depth=depth, padding="valid", upsample="transpose")
    whole = predict(model, image).probabilities
    tile = model.valid_sizes_near(60)[-1]
    for blend in ("constant", "gaussian"):
        tiled = predict(model, image, tile=tile, blend=blend).probabilities
        assert tiled.shape == whole.shape == (1, HEIGHT, WIDTH)
        difference = np.abs(tiled - whole).max()
        assert difference < 1e-5, f"depth {depth}, {blend}: max |tiled - whole| = {difference:.2e}"


def test_tile_larger_than_image(same_unet, image):
    tiled = predict(same_unet, image[:20, :30], tile=64).probabilities
    assert tiled.shape == (1, 20, 30)
    assert np.all(np.isfinite(tiled))


# ---------------------------------------------------------------------------------------
# shapes, masks, TTA, modes


@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("size", [(37, 51), (5, 7), (64, 1)])
def test_whole_image_any_size(padding, size):
    model = make_unet(depth=1, padding=padding)
    image = np.random.default_rng(1).normal(size=size).astype(np.float32)
    prediction = predict(model, image)
    assert isinstance(prediction, Prediction)
    assert prediction.probabilities.shape == (1,) + size and prediction.probabilities.dtype == np.float32
    assert prediction.mask.shape == size and prediction.mask.dtype == np.uint8


@pytest.mark.parametrize("tile", [None, 32])
def test_tta_is_flip_equivariant(same_unet, tile):
    image = np.random.default_rng(2).normal(size=(41, 38)).astype(np.float32)
    reference = predict(same_unet, image, tile=tile, tta=True).probabilities
    assert reference.shape == (1, 41, 38)
    for axes in [(1,), (2,), (1, 2)]:
        flipped = predict(same_unet, np.flip(image, [a - 1 for a in axes]), tile=tile, tta=True).probabilities
        np.testing.assert_allclose(flipped, np.flip(reference, axes), atol=1e-6)


def test_multiclass_probabilities_and_argmax():
    model = make_unet(depth=1, out_channels=3, in_channels=2)
    image = np.random.default_rng(3).normal(size=(2, 30, 26)).astype(np.float32)
    prediction = predict(model, image, tile=16)
    assert prediction.probabilities.shape == (3, 30, 26)
    np.testing.assert_allclose(prediction.probabilities.sum(axis=0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(prediction.mask, prediction.probabilities.argmax(axis=0))
    assert prediction.mask.dtype == np.uint8


def test_binary_threshold(same_unet, image):
    for threshold in (0.3, 0.5, 0.7):
        prediction = predict(same_unet, image, threshold=threshold)
        np.testing.assert_array_equal(prediction.mask, prediction.probabilities[0] > threshold)


def test_tensor_input_and_predict_batch(same_unet, image, whole_same):
    from_tensor = predict(same_unet, ts.Tensor(image[None])).probabilities
    np.testing.assert_array_equal(from_tensor, whole_same)
    predictions = predict_batch(same_unet, [image, image[:33, :47]], tile=32)
    assert [p.mask.shape for p in predictions] == [(HEIGHT, WIDTH), (33, 47)]


@pytest.mark.parametrize("training", [True, False])
def test_model_mode_is_restored(image, training):
    model = make_unet(depth=1)
    model.train(training)
    predict(model, image[:16, :16])
    assert model.training is training


# ---------------------------------------------------------------------------------------
# errors


def test_wrong_channel_count_names_both(same_unet):
    with pytest.raises(ValueError, match=r"takes 1 input channel.*has 3"):
        predict(same_unet, np.zeros((3, 16, 16), np.float32))


def test_wrong_ndim(same_unet):
    with pytest.raises(ValueError, match=r"\(H, W\) or \(C, H, W\)"):
        predict(same_unet, np.zeros((1, 1, 16, 16), np.float32))


def test_non_finite_values(same_unet):
    image = np.zeros((16, 16), np.float32)
    image[3, 4] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        predict(same_unet, image)


def test_bad_tile_size_names_nearest_sizes(same_unet, image):
    with pytest.raises(ValueError, match=r"30 -> try \[24, 28, 32, 36\]"):
        predict(same_unet, image, tile=30)


def test_tile_too_small_for_its_margin(same_unet, image):
    with pytest.raises(ValueError, match="tile too small"):
        predict(same_unet, image, tile=16, margin=8)
