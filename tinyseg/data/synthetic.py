"""Synthetic 2-D "CT-like" phantoms with exact masks, generated from a seed (no downloads).

Each slice shows a body cross-section (a wide, slightly irregular ellipse with a rim of
subcutaneous fat) with a bright vertebra near its back, one organ inside it and 1-3
lesions inside the organ. Shapes are star-shaped blobs: in the blob's own rotated and
scaled frame, a point at radius ρ and angle θ is inside when

    ρ < 1 + Σ_{k=2..4} a_k cos(k θ + φ_k)

(low-frequency harmonics make the outline irregular but smooth). Intensities are
piecewise constant per tissue, then

    image = clip(blur(tissues · (1 + texture)) · bias + noise, 0, 1)

where texture is Gaussian-low-pass-filtered white noise (a few % of the tissue's level),
bias a very smooth multiplicative field 1 + b·(smooth noise), blur a slight Gaussian blur
(partial-volume edges) and noise white Gaussian. A lesion's intensity is organ · (1 ± c), c ∈ [0.25, 0.6] (brighter or
darker than the organ); its radius is 6-15 % of the image size (smaller if it must fit).

``channels > 1`` adds "MR-like" channels of the same anatomy and texture with other
tissue contrasts (dark bone, bright fat, darker organ, lesions mostly brighter than the
organ), their own bias field and noise. Channel 0 does not depend on ``channels``.

Every item is drawn from ``np.random.default_rng([seed, index])``, so ``ds[i]`` is the same
whenever and in whatever order it is generated.
"""
from __future__ import annotations

import numpy as np

_MODES = ("binary", "multiclass")


def _lowpass(size: int, sigma: float) -> np.ndarray:
    """Fourier transfer function (for rfft2) of a Gaussian blur of std ``sigma`` pixels."""
    f2 = np.fft.fftfreq(size)[:, None] ** 2 + np.fft.rfftfreq(size)[None, :] ** 2
    return np.exp(-2 * np.pi ** 2 * sigma ** 2 * f2)


def _smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """White noise blurred by a Gaussian of std ``sigma`` pixels, rescaled to zero mean, unit std."""
    field = np.fft.irfft2(np.fft.rfft2(rng.standard_normal((size, size))) * _lowpass(size, sigma), s=(size, size))
    return (field - field.mean()) / (field.std() + 1e-12)


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of std ``sigma`` pixels in Fourier space. Its wrap-around at the borders
    is harmless: the image borders are air."""
    return np.fft.irfft2(np.fft.rfft2(image) * _lowpass(image.shape[-1], sigma), s=image.shape)


def _shape(rng: np.random.Generator, wobble: float, max_angle: float) -> tuple[float, np.ndarray, np.ndarray]:
    """Random outline of a star-shaped blob: rotation in ±max_angle, amplitudes a_k ~ U(0, wobble), phases φ_k."""
    return rng.uniform(-max_angle, max_angle), rng.uniform(0, wobble, (3, 1, 1)), rng.uniform(0, 2 * np.pi, (3, 1, 1))


def _blob(yy: np.ndarray, xx: np.ndarray, centre, radii, shape) -> np.ndarray:
    """Inside where ρ < 1 + Σ_{k=2..4} a_k cos(kθ + φ_k), in the frame of the ellipse with the
    given centre (y, x), radii (ry, rx) and the rotation of ``shape``; ``yy`` (H, 1), ``xx`` (1, W)."""
    angle, amplitudes, phases = shape
    c, s = np.cos(angle), np.sin(angle)
    dy, dx = yy - centre[0], xx - centre[1]
    u = (c * dy - s * dx) / radii[0]
    v = (s * dy + c * dx) / radii[1]
    k = np.arange(2, 5)[:, None, None]
    outline = 1 + np.sum(amplitudes * np.cos(k * np.arctan2(u, v) + phases), axis=0)
    return np.hypot(u, v) < outline


def _erode(mask: np.ndarray, r: int, border: bool = False) -> np.ndarray:
    """Binary erosion by a (2r+1)×(2r+1) square: True where the whole window is True, pixels
    outside the image counting as ``border``. Separable, and a window sum from a cumulative
    sum per axis, so the cost does not grow with r."""
    out = mask
    for _ in range(2):  # down the columns, then (transposed) along the rows
        padded = np.pad(out, ((r + 1, r), (0, 0)), constant_values=border)
        padded[0] = False  # the cumulative sum's zero baseline
        c = np.cumsum(padded, axis=0, dtype=np.int32)
        out = (c[2 * r + 1:] - c[:-2 * r - 1] == 2 * r + 1).T
    return out


def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
    """Binary dilation by a (2r+1)×(2r+1) square."""
    return ~_erode(~mask, r, border=True)


class SyntheticPhantoms:
    """A deterministic dataset of synthetic 2-D slices with exact segmentation masks.

    Args:
        n: number of images (>= 1).
        size: image height and width in pixels (>= 16).
        mode: ``"binary"`` -> mask 1 = lesion, 0 = everything else (``num_classes`` 2);
            ``"multiclass"`` -> 0 background, 1 organ, 2 lesion (``num_classes`` 3).
        seed: non-negative integer; item i is drawn from ``np.random.default_rng([seed, i])``.
        channels: number of input channels (>= 1); channel 0 is CT-like, the others MR-like.

    ``ds[i]`` -> ``(image, mask)``: image float32 (C, H, W) roughly in [0, 1], mask uint8 (H, W).
    """

    def __init__(self, n: int = 64, size: int = 128, mode: str = "binary", seed: int = 0, channels: int = 1):
        if mode not in _MODES:
            raise ValueError(f"mode must be 'binary' or 'multiclass', got {mode!r}")
        for name, value, minimum in (("n", n, 1), ("size", size, 16), ("channels", channels, 1), ("seed", seed, 0)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
        self.n, self.size, self.mode, self.seed, self.channels = int(n), int(size), mode, int(seed), int(channels)
        self.num_classes = 2 if mode == "binary" else 3

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if not isinstance(index, (int, np.integer)):
            raise TypeError(f"index must be an integer, got {type(index).__name__}")
        if not -self.n <= index < self.n:
            raise IndexError(f"index {index} out of range for a dataset of {self.n} images")
        return self._generate(int(index) % self.n)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """All items stacked: images (N, C, H, W) float32, masks (N, H, W) uint8."""
        items = [self._generate(i) for i in range(self.n)]
        return np.stack([im for im, _ in items]), np.stack([m for _, m in items])

    def _generate(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, index])
        S = self.size
        # pixel centres in [-1, 1]; y grows downwards, as in an image
        t = (np.arange(S) + 0.5) / S * 2 - 1
        yy, xx = t[:, None], t[None, :]

        body_ry = rng.uniform(0.72, 0.8)
        body = _blob(yy, xx, (rng.uniform(-0.03, 0.03), rng.uniform(-0.03, 0.03)),
                     (body_ry, rng.uniform(0.86, 0.94)), _shape(rng, 0.03, 0.1))
        fat = body & ~_erode(body, max(1, round(rng.uniform(0.025, 0.045) * S)))
        spine = np.hypot((yy - body_ry + rng.uniform(0.2, 0.24)) / 1.1, xx - rng.uniform(-0.04, 0.04)) \
            < rng.uniform(0.1, 0.13)
        organ = _blob(yy, xx, (rng.uniform(-0.2, -0.05), rng.uniform(-0.2, 0.2)),
                      (rng.uniform(0.38, 0.46), rng.uniform(0.46, 0.6)), _shape(rng, 0.08, 0.4))
        # keep the organ inside the muscle layer and clear of the bone, by a few pixels
        margin = max(1, round(0.03 * S))
        organ &= _erode(body & ~fat, margin) & ~_dilate(spine, margin)
        lesions = self._place_lesions(rng, yy, xx, organ)

        texture_scale = rng.uniform(0.015, 0.03) * S
        # relative to the tissue's level, so that every channel keeps the lesions' relative contrast
        textures = {"body": 0.08 * _smooth_noise(rng, S, texture_scale),
                    "organ": 0.065 * _smooth_noise(rng, S, texture_scale),
                    "lesion": 0.05 * _smooth_noise(rng, S, texture_scale)}
        tissues = {"body": body, "fat": fat, "spine": spine & body, "organ": organ}
        image = np.stack([self._render(rng, c, tissues, lesions, textures) for c in range(self.channels)])

        lesion_any = np.any(lesions, axis=0)
        if self.mode == "binary":
            mask = lesion_any.astype(np.uint8)
        else:
            mask = organ.astype(np.uint8) + lesion_any.astype(np.uint8)  # lesions lie inside the organ
        return image.astype(np.float32), mask

    def _place_lesions(self, rng, yy, xx, organ) -> np.ndarray:
        """1-3 non-touching lesions, each at least 2 px inside the organ: (L, H, W) bool.

        Each lesion draws a size and an outline, then tries up to 10 centres; when none fits it
        shrinks by 15 %, down to 6 % of the image size (the first one further, so that there
        is always one), and is then given up.
        """
        S = self.size
        free = _erode(organ, 2)  # where a lesion may lie: 2 px inside the organ, away from other lesions
        gap = max(2, round(0.02 * S))
        lesions = []
        for j in range(rng.integers(1, 4)):
            radius = rng.uniform(0.06, 0.15) * S  # pixels
            aspect = rng.uniform(0.75, 1.0)
            shape = _shape(rng, 0.12, np.pi)
            lesion = self._fit_lesion(rng, yy, xx, free, radius, aspect, shape)
            while lesion is None and radius >= (0.06 * S if j else 1.0):
                radius *= 0.85
                lesion = self._fit_lesion(rng, yy, xx, free, radius, aspect, shape)
            if lesion is None:
                break
            lesions.append(lesion)
            free &= ~_dilate(lesion, gap)
        if not lesions:  # an organ too small for any blob (tiny images): one pixel at its deepest point
            core = organ
            while (deeper := _erode(core, 1)).any():
                core = deeper
            lesion = np.zeros_like(organ)
            lesion[np.unravel_index(np.argmax(core), organ.shape)] = True
            lesions.append(lesion)
        return np.stack(lesions)

    def _fit_lesion(self, rng, yy, xx, free, radius, aspect, shape) -> np.ndarray | None:
        """A lesion blob (H, W) inside ``free``, or None if none of up to 10 centres fits."""
        S = self.size
        wobble = shape[1].sum()
        # the blob holds the disc of radius r_in, which holds the square of half-width r_in/√2:
        # only centres where that square fits in ``free`` can work
        r_in = radius * aspect * (1 - wobble)
        candidates = np.flatnonzero(_erode(free, int(r_in / np.sqrt(2))))
        reach = int(np.ceil(radius * (1 + wobble))) + 1  # the blob lies within this many pixels of its centre
        for centre in rng.choice(candidates, size=min(10, candidates.size), replace=False):
            cy, cx = np.unravel_index(centre, free.shape)
            window = slice(max(0, cy - reach), cy + reach + 1), slice(max(0, cx - reach), cx + reach + 1)
            blob = _blob(yy[window[0]], xx[:, window[1]], (yy[cy, 0], xx[0, cx]),
                         (radius * aspect * 2 / S, radius * 2 / S), shape)
            if not np.any(blob & ~free[window]):
                lesion = np.zeros_like(free)
                lesion[window] = blob
                return lesion
        return None

    def _render(self, rng, channel, tissues, lesions, textures) -> np.ndarray:
        S = self.size
        if channel == 0:  # CT-like: bright bone, dark fat, organ brighter than muscle
            levels = {"body": rng.uniform(0.26, 0.34), "fat": rng.uniform(0.14, 0.2),
                      "spine": rng.uniform(0.85, 0.95), "organ": rng.uniform(0.48, 0.58)}
            signs = rng.choice([-1.0, 1.0], size=len(lesions))
        else:  # MR-like: dark bone, bright fat, organ darker than muscle, lesions mostly bright
            levels = {"body": rng.uniform(0.45, 0.55), "fat": rng.uniform(0.75, 0.85),
                      "spine": rng.uniform(0.05, 0.12), "organ": rng.uniform(0.3, 0.4)}
            signs = np.where(rng.random(len(lesions)) < 0.8, 1.0, -1.0)
        contrast = rng.uniform(0.25, 0.6, size=len(lesions))

        image = np.where(tissues["body"], levels["body"] * (1 + textures["body"]), 0.0)
        image = np.where(tissues["fat"], levels["fat"] * (1 + textures["body"]), image)
        image = np.where(tissues["spine"], levels["spine"], image)
        image = np.where(tissues["organ"], levels["organ"] * (1 + textures["organ"]), image)
        for lesion, sign, c in zip(lesions, signs, contrast):
            image = np.where(lesion, levels["organ"] * (1 + sign * c) * (1 + textures["lesion"]), image)
        image = _blur(image, rng.uniform(0.5, 0.9) * S / 128)
        bias = 1 + rng.uniform(0.05, 0.15) * _smooth_noise(rng, S, 0.25 * S)
        noise = rng.uniform(0.015, 0.04) * rng.standard_normal((S, S))
        return np.clip(image * bias + noise, 0.0, 1.0)
