"""Reading images and masks from files, and writing PNGs.

Every reader returns pixels in one layout, whatever the file format:

    image: float32 (C, H, W) for a 2-D image, (S, C, H, W) for a volume of S slices
    mask:  integer (H, W) for a 2-D mask,    (S, H, W)    for a volume

together with an ``ImageInfo`` (pixel spacing when the file knows it, a description of
the source). Formats:

    PNG / JPEG / BMP   Pillow (comes with matplotlib). Palette ('P') images read as their
                       palette indices for masks (the indices are the classes) and as
                       colours for images (grey when the palette is grey); RGB -> 3
                       channels; 16-bit grey PNG kept as 16-bit.
    TIFF               tifffile; 2-D, RGB, or multi-page (pages -> slices).

Encodings that real folders contain, and what the readers do with them (``ImageInfo.encoding``
says it in one line per file; ``tinyseg check-data`` tallies them):

    RGB(A) whose channels are all equal   grey stored as colour -> 1 grey channel
    RGBA / LA / PA with opaque alpha      alpha dropped (it holds no image content)
    alpha that is not opaque anywhere     DataError: what see-through pixels show is not in
                                          the file (flatten the image onto its background)
    16-bit colour PNG                     Pillow reads 8 bits per channel (the high byte);
                                          said in the encoding (use TIFF to keep 16 bits)
    TIFF with pages of several sizes      the first series (pages of one size) is read and
                                          the encoding says how many were left out
    NIfTI .nii(.gz)    nibabel; a 3-D volume is sliced along its last axis by default
                       (``slice_axis``); a 4-D volume's last axis holds modalities (channels),
                       as in the Medical Segmentation Decathlon; spacing from pixdim.
    DICOM .dcm         pydicom; RescaleSlope/RescaleIntercept applied, spacing from
                       PixelSpacing; multi-frame files -> slices.

tifffile, nibabel and pydicom are the optional ``io`` extra (``pip install 'tinyseg[io]'``);
they are imported only when such a file is read. A file that cannot be read, or whose
extension is unknown, raises ``DataError`` naming the file and what was expected.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


class DataError(ValueError):
    """A dataset or file problem the user can fix: the message names the file(s) and what was expected."""


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".nii", ".nii.gz", ".dcm")

_PILLOW_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
_TIFF_EXTENSIONS = (".tif", ".tiff")
_NIFTI_EXTENSIONS = (".nii", ".nii.gz")

# Pillow's luminance weights (ITU-R 601), used to turn RGB into one grey channel.
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass
class ImageInfo:
    """What a reader learned about a file besides its pixels.

    source:     one line, e.g. "PNG, mode L, uint8" or "NIfTI, shape (64, 64, 20), float32".
    dtype:      the pixel type as stored in the file (before conversion to float32).
    spacing:    physical pixel size (dy, dx) of one slice when the file records it
                (millimetres for NIfTI and DICOM), else None.
    num_slices: None for a 2-D image; S for a volume read as S slices.
    palette:    True when the pixels are palette indices (a 'P' mode PNG read as a mask).
    encoding:   what the file holds and what the reader made of it, e.g.
                "8-bit RGBA, alpha opaque -> alpha dropped; channels equal -> 1 grey channel".
    grey_from_colour: True when equal colour channels were read as one grey channel.
    slice_spacing: distance between slices of a volume (mm) when the file records it, so
                that a volume read as slices (S, H, W) has voxel spacing (slice_spacing, dy, dx).
    voxel_spacing: NIfTI only: the voxel size along the file's axes (i, j, k), as in the header.
    orientation: NIfTI only: the axis codes of the affine (nibabel.aff2axcodes), e.g. "RAS", "LPS".
    """
    source: str
    dtype: str
    spacing: tuple[float, float] | None = None
    num_slices: int | None = None
    palette: bool = False
    encoding: str = ""
    grey_from_colour: bool = False
    slice_spacing: float | None = None
    voxel_spacing: tuple[float, ...] | None = None
    orientation: str | None = None


def split_extension(path) -> tuple[str, str]:
    """(stem, extension) of a file name, lower-case extension; ``.nii.gz`` counts as one extension.

    ``split_extension("a/case_01.nii.gz") == ("case_01", ".nii.gz")``.
    """
    name = Path(path).name
    if name.lower().endswith(".nii.gz"):
        return name[: -len(".nii.gz")], ".nii.gz"
    suffix = Path(name).suffix
    return name[: len(name) - len(suffix)], suffix.lower()


def is_image_file(path) -> bool:
    """True for a visible file whose extension one of the readers handles."""
    path = Path(path)
    return path.is_file() and not path.name.startswith(".") and split_extension(path)[1] in IMAGE_EXTENSIONS


def _require(module_name: str, path: Path):
    """Import an optional reader library, or explain which extra provides it."""
    import importlib
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportError(
            f"reading {path.name} needs the '{module_name}' package, part of tinyseg's io extra: "
            f"pip install 'tinyseg[io]'") from exc


# --- format readers: each returns (pixels (S, C, H, W) in the stored dtype, ImageInfo) ---

def _require_opaque(alpha: np.ndarray, opaque, path: Path, found: str) -> None:
    """DataError unless every alpha value is ``opaque`` (fully covering)."""
    see_through = alpha != opaque
    if np.any(see_through):
        raise DataError(f"{path}: {found} whose alpha channel is not opaque ({see_through.mean():.1%} of pixels, "
                        f"alpha down to {alpha.min()} of {opaque}); what see-through pixels show is not in the file, "
                        f"so tinyseg does not guess it: flatten the image onto its background, or save it without "
                        f"alpha (e.g. Pillow's image.convert('RGB') or .convert('L'))")


def _grey_if_channels_equal(pixels: np.ndarray, notes: list) -> tuple[np.ndarray, bool]:
    """(S, 3, H, W) colour pixels whose channels are all equal -> (S, 1, H, W): grey stored as colour."""
    if pixels.shape[1] == 3 and np.array_equal(pixels[:, 0], pixels[:, 1]) and np.array_equal(
            pixels[:, 1], pixels[:, 2]):
        notes.append("channels equal -> 1 grey channel")
        return pixels[:, :1], True
    return pixels, False


def _png_bit_depth(path: Path) -> int | None:
    """Bits per sample from a PNG's IHDR chunk (byte 24 of the file), None if not a PNG."""
    with open(path, "rb") as file:
        head = file.read(26)
    return head[24] if len(head) == 26 and head[:8] == b"\x89PNG\r\n\x1a\n" else None


_MODE_NAMES = {"1": "1-bit", "L": "grey", "P": "palette", "RGB": "RGB", "RGBA": "RGBA", "LA": "grey+alpha (LA)",
               "PA": "palette+alpha (PA)", "I;16": "16-bit grey", "I;16B": "16-bit grey", "I;16L": "16-bit grey",
               "I": "32-bit integer grey", "F": "32-bit float grey", "CMYK": "CMYK", "YCbCr": "YCbCr"}


def _read_pillow(path: Path, for_mask: bool):
    from PIL import Image

    with Image.open(path) as img:
        img.load()
        mode = img.mode
        palette = False
        notes = []
        depth = _png_bit_depth(path) if split_extension(path)[1] == ".png" else None
        if depth == 16 and mode in ("RGB", "RGBA"):
            notes.append("16-bit colour read at 8 bits per channel (Pillow keeps the high byte; "
                         "save as TIFF to keep 16 bits)")
        if mode in ("RGBA", "LA", "PA"):
            _require_opaque(np.asarray(img.getchannel("A")), 255, path, f"{_MODE_NAMES[mode]} image")
            notes.append("alpha opaque -> alpha dropped")
            if mode == "PA":
                img = img.getchannel(0) if for_mask else img.convert("RGB")     # band 0 holds the indices
                mode_read = "P"
            else:
                img = img.convert("L" if mode == "LA" else "RGB")
                mode_read = img.mode
        else:
            mode_read = mode
        if mode_read == "P" and for_mask:
            palette = True
            notes.append("palette indices -> mask values")
        elif mode_read == "P":
            # A grey palette is a grey image; anything else is read as colour.
            colours = img.convert("RGB")
            rgb = np.asarray(colours)
            grey = np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2])
            img = colours.convert("L") if grey else colours
            notes.append("palette colours -> grey" if grey else "palette colours -> RGB")
        elif mode in ("CMYK", "YCbCr", "HSV", "LAB", "RGBX"):
            img = img.convert("RGB")
            notes.append(f"{mode} -> RGB")
        pixels = np.asarray(img)
    if pixels.dtype == bool:            # mode '1'
        pixels = pixels.astype(np.uint8)
        notes.append("-> 0/1")
    pixels = pixels[None] if pixels.ndim == 2 else np.moveaxis(pixels, -1, 0)
    pixels, grey = _grey_if_channels_equal(pixels[None], notes)
    kind = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP"}[split_extension(path)[1]]
    bits = depth or 8 * np.dtype(pixels.dtype).itemsize
    name = _MODE_NAMES.get(mode, mode)
    found = name if name[0].isdigit() else f"{bits}-bit {name}"
    info = ImageInfo(source=f"{kind}, mode {mode}, {pixels.dtype}", dtype=str(pixels.dtype), palette=palette,
                     encoding=f"{kind} {found}" + (", " + "; ".join(notes) if notes else ""),
                     grey_from_colour=grey)
    return pixels, info


def _read_tiff(path: Path):
    tifffile = _require("tifffile", path)
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        pixels = series.asarray()
        axes = series.axes
        spacing = _tiff_spacing(tif.pages[0])
        photometric = getattr(series.keyframe, "photometric", None)
        extra_samples = len(getattr(series.keyframe, "extrasamples", ()) or ())
        other_series = len(tif.series) - 1
        total_pages = len(tif.pages)
    # Y and X are the image plane; S (samples, e.g. RGB) and C (channels) are channels;
    # every other axis (pages, Z, T, ...) enumerates slices.
    if "Y" not in axes or "X" not in axes:
        raise DataError(f"{path}: TIFF with axes {axes!r}; expected an image with Y and X axes")
    slice_axes = [i for i, a in enumerate(axes) if a not in "YXSC"]
    channel_axes = [i for i, a in enumerate(axes) if a in "SC"]
    num_slices = int(np.prod([pixels.shape[i] for i in slice_axes]))
    num_channels = int(np.prod([pixels.shape[i] for i in channel_axes]))
    height, width = pixels.shape[axes.index("Y")], pixels.shape[axes.index("X")]
    order = slice_axes + channel_axes + [axes.index("Y"), axes.index("X")]
    pixels = np.transpose(pixels, order).reshape(num_slices, num_channels, height, width)
    bits = 8 * pixels.dtype.itemsize
    colour = photometric is not None and int(photometric) == 2      # PHOTOMETRIC.RGB
    found = f"TIFF {bits}-bit " + ("RGB" if colour else "grey" if num_channels == 1 else f"{num_channels}-channel")
    notes = []
    if colour and extra_samples and num_channels == 3 + extra_samples:
        opaque = np.iinfo(pixels.dtype).max if np.issubdtype(pixels.dtype, np.integer) else 1.0
        found += "A"
        _require_opaque(pixels[:, 3], opaque, path, f"TIFF {bits}-bit RGBA image")
        pixels = pixels[:, :3]
        notes.append("alpha opaque -> alpha dropped")
    if num_slices > 1:
        found = f"multi-page {found}, {num_slices} pages of {height}x{width}"
        notes.append(f"-> {num_slices} slices")
    if other_series:
        notes.append(f"only the first series read ({num_slices} of {total_pages} pages; the {other_series} "
                     f"other series hold pages of other sizes, e.g. thumbnails)")
    grey = False
    if colour:
        pixels, grey = _grey_if_channels_equal(pixels, notes)
    info = ImageInfo(source=f"TIFF, axes {axes}, {pixels.dtype}", dtype=str(pixels.dtype),
                     spacing=spacing, num_slices=num_slices if num_slices > 1 else None,
                     encoding=found + (", " + "; ".join(notes) if notes else ""), grey_from_colour=grey)
    return pixels, info


def _tiff_spacing(page) -> tuple[float, float] | None:
    """(dy, dx) in millimetres from the resolution tags, only when their unit is centimetres:
    inch resolutions are nearly always a scanner's or an editor's default DPI, not a pixel size."""
    tags = page.tags
    if "ResolutionUnit" not in tags or int(tags["ResolutionUnit"].value) != 3:   # 3 = centimetre
        return None
    if "XResolution" not in tags or "YResolution" not in tags:
        return None
    (xn, xd), (yn, yd) = tags["XResolution"].value, tags["YResolution"].value
    if xn == 0 or yn == 0:
        return None
    return (10.0 * yd / yn, 10.0 * xd / xn)


def _read_nifti(path: Path, slice_axis: int):
    nibabel = _require("nibabel", path)
    image = nibabel.load(str(path))
    pixels = np.asanyarray(image.dataobj)        # applies scl_slope / scl_inter when set
    zooms = tuple(float(z) for z in image.header.get_zooms())
    shape = pixels.shape
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
        zooms = zooms[:2] + (1.0,)
    if pixels.ndim == 3:
        pixels = pixels[..., None]
    if pixels.ndim != 4:
        raise DataError(f"{path}: NIfTI of shape {shape}; expected a 2-D image, a 3-D volume, "
                        "or a 4-D volume whose last axis holds modalities")
    if slice_axis not in (0, 1, 2):
        raise ValueError(f"slice_axis must be 0, 1 or 2, got {slice_axis}")
    # NIfTI arrays are indexed (i, j, k) = (x, y, z). A slice keeps the two other axes
    # (a, b) in their order and is shown transposed, as (b, a) = (rows, columns), the way
    # SimpleITK / nnU-Net arrays look. No reorientation: image and mask are read alike.
    a, b = [axis for axis in (0, 1, 2) if axis != slice_axis]
    pixels = np.transpose(pixels, (slice_axis, 3, b, a))
    info = ImageInfo(source=f"NIfTI, shape {shape}, {pixels.dtype}", dtype=str(pixels.dtype),
                     spacing=(zooms[b], zooms[a]),
                     num_slices=pixels.shape[0] if pixels.shape[0] > 1 else None,
                     slice_spacing=zooms[slice_axis], voxel_spacing=tuple(zooms[:3]),
                     orientation="".join(str(code) for code in nibabel.aff2axcodes(image.affine)))
    return pixels, info


def _read_dicom(path: Path):
    pydicom = _require("pydicom", path)
    dataset = pydicom.dcmread(str(path))
    pixels = dataset.pixel_array
    frames = int(getattr(dataset, "NumberOfFrames", 1) or 1)
    samples = int(getattr(dataset, "SamplesPerPixel", 1) or 1)
    if samples > 1:
        pixels = np.moveaxis(pixels, -1, -3)     # (..., H, W, samples) -> (..., samples, H, W)
    else:
        pixels = pixels[..., None, :, :]
    if frames == 1:
        pixels = pixels[None]
    stored_dtype = str(pixels.dtype)
    slope = float(getattr(dataset, "RescaleSlope", 1.0) or 1.0)
    intercept = float(getattr(dataset, "RescaleIntercept", 0.0) or 0.0)
    if slope != 1.0 or intercept != 0.0:
        # Stored values -> modality values (Hounsfield units for CT).
        pixels = pixels.astype(np.float32) * np.float32(slope) + np.float32(intercept)
    spacing = None
    if "PixelSpacing" in dataset:
        row_spacing, column_spacing = (float(v) for v in dataset.PixelSpacing)
        spacing = (row_spacing, column_spacing)
    info = ImageInfo(source=f"DICOM, {getattr(dataset, 'Modality', '?')}, {frames} frame(s), {stored_dtype}",
                     dtype=stored_dtype, spacing=spacing, num_slices=frames if frames > 1 else None)
    return pixels, info


def read_pixels(path, for_mask: bool = False, slice_axis: int = 2):
    """Read any supported file as (pixels (S, C, H, W) in the stored dtype, ImageInfo).

    S = 1 for a 2-D image. ``for_mask`` keeps palette PNGs as indices. ``slice_axis``
    (NIfTI only) is the axis a 3-D volume is sliced along. Raises ``DataError`` when the
    file is missing, unreadable or of an unknown type.
    """
    path = Path(path)
    extension = split_extension(path)[1]
    if extension not in IMAGE_EXTENSIONS:
        raise DataError(f"{path}: unknown image type {extension!r}; expected one of {', '.join(IMAGE_EXTENSIONS)}")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        if extension in _PILLOW_EXTENSIONS:
            pixels, info = _read_pillow(path, for_mask)
        elif extension in _TIFF_EXTENSIONS:
            pixels, info = _read_tiff(path)
        elif extension in _NIFTI_EXTENSIONS:
            pixels, info = _read_nifti(path, slice_axis)
        else:
            pixels, info = _read_dicom(path)
    except (DataError, ImportError):
        raise
    except Exception as exc:    # each library raises its own types for a corrupt file
        raise DataError(f"{path}: cannot read it as a {extension} image ({type(exc).__name__}: {exc})") from exc
    if pixels.ndim != 4 or pixels.shape[1] == 0 or pixels.shape[2] == 0 or pixels.shape[3] == 0:
        raise DataError(f"{path}: read an array of shape {pixels.shape}; expected a non-empty 2-D image or volume")
    if not info.encoding:
        info.encoding = info.source + (f" -> {info.num_slices} slices" if info.num_slices else "")
    return pixels, info


def read_image(path, slice_axis: int = 2):
    """Read an image as float32: (C, H, W) for a 2-D image, (S, C, H, W) for a volume.

    Returns (image, ImageInfo). Intensities are as stored (e.g. 0..255 for an 8-bit PNG,
    Hounsfield units for CT DICOM); normalise them with ``tinyseg.data.transforms``.
    """
    pixels, info = read_pixels(path, for_mask=False, slice_axis=slice_axis)
    image = pixels.astype(np.float32)
    return (image if info.num_slices is not None else image[0]), info


def read_mask(path, slice_axis: int = 2, return_info: bool = False):
    """Read a mask as an integer array: (H, W) for a 2-D mask, (S, H, W) for a volume.

    Values are returned as stored (e.g. 0/255, or palette indices); deciding what they
    mean is ``FolderDataset``'s job. Integer-valued float masks (common in NIfTI) become
    int64. A colour mask whose channels differ, or fractional values, raise ``DataError``.
    With ``return_info`` returns (mask, ImageInfo).
    """
    path = Path(path)
    pixels, info = read_pixels(path, for_mask=True, slice_axis=slice_axis)
    if pixels.shape[1] > 1:
        if not all(np.array_equal(pixels[:, 0], pixels[:, c]) for c in range(1, pixels.shape[1])):
            raise DataError(f"{path}: colour mask with {pixels.shape[1]} differing channels; expected a "
                            "single-channel mask of class values (greyscale or palette PNG)")
    mask = pixels[:, 0]
    if not np.issubdtype(mask.dtype, np.integer):
        if not np.all(np.isfinite(mask)) or not np.array_equal(mask, np.round(mask)):
            raise DataError(f"{path}: mask holds non-integer values (dtype {mask.dtype}); expected class values")
        mask = mask.astype(np.int64)
    mask = mask if info.num_slices is not None else mask[0]
    return (mask, info) if return_info else mask


def write_png(path, array) -> None:
    """Write a 2-D array (H, W), or (C, H, W) with C = 1 or 3, as an 8-bit PNG.

    Masks (bool or integer arrays) are written unchanged as uint8 (bool as 0/255), so
    they read back as the same class values; integers outside 0..255 raise ValueError.
    Images (float arrays) are scaled linearly from their min..max to 0..255.
    Parent folders are created.
    """
    from PIL import Image

    array = np.asarray(array)
    if array.ndim == 3 and array.shape[0] in (1, 3):
        array = array[0] if array.shape[0] == 1 else np.moveaxis(array, 0, -1)
    elif array.ndim != 2:
        raise ValueError(f"write_png expects (H, W) or (C, H, W) with C in (1, 3), got shape {array.shape}")
    if array.dtype == bool:
        pixels = array.astype(np.uint8) * 255
    elif np.issubdtype(array.dtype, np.integer):
        if array.size and (array.min() < 0 or array.max() > 255):
            raise ValueError(f"write_png: integer values must lie in 0..255 for an 8-bit PNG, "
                             f"got {array.min()}..{array.max()}")
        pixels = array.astype(np.uint8)
    else:
        array = array.astype(np.float64)
        low, high = float(array.min()), float(array.max())
        scaled = (array - low) / (high - low) if high > low else np.zeros_like(array)
        pixels = np.round(scaled * 255).astype(np.uint8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format="PNG")


def write_nifti_labels(path, labels, like, slice_axis: int = 2) -> Path:
    """Write a label volume as one NIfTI file on the grid of the image file ``like``.

    labels: class maps as the reader slices ``like``: (S, H, W) for a volume (slice s is
            ``read_image(like)[s]``), (H, W) for a 2-D NIfTI. They are put back in the file's
            voxel order (the inverse of the reader's transpose), so output voxel (i, j, k)
            labels image voxel (i, j, k), and the shape is the image's (a 4-D image's
            modality axis is dropped).
    The affine, qform and sform (with their codes), voxel sizes and units are copied from
    ``like``'s header, so 3D Slicer, ITK-SNAP and nnU-Net open the labels aligned to the
    image. Stored as uint8 (int16 from 256 classes on), unscaled (slope 1, intercept 0),
    with the NIfTI 'label' intent. Parent folders are created; returns the path written.
    """
    path, like = Path(path), Path(like)
    nibabel = _require("nibabel", like)
    image = nibabel.load(str(like))
    spatial = image.shape[:3] if len(image.shape) >= 3 else image.shape
    labels = np.asarray(labels)
    if labels.ndim == 2:
        labels = labels[None]
    if labels.ndim != 3 or not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
        raise ValueError(f"write_nifti_labels: labels expected integer class maps (S, H, W) or (H, W), "
                         f"got {labels.dtype} of shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > np.iinfo(np.int16).max):
        raise ValueError(f"write_nifti_labels: labels must lie in 0..32767, got {labels.min()}..{labels.max()}")
    a, b = [axis for axis in (0, 1, 2) if axis != slice_axis]
    volume = np.transpose(labels, np.argsort([slice_axis, b, a]))    # (slice, rows, columns) -> (i, j, k)
    if volume.shape[:len(spatial)] != tuple(spatial) or volume.size != int(np.prod(spatial)):
        raise ValueError(f"write_nifti_labels: labels of {labels.shape[0]} slice(s) of "
                         f"{labels.shape[1]}x{labels.shape[2]} do not fit the image {like} of shape {image.shape}; "
                         f"expected one label per voxel")
    volume = volume.reshape(spatial)
    dtype = np.uint8 if volume.size == 0 or volume.max() < 256 else np.int16
    header = image.header.copy()
    header.set_data_dtype(dtype)
    header.set_intent("label")
    header["descrip"] = b"tinyseg labels"
    header["cal_min"], header["cal_max"] = 0, 0      # the image's display window would not fit labels
    out = type(image)(volume.astype(dtype), image.affine, header)
    out.set_qform(image.get_qform(), code=int(image.header["qform_code"]))
    out.set_sform(image.get_sform(), code=int(image.header["sform_code"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    nibabel.save(out, str(path))
    return path
