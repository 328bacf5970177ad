"""Tests of tinyseg.data.synthetic.SyntheticPhantoms: determinism, shapes, anatomy, contrast, arguments."""

import numpy as np
import pytest

from tinyseg.data.synthetic import SyntheticPhantoms


def _components(mask):
    """4-connected components of a boolean mask, by flood fill: a list of boolean masks."""
    seen = np.zeros_like(mask, dtype=bool)
    components = []
    H, W = mask.shape
    for start in zip(*np.nonzero(mask)):
        if seen[start]:
            continue
        component = np.zeros_like(seen)
        stack = [start]
        seen[start] = True
        while stack:
            y, x = stack.pop()
            component[y, x] = True
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < H and 0 <= nx < W and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
        components.append(component)
    return components


def _dilate(mask, r):
    """Dilation by a (2r+1)² square, written independently of the module's."""
    padded = np.pad(mask, r)
    H, W = mask.shape
    out = np.zeros_like(mask)
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            out |= padded[dy:dy + H, dx:dx + W]
    return out


@pytest.fixture(scope="module")
def multiclass():
    return SyntheticPhantoms(n=24, size=128, mode="multiclass", seed=3, channels=2).arrays()


def test_same_seed_same_data_different_seed_different():
    a_images, a_masks = SyntheticPhantoms(n=4, size=64, seed=11).arrays()
    b_images, b_masks = SyntheticPhantoms(n=4, size=64, seed=11).arrays()
    np.testing.assert_array_equal(a_images, b_images)
    np.testing.assert_array_equal(a_masks, b_masks)
    c_images, c_masks = SyntheticPhantoms(n=4, size=64, seed=12).arrays()
    assert not np.array_equal(a_images, c_images)
    assert not np.array_equal(a_masks, c_masks)
    # different items of one dataset differ too
    assert not np.array_equal(a_masks[0], a_masks[1])


def test_order_independence():
    ds = SyntheticPhantoms(n=6, size=48, seed=5)
    backwards = [ds[i] for i in reversed(range(6))][::-1]
    images, masks = SyntheticPhantoms(n=6, size=48, seed=5).arrays()
    for i, (image, mask) in enumerate(backwards):
        np.testing.assert_array_equal(image, images[i])
        np.testing.assert_array_equal(mask, masks[i])
    np.testing.assert_array_equal(ds[-1][0], images[5])
    # an item does not depend on how many items the dataset has
    np.testing.assert_array_equal(SyntheticPhantoms(n=50, size=48, seed=5)[2][1], masks[2])
    with pytest.raises(IndexError):
        ds[6]
    with pytest.raises(IndexError):
        ds[-7]


@pytest.mark.parametrize("mode,channels", [("binary", 1), ("multiclass", 1), ("binary", 3)])
def test_shapes_dtypes_and_values(mode, channels):
    ds = SyntheticPhantoms(n=3, size=40, mode=mode, channels=channels)
    assert len(ds) == 3
    assert ds.num_classes == (2 if mode == "binary" else 3)
    image, mask = ds[0]
    assert image.shape == (channels, 40, 40) and image.dtype == np.float32
    assert mask.shape == (40, 40) and mask.dtype == np.uint8
    images, masks = ds.arrays()
    assert images.shape == (3, channels, 40, 40) and images.dtype == np.float32
    assert masks.shape == (3, 40, 40) and masks.dtype == np.uint8
    assert images.min() >= 0.0 and images.max() <= 1.0
    for m in masks:
        assert set(np.unique(m)) == set(range(ds.num_classes))  # every class present in every image


def test_modes_and_channels_share_anatomy():
    binary_images, binary_masks = SyntheticPhantoms(n=3, size=64, mode="binary", seed=2).arrays()
    multi_images, multi_masks = SyntheticPhantoms(n=3, size=64, mode="multiclass", seed=2, channels=2).arrays()
    np.testing.assert_array_equal(binary_masks, (multi_masks == 2).astype(np.uint8))
    # channel 0 does not depend on how many channels are asked for
    np.testing.assert_array_equal(binary_images[:, 0], multi_images[:, 0])
    assert not np.allclose(multi_images[:, 0], multi_images[:, 1])


def test_lesions_lie_inside_the_organ(multiclass):
    _, masks = multiclass
    for m in masks:
        lesion = m == 2
        # a lesion with its 8-neighbours touches no background: the organ surrounds it
        assert not np.any(_dilate(lesion, 1) & (m == 0))


def test_one_to_three_lesions(multiclass):
    _, masks = multiclass
    counts = [len(_components(m == 2)) for m in masks]
    assert all(1 <= c <= 3 for c in counts), counts
    assert {1, 2, 3} <= set(counts)  # the dataset shows all three


def test_lesion_sizes(multiclass):
    _, masks = multiclass
    for m in masks:
        for component in _components(m == 2):
            equivalent_radius = np.sqrt(component.sum() / np.pi) / m.shape[0]
            assert 0.03 <= equivalent_radius <= 0.16


def test_lesions_differ_in_intensity_from_surrounding_organ(multiclass):
    images, masks = multiclass
    for image, m in zip(images, masks):
        for component in _components(m == 2):
            # the organ in a band 3-6 px away, clear of the blurred edge
            ring = _dilate(component, 6) & ~_dilate(component, 2) & (m == 1)
            for channel in image:
                # lesion contrast is 25-60 % of the organ's level; blur, bias, texture and the
                # organ's own edge (inside the band) eat some of it
                organ_level = channel[ring].mean()
                assert abs(channel[component].mean() - organ_level) > 0.1 * organ_level


def test_foreground_fractions(multiclass):
    _, masks = multiclass
    lesion = (masks == 2).mean(axis=(1, 2))
    organ = (masks >= 1).mean(axis=(1, 2))
    assert np.all((lesion > 0.003) & (lesion < 0.15)), lesion
    assert np.all((organ > 0.08) & (organ < 0.4)), organ
    assert np.all(lesion < organ)


def test_arrays_stacks_every_item():
    images, masks = SyntheticPhantoms(n=6, size=64).arrays()
    assert images.shape == (6, 1, 64, 64) and masks.shape == (6, 64, 64)


@pytest.mark.parametrize("kwargs,match", [
    ({"mode": "foo"}, r"mode must be 'binary' or 'multiclass', got 'foo'"),
    ({"size": 8}, r"size must be an integer >= 16, got 8"),
    ({"size": 32.0}, r"size must be an integer >= 16, got 32.0"),
    ({"n": 0}, r"n must be an integer >= 1, got 0"),
    ({"channels": 0}, r"channels must be an integer >= 1, got 0"),
    ({"seed": -1}, r"seed must be an integer >= 0, got -1"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SyntheticPhantoms(**kwargs)


def test_smallest_size_still_has_a_lesion_in_the_organ():
    _, masks = SyntheticPhantoms(n=8, size=16, mode="multiclass").arrays()
    for m in masks:
        assert np.any(m == 2) and np.any(m == 1)
