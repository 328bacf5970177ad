"""Normalisation, geometry and augmentation for (image, mask) pairs, in NumPy.

Shapes: image float32 (C, H, W); mask integer (H, W) class map, or None when there is
no mask (e.g. at prediction time). Every function returns new arrays.

Geometric transforms move image and mask with the same coordinates: the image is
resampled bilinearly, the mask by nearest neighbour, so a mask only ever holds values
it had before (never an interpolated 0.5 between classes). Points that fall outside the
image are mirrored back into it (the U-Net paper's border handling), so no black
corners appear.

Random transforms take an explicit ``rng`` (``np.random.Generator``): the same rng state
gives the same augmentation. Transform objects share the signature
``t(image, mask=None, rng=None) -> (image, mask)`` and compose with ``Compose`` and
``RandomApply``; ``default_augmentation()`` is the preset used by training.

Resampling uses index arithmetic on whole arrays (no Python loops over pixels): an
elastic deformation of a 256 x 256 image takes a few milliseconds.
"""
from __future__ import annotations

import numpy as np


def _pair(size) -> tuple[int, int]:
    """An int or an (H, W) pair as (H, W)."""
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    height, width = size
    return int(height), int(width)


def _check_pair(image: np.ndarray, mask: np.ndarray | None) -> None:
    if image.ndim != 3:
        raise ValueError(f"expected an image of shape (C, H, W), got {image.shape}")
    if mask is not None and mask.shape != image.shape[1:]:
        raise ValueError(f"expected a mask of shape {image.shape[1:]} (the image's H, W), got {mask.shape}")


# --- normalisation -------------------------------------------------------------------

def zscore(image: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """Per channel: (x - mean) / (std + eps). A constant channel becomes zeros. (C, H, W) -> (C, H, W)."""
    image = image.astype(np.float32)
    mean = image.mean(axis=(1, 2), keepdims=True)
    std = image.std(axis=(1, 2), keepdims=True)
    return ((image - mean) / (std + eps)).astype(np.float32)


def minmax(image: np.ndarray) -> np.ndarray:
    """Per channel: (x - min) / (max - min), in [0, 1]. A constant channel becomes zeros."""
    image = image.astype(np.float32)
    low = image.min(axis=(1, 2), keepdims=True)
    span = image.max(axis=(1, 2), keepdims=True) - low
    return np.where(span > 0, (image - low) / np.where(span > 0, span, 1), 0).astype(np.float32)


def window(image: np.ndarray, level: float, width: float) -> np.ndarray:
    """CT windowing: clip((x - (level - width/2)) / width, 0, 1).

    E.g. a soft-tissue window level=40, width=400 (Hounsfield units) maps -160 HU to 0 and
    240 HU to 1.
    """
    if width <= 0:
        raise ValueError(f"window width must be positive, got {width}")
    low = level - width / 2
    return np.clip((image.astype(np.float32) - np.float32(low)) / np.float32(width), 0, 1).astype(np.float32)


# --- resampling helpers --------------------------------------------------------------

def _mirror(coords: np.ndarray, n: int) -> np.ndarray:
    """Reflect continuous pixel coordinates into [0, n-1] about the border pixel centres
    (..., 2, 1, 0, 1, 2, ..., n-2, n-1, n-2, ...), like np.pad(mode='reflect')."""
    if n == 1:
        return np.zeros_like(coords)
    period = 2 * (n - 1)
    coords = np.abs(coords) % period
    return np.where(coords > n - 1, period - coords, coords)


def _sample_bilinear(image: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """image (C, H, W) at coordinates ys, xs (h, w) inside [0, H-1] x [0, W-1] -> (C, h, w).

    out = (1-fy)(1-fx) I[y0,x0] + (1-fy) fx I[y0,x0+1] + fy (1-fx) I[y0+1,x0] + fy fx I[y0+1,x0+1],
    computed as two lerps along x and one along y.
    """
    channels, height, width = image.shape
    y0 = np.clip(np.floor(ys).astype(np.intp), 0, max(height - 2, 0))
    x0 = np.clip(np.floor(xs).astype(np.intp), 0, max(width - 2, 0))
    fy, fx = (ys - y0).astype(np.float32), (xs - x0).astype(np.float32)
    # Flat indices of the four neighbours; a 1-pixel-wide axis has no second neighbour.
    top_left = y0 * width + x0
    right, down = (1 if width > 1 else 0), (width if height > 1 else 0)
    flat = image.reshape(channels, -1).astype(np.float32, copy=False)
    top = np.take(flat, top_left, axis=1)
    top += fx * (np.take(flat, top_left + right, axis=1) - top)
    bottom = np.take(flat, top_left + down, axis=1)
    bottom += fx * (np.take(flat, top_left + down + right, axis=1) - bottom)
    return top + fy * (bottom - top)


def _sample_nearest(mask: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """mask (H, W) at the nearest pixel to coordinates ys, xs (h, w) -> (h, w), same dtype."""
    height, width = mask.shape
    rows = np.clip(np.floor(ys + 0.5).astype(np.intp), 0, height - 1)
    cols = np.clip(np.floor(xs + 0.5).astype(np.intp), 0, width - 1)
    return mask[rows, cols]


def _warp(image, mask, ys, xs):
    """Resample image (bilinear) and mask (nearest) at source coordinates ys, xs (H, W), mirrored at the borders."""
    height, width = image.shape[1:]
    ys, xs = _mirror(ys, height), _mirror(xs, width)
    warped_mask = None if mask is None else _sample_nearest(mask, ys, xs)
    return _sample_bilinear(image, ys, xs), warped_mask


def _source_grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (H, 1) and (1, W), float64."""
    return np.arange(height, dtype=np.float64)[:, None], np.arange(width, dtype=np.float64)[None, :]


# --- geometry ------------------------------------------------------------------------

def resize(image: np.ndarray, mask: np.ndarray | None, size) -> tuple[np.ndarray, np.ndarray | None]:
    """Resize to ``size`` (int or (H', W')): bilinear for the image, nearest for the mask.

    Source coordinate of output pixel i: (i + 0.5) · H/H' - 0.5, as PyTorch's
    ``interpolate(mode="bilinear", align_corners=False)`` (clamped at the borders); the
    mask takes the pixel containing (i + 0.5) · H/H' (PyTorch's "nearest-exact").
    (C, H, W), (H, W) -> (C, H', W'), (H', W').
    """
    _check_pair(image, mask)
    out_h, out_w = _pair(size)
    channels, height, width = image.shape

    def bilinear_taps(n_in, n_out):
        source = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
        low = np.minimum(np.floor(source).astype(np.intp), n_in - 1)
        high = np.minimum(low + 1, n_in - 1)
        return low, high, (source - low).astype(np.float32)

    # Separable: interpolate rows, then columns.
    y0, y1, fy = bilinear_taps(height, out_h)
    x0, x1, fx = bilinear_taps(width, out_w)
    rows = image[:, y0, :] * (1 - fy)[:, None] + image[:, y1, :] * fy[:, None]
    resized = rows[:, :, x0] * (1 - fx) + rows[:, :, x1] * fx
    resized_mask = None
    if mask is not None:
        rows_n = np.minimum(np.floor((np.arange(out_h) + 0.5) * (height / out_h)).astype(np.intp), height - 1)
        cols_n = np.minimum(np.floor((np.arange(out_w) + 0.5) * (width / out_w)).astype(np.intp), width - 1)
        resized_mask = mask[rows_n[:, None], cols_n[None, :]]
    return resized.astype(np.float32), resized_mask


def _pad(image, mask, top, bottom, left, right, mode):
    """Pad H and W of image (C, H, W) and mask (H, W); mode 'constant' pads the image with 0
    and the mask with 0 (background), other modes as np.pad."""
    widths = ((top, bottom), (left, right))
    padded_image = np.pad(image, ((0, 0),) + widths, mode=mode)
    padded_mask = None if mask is None else np.pad(mask, widths, mode=mode)
    return padded_image, padded_mask


def pad_to_multiple(image: np.ndarray, mask: np.ndarray | None, multiple: int, mode: str = "reflect"):
    """Pad H and W up to multiples of ``multiple`` (e.g. 2**depth for a U-Net).

    The padding is split evenly (the extra pixel at the bottom/right). Returns
    (image, mask, padding) with padding = (top, bottom, left, right); ``unpad(x, padding)``
    undoes it on an image, a mask or a prediction.
    """
    _check_pair(image, mask)
    height, width = image.shape[1:]
    extra_h, extra_w = -height % multiple, -width % multiple
    padding = (extra_h // 2, extra_h - extra_h // 2, extra_w // 2, extra_w - extra_w // 2)
    padded_image, padded_mask = _pad(image, mask, *padding, mode=mode)
    return padded_image, padded_mask, padding


def unpad(array: np.ndarray, padding) -> np.ndarray:
    """Remove ``padding`` = (top, bottom, left, right) from the last two axes of ``array``."""
    top, bottom, left, right = padding
    height, width = array.shape[-2:]
    return array[..., top:height - bottom, left:width - right]


def center_crop(image: np.ndarray, mask: np.ndarray | None, size):
    """Crop the central (H', W') region; offset floor((H - H') / 2), as ``F.center_crop``."""
    _check_pair(image, mask)
    out_h, out_w = _pair(size)
    height, width = image.shape[1:]
    if out_h > height or out_w > width:
        raise ValueError(f"cannot center-crop {height}x{width} to {out_h}x{out_w}; "
                         "pad first (pad_to_multiple) or use random_crop, which pads")
    top, left = (height - out_h) // 2, (width - out_w) // 2
    cropped_mask = None if mask is None else mask[top:top + out_h, left:left + out_w].copy()
    return image[:, top:top + out_h, left:left + out_w].copy(), cropped_mask


def random_crop(image: np.ndarray, mask: np.ndarray | None, size, rng: np.random.Generator,
                pad_mode: str = "reflect"):
    """A random (H', W') window; an image smaller than the window is first padded
    (mirrored by default) evenly on both sides up to the window size."""
    _check_pair(image, mask)
    out_h, out_w = _pair(size)
    height, width = image.shape[1:]
    if height < out_h or width < out_w:
        extra_h, extra_w = max(out_h - height, 0), max(out_w - width, 0)
        image, mask = _pad(image, mask, extra_h // 2, extra_h - extra_h // 2,
                           extra_w // 2, extra_w - extra_w // 2, mode=pad_mode)
        height, width = image.shape[1:]
    top = int(rng.integers(0, height - out_h + 1))
    left = int(rng.integers(0, width - out_w + 1))
    cropped_mask = None if mask is None else mask[top:top + out_h, left:left + out_w].copy()
    return image[:, top:top + out_h, left:left + out_w].copy(), cropped_mask


def foreground_crop(image: np.ndarray, mask: np.ndarray, size, rng: np.random.Generator,
                    pad_mode: str = "reflect"):
    """A (H', W') window that holds foreground: centred on a foreground pixel (mask > 0)
    drawn uniformly, shifted back inside the image where it would stick out (nnU-Net's
    foreground oversampling). An image without foreground gets an ordinary random crop."""
    _check_pair(image, mask)
    out_h, out_w = _pair(size)
    height, width = image.shape[1:]
    if height < out_h or width < out_w:
        extra_h, extra_w = max(out_h - height, 0), max(out_w - width, 0)
        image, mask = _pad(image, mask, extra_h // 2, extra_h - extra_h // 2,
                           extra_w // 2, extra_w - extra_w // 2, mode=pad_mode)
        height, width = image.shape[1:]
    foreground = np.flatnonzero(mask > 0)
    if foreground.size == 0:
        return random_crop(image, mask, size, rng, pad_mode)
    y, x = np.unravel_index(foreground[int(rng.integers(foreground.size))], mask.shape)
    top = int(np.clip(y - out_h // 2, 0, height - out_h))
    left = int(np.clip(x - out_w // 2, 0, width - out_w))
    return (image[:, top:top + out_h, left:left + out_w].copy(),
            mask[top:top + out_h, left:left + out_w].copy())


# --- geometric augmentation ----------------------------------------------------------

def random_flip(image, mask, rng: np.random.Generator, horizontal: bool = True, vertical: bool = True,
                p: float = 0.5):
    """Flip left-right and/or up-down, each with probability p."""
    _check_pair(image, mask)
    flip_w = horizontal and rng.random() < p
    flip_h = vertical and rng.random() < p
    if flip_w:
        image, mask = image[:, :, ::-1], None if mask is None else mask[:, ::-1]
    if flip_h:
        image, mask = image[:, ::-1, :], None if mask is None else mask[::-1, :]
    return np.ascontiguousarray(image), None if mask is None else np.ascontiguousarray(mask)


def random_rot90(image, mask, rng: np.random.Generator):
    """Rotate by k · 90°, k uniform in {0, 1, 2, 3}. A non-square image only turns by 0° or
    180°, so its shape (and a batch of equal shapes) is kept."""
    _check_pair(image, mask)
    height, width = image.shape[1:]
    k = int(rng.integers(0, 4)) if height == width else 2 * int(rng.integers(0, 2))
    image = np.ascontiguousarray(np.rot90(image, k, axes=(1, 2)))
    return image, None if mask is None else np.ascontiguousarray(np.rot90(mask, k, axes=(0, 1)))


def affine(image, mask, angle: float = 0.0, scale: float = 1.0, shift=(0.0, 0.0)):
    """Rotate by ``angle`` degrees (counter-clockwise as displayed) and scale about the centre,
    then shift by (dy, dx) pixels. Output pixel p = (y, x) takes the input at q with

        q_y = ( cos θ · d_y + sin θ · d_x) / scale + c_y
        q_x = (-sin θ · d_y + cos θ · d_x) / scale + c_x,    d = p - c - shift,
        c = ((H-1)/2, (W-1)/2)

    (the inverse map, so every output pixel gets a value). Same shapes out as in.
    """
    _check_pair(image, mask)
    height, width = image.shape[1:]
    rows, cols = _source_grid(height, width)
    centre_y, centre_x = (height - 1) / 2, (width - 1) / 2
    dy, dx = rows - centre_y - shift[0], cols - centre_x - shift[1]
    theta = np.deg2rad(angle)
    cos, sin = np.cos(theta), np.sin(theta)
    # Rows grow downwards: for a counter-clockwise turn on screen the pixel above the
    # centre (dy < 0) must fetch the one right of it (dx > 0).
    ys = (cos * dy + sin * dx) / scale + centre_y
    xs = (-sin * dy + cos * dx) / scale + centre_x
    return _warp(image, mask, ys, xs)


def random_affine(image, mask, rng: np.random.Generator, degrees: float = 15.0,
                  scale=(0.9, 1.1), shift: float = 0.05):
    """``affine`` with angle ~ U(-degrees, degrees), scale ~ U(scale), shift ~ U(-shift, shift) · size."""
    height, width = image.shape[1:]
    angle = rng.uniform(-degrees, degrees)
    factor = rng.uniform(scale[0], scale[1])
    offset = (rng.uniform(-shift, shift) * height, rng.uniform(-shift, shift) * width)
    return affine(image, mask, angle, factor, offset)


def random_rotate_scale(image, mask, rng: np.random.Generator, degrees: float = 180.0, scale=(0.7, 1.4),
                        p_rotate: float = 0.2, p_scale: float = 0.2):
    """nnU-Net's spatial augmentation in 2-D: with probability ``p_rotate`` a rotation by an
    arbitrary angle ~ U(-degrees, degrees), with probability ``p_scale`` a zoom ~ U(scale),
    both in one resampling (``affine``, mirrored borders). Neither drawn: unchanged."""
    _check_pair(image, mask)
    rotate, zoom = rng.random() < p_rotate, rng.random() < p_scale
    angle = rng.uniform(-degrees, degrees) if rotate else 0.0
    factor = rng.uniform(scale[0], scale[1]) if zoom else 1.0
    if not (rotate or zoom):
        return image.copy(), None if mask is None else mask.copy()
    return affine(image, mask, angle, factor)


def _cubic_upsampling_matrix(n_out: int, n_nodes: int) -> np.ndarray:
    """(n_out, n_nodes) weights that interpolate values on ``n_nodes`` evenly spaced nodes
    (the first on pixel 0, the last on pixel n_out-1) to every pixel, with the cubic
    convolution kernel (Keys, a = -0.5; "bicubic"), nodes beyond the ends clamped."""
    a = -0.5

    def kernel(t):
        t = np.abs(t)
        return np.where(t <= 1, (a + 2) * t ** 3 - (a + 3) * t ** 2 + 1,
                        np.where(t < 2, a * t ** 3 - 5 * a * t ** 2 + 8 * a * t - 4 * a, 0.0))

    position = np.arange(n_out) * ((n_nodes - 1) / max(n_out - 1, 1))   # in node units
    base = np.floor(position).astype(np.intp)
    weights = np.zeros((n_out, n_nodes))
    for offset in (-1, 0, 1, 2):    # the four nodes around each pixel
        node = base + offset
        np.add.at(weights, (np.arange(n_out), np.clip(node, 0, n_nodes - 1)), kernel(position - node))
    return weights


def elastic_deform(image, mask, rng: np.random.Generator, grid: int = 3, sigma: float = 10.0):
    """Elastic deformation as in the U-Net paper (Ronneberger et al. 2015, section 3.1).

    Random displacement vectors on a coarse grid x grid lattice spanning the image, each
    component ~ N(0, sigma²) pixels, are interpolated bicubically to a smooth per-pixel
    displacement field (u, v); output pixel (y, x) takes the input at (y + u, x + v).
    The image is resampled bilinearly, the mask by nearest neighbour, with the same field.
    """
    _check_pair(image, mask)
    if grid < 2:
        raise ValueError(f"elastic_deform needs a grid of at least 2 x 2 nodes, got {grid}")
    height, width = image.shape[1:]
    coarse = rng.normal(0.0, sigma, size=(2, grid, grid))
    along_y, along_x = _cubic_upsampling_matrix(height, grid), _cubic_upsampling_matrix(width, grid)
    # Separable interpolation: field = W_y · coarse · W_xᵀ, one small product per component.
    displacement_y = along_y @ coarse[0] @ along_x.T
    displacement_x = along_y @ coarse[1] @ along_x.T
    rows, cols = _source_grid(height, width)
    return _warp(image, mask, rows + displacement_y, cols + displacement_x)


# --- intensity augmentation (the mask is passed through unchanged) -------------------

def _intensity_range(image: np.ndarray) -> float:
    """max - min over the whole image (1 for a constant image), so strengths below are
    fractions of the image's range and work on raw and normalised intensities alike."""
    span = float(image.max() - image.min())
    return span if span > 0 else 1.0


def random_brightness_contrast(image, rng: np.random.Generator, brightness: float = 0.1,
                               contrast: float = 0.2) -> np.ndarray:
    """x -> (x - mean) · c + mean + b · range, c ~ U(1 - contrast, 1 + contrast),
    b ~ U(-brightness, brightness); one (b, c) for all channels."""
    c = rng.uniform(1 - contrast, 1 + contrast)
    b = rng.uniform(-brightness, brightness) * _intensity_range(image)
    mean = image.mean()
    return ((image - mean) * c + mean + b).astype(np.float32)


def random_gamma(image, rng: np.random.Generator, gamma=(0.7, 1.5)) -> np.ndarray:
    """Per channel: rescale to [0, 1], raise to γ ~ U(gamma) (log-uniform), rescale back."""
    g = float(np.exp(rng.uniform(np.log(gamma[0]), np.log(gamma[1]))))
    low = image.min(axis=(1, 2), keepdims=True)
    span = image.max(axis=(1, 2), keepdims=True) - low
    span = np.where(span > 0, span, 1)
    return (low + span * ((image - low) / span) ** g).astype(np.float32)


def random_color_jitter(image, rng: np.random.Generator, brightness: float = 0.25, contrast: float = 0.25,
                        saturation: float = 0.25, channel_shift: float = 0.05) -> np.ndarray:
    """Brightness, contrast and, for colour images (C > 1), saturation and a colour cast:

        x ← x · b                          b ~ U(1 - brightness, 1 + brightness)  (multiplicative, as nnU-Net)
        x ← (x - mean) · c + mean          c ~ U(1 - contrast, 1 + contrast), mean over the image
        x ← g + s · (x - g)                s ~ U(1 - saturation, 1 + saturation), g the per-pixel channel mean
        x_k ← x_k + d_k · range            d_k ~ U(-channel_shift, channel_shift) per channel

    One-channel images get the first two only.
    """
    b = rng.uniform(1 - brightness, 1 + brightness)
    c = rng.uniform(1 - contrast, 1 + contrast)
    image = image * np.float32(b)
    mean = image.mean()
    image = (image - mean) * np.float32(c) + mean
    if image.shape[0] > 1:
        s = rng.uniform(1 - saturation, 1 + saturation)
        grey = image.mean(axis=0, keepdims=True)
        image = grey + np.float32(s) * (image - grey)
        shift = rng.uniform(-channel_shift, channel_shift, size=(image.shape[0], 1, 1)) * _intensity_range(image)
        image = image + shift.astype(np.float32)
    return image.astype(np.float32)


def gaussian_noise(image, rng: np.random.Generator, sigma: float = 0.03) -> np.ndarray:
    """Add N(0, (sigma · range)²) noise to every pixel."""
    noise = rng.standard_normal(image.shape, dtype=np.float32) * np.float32(sigma * _intensity_range(image))
    return (image + noise).astype(np.float32)


# --- transform objects ---------------------------------------------------------------

class Transform:
    """Base: ``t(image, mask=None, rng=None) -> (image, mask)``. Random transforms need an rng."""

    random = False
    crops = False      # True for transforms that can force a crop to hold foreground

    def __call__(self, image, mask=None, rng=None, force_foreground: bool = False):
        """``force_foreground``: set by a DataLoader that oversamples foreground, for the items
        whose crop must hold foreground; only crops (``RandomCrop``) act on it."""
        if self.random and not isinstance(rng, np.random.Generator):
            raise TypeError(f"{type(self).__name__} is random and needs rng=np.random.Generator, got {rng!r}")
        if force_foreground and self.crops:
            return self.apply(image, mask, rng, force_foreground=True)
        return self.apply(image, mask, rng)

    def apply(self, image, mask, rng):
        raise NotImplementedError

    def __repr__(self) -> str:
        arguments = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({arguments})"


class Compose(Transform):
    """Apply transforms in order, passing the same rng along."""

    def __init__(self, transforms):
        self.transforms = list(transforms)
        self.random = any(getattr(t, "random", False) for t in self.transforms)
        self.crops = any(getattr(t, "crops", False) for t in self.transforms)

    def apply(self, image, mask, rng, force_foreground=False):
        for transform in self.transforms:
            if force_foreground and getattr(transform, "crops", False):
                image, mask = transform(image, mask, rng, force_foreground=True)
            else:
                image, mask = transform(image, mask, rng)
        return image, mask

    def __repr__(self) -> str:
        return "Compose([" + ", ".join(map(repr, self.transforms)) + "])"


class RandomApply(Transform):
    """Apply ``transform`` with probability p."""

    random = True

    def __init__(self, transform: Transform, p: float = 0.5):
        self.transform = transform
        self.p = p

    def apply(self, image, mask, rng):
        return self.transform(image, mask, rng) if rng.random() < self.p else (image, mask)


class ZScore(Transform):
    def __init__(self, eps: float = 1e-8):
        self.eps = eps

    def apply(self, image, mask, rng):
        return zscore(image, self.eps), mask


class MinMax(Transform):
    def apply(self, image, mask, rng):
        return minmax(image), mask


class Window(Transform):
    def __init__(self, level: float, width: float):
        self.level, self.width = level, width

    def apply(self, image, mask, rng):
        return window(image, self.level, self.width), mask


class Resize(Transform):
    def __init__(self, size):
        self.size = size

    def apply(self, image, mask, rng):
        return resize(image, mask, self.size)


class CenterCrop(Transform):
    def __init__(self, size):
        self.size = size

    def apply(self, image, mask, rng):
        return center_crop(image, mask, self.size)


class CenterCropOrPad(Transform):
    """Bring any image to ``size``: mirror-pad a side that is too short, centre-crop one that is too long."""

    def __init__(self, size, pad_mode: str = "reflect"):
        self.size, self.pad_mode = _pair(size), pad_mode

    def apply(self, image, mask, rng):
        out_h, out_w = self.size
        height, width = image.shape[1:]
        pad_h, pad_w = max(out_h - height, 0), max(out_w - width, 0)
        if pad_h or pad_w:
            image, mask = _pad(image, mask, pad_h // 2, pad_h - pad_h // 2, pad_w // 2, pad_w - pad_w // 2,
                               self.pad_mode)
        return center_crop(image, mask, self.size)


class RandomCrop(Transform):
    """A random window; with ``force_foreground=True`` (from a DataLoader that oversamples
    foreground) a window centred on a random foreground pixel (``foreground_crop``)."""

    random = True
    crops = True

    def __init__(self, size, pad_mode: str = "reflect"):
        self.size, self.pad_mode = size, pad_mode

    def apply(self, image, mask, rng, force_foreground=False):
        if force_foreground and mask is not None:
            return foreground_crop(image, mask, self.size, rng, self.pad_mode)
        return random_crop(image, mask, self.size, rng, self.pad_mode)


class RandomFlip(Transform):
    random = True

    def __init__(self, horizontal: bool = True, vertical: bool = True, p: float = 0.5):
        self.horizontal, self.vertical, self.p = horizontal, vertical, p

    def apply(self, image, mask, rng):
        return random_flip(image, mask, rng, self.horizontal, self.vertical, self.p)


class RandomRot90(Transform):
    random = True

    def apply(self, image, mask, rng):
        return random_rot90(image, mask, rng)


class RandomAffine(Transform):
    random = True

    def __init__(self, degrees: float = 15.0, scale=(0.9, 1.1), shift: float = 0.05):
        self.degrees, self.scale, self.shift = degrees, scale, shift

    def apply(self, image, mask, rng):
        return random_affine(image, mask, rng, self.degrees, self.scale, self.shift)


class RandomRotateScale(Transform):
    """``random_rotate_scale``: arbitrary-angle rotation and zoom, each with its own probability."""

    random = True

    def __init__(self, degrees: float = 180.0, scale=(0.7, 1.4), p_rotate: float = 0.2, p_scale: float = 0.2):
        self.degrees, self.scale, self.p_rotate, self.p_scale = degrees, scale, p_rotate, p_scale

    def apply(self, image, mask, rng):
        return random_rotate_scale(image, mask, rng, self.degrees, self.scale, self.p_rotate, self.p_scale)


class ElasticDeformation(Transform):
    random = True

    def __init__(self, grid: int = 3, sigma: float = 10.0):
        self.grid, self.sigma = grid, sigma

    def apply(self, image, mask, rng):
        return elastic_deform(image, mask, rng, self.grid, self.sigma)


class BrightnessContrast(Transform):
    random = True

    def __init__(self, brightness: float = 0.1, contrast: float = 0.2):
        self.brightness, self.contrast = brightness, contrast

    def apply(self, image, mask, rng):
        return random_brightness_contrast(image, rng, self.brightness, self.contrast), mask


class ColorJitter(Transform):
    """``random_color_jitter``: brightness, contrast; saturation and colour cast for colour images."""

    random = True

    def __init__(self, brightness: float = 0.25, contrast: float = 0.25, saturation: float = 0.25,
                 channel_shift: float = 0.05):
        self.brightness, self.contrast = brightness, contrast
        self.saturation, self.channel_shift = saturation, channel_shift

    def apply(self, image, mask, rng):
        return random_color_jitter(image, rng, self.brightness, self.contrast, self.saturation,
                                   self.channel_shift), mask


class Gamma(Transform):
    random = True

    def __init__(self, gamma=(0.7, 1.5)):
        self.gamma = gamma

    def apply(self, image, mask, rng):
        return random_gamma(image, rng, self.gamma), mask


class GaussianNoise(Transform):
    random = True

    def __init__(self, sigma: float = 0.03):
        self.sigma = sigma

    def apply(self, image, mask, rng):
        return gaussian_noise(image, rng, self.sigma), mask


def default_augmentation(elastic_sigma: float = 10.0) -> Compose:
    """The training preset: random flips, 90° rotations, an elastic deformation (3 x 3
    grid, σ = ``elastic_sigma`` px) half of the time, brightness/contrast half of the time.

    Put it after any per-image normalisation (``Compose([ZScore(), default_augmentation()])``):
    a per-image z-score applied afterwards would undo the brightness/contrast change.
    """
    return Compose([
        RandomFlip(),
        RandomRot90(),
        RandomApply(ElasticDeformation(grid=3, sigma=elastic_sigma), p=0.5),
        RandomApply(BrightnessContrast(brightness=0.1, contrast=0.2), p=0.5),
    ])


def nnunet_augmentation() -> Compose:
    """The preset of ``tinyseg train`` (docs/recipe.md), after nnU-Net's 2-D defaults: an
    arbitrary-angle rotation (p 0.2) and a zoom in [0.7, 1.4] (p 0.2) in one resampling,
    Gaussian noise (p 0.1), brightness/contrast and, for colour images, saturation and a
    colour cast (p 0.3), gamma in [0.7, 1.5] (p 0.3), then flips and 90° turns (free: no
    resampling). No elastic deformation (nnU-Net does not use it either).

    Like ``default_augmentation``, put it after the per-image normalisation.
    """
    return Compose([
        RandomRotateScale(degrees=180.0, scale=(0.7, 1.4), p_rotate=0.2, p_scale=0.2),
        RandomApply(GaussianNoise(sigma=0.03), p=0.1),
        RandomApply(ColorJitter(), p=0.3),
        RandomApply(Gamma((0.7, 1.5)), p=0.3),
        RandomFlip(),
        RandomRot90(),
    ])
