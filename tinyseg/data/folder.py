"""Segmentation datasets stored as image files in a folder, and a checker for such folders.

Two layouts are recognised:

    A   ROOT/images/<id>.<ext>  with  ROOT/masks/<id>.<ext>
        (ids matched by file name without extension; ``.nii.gz`` is one extension)
    B   nnU-Net / Medical Segmentation Decathlon:
        ROOT/imagesTr/<case>_0000.<ext> (more modalities as _0001, ... -> channels),
        or ROOT/imagesTr/<case>.<ext> (MSD: modalities in the file),
        with ROOT/labelsTr/<case>.<ext> and optionally ROOT/dataset.json
        ("labels" -> class names and count, "channel_names" / "modality" -> channel names)

Volumes (NIfTI, DICOM multi-frame, multi-page TIFF) become one item per slice. Every
pair is read once when the dataset is built, to validate it and to work out what the
mask values mean (the "mask encoding"):

    values {0, 1}            -> binary, 1 = foreground
    values {0, 255}          -> binary, 255 = foreground (class 1). Feeding 0/255 masks as
                                class indices is the most common crash in U-Net code.
                                16-bit masks holding 0/65535 are read as 0/255.
    values {0, ..., K-1}     -> class indices (K <= 32, or given by num_classes or
                                dataset.json); palette PNGs are read as their indices
    ``foreground=V``         -> binary task, foreground = pixels equal to V, everything else
                                background. E.g. the ISBI 2012 EM masks mark membrane with 0
                                (black) and cell interior with 255: ``foreground=0``.
    anything else (e.g. the many grey levels of a JPEG-compressed mask) -> DataError.

Masks come out as class maps (H, W): uint8 (int64 beyond 256 classes), 0 = background.
Images come out as float32 (C, H, W) with intensities as stored: normalise them in the
transform (``tinyseg.data.transforms.zscore``).
"""
from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .io import (IMAGE_EXTENSIONS, LUMA_WEIGHTS, DataError, ImageInfo, read_image, read_mask,
                 split_extension)

# Without num_classes, masks with values 0..31 are taken as class indices; larger values
# (other than the binary 255) are far more often grey levels than real class numbers.
MAX_AUTO_CLASSES = 32

# Datasets whose pixels fit in this many bytes stay in memory after the first read.
_CACHE_LIMIT_BYTES = 1 << 30

LAYOUT_FOLDERS = "images/ + masks/"
LAYOUT_NNUNET = "nnU-Net / MSD (imagesTr/ + labelsTr/)"

_EXPECTED_LAYOUTS = ("expected ROOT/images/<id>.<ext> with ROOT/masks/<id>.<ext>, or an nnU-Net / "
                     "Medical Segmentation Decathlon folder with imagesTr/<case>_0000.<ext>, "
                     f"labelsTr/<case>.<ext> (and dataset.json); <ext> one of {', '.join(IMAGE_EXTENSIONS)}")


def _natural_key(text: str):
    """Sort key that puts 'case_2' before 'case_10'."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _format_values(values, limit: int = 12) -> str:
    """'0, 1, 2' or, for many values, the first and last few: '0, 1, 2, 3, 4, 5, ..., 253, 254, 255'."""
    values = [int(v) for v in values]
    if len(values) > limit:
        half = limit // 2
        return ", ".join(map(str, values[:half])) + ", ..., " + ", ".join(map(str, values[-3:]))
    return ", ".join(map(str, values))


class _Problems:
    """Where problems go, by mode:

    "raise"   (default dataset)      any problem raises DataError;
    "warn"    (skip_bad=True)        a bad item is skipped with warnings.warn;
    "collect" (check_data)           problems are only recorded, to be listed in the report.

    ``fatal`` problems (nothing sensible can be built) raise unless collecting; ``note``s
    (e.g. ignored files) never raise.
    """

    def __init__(self, mode: str):
        self.mode = mode
        self.messages: list[str] = []
        self.skipped = 0

    def skip(self, message: str) -> None:
        if self.mode == "raise":
            raise DataError(message)
        self.skipped += 1
        self.messages.append(f"{message} (skipped)")
        if self.mode == "warn":
            warnings.warn(f"{message} (skipped)", stacklevel=4)

    def fatal(self, message: str) -> None:
        if self.mode != "collect":
            raise DataError(message)
        self.messages.append(message)

    def note(self, message: str) -> None:
        self.messages.append(message)


@dataclass
class _Pair:
    """One image/mask file pair (a volume counts as one pair) and what the scan learned about it."""
    case: str
    image_paths: list[Path]
    mask_path: Path
    num_slices: int | None = None       # None for a 2-D pair
    channels: int = 0
    size: tuple[int, int] = (0, 0)      # (H, W)
    spacing: tuple[float, float] | None = None
    slice_spacing: float | None = None              # distance between slices (mm), volumes only
    voxel_spacing: tuple[float, ...] | None = None  # NIfTI: voxel size along the file's axes (i, j, k)
    orientation: str | None = None                  # NIfTI: axis codes of the affine, e.g. "RAS"
    image_source: str = ""
    image_dtype: str = ""
    mask_dtype: str = ""
    palette: bool = False
    image_encoding: str = ""            # ImageInfo.encoding: what the file holds, what the reader did
    mask_encoding: str = ""
    grey_from_colour: bool = False      # the image is grey stored as RGB, read as one channel
    values: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))   # distinct raw mask values
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))   # pixels per value
    foreground_fractions: np.ndarray = field(default_factory=lambda: np.zeros(0))   # per slice


class MaskEncoding:
    """How raw mask values map to classes; ``description`` is the one line shown to the user."""

    def __init__(self, kind: str, num_classes: int, description: str, foreground=None):
        self.kind = kind                # "foreground", "binary255" or "indices"
        self.num_classes = num_classes
        self.description = description
        self.foreground = foreground

    def apply(self, raw: np.ndarray) -> np.ndarray:
        """Raw mask values (any shape) -> class map of the same shape."""
        if self.kind == "foreground":
            return (raw == self.foreground).astype(np.uint8)
        if self.kind == "binary255":
            return (raw == 255).astype(np.uint8)
        return raw.astype(np.uint8 if self.num_classes <= 256 else np.int64)

    def __repr__(self) -> str:
        return f"MaskEncoding({self.description!r})"


def _index_folder(folder: Path, problems: _Problems) -> dict[str, Path]:
    """id -> path of the image files in ``folder``; other files are noted and ignored."""
    files: dict[str, Path] = {}
    ambiguous: set[str] = set()
    ignored = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file():   # hidden files, e.g. macOS '._x.nii.gz'
            continue
        stem, extension = split_extension(path)
        if extension not in IMAGE_EXTENSIONS:
            ignored.append(path.name)
        elif stem in files:
            problems.skip(f"{files[stem]} and {path}: two files with the id {stem!r}; keep only one")
            ambiguous.add(stem)
        else:
            files[stem] = path
    if ignored:
        problems.note(f"ignored {len(ignored)} file(s) of unknown type in {folder}: {', '.join(ignored[:5])}"
                      + (", ..." if len(ignored) > 5 else ""))
    return {stem: path for stem, path in files.items() if stem not in ambiguous}


def _read_dataset_json(path: Path, problems: _Problems):
    """(class names or None, channel names or None) from an nnU-Net v1/v2 or MSD dataset.json."""
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        problems.fatal(f"{path}: cannot read it as JSON ({exc})")
        return None, None
    class_names = None
    labels = meta.get("labels")
    if isinstance(labels, dict) and labels:
        if all(str(key).isdigit() for key in labels):       # MSD / nnU-Net v1: {"0": "background", ...}
            by_index = {int(key): str(name) for key, name in labels.items()}
        else:                                                # nnU-Net v2: {"background": 0, ...}
            by_index = {value: str(name) for name, value in labels.items() if isinstance(value, int)}
            if len(by_index) < len(labels):
                problems.note(f"{path}: region labels (lists of values) are not supported; "
                              "using the labels with a single value")
        if by_index:
            class_names = [by_index.get(i, f"class {i}") for i in range(max(by_index) + 1)]
    channel_names = None
    channels = meta.get("channel_names", meta.get("modality"))
    if isinstance(channels, dict) and channels and all(str(key).isdigit() for key in channels):
        channel_names = [str(channels[key]) for key in sorted(channels, key=int)]
    return class_names, channel_names


def _patients(root: Path, cases: list[str], patient_regex) -> dict[str, str]:
    """case -> patient id: from ``patient_regex``, else from ROOT/dataset.json's "patients"
    ({"<patient>": ["<case>", ...]}), else each case is its own patient."""
    if patient_regex is not None:
        try:
            pattern = re.compile(patient_regex)
        except re.error as exc:
            raise DataError(f"patient_regex '{patient_regex}' is not a valid regular expression ({exc})") from exc
        patients = {}
        for case in cases:
            found = pattern.search(case)
            if found is None:
                raise DataError(f"case {case!r} (under {root}) does not match patient_regex '{patient_regex}'; "
                                "expected every case name to contain its patient id, e.g. r'(patient\\d+)'")
            patients[case] = found.group(1) if pattern.groups else found.group(0)
        return patients
    patients = {case: case for case in cases}
    path = root / "dataset.json"
    if not path.is_file():
        return patients
    try:
        listed = json.loads(path.read_text()).get("patients")
    except (OSError, ValueError, AttributeError):
        return patients             # an unreadable dataset.json is reported by the scan
    if listed is None:
        return patients
    if not isinstance(listed, dict) or not all(isinstance(v, list) for v in listed.values()):
        raise DataError(f"{path}: \"patients\" must map each patient id to a list of its case names, "
                        f"e.g. {{\"p01\": [\"case_001\", \"case_002\"]}}; got {str(listed)[:80]}")
    for patient, patient_cases in listed.items():
        for case in patient_cases:
            if str(case) in patients:
                patients[str(case)] = str(patient)
    return patients


class _FolderScan:
    """Finds the pairs under ``root``, reads each once, checks it and decides the mask encoding."""

    def __init__(self, root, foreground, num_classes, channels, mode: str, cache: bool):
        self.root = Path(root)
        self.foreground = foreground
        self.requested_classes = num_classes
        self.channels = channels
        self.problems = _Problems(mode)
        self.class_names: list[str] | None = None
        self.channel_names: list[str] | None = None
        self.cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._cache_enabled = cache
        self._cached_bytes = 0
        self.encoding: MaskEncoding | None = None
        self.layout, candidates = self._discover()
        self.found_pairs = len(candidates)
        self.pairs: list[_Pair] = []
        for pair in candidates:
            try:
                self._scan(pair)
            except DataError as exc:
                self.problems.skip(str(exc))
                continue
            self.pairs.append(pair)
        self._check_channels()
        if self.pairs:
            self._decide_encoding()
        else:
            self.problems.fatal(f"no usable image/mask pairs under {self.root} "
                                f"({self.found_pairs} found, all skipped)")

    # --- finding the pairs ---

    def _discover(self) -> tuple[str, list[_Pair]]:
        if not self.root.is_dir():
            raise DataError(f"{self.root}: no such folder; {_EXPECTED_LAYOUTS}")
        if (self.root / "imagesTr").is_dir():
            layout, pairs = LAYOUT_NNUNET, self._discover_nnunet()
        elif (self.root / "images").is_dir():
            layout, pairs = LAYOUT_FOLDERS, self._discover_folders()
        else:
            raise DataError(f"{self.root}: no images/ or imagesTr/ folder; {_EXPECTED_LAYOUTS}")
        if not pairs and not self.problems.skipped:
            raise DataError(f"{self.root}: found no image files ({layout}); {_EXPECTED_LAYOUTS}")
        return layout, sorted(pairs, key=lambda pair: _natural_key(pair.case))

    def _discover_folders(self) -> list[_Pair]:
        masks_dir = self.root / "masks"
        if not masks_dir.is_dir():
            raise DataError(f"{self.root}: found images/ but no masks/ folder; {_EXPECTED_LAYOUTS}")
        images = _index_folder(self.root / "images", self.problems)
        masks = _index_folder(masks_dir, self.problems)
        pairs = []
        for case, path in images.items():
            if case in masks:
                pairs.append(_Pair(case, [path], masks[case]))
            else:
                self.problems.skip(f"{path}: no mask {masks_dir}/{case}.<ext> for this image")
        for case in sorted(set(masks) - set(images)):
            self.problems.skip(f"{masks[case]}: no image {self.root / 'images'}/{case}.<ext> for this mask")
        return pairs

    def _discover_nnunet(self) -> list[_Pair]:
        images_dir, labels_dir = self.root / "imagesTr", self.root / "labelsTr"
        if not labels_dir.is_dir():
            raise DataError(f"{self.root}: found imagesTr/ but no labelsTr/ folder; {_EXPECTED_LAYOUTS}")
        if (self.root / "dataset.json").is_file():
            self.class_names, self.channel_names = _read_dataset_json(self.root / "dataset.json", self.problems)
        labels = _index_folder(labels_dir, self.problems)
        modalities: dict[str, dict[int, Path]] = {}
        for stem, path in _index_folder(images_dir, self.problems).items():
            numbered = re.fullmatch(r"(.+)_(\d{4})", stem)
            if stem in labels:                              # MSD: one file holds every modality
                modalities.setdefault(stem, {})[0] = path
            elif numbered and numbered.group(1) in labels:  # nnU-Net: <case>_<modality>
                modalities.setdefault(numbered.group(1), {})[int(numbered.group(2))] = path
            else:
                self.problems.skip(f"{path}: no label {labels_dir}/{numbered.group(1) if numbered else stem}"
                                   ".<ext> for this image")
        pairs = []
        for case, files in modalities.items():
            if sorted(files) != list(range(len(files))):
                self.problems.skip(f"{labels[case]}: case {case!r} has modality files "
                                   f"{', '.join(f'_{i:04d}' for i in sorted(files))}; expected _0000, _0001, ...")
                continue
            pairs.append(_Pair(case, [files[i] for i in sorted(files)], labels[case]))
        for case in sorted(set(labels) - set(modalities)):
            self.problems.skip(f"{labels[case]}: no image {images_dir}/{case}_0000.<ext> for this label")
        return pairs

    # --- reading and checking one pair ---

    def read_image(self, pair: _Pair) -> tuple[np.ndarray, ImageInfo]:
        """The pair's image as (S, C, H, W) float32 (S = 1 for 2-D), modalities stacked as channels."""
        parts, infos = [], []
        for path in pair.image_paths:
            image, info = read_image(path)
            parts.append(image if info.num_slices is not None else image[None])
            infos.append(info)
        for path, part in zip(pair.image_paths[1:], parts[1:]):
            if part.shape[0] != parts[0].shape[0] or part.shape[2:] != parts[0].shape[2:]:
                raise DataError(f"{path} ({part.shape[0]} slice(s) of {part.shape[2]}x{part.shape[3]}) and "
                                f"{pair.image_paths[0]} ({parts[0].shape[0]} slice(s) of "
                                f"{parts[0].shape[2]}x{parts[0].shape[3]}): modalities of one case differ in size")
        image = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
        return self._convert_channels(image, pair.image_paths[0]), infos[0]

    def _convert_channels(self, image: np.ndarray, path: Path) -> np.ndarray:
        """Apply ``channels=``: RGB -> grey by luminance, grey -> RGB by repetition."""
        have, want = image.shape[1], self.channels
        if want is None or want == have:
            return image
        if have == 3 and want == 1:
            return np.tensordot(image, LUMA_WEIGHTS, axes=([1], [0]))[:, None].astype(np.float32)
        if have == 1:
            return np.repeat(image, want, axis=1)
        raise DataError(f"{path}: has {have} channels, cannot convert to channels={want} "
                        "(only RGB -> 1 and 1 -> any are supported)")

    def read_mask(self, pair: _Pair) -> tuple[np.ndarray, ImageInfo]:
        """The pair's raw mask values as (S, H, W); a 16-bit binary mask's 0/65535 read as 0/255."""
        mask, info = read_mask(pair.mask_path, return_info=True)
        if self.foreground is None and mask.dtype == np.uint16 and mask.max() == 65535 and not np.any(
                (mask != 0) & (mask != 65535)):
            # Full-scale white in 16 bits is the same mark as 255 in 8 bits: one binary encoding for both.
            mask = np.where(mask == 65535, 255, 0).astype(np.uint8)
            info.encoding += ", 0/65535 -> binary 0/255"
        return (mask if info.num_slices is not None else mask[None]), info

    def _scan(self, pair: _Pair) -> None:
        image, image_info = self.read_image(pair)
        mask, mask_info = self.read_mask(pair)
        if image.shape[0] != mask.shape[0] or image.shape[2:] != mask.shape[1:]:
            raise DataError(
                f"{pair.image_paths[0]} ({image.shape[0]} slice(s) of {image.shape[2]}x{image.shape[3]}) and "
                f"{pair.mask_path} ({mask.shape[0]} slice(s) of {mask.shape[1]}x{mask.shape[2]}): "
                "image and mask sizes differ; expected a mask of the image's size")
        values, counts = np.unique(mask, return_counts=True)
        self._check_values(values, pair.mask_path)
        marked = (mask == self.foreground) if self.foreground is not None else (mask != 0)
        pair.num_slices = image_info.num_slices
        pair.channels = image.shape[1]
        pair.size = (image.shape[2], image.shape[3])
        pair.spacing = image_info.spacing or mask_info.spacing
        pair.slice_spacing = image_info.slice_spacing or mask_info.slice_spacing
        pair.voxel_spacing = image_info.voxel_spacing or mask_info.voxel_spacing
        pair.orientation = image_info.orientation or mask_info.orientation
        if image_info.orientation and mask_info.orientation and image_info.orientation != mask_info.orientation:
            self.problems.note(f"{pair.image_paths[0]} is oriented {image_info.orientation} but {pair.mask_path} "
                               f"{mask_info.orientation}: the arrays are read as stored, so the mask will not lie "
                               "on the image; expected image and mask with the same affine")
        pair.image_source, pair.image_dtype = image_info.source, image_info.dtype
        pair.mask_dtype, pair.palette = mask_info.dtype, mask_info.palette
        pair.image_encoding, pair.mask_encoding = image_info.encoding, mask_info.encoding
        pair.grey_from_colour = image_info.grey_from_colour
        pair.values, pair.counts = values, counts
        pair.foreground_fractions = marked.mean(axis=(1, 2))
        if self._cache_enabled and self._cached_bytes + image.nbytes + mask.nbytes <= _CACHE_LIMIT_BYTES:
            self.cache[len(self.pairs)] = (image, mask)
            self._cached_bytes += image.nbytes + mask.nbytes

    def _check_values(self, values: np.ndarray, path: Path) -> None:
        """Reject values that cannot be a label map under the requested interpretation."""
        if self.foreground is not None:
            if len(values) <= MAX_AUTO_CLASSES:
                return
            expected = f"a few distinct values, one of them foreground={self.foreground}"
        else:
            limit = self.known_classes or MAX_AUTO_CLASSES
            binary_255 = self.known_classes in (None, 2) and set(values.tolist()) <= {0, 255}
            if binary_255 or (values.min() >= 0 and values.max() < limit):
                return
            expected = f"0/1 or 0/255 (binary) or class indices 0..{limit - 1}"
        hint = ("; many grey levels usually mean a JPEG-compressed or interpolated (resized) mask: "
                "save masks losslessly (PNG) at the image's size") if len(values) > MAX_AUTO_CLASSES else ""
        raise DataError(f"{path}: unexpected mask values {_format_values(values)} ({len(values)} distinct); "
                        f"expected {expected}{hint}. Pass foreground=V when one value marks the structure, "
                        "num_classes=K when the values are class indices")

    def _check_channels(self) -> None:
        counts = sorted({pair.channels for pair in self.pairs})
        greys = [i for i, pair in enumerate(self.pairs) if pair.channels == 1]
        if counts == [1, 3] and self.channels is None and all(self.pairs[i].grey_from_colour for i in greys):
            # Grey frames stored as RGB among colour images: give them back their three equal channels.
            self.channels = 3
            for i in greys:
                self.pairs[i].channels = 3
                if i in self.cache:
                    image, mask = self.cache[i]
                    self.cache[i] = (np.repeat(image, 3, axis=1), mask)
            self.problems.note(f"{len(greys)} image(s) with equal RGB channels (e.g. {self.pairs[greys[0]].image_paths[0]})"
                               " among colour images: read as 3 channels, like the others")
            return
        if len(counts) > 1:
            examples = ", ".join(f"{c} ({next(p.image_paths[0] for p in self.pairs if p.channels == c)})"
                                 for c in counts)
            self.problems.fatal(f"images under {self.root} have different channel counts: {examples}; "
                                "pass channels=1 or channels=3 to convert them")

    # --- what the mask values mean ---

    def _decide_encoding(self) -> None:
        if self.foreground is not None:
            self._decide_foreground()
            return
        if self.known_classes in (None, 2):
            self._drop_mixed_binary_255()
        union = self.union_values()
        requested = self.known_classes
        palette = ", read from palette PNG indices" if any(p.palette for p in self.pairs) else ""
        if set(union.tolist()) <= {0, 255} and 255 in union:
            self.encoding = MaskEncoding("binary255", 2, "binary 0/255: 255 = foreground (class 1), "
                                                         "0 = background")
            return
        num_classes = max(requested or 0, int(union.max()) + 1, 2)
        if requested is not None and union.max() >= requested:
            self.problems.fatal(f"mask values {_format_values(union)} under {self.root} exceed the "
                                f"{requested} classes named by num_classes / dataset.json")
        if num_classes == 2:
            description = "binary 0/1: 1 = foreground, 0 = background" + palette
        else:
            description = (f"class indices 0..{num_classes - 1} ({num_classes} classes; values seen "
                           f"{_format_values(union)}){palette}")
        if self.class_names:
            description += f"; class names from dataset.json: {', '.join(self.class_names)}"
        self.encoding = MaskEncoding("indices", num_classes, description)

    def _decide_foreground(self) -> None:
        union = self.union_values()
        if self.foreground not in union:
            self.problems.fatal(f"foreground={self.foreground} occurs in no mask under {self.root} "
                                f"(values seen: {_format_values(union)})")
        others = [v for v in union.tolist() if v != self.foreground]
        self.encoding = MaskEncoding(
            "foreground", 2, foreground=self.foreground,
            description=f"binary: foreground (class 1) = pixels equal to {self.foreground} (foreground="
                        f"{self.foreground}); background = {_format_values(others) or 'nothing else seen'}")

    def _drop_mixed_binary_255(self) -> None:
        """0/255 masks and masks with other values in one dataset: an error, or with
        skip_bad the smaller group is skipped."""
        with_255 = [p for p in self.pairs if 255 in p.values]
        with_indices = [p for p in self.pairs if np.any((p.values > 0) & (p.values < 255))]
        if not with_255 or not with_indices:
            return
        example = with_indices[0]
        message = (f"masks mix encodings: {len(with_255)} hold 0/255 (e.g. {with_255[0].mask_path}) and "
                   f"{len(with_indices)} hold other values (e.g. {example.mask_path}: "
                   f"{_format_values(example.values)}); expected one encoding for all masks")
        if self.problems.mode == "raise":
            raise DataError(message)
        minority = with_indices if len(with_indices) < len(with_255) else with_255
        for pair in minority:
            self.problems.skip(f"{pair.mask_path}: values {_format_values(pair.values)} do not match the "
                               f"encoding of most masks ({message})")
        kept = [i for i, pair in enumerate(self.pairs) if all(pair is not m for m in minority)]
        self.cache = {new: self.cache[old] for new, old in enumerate(kept) if old in self.cache}
        self.pairs = [self.pairs[i] for i in kept]

    @property
    def known_classes(self) -> int | None:
        """The class count given by num_classes, else by dataset.json's labels, else None."""
        return self.requested_classes or (len(self.class_names) if self.class_names else None)

    def union_values(self) -> np.ndarray:
        return np.unique(np.concatenate([pair.values for pair in self.pairs]))


class FolderDataset:
    """Image/mask pairs from a folder (layouts in the module docstring), one item per 2-D slice.

    ds[i] -> (image float32 (C, H, W), mask (H, W) class map, uint8 or int64)

    root:        the dataset folder.
    foreground:  make a binary task whose foreground is mask == foreground (e.g. 0 for
                 masks that draw the structure in black, like ISBI 2012). Default: detect
                 (0/1, 0/255 or class indices).
    num_classes: the number of classes when masks hold class indices that the data do not
                 show (a class never drawn) or beyond 32; default from dataset.json or the values.
    skip_bad:    warn about and skip bad pairs (missing partner, unreadable file, size
                 mismatch, unexpected mask values) instead of raising DataError.
    channels:    convert images to this many channels (RGB -> 1 by luminance, 1 -> 3 by
                 repetition); default: as stored (all images must agree).
    patient_regex: a regular expression found in each case name whose first group (or
                 whole match) is the patient id, e.g. r"(patient\\d+)" for ACDC's
                 'patient001_frame01'; cases of one patient then stay on one side of a split.

    Attributes: ids (one per item; '<case>_slice012' for slices of a volume), num_classes,
    mask_encoding (one-line description), class_names / channel_names (from dataset.json
    or None), layout, case_ids and slice_indices (per item; slice None for 2-D files),
    patient_ids (per item: from ``patient_regex``, else from dataset.json's "patients"
    ({"<patient>": ["<case>", ...]}, a tinyseg addition), else the case id).
    Every file is read once when the dataset is built; datasets under 1 GiB stay in memory.
    """

    def __init__(self, root, foreground=None, num_classes=None, skip_bad=False, channels=None,
                 patient_regex=None):
        if foreground is not None and num_classes not in (None, 2):
            raise ValueError(f"foreground={foreground} makes a binary task; got num_classes={num_classes}")
        self._scan = _FolderScan(root, foreground, num_classes, channels,
                                 mode="warn" if skip_bad else "raise", cache=True)
        self.root = self._scan.root
        self.layout = self._scan.layout
        self.foreground = foreground
        self.num_classes = self._scan.encoding.num_classes
        self.mask_encoding = self._scan.encoding.description
        self.class_names = self._scan.class_names
        self.channel_names = self._scan.channel_names
        self._pairs = self._scan.pairs
        self._items = [(p, s) for p, pair in enumerate(self._pairs) for s in range(pair.num_slices or 1)]
        self.ids: list[str] = []
        self.case_ids: list[str] = []
        self.slice_indices: list[int | None] = []
        for p, s in self._items:
            pair = self._pairs[p]
            is_volume = pair.num_slices is not None
            self.ids.append(f"{pair.case}_slice{s:03d}" if is_volume else pair.case)
            self.case_ids.append(pair.case)
            self.slice_indices.append(s if is_volume else None)
        patients = _patients(self.root, [pair.case for pair in self._pairs], patient_regex)
        self.patient_ids: list[str] = [patients[case] for case in self.case_ids]
        # Cached masks are stored as class maps from now on.
        encoding = self._scan.encoding
        self._cache = {p: (image, encoding.apply(mask)) for p, (image, mask) in self._scan.cache.items()}
        self._scan.cache = {}
        self._last_read: tuple[int, np.ndarray, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self._items)

    def _pair_arrays(self, p: int) -> tuple[np.ndarray, np.ndarray]:
        """(image (S, C, H, W), class map (S, H, W)) of pair p, from the cache or from disk."""
        if p in self._cache:
            return self._cache[p]
        # Keep the last volume read: neighbouring slices are usually asked for together.
        if self._last_read is None or self._last_read[0] != p:
            pair = self._pairs[p]
            image, _ = self._scan.read_image(pair)
            mask, _ = self._scan.read_mask(pair)
            self._last_read = (p, image, self._scan.encoding.apply(mask))
        return self._last_read[1], self._last_read[2]

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} items")
        p, s = self._items[index]
        image, mask = self._pair_arrays(p)
        return image[s].copy(), mask[s].copy()    # copies: callers may modify them in place

    def spacing(self, index: int) -> tuple[float, float] | None:
        """Physical pixel size (dy, dx) of item ``index`` when the files record it, else None."""
        return self._pairs[self._items[index][0]].spacing

    def volume_spacing(self, index: int) -> tuple[float, float, float] | None:
        """Voxel size (dz, dy, dx) of the volume item ``index`` belongs to, in the order of the
        stacked slices (S, H, W): dz between slices, (dy, dx) within one. None for a 2-D item or
        when the file does not record all three."""
        pair = self._pairs[self._items[index][0]]
        if pair.num_slices is None or pair.spacing is None or pair.slice_spacing is None:
            return None
        return (pair.slice_spacing, *pair.spacing)

    def files(self, index: int) -> tuple[list[Path], Path]:
        """(image paths, mask path) that item ``index`` comes from."""
        pair = self._pairs[self._items[index][0]]
        return list(pair.image_paths), pair.mask_path

    def __repr__(self) -> str:
        return (f"FolderDataset({str(self.root)!r}: {len(self)} items, {self.num_classes} classes, "
                f"{self.layout}; masks: {self.mask_encoding})")


@dataclass
class DataReport:
    """What ``check_data`` found in a dataset folder; ``format()`` gives the text report."""
    root: str
    layout: str
    pairs_found: int
    pairs_usable: int
    items: int
    image_sizes: dict[str, int]
    channels: dict[int, int]
    image_types: dict[str, int]
    mask_types: dict[str, int]
    mask_values: list[int]
    mask_encoding: str
    num_classes: int | None
    class_names: list[str] | None
    class_fractions: list[float]
    foreground_fraction: tuple[float, float, float] | None   # (mean, min, max) over items
    empty_masks: int
    spacings: dict[str, int]
    problems: list[str]
    encodings: dict[str, tuple[int, str]] = field(default_factory=dict)   # "image|mask: encoding" -> (files, example)
    files: list[tuple[str, str]] = field(default_factory=list)            # (path, encoding) of every file read
    volumes: list[dict] = field(default_factory=list)   # per volume: case, shape, spacing (file axes), orientation

    def as_dict(self) -> dict:
        return dict(self.__dict__)

    def format(self) -> str:
        def counted(table: dict) -> str:
            return ", ".join(f"{key} ({count})" for key, count in table.items()) or "-"

        lines = [
            f"Dataset:        {self.root}",
            f"Layout:         {self.layout}",
            f"Pairs:          {self.pairs_usable} usable of {self.pairs_found} found, {self.items} 2-D items",
            f"Image sizes:    {counted(self.image_sizes)}",
            f"Channels:       {counted(self.channels)}",
            f"Image types:    {counted(self.image_types)}",
            f"Mask types:     {counted(self.mask_types)}",
            f"Mask values:    {_format_values(self.mask_values) or '-'}",
            f"Mask encoding:  {self.mask_encoding}",
            f"Classes:        {self.num_classes if self.num_classes is not None else '-'}"
            + (f" ({', '.join(self.class_names)})" if self.class_names else ""),
            "Class pixels:   " + (", ".join(f"{c}: {f:.1%}" for c, f in enumerate(self.class_fractions)) or "-"),
        ]
        if self.foreground_fraction is not None:
            mean, low, high = self.foreground_fraction
            lines.append(f"Foreground:     mean {mean:.1%}, min {low:.1%}, max {high:.1%} of each item's pixels")
        lines.append(f"Encodings:      {len(self.encodings) or '-'} (what each file holds -> what the loader does)")
        lines += [f"  - {key}: {count} file(s), e.g. {example}" for key, (count, example) in self.encodings.items()]
        lines += [f"Empty masks:    {self.empty_masks} of {self.items} items",
                  f"Pixel spacing:  {counted(self.spacings)}"]
        if self.volumes:
            lines.append(f"Volumes:        {len(self.volumes)} (shape and voxel spacing along the file's axes "
                         "i x j x k; slices along k)")
            lines += [f"  - {v['case']}: {' x '.join(map(str, v['shape']))} voxels, spacing "
                      + (" x ".join(f"{z:g}" for z in v["spacing"]) + " mm" if v["spacing"] else "unknown")
                      + f", orientation {v['orientation'] or 'unknown'}" for v in self.volumes]
        lines.append(f"Problems:       {len(self.problems) or 'none'}")
        lines += [f"  - {problem}" for problem in self.problems]
        return "\n".join(lines)

    __str__ = format


def check_data(root, foreground=None, num_classes=None) -> DataReport:
    """Inspect a dataset folder without training: what was found, what the masks mean, what is wrong.

    Per-file problems are listed in the report instead of raised; a folder with no
    recognisable layout still raises DataError. Backs ``tinyseg check-data DIR``.
    """
    scan = _FolderScan(root, foreground, num_classes, channels=None, mode="collect", cache=False)
    pairs = scan.pairs

    def tally(keys) -> dict:
        table: dict = {}
        for key in keys:
            table[key] = table.get(key, 0) + 1
        return dict(sorted(table.items(), key=lambda item: -item[1]))

    fractions = np.concatenate([p.foreground_fractions for p in pairs]) if pairs else np.zeros(0)
    class_fractions: list[float] = []
    if scan.encoding is not None:
        values = np.concatenate([p.values for p in pairs])
        counts = np.concatenate([p.counts for p in pairs]).astype(np.float64)
        per_class = np.bincount(scan.encoding.apply(values).astype(np.int64), weights=counts,
                                minlength=scan.encoding.num_classes)
        class_fractions = (per_class / per_class.sum()).tolist()
    return DataReport(
        root=str(scan.root), layout=scan.layout, pairs_found=scan.found_pairs, pairs_usable=len(pairs),
        items=int(fractions.size),
        image_sizes=tally(f"{p.size[0]}x{p.size[1]}" + (f" x {p.num_slices} slices" if p.num_slices else "")
                          for p in pairs),
        channels=tally(p.channels for p in pairs),
        image_types=tally(p.image_source for p in pairs),
        mask_types=tally(p.mask_dtype + (" (palette)" if p.palette else "") for p in pairs),
        mask_values=scan.union_values().tolist() if pairs else [],
        mask_encoding=scan.encoding.description if scan.encoding else "undecided (see problems)",
        num_classes=scan.encoding.num_classes if scan.encoding else None,
        class_names=scan.class_names, class_fractions=class_fractions,
        foreground_fraction=(float(fractions.mean()), float(fractions.min()), float(fractions.max()))
        if fractions.size else None,
        empty_masks=int(np.sum(fractions == 0)),
        spacings=tally("unknown" if p.spacing is None else f"{p.spacing[0]:g} x {p.spacing[1]:g}" for p in pairs),
        problems=list(scan.problems.messages), encodings=_tally_encodings(pairs),
        files=[(str(path), encoding) for p in pairs for path, encoding in
               [*((path, p.image_encoding) for path in p.image_paths), (p.mask_path, p.mask_encoding)]],
        volumes=[{"case": p.case, "shape": (p.size[1], p.size[0], p.num_slices), "spacing": p.voxel_spacing,
                  "orientation": p.orientation} for p in pairs if p.num_slices is not None])


def _tally_encodings(pairs) -> dict[str, tuple[int, str]]:
    """"image: <encoding>" / "mask: <encoding>" -> (number of files, the first such file)."""
    table: dict[str, tuple[int, str]] = {}
    for pair in pairs:
        for role, path, encoding in [*(("image", path, pair.image_encoding) for path in pair.image_paths),
                                     ("mask", pair.mask_path, pair.mask_encoding)]:
            count, example = table.get(f"{role}: {encoding}", (0, str(path)))
            table[f"{role}: {encoding}"] = (count + 1, example)
    return table
