"""Normalisation, geometry and augmentation (tinyseg.data.transforms).

The alignment tests draw a mask, make the image a noisy copy of it, transform both,
and check that the thresholded image still equals the mask: exactly for flips and
90° turns, and everywhere but next to class boundaries for resampling transforms
(bilinear image vs nearest mask).
"""

import numpy as np
import pytest

from tinyseg.data import transforms as T


def shapes_mask(height=48, width=48):
    """A class map with a disk (class 1) and a rectangle (class 2), off-centre so that
    flips and turns move them."""
    yy, xx = np.mgrid[:height, :width]
    mask = np.zeros((height, width), np.uint8)
    mask[(yy - 15) ** 2 + (xx - 18) ** 2 <= 8 ** 2] = 1
    mask[28:40, 26:42] = 2
    return mask


def noisy_copy(mask, seed=0):
    """Image (1, H, W) = mask + small noise: rounding it gives the mask back."""
    noise = np.random.default_rng(seed).normal(0, 0.05, mask.shape)
    return (mask + noise).astype(np.float32)[None]


def near_boundary(mask, radius):
    """Pixels within ``radius`` (chessboard distance) of a pixel of another class."""
    height, width = mask.shape
    padded = np.pad(mask, radius, mode="edge")
    near = np.zeros(mask.shape, bool)
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            near |= padded[dy:dy + height, dx:dx + width] != mask
    return near


def assert_aligned(image, mask, radius=1):
    """Rounded image == mask except within ``radius`` of class boundaries, and the mask
    only holds the original labels."""
    assert set(np.unique(mask)) <= {0, 1, 2}
    disagree = np.rint(image[0]).astype(int) != mask
    assert not np.any(disagree & ~near_boundary(mask, radius)), \
        f"{int((disagree & ~near_boundary(mask, radius)).sum())} misaligned pixels away from boundaries"


# --- normalisation -------------------------------------------------------------------

def test_zscore_per_channel():
    rng = np.random.default_rng(0)
    image = np.stack([rng.normal(5, 3, (20, 20)), rng.normal(-2, 0.1, (20, 20)), np.full((20, 20), 7.0)])
    out = T.zscore(image.astype(np.float32))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[:2].mean(axis=(1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(out[:2].std(axis=(1, 2)), 1, atol=1e-4)
    np.testing.assert_array_equal(out[2], 0)               # constant channel: zeros, not NaN


def test_minmax_and_window_values():
    image = np.array([[[-1000.0, -160.0, 40.0], [240.0, 1000.0, 0.0]]], np.float32)
    scaled = T.minmax(image)
    assert scaled.min() == 0 and scaled.max() == 1
    np.testing.assert_allclose(scaled[0, 0, 1], (-160 + 1000) / 2000)
    np.testing.assert_array_equal(T.minmax(np.full((1, 2, 2), 3.0, np.float32)), 0)
    windowed = T.window(image, level=40, width=400)          # soft-tissue window: -160..240 HU
    np.testing.assert_allclose(windowed[0], [[0, 0, 0.5], [1, 1, 0.4]], atol=1e-6)


# --- resize, crops, padding ----------------------------------------------------------

def test_resize_bilinear_values_and_nearest_mask():
    image = np.array([[[0.0, 1.0]]], np.float32)             # (1, 1, 2)
    resized, _ = T.resize(image, None, (1, 4))
    # source x = (i + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25, clamped to [0, 1]
    np.testing.assert_allclose(resized[0, 0], [0, 0.25, 0.75, 1])
    mask = shapes_mask()
    small_image, small_mask = T.resize(noisy_copy(mask), mask, (24, 20))
    assert small_image.shape == (1, 24, 20) and small_mask.shape == (24, 20)
    assert small_mask.dtype == mask.dtype and set(np.unique(small_mask)) == {0, 1, 2}
    big_image, big_mask = T.resize(noisy_copy(mask), mask, 96)
    np.testing.assert_array_equal(big_mask, np.repeat(np.repeat(mask, 2, 0), 2, 1))   # exact 2x
    assert_aligned(big_image, big_mask)


def test_pad_to_multiple_and_unpad():
    mask = shapes_mask(37, 50)
    image = noisy_copy(mask)
    padded, padded_mask, padding = T.pad_to_multiple(image, mask, 16)
    assert padded.shape == (1, 48, 64) and padded_mask.shape == (48, 64)
    assert padding == (5, 6, 7, 7)
    np.testing.assert_array_equal(T.unpad(padded, padding), image)
    np.testing.assert_array_equal(T.unpad(padded_mask, padding), mask)
    same, _, none = T.pad_to_multiple(padded, None, 16, mode="constant")
    assert none == (0, 0, 0, 0) and same.shape == padded.shape


def test_center_crop_and_random_crop():
    mask = shapes_mask(40, 30)
    image = noisy_copy(mask)
    cropped, cropped_mask = T.center_crop(image, mask, (20, 11))
    np.testing.assert_array_equal(cropped_mask, mask[10:30, 9:20])     # offset floor((30 - 11) / 2) = 9
    with pytest.raises(ValueError, match="smaller|cannot center-crop"):
        T.center_crop(image, mask, 64)
    rng = np.random.default_rng(0)
    for size in ((16, 16), (64, 20)):           # the second is larger than the image: padded
        crop, crop_mask = T.random_crop(image, mask, size, rng)
        assert crop.shape == (1, *size) and crop_mask.shape == size
        assert_aligned(crop, crop_mask, radius=0)


# --- geometric augmentation ----------------------------------------------------------

def test_flips_and_rot90_keep_image_and_mask_exactly_aligned():
    mask = shapes_mask()
    image = noisy_copy(mask)
    rng = np.random.default_rng(1)
    seen = set()
    for _ in range(20):
        flipped, flipped_mask = T.random_flip(image, mask, rng)
        turned, turned_mask = T.random_rot90(flipped, flipped_mask, rng)
        assert_aligned(turned, turned_mask, radius=0)
        seen.add(turned_mask.tobytes())
    assert len(seen) > 4                        # the 8 symmetries of the square show up


def test_rot90_keeps_the_shape_of_non_square_images():
    mask = shapes_mask(32, 48)
    rng = np.random.default_rng(2)
    for _ in range(10):
        image, turned = T.random_rot90(noisy_copy(mask), mask, rng)
        assert image.shape == (1, 32, 48) and turned.shape == (32, 48)


def test_affine_quarter_turn_is_rot90_counter_clockwise():
    mask = shapes_mask()
    image = noisy_copy(mask)
    turned, turned_mask = T.affine(image, mask, angle=90)
    np.testing.assert_allclose(turned, np.rot90(image, 1, axes=(1, 2)), atol=1e-5)
    np.testing.assert_array_equal(turned_mask, np.rot90(mask))


def test_random_affine_keeps_alignment_and_labels():
    mask = shapes_mask()
    image = noisy_copy(mask)
    rng = np.random.default_rng(3)
    for _ in range(5):
        warped, warped_mask = T.random_affine(image, mask, rng, degrees=30, scale=(0.8, 1.2), shift=0.1)
        assert warped.shape == image.shape and warped_mask.dtype == mask.dtype
        assert_aligned(warped, warped_mask)


def test_elastic_deformation_keeps_alignment_and_labels():
    mask = shapes_mask(64, 64)
    image = noisy_copy(mask)
    rng = np.random.default_rng(4)
    for _ in range(5):
        warped, warped_mask = T.elastic_deform(image, mask, rng, grid=3, sigma=10)
        assert not np.array_equal(warped_mask, mask)
        assert_aligned(warped, warped_mask)


def test_elastic_with_zero_displacement_is_the_identity():
    mask = shapes_mask()
    image = noisy_copy(mask)
    warped, warped_mask = T.elastic_deform(image, mask, np.random.default_rng(0), sigma=0.0)
    np.testing.assert_allclose(warped, image, atol=1e-6)
    np.testing.assert_array_equal(warped_mask, mask)


def test_cubic_upsampling_passes_through_the_grid_nodes_and_keeps_constants():
    weights = T._cubic_upsampling_matrix(101, 3)
    np.testing.assert_allclose(weights.sum(axis=1), 1, atol=1e-12)
    np.testing.assert_allclose(weights[[0, 50, 100]], np.eye(3), atol=1e-12)


# --- intensity augmentation ----------------------------------------------------------

def test_intensity_augmentations_change_only_the_image():
    mask = shapes_mask()
    image = noisy_copy(mask) * 100 + 20
    rng = np.random.default_rng(5)
    for transform in (T.BrightnessContrast(0.2, 0.3), T.Gamma((0.5, 2.0)), T.GaussianNoise(0.05)):
        out, out_mask = transform(image, mask, rng)
        assert out.dtype == np.float32 and out.shape == image.shape
        assert out_mask is mask and not np.allclose(out, image)
    gamma_image, _ = T.Gamma((0.5, 2.0))(image, None, rng)
    assert gamma_image.min() == pytest.approx(image.min()) and gamma_image.max() == pytest.approx(image.max())


# --- composition and seeding ---------------------------------------------------------

def test_same_seed_same_augmentation_other_seed_other_augmentation():
    mask = shapes_mask()
    image = noisy_copy(mask)
    augment = T.default_augmentation()
    first = augment(image, mask, np.random.default_rng(42))
    second = augment(image, mask, np.random.default_rng(42))
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    others = [augment(image, mask, np.random.default_rng(seed))[1] for seed in range(5)]
    assert len({m.tobytes() for m in others}) > 1


def test_default_augmentation_keeps_shapes_labels_and_alignment():
    mask = shapes_mask()
    image = noisy_copy(mask)
    augment = T.Compose([T.RandomApply(T.ElasticDeformation(sigma=6), p=1.0), T.RandomFlip(), T.RandomRot90()])
    for seed in range(5):
        out, out_mask = augment(image, mask, np.random.default_rng(seed))
        assert out.shape == image.shape and out_mask.shape == mask.shape
        assert_aligned(out, out_mask)
    for seed in range(5):
        out, out_mask = T.default_augmentation()(image, mask, np.random.default_rng(seed))
        assert out.shape == image.shape and set(np.unique(out_mask)) <= {0, 1, 2}


def test_compose_random_apply_and_rng_requirement():
    mask = shapes_mask()
    image = noisy_copy(mask)
    never = T.RandomApply(T.RandomFlip(p=1.0), p=0.0)
    always = T.RandomApply(T.RandomFlip(horizontal=True, vertical=False, p=1.0), p=1.0)
    rng = np.random.default_rng(0)
    assert never(image, mask, rng)[1] is mask
    np.testing.assert_array_equal(always(image, mask, rng)[1], mask[:, ::-1])
    with pytest.raises(TypeError, match="needs rng"):
        T.RandomFlip()(image, mask)
    normalise = T.Compose([T.Resize(24), T.ZScore()])   # deterministic: no rng needed
    out, out_mask = normalise(image, mask)
    assert out.shape == (1, 24, 24) and abs(float(out.mean())) < 1e-5
    assert "ElasticDeformation" in repr(T.default_augmentation())
