"""Batching, seeding, resuming and splitting (tinyseg.data.loader)."""
import numpy as np
import pytest

from tinyseg.data import ArrayDataset, DataError, DataLoader, Subset, split
from tinyseg.data import transforms as T


def numbered_dataset(n=10, size=8):
    """Item i: image filled with i, mask with a block whose corner depends on i."""
    images = np.arange(n, dtype=np.float32)[:, None, None, None] * np.ones((1, 1, size, size), np.float32)
    masks = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        masks[i, i % size:, :2] = 1
    return ArrayDataset(images, masks)


def item_ids(batches):
    """The item numbers in a list of batches, read back from the images."""
    return [int(v) for images, _ in batches for v in images[:, 0, 0, 0]]


def test_batches_have_the_promised_shapes_and_dtypes():
    loader = DataLoader(numbered_dataset(10), batch_size=4, shuffle=False)
    batches = list(loader)
    assert len(loader) == 3 and [b[0].shape[0] for b in batches] == [4, 4, 2]
    images, masks = batches[0]
    assert images.shape == (4, 1, 8, 8) and images.dtype == np.float32
    assert masks.shape == (4, 8, 8) and masks.dtype == np.int64
    assert item_ids(batches) == list(range(10))
    assert len(DataLoader(numbered_dataset(10), batch_size=4, drop_last=True)) == 2


def test_every_item_once_per_epoch_and_epochs_differ():
    loader = DataLoader(numbered_dataset(10), batch_size=3, seed=7)
    first, second = item_ids(list(loader)), item_ids(list(loader))
    assert sorted(first) == list(range(10)) and sorted(second) == list(range(10))
    assert first != second and loader.epoch == 2


def test_order_depends_only_on_seed_and_epoch():
    def orders(seed):
        loader = DataLoader(numbered_dataset(12), batch_size=5, seed=seed)
        return [item_ids(list(loader)) for _ in range(3)]

    assert orders(3) == orders(3)
    assert orders(3) != orders(4)
    loader = DataLoader(numbered_dataset(12), batch_size=5, seed=3)
    loader.set_epoch(2)
    assert item_ids(list(loader)) == orders(3)[2]


def test_state_dict_resumes_with_the_same_batches():
    augment = T.Compose([T.RandomFlip(), T.GaussianNoise(0.1)])
    reference = DataLoader(numbered_dataset(10), batch_size=3, seed=5, transform=augment)
    uninterrupted = [batch for _ in range(3) for batch in reference]

    interrupted = DataLoader(numbered_dataset(10), batch_size=3, seed=5, transform=augment)
    seen = list(interrupted)                   # epoch 0
    iterator = iter(interrupted)
    seen += [next(iterator), next(iterator)]   # two batches into epoch 1, then "crash"
    state = interrupted.state_dict()
    assert state == {"seed": 5, "epoch": 1, "next_batch": 2}
    assert all(isinstance(v, int) for v in state.values())

    resumed = DataLoader(numbered_dataset(10), batch_size=3, seed=0, transform=augment)
    resumed.load_state_dict(state)
    seen += list(resumed) + list(resumed)      # the rest of epoch 1, then epoch 2
    assert len(seen) == len(uninterrupted)
    for (images, masks), (images_ref, masks_ref) in zip(seen, uninterrupted):
        np.testing.assert_array_equal(images, images_ref)
        np.testing.assert_array_equal(masks, masks_ref)


def test_state_after_the_last_batch_points_to_the_next_epoch():
    loader = DataLoader(numbered_dataset(4), batch_size=2)
    for _ in loader:
        pass
    assert loader.state_dict() == {"seed": 0, "epoch": 1, "next_batch": 0}


def test_augmentation_of_an_item_does_not_depend_on_batching():
    augment = T.Compose([T.RandomFlip(), T.GaussianNoise(0.1)])
    dataset = numbered_dataset(9)

    def augmented_items(batch_size, shuffle):
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, seed=1, transform=augment)
        images = np.concatenate([batch[0] for batch in loader])
        order = loader.order(0)
        return images[np.argsort(order)]            # back in dataset order

    np.testing.assert_array_equal(augmented_items(2, True), augmented_items(4, True))
    np.testing.assert_array_equal(augmented_items(3, True), augmented_items(3, False))


def test_items_of_different_sizes_give_a_clear_error():
    images = [np.zeros((1, 8, 8), np.float32), np.zeros((1, 8, 10), np.float32)]
    masks = [np.zeros((8, 8), np.int64), np.zeros((8, 10), np.int64)]
    loader = DataLoader(ArrayDataset(images, masks), batch_size=2, shuffle=False)
    with pytest.raises(DataError, match=r"different sizes.*1x8x10.*--image-size.*random_crop"):
        next(iter(loader))
    cropped = DataLoader(ArrayDataset(images, masks), batch_size=2,
                         transform=T.RandomCrop(8), shuffle=False)
    assert next(iter(cropped))[0].shape == (2, 1, 8, 8)


def test_split_random_and_contiguous():
    dataset = numbered_dataset(10)
    train, val = split(dataset, 0.3, seed=2)
    assert len(train) == 7 and len(val) == 3
    assert sorted(train.indices + val.indices) == list(range(10))
    again_train, again_val = split(dataset, 0.3, seed=2)
    assert again_val.indices == val.indices
    train, val = split(dataset, 0.2, mode="contiguous")
    assert train.indices == list(range(8)) and val.indices == [8, 9]
    assert int(val[0][0][0, 0, 0]) == 8
    with pytest.raises(ValueError, match="val_fraction"):
        split(dataset, 1.5)


def test_array_dataset_and_subset():
    images = np.random.default_rng(0).random((4, 6, 6), dtype=np.float32)   # no channel axis
    masks = (images > 0.5).astype(np.uint8) * 2
    dataset = ArrayDataset(images, masks)
    image, mask = dataset[1]
    assert image.shape == (1, 6, 6) and mask.dtype == np.int64 and dataset.num_classes == 3
    subset = Subset(dataset, [3, 1])
    assert len(subset) == 2 and subset.num_classes == 3 and subset.ids is None
    np.testing.assert_array_equal(subset[0][0], dataset[3][0])
    with pytest.raises(ValueError, match="4 images but 3 masks"):
        ArrayDataset(images, masks[:3])
