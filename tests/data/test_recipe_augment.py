"""The pieces of the nnU-Net-like default recipe in tinyseg.data: arbitrary rotation and zoom,
colour jitter, the nnunet_augmentation preset, foreground crops and the DataLoader's
foreground oversampling."""
import numpy as np
import pytest

from tinyseg.data import ArrayDataset, DataLoader
from tinyseg.data import transforms as T


def disc_pair(channels=1, size=32, centre=(12, 18), radius=6):
    yy, xx = np.mgrid[:size, :size]
    mask = ((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 < radius ** 2).astype(np.int64)
    image = (np.repeat(mask[None], channels, axis=0) + 0.01 * np.arange(channels)[:, None, None]).astype(np.float32)
    return image, mask


def test_rotate_scale_moves_image_and_mask_together():
    image, mask = disc_pair()
    rng = np.random.default_rng(0)
    for _ in range(5):
        out, out_mask = T.random_rotate_scale(image, mask, rng, p_rotate=1.0, p_scale=1.0)
        assert out.shape == image.shape and out_mask.shape == mask.shape and out_mask.dtype == mask.dtype
        assert set(np.unique(out_mask)) <= {0, 1}
        # the bilinear image and the nearest-neighbour mask agree almost everywhere
        assert ((out[0] > 0.5) == (out_mask == 1)).mean() > 0.97
    assert not np.array_equal(out_mask, mask)


def test_rotate_scale_draws_and_reproduces():
    image, mask = disc_pair()
    same = T.random_rotate_scale(image, mask, np.random.default_rng(0), p_rotate=0.0, p_scale=0.0)
    np.testing.assert_array_equal(same[0], image)
    assert same[0] is not image                                   # a new array, as every transform returns
    zoom = T.RandomRotateScale(scale=(2.0, 2.0), p_rotate=0.0, p_scale=1.0)(image, mask, np.random.default_rng(1))
    expected = T.affine(image, mask, 0.0, 2.0)
    np.testing.assert_allclose(zoom[0], expected[0])
    np.testing.assert_array_equal(zoom[1], expected[1])
    a = T.random_rotate_scale(image, mask, np.random.default_rng(5), p_rotate=1.0)
    b = T.random_rotate_scale(image, mask, np.random.default_rng(5), p_rotate=1.0)
    np.testing.assert_array_equal(a[0], b[0])


def test_color_jitter_formulas():
    rng = np.random.default_rng(0)
    image = rng.standard_normal((3, 8, 8)).astype(np.float32)
    identity = T.random_color_jitter(image, rng, 0, 0, 0, 0)
    np.testing.assert_allclose(identity, image, atol=1e-6)
    # saturation alone keeps each pixel's channel mean (its grey value)
    saturated = T.random_color_jitter(image, np.random.default_rng(1), 0, 0, 0.5, 0)
    np.testing.assert_allclose(saturated.mean(axis=0), image.mean(axis=0), atol=1e-5)
    assert not np.allclose(saturated, image)
    # the colour cast alone shifts each channel by one constant
    cast = T.random_color_jitter(image, np.random.default_rng(2), 0, 0, 0, 0.1) - image
    assert np.ptp(cast.reshape(3, -1), axis=1).max() < 1e-5 and np.ptp(cast[:, 0, 0]) > 0
    # brightness then contrast, the same draws as the docstring's formula
    r = np.random.default_rng(3)
    b, c = r.uniform(0.75, 1.25), r.uniform(0.75, 1.25)
    grey = image[:1]
    expected = (grey * b - (grey * b).mean()) * c + (grey * b).mean()
    np.testing.assert_allclose(T.random_color_jitter(grey, np.random.default_rng(3)), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("channels", [1, 3])
def test_nnunet_preset_keeps_shapes_and_is_reproducible(channels):
    image, mask = disc_pair(channels)
    preset = T.nnunet_augmentation()
    for seed in range(6):
        a = preset(image, mask, np.random.default_rng(seed))
        b = preset(image, mask, np.random.default_rng(seed))
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
        assert a[0].shape == image.shape and a[0].dtype == np.float32 and set(np.unique(a[1])) <= {0, 1}


def test_foreground_crop_holds_foreground():
    image, mask = disc_pair(size=64, centre=(50, 8), radius=3)
    rng = np.random.default_rng(0)
    for _ in range(20):
        crop, crop_mask = T.foreground_crop(image, mask, 16, rng)
        assert crop.shape == (1, 16, 16) and crop_mask.any()
    # through the RandomCrop transform, also inside a Compose
    pipeline = T.Compose([T.ZScore(), T.RandomCrop(16)])
    assert pipeline.crops and not T.ZScore().crops
    assert all(pipeline(image, mask, np.random.default_rng(s), force_foreground=True)[1].any() for s in range(20))
    plain = [pipeline(image, mask, np.random.default_rng(s))[1].any() for s in range(20)]
    assert not all(plain)
    # no foreground: an ordinary random crop; an image smaller than the window is padded first
    empty = np.zeros_like(mask)
    assert T.foreground_crop(image, empty, 16, rng)[0].shape == (1, 16, 16)
    small, small_mask = disc_pair(size=10, centre=(5, 5), radius=2)
    assert T.foreground_crop(small, small_mask, 16, rng)[1].shape == (16, 16)


def test_loader_oversamples_the_last_third_of_each_batch():
    images, masks = [], []
    for i in range(16):
        image, mask = disc_pair(size=64, centre=(4 + 3 * i, 56 - 3 * i), radius=2)
        images.append(image)
        masks.append(mask)
    data = ArrayDataset(images, masks)
    crop = T.Compose([T.RandomCrop(16)])
    loader = DataLoader(data, 8, seed=0, transform=crop, oversample_foreground=1 / 3)
    assert loader.forced(8) == [False] * 5 + [True] * 3
    assert loader.forced(4) == [False] * 3 + [True]
    assert DataLoader(data, 4, transform=crop).forced(4) == [False] * 4
    for _, batch_masks in loader:
        assert batch_masks[5:].reshape(3, -1).any(axis=1).all()
    # the same batches again from the same seed; without oversampling the crops are the plain ones
    again = DataLoader(data, 8, seed=0, transform=crop, oversample_foreground=1 / 3)
    loader.set_epoch(0)
    for (a, _), (b, _) in zip(loader, again):
        np.testing.assert_array_equal(a, b)
    plain = DataLoader(data, 8, seed=0, transform=crop)
    reference = DataLoader(data, 8, seed=0, transform=crop, oversample_foreground=0.0)
    for (a, _), (b, _) in zip(plain, reference):
        np.testing.assert_array_equal(a, b)


def test_loader_oversampling_needs_a_crop():
    image, mask = disc_pair()
    data = ArrayDataset([image], [mask])
    with pytest.raises(ValueError, match="needs a transform that crops"):
        DataLoader(data, 1, transform=T.Compose([T.ZScore()]), oversample_foreground=0.33)
    with pytest.raises(ValueError, match="fraction in"):
        DataLoader(data, 1, transform=T.RandomCrop(8), oversample_foreground=1.5)
