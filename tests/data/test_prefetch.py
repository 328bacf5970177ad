"""Prefetching (tinyseg/data/prefetch.py) and the DataLoader's background loading: same batches
whatever the timing, errors where they happen, the thread always stopped. No timing asserted."""
import threading
import time

import numpy as np
import pytest

from tinyseg.data import transforms as T
from tinyseg.data.loader import ArrayDataset, DataLoader
from tinyseg.data.prefetch import Prefetcher


def _dataset(n=10, size=12):
    rng = np.random.default_rng(0)
    return ArrayDataset(rng.standard_normal((n, 1, size, size)), rng.integers(0, 2, (n, size, size)))


class Jittery:
    """A random flip (the item's rng) after a random pause (its own rng): prefetching then meets
    different timings on every run."""

    def __init__(self):
        self.pauses = np.random.default_rng()
        self.threads = set()

    def __call__(self, image, mask, rng):
        self.threads.add(threading.current_thread().name)
        time.sleep(self.pauses.uniform(0, 0.003))
        if rng.random() < 0.5:
            image, mask = image[..., ::-1].copy(), mask[..., ::-1].copy()
        return image, mask


def _prefetch_threads():
    return [t for t in threading.enumerate() if t.name == "tinyseg-prefetch"]


def _epochs(loader, epochs=2):
    return [(images.copy(), masks.copy()) for _ in range(epochs) for images, masks in loader]


def test_batches_are_the_same_with_and_without_prefetching():
    plain = _epochs(DataLoader(_dataset(), 3, seed=4, transform=Jittery(), prefetch=0))
    jittery = Jittery()
    fetched = _epochs(DataLoader(_dataset(), 3, seed=4, transform=jittery, prefetch=2))
    assert len(plain) == len(fetched) == 8
    for (a, b), (c, d) in zip(plain, fetched):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)
    assert "tinyseg-prefetch" in jittery.threads          # the work did happen on the background thread
    assert not _prefetch_threads()


def test_resuming_mid_epoch_gives_the_same_batches():
    loader = DataLoader(_dataset(), 2, seed=1, transform=Jittery(), prefetch=3)
    iterator = iter(loader)
    next(iterator), next(iterator)
    state = loader.state_dict()
    rest = [b.copy() for b, _ in iterator]
    resumed = DataLoader(_dataset(), 2, seed=0, transform=Jittery(), prefetch=1)
    resumed.load_state_dict(state)
    again = [b for b, _ in resumed]
    assert len(rest) == len(again) == 3
    for a, b in zip(rest, again):
        np.testing.assert_array_equal(a, b)


def test_breaking_out_of_an_epoch_stops_the_thread():
    loader = DataLoader(_dataset(), 2, prefetch=2)
    for _ in loader:
        break
    assert not _prefetch_threads()
    assert loader.next_batch == 1                    # the position is the consumer's, not the thread's


def test_an_error_is_raised_at_the_batch_that_hits_it():
    class Failing:
        def __call__(self, image, mask, rng):
            if image.sum() == 0:
                raise ValueError("broken item")
            return image, mask

    images = np.ones((6, 1, 4, 4))
    images[4] = 0                                      # batch 2 of 3 (batch size 2, no shuffle)
    loader = DataLoader(ArrayDataset(images, np.zeros((6, 4, 4), int)), 2, shuffle=False, transform=Failing())
    received = 0
    with pytest.raises(ValueError, match="broken item"):
        for _ in loader:
            received += 1
    assert received == 2 and not _prefetch_threads()


def test_the_next_batch_is_prepared_while_the_caller_works():
    """Event-based, no timing: batch 1 is loaded while the caller still holds batch 0."""
    started = threading.Event()

    def load(key):
        if key == 1:
            started.set()
        return key

    with Prefetcher(load, range(3), depth=1) as fetched:
        assert next(fetched) == 0
        assert started.wait(timeout=30)
        assert list(fetched) == [1, 2]
    assert not fetched.alive


def test_prefetcher_close_while_the_queue_is_full_joins_the_thread():
    fetched = Prefetcher(lambda k: k, range(100), depth=1)
    assert next(fetched) == 0
    fetched.close()
    assert not fetched.alive
    with pytest.raises(StopIteration):
        next(fetched)


def test_bad_prefetch_arguments():
    with pytest.raises(ValueError, match="prefetch"):
        DataLoader(_dataset(), 2, prefetch=-1)
    with pytest.raises(ValueError, match="depth"):
        Prefetcher(lambda k: k, [1], depth=0)


def test_a_whole_epoch_with_a_transform_ends_without_threads():
    loader = DataLoader(_dataset(8, 16), 4, seed=2, transform=T.Compose([T.ZScore()]), prefetch=2)
    assert sum(len(images) for images, _ in loader) == 8
    assert not _prefetch_threads()
