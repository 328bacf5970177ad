"""Tests of tinyseg.data.polyps.SyntheticPolyps: determinism, shapes, value ranges, variety, the corner box."""

import numpy as np
import pytest

from tinyseg.data import SyntheticPolyps


@pytest.fixture(scope="module")
def frames():
    return SyntheticPolyps(n=24, size=64, seed=2).arrays()


def test_same_seed_same_frames_other_seed_other_frames():
    a = SyntheticPolyps(n=3, size=48, seed=7).arrays()
    b = SyntheticPolyps(n=3, size=48, seed=7).arrays()
    c = SyntheticPolyps(n=3, size=48, seed=8).arrays()
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0]) and not np.array_equal(a[1], c[1])
    # an item does not depend on the order in which items are drawn
    ds = SyntheticPolyps(n=3, size=48, seed=7)
    np.testing.assert_array_equal(ds[2][0], a[0][2])
    np.testing.assert_array_equal(ds[-1][1], a[1][2])


def test_shapes_dtypes_and_value_ranges(frames):
    images, masks = frames
    assert images.shape == (24, 3, 64, 64) and images.dtype == np.float32
    assert masks.shape == (24, 64, 64) and masks.dtype == np.uint8
    assert images.min() >= 0 and images.max() <= 1
    assert set(np.unique(masks)) <= {0, 1}
    assert SyntheticPolyps().num_classes == 2


def test_every_frame_shows_a_polyp_and_sizes_vary_from_small_to_large(frames):
    _, masks = frames
    fractions = masks.mean(axis=(1, 2))
    assert (fractions > 0).all()
    assert fractions.min() < 0.02 and fractions.max() > 0.12


def test_colour_highlights_and_the_black_corner_box(frames):
    images, masks = frames
    # colour: the channels differ (mucosa is red), not a grey image stored three times
    assert (images[:, 0].mean() - images[:, 2].mean()) > 0.1
    # specular highlights: saturated near-white pixels in most frames
    white = (images.min(axis=1) > 0.95).any(axis=(1, 2))
    assert white.mean() > 0.5
    # the black box: a corner block of exact zeros in many frames, never foreground
    corners = [images[:, :, -8:, :8], images[:, :, :8, :8], images[:, :, :8, -8:], images[:, :, -8:, -8:]]
    boxed = np.any([np.all(c == 0, axis=(1, 2, 3)) for c in corners], axis=0)
    assert 0.3 < boxed.mean() < 1
    black = np.all(images == 0, axis=1)
    assert not masks[black].any()


def test_polyps_have_weak_contrast_against_the_mucosa_around_them(frames):
    images, masks = frames
    from tinyseg.data.synthetic import _dilate
    ratios = []
    for image, mask in zip(images, masks):
        ring = _dilate(mask.astype(bool), 4) & ~mask.astype(bool) & (image.max(axis=0) > 0)
        inside = image[:, mask.astype(bool)].mean(axis=1)
        around = image[:, ring].mean(axis=1)
        ratios.append(np.abs(inside / around - 1).max())
    # weak: the strongest channel differs by well under a half on average, and by < 10 % in some frames
    assert np.median(ratios) < 0.35 and min(ratios) < 0.1


@pytest.mark.parametrize("kwargs", [{"n": 0}, {"size": 16}, {"seed": -1}, {"n": 2.5}])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        SyntheticPolyps(**kwargs)
