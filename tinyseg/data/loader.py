"""Batching: a seeded, resumable DataLoader, dataset splits, and an in-memory dataset.

A dataset is anything with ``len(ds)`` and ``ds[i] -> (image (C, H, W), mask (H, W))``:
``FolderDataset``, ``SyntheticPhantoms``, ``ArrayDataset``, ``Subset``.

Reproducibility: the order of epoch e is a permutation drawn from (seed, e), and item i
of epoch e is augmented with a generator drawn from (seed, e, i). So a run's batches
depend only on the seed, never on how many batches were drawn before or in what order
items are visited, and ``state_dict()`` (three ints) is all a checkpoint needs to resume
in the middle of an epoch with the same batches.
"""
from __future__ import annotations

import functools

import numpy as np

from .io import DataError
from .prefetch import Prefetcher

# Tags keep the shuffling and augmentation streams apart for the same (seed, epoch).
_ORDER_STREAM, _AUGMENT_STREAM = 0, 1


class ArrayDataset:
    """Items from in-memory arrays.

    images: (N, C, H, W) or (N, H, W) (one channel), or a list of (C, H, W) / (H, W) arrays
            of any sizes; masks: (N, H, W) or a list of (H, W) integer arrays.
    ds[i] -> (float32 (C, H, W), int64 (H, W)). ``num_classes`` defaults to max(mask) + 1 (at least 2).
    ``case_ids``: optional, per item, the case (e.g. volume) it belongs to; ``split`` keeps cases whole.
    """

    def __init__(self, images, masks, num_classes: int | None = None, case_ids=None):
        if len(images) != len(masks):
            raise ValueError(f"got {len(images)} images but {len(masks)} masks")
        if case_ids is not None and len(case_ids) != len(images):
            raise ValueError(f"got {len(images)} images but {len(case_ids)} case_ids; expected one case id per image")
        self.case_ids = None if case_ids is None else list(case_ids)
        self.images = [np.asarray(image, dtype=np.float32) for image in images]
        self.images = [image[None] if image.ndim == 2 else image for image in self.images]
        self.masks = [np.asarray(mask) for mask in masks]
        for i, (image, mask) in enumerate(zip(self.images, self.masks)):
            if image.ndim != 3 or mask.shape != image.shape[1:]:
                raise ValueError(f"item {i}: image {image.shape} and mask {mask.shape}; "
                                 "expected (C, H, W) and (H, W)")
            if not np.issubdtype(mask.dtype, np.integer) and not np.issubdtype(mask.dtype, np.bool_):
                raise ValueError(f"item {i}: masks must hold integer class indices, got dtype {mask.dtype}")
        largest = max((int(mask.max()) for mask in self.masks if mask.size), default=1)
        self.num_classes = num_classes if num_classes is not None else max(largest + 1, 2)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.images[index].copy(), self.masks[index].astype(np.int64)


class Subset:
    """The items ``indices`` of ``dataset``, in that order; forwards num_classes, ids, spacing and
    the per-item case_ids, patient_ids and slice_indices (None where the dataset has none)."""

    def __init__(self, dataset, indices):
        self.dataset = dataset
        self.indices = [int(i) for i in indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        return self.dataset[self.indices[index]]

    @property
    def num_classes(self):
        return getattr(self.dataset, "num_classes", None)

    @property
    def ids(self):
        ids = getattr(self.dataset, "ids", None)
        return None if ids is None else [ids[i] for i in self.indices]

    def spacing(self, index: int):
        spacing = getattr(self.dataset, "spacing", None)
        return None if spacing is None else spacing(self.indices[index])

    def _per_item(self, name: str):
        values = getattr(self.dataset, name, None)
        return None if values is None else [values[i] for i in self.indices]

    @property
    def case_ids(self):
        return self._per_item("case_ids")

    @property
    def patient_ids(self):
        return self._per_item("patient_ids")

    @property
    def slice_indices(self):
        return self._per_item("slice_indices")

    def volume_spacing(self, index: int):
        spacing = getattr(self.dataset, "volume_spacing", None)
        return None if spacing is None else spacing(self.indices[index])


def case_groups(dataset) -> list:
    """Per item, the case it belongs to: the patient id where the dataset knows one
    (``patient_ids``), else the case (``case_ids``: the volume or file the item comes
    from), else the item itself (each image its own case, e.g. synthetic phantoms)."""
    for name in ("patient_ids", "case_ids"):
        groups = getattr(dataset, name, None)
        if groups is not None:
            return list(groups)
    return list(range(len(dataset)))


def split(dataset, val_fraction: float, seed: int = 0, mode: str = "random", by: str = "case"):
    """(train Subset, validation Subset), holding out round(cases · val_fraction) cases (at least 1).

    by="case" (default): whole cases go to one side, never both, as in nnU-Net. A case is
                 the patient where the dataset names one (``patient_ids``), else the volume
                 or file an item comes from (``case_ids``), else the item itself (see
                 ``case_groups``): all slices of a volume, or all volumes of a patient, stay
                 together. A folder of 2-D images splits image by image, as before.
    by="item":   items are split one by one, ignoring cases (slices of one volume can then
                 sit on both sides; validation scores are optimistic). Only for data with a
                 single case, and only knowingly.
    mode="random":     a seeded random choice of validation cases.
    mode="contiguous": the last cases in dataset order. Use it for consecutive 2-D slices
                       stored as separate images (e.g. ISBI 2012): neighbouring slices are
                       nearly alike, so a random split would let validation see near-copies.
    Indices in each subset keep the dataset's order.
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must lie strictly between 0 and 1, got {val_fraction}")
    if mode not in ("random", "contiguous"):
        raise ValueError(f"mode must be 'random' or 'contiguous', got {mode!r}")
    if by not in ("case", "item"):
        raise ValueError(f"by must be 'case' or 'item', got {by!r}")
    n = len(dataset)
    if n < 2:
        raise ValueError(f"cannot split a dataset of {n} item(s) into training and validation")
    groups = case_groups(dataset) if by == "case" else list(range(n))
    cases = list(dict.fromkeys(groups))          # in dataset order
    if len(cases) < 2:
        raise ValueError(f"cannot split by case: all {n} items belong to one case ({cases[0]!r}); expected at "
                         "least 2 cases. Give a separate validation set (--val-data), or split the slices of "
                         "this one case with by='item' (--split-by item), knowing that neighbouring slices "
                         "are nearly alike")
    n_val = min(max(int(round(len(cases) * val_fraction)), 1), len(cases) - 1)
    if mode == "contiguous":
        val_cases = set(cases[len(cases) - n_val:])
    else:
        val_cases = {cases[i] for i in np.random.default_rng(seed).permutation(len(cases))[:n_val]}
    val = [i for i, group in enumerate(groups) if group in val_cases]
    train = [i for i, group in enumerate(groups) if group not in val_cases]
    return Subset(dataset, train), Subset(dataset, val)


class DataLoader:
    """Batches of (images float32 (B, C, H, W), masks int64 (B, H, W)) as numpy arrays.

    shuffle:   a new order each epoch, drawn from (seed, epoch); otherwise dataset order.
    transform: ``t(image, mask, rng) -> (image, mask)``, e.g. a ``transforms.Compose``;
               item i of epoch e gets ``rng = default_rng((seed, e, i))``.
    drop_last: drop the last, smaller batch.
    oversample_foreground: the fraction of each batch whose crops are forced to hold
               foreground, as nnU-Net (1/3): in a batch of B items, positions
               j >= round(B · (1 - fraction)) are loaded with ``force_foreground=True``, which
               the transform's ``RandomCrop`` turns into a crop centred on a random foreground
               pixel. Needs a ``transforms.Transform`` that crops; 0 (default) forces nothing.
    prefetch:  batches read and augmented ahead on a background thread while the caller
               computes (default 2; 0: load each batch when asked). The batches are the same
               either way: each is a function of (seed, epoch, position) only. The thread stops
               when iteration ends or the iterator is closed or dropped (``prefetch.py``);
               the transform must not launch Numba-parallel kernels (tinyseg's are NumPy).

    Iterating runs through the rest of the current epoch and then moves to the next, so
    ``for epoch in ...: for images, masks in loader: ...`` sees a new order each epoch.
    ``set_epoch(e)`` jumps to the start of epoch e; ``state_dict()`` /
    ``load_state_dict()`` save and restore the position (seed, epoch, next batch).
    """

    def __init__(self, dataset, batch_size: int, shuffle: bool = True, seed: int = 0, transform=None,
                 drop_last: bool = False, oversample_foreground: float = 0.0, prefetch: int = 2):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if len(dataset) == 0:
            raise ValueError("cannot load batches from an empty dataset")
        if drop_last and len(dataset) < batch_size:
            raise ValueError(f"drop_last with batch_size {batch_size} > {len(dataset)} items leaves no batch")
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.transform = transform
        self.drop_last = drop_last
        if not 0 <= oversample_foreground <= 1:
            raise ValueError(f"oversample_foreground must be a fraction in [0, 1], got {oversample_foreground}")
        if oversample_foreground > 0 and not getattr(transform, "crops", False):
            raise ValueError("oversample_foreground needs a transform that crops (a transforms.RandomCrop, "
                             f"alone or in a Compose), got {transform!r}")
        self.oversample_foreground = float(oversample_foreground)
        if prefetch < 0:
            raise ValueError(f"prefetch must be 0 (off) or a number of batches, got {prefetch}")
        self.prefetch = int(prefetch)
        self.epoch = 0
        self.next_batch = 0

    def __len__(self) -> int:
        """Batches per epoch."""
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch`` from its first batch on the next iteration."""
        self.epoch, self.next_batch = int(epoch), 0

    def state_dict(self) -> dict:
        return {"seed": int(self.seed), "epoch": int(self.epoch), "next_batch": int(self.next_batch)}

    def load_state_dict(self, state: dict) -> None:
        self.seed, self.epoch, self.next_batch = int(state["seed"]), int(state["epoch"]), int(state["next_batch"])

    def order(self, epoch: int) -> np.ndarray:
        """Dataset indices in the order epoch ``epoch`` visits them."""
        n = len(self.dataset)
        if not self.shuffle:
            return np.arange(n)
        return np.random.default_rng((self.seed, epoch, _ORDER_STREAM)).permutation(n)

    def load_item(self, index: int, epoch: int, force_foreground: bool = False):
        """Item ``index`` of the dataset as epoch ``epoch`` sees it (augmented when there is a
        transform; with ``force_foreground``, cropped around foreground)."""
        image, mask = self.dataset[index]
        if self.transform is not None:
            rng = np.random.default_rng((self.seed, epoch, _AUGMENT_STREAM, int(index)))
            if force_foreground:
                image, mask = self.transform(image, mask, rng, force_foreground=True)
            else:
                image, mask = self.transform(image, mask, rng)
        return image, mask

    def forced(self, batch_length: int) -> list[bool]:
        """Per position in a batch of ``batch_length`` items: is its crop forced to hold foreground?
        Positions j >= round(B · (1 - fraction)), as nnU-Net's "oversample the last 33 %"
        (B = 8: the last 3; B = 4: the last 1; B = 2: the last 1)."""
        first = int(round(batch_length * (1 - self.oversample_foreground)))
        return [self.oversample_foreground > 0 and j >= first for j in range(batch_length)]

    def load_batch(self, b: int, epoch: int, order) -> tuple:
        """Batch ``b`` of epoch ``epoch`` (visiting ``order``): a function of those alone."""
        indices = order[b * self.batch_size:(b + 1) * self.batch_size]
        items = [self.load_item(int(i), epoch, force) for i, force in zip(indices, self.forced(len(indices)))]
        return self._collate(items, indices)

    def __iter__(self):
        epoch, order = self.epoch, self.order(self.epoch)
        num_batches = len(self)
        positions = range(self.next_batch, num_batches)
        load = functools.partial(self.load_batch, epoch=epoch, order=order)
        batches = Prefetcher(load, positions, self.prefetch) if self.prefetch and len(positions) > 1 else map(
            load, positions)
        try:
            for b, batch in zip(positions, batches):
                # Advance before yielding, so a state_dict taken after receiving this batch
                # resumes with the next one (or the next epoch after the last batch).
                if b + 1 == num_batches:
                    self.epoch, self.next_batch = epoch + 1, 0
                else:
                    self.next_batch = b + 1
                yield batch
        finally:
            if isinstance(batches, Prefetcher):
                batches.close()

    def _collate(self, items, indices):
        shapes = [image.shape for image, _ in items]
        if len(set(shapes)) > 1:
            ids = getattr(self.dataset, "ids", None)
            names = [ids[i] if ids is not None else f"item {i}" for i in indices]
            listing = ", ".join(f"{name}: {'x'.join(map(str, shape))}" for name, shape in zip(names, shapes))
            raise DataError(f"items of different sizes in one batch ({listing}); bring them to one size "
                            "with --image-size (resize) or a random_crop / RandomCrop transform, "
                            "or use batch_size=1")
        images = np.stack([image for image, _ in items]).astype(np.float32, copy=False)
        masks = np.stack([mask for _, mask in items]).astype(np.int64, copy=False)
        return images, masks
