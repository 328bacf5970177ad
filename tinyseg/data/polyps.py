"""Synthetic RGB "colonoscopy-like" frames with polyps and exact masks, generated from a seed.

Made to be hard in the ways real polyp frames are (Kvasir-SEG, CVC-ClinicDB), so that a
training recipe can be developed against them without downloads:

- a textured, unevenly lit background: mucosa-coloured (reddish, its hue drawn per
  frame), a fine texture, a network of darker vessels, vignetting around a light centre
  plus a linear light gradient, and often a dark lumen (the colon's opening) somewhere;
- polyps: 1 (sometimes 2) star-shaped blobs whose radius is drawn log-uniformly from 4 %
  to 30 % of the frame size (foreground fractions from under 1 % to over 20 %),
  with a *weak* colour contrast to the mucosa around them (a gain of 1 ± 4-20 % per
  channel, the direction drawn per polyp: redder, paler, browner), a texture of their
  own and dome shading (lit on the side facing the light, a darker rim);
- specular highlights: small saturated white spots, on the polyps and on the background;
- a black box in one corner (the endoscope's overlay of the scope position, as in many
  colonoscopy frames) that hides whatever lies under it: the mask is 0 there;
- a slight blur and sensor noise.

Per frame:
    colour  = mucosa · (1 + texture) · vessels      (background)
            = mucosa · gain · (1 + texture) · dome   (polyp)
    image   = clip(blur(colour · light) + highlights + noise, 0, 1),   box → 0

``ds[i] -> (image float32 (3, H, W) in [0, 1], mask uint8 (H, W))``, mask 1 = polyp; every
item is drawn from ``np.random.default_rng([seed, index])``, so ``ds[i]`` is the same
whenever and in whatever order it is generated.
"""
from __future__ import annotations

import numpy as np

from .synthetic import _blob, _blur, _shape, _smooth_noise


class SyntheticPolyps:
    """A deterministic dataset of synthetic RGB colonoscopy-like frames with polyp masks.

    Args:
        n: number of frames (>= 1).
        size: frame height and width in pixels (>= 32).
        seed: non-negative integer; item i is drawn from ``np.random.default_rng([seed, i])``.

    ``num_classes`` is 2 (background, polyp); images have 3 channels (R, G, B) in [0, 1].
    """

    num_classes = 2
    channels = 3

    def __init__(self, n: int = 64, size: int = 128, seed: int = 0):
        for name, value, minimum in (("n", n, 1), ("size", size, 32), ("seed", seed, 0)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
        self.n, self.size, self.seed = int(n), int(size), int(seed)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if not isinstance(index, (int, np.integer)):
            raise TypeError(f"index must be an integer, got {type(index).__name__}")
        if not -self.n <= index < self.n:
            raise IndexError(f"index {index} out of range for a dataset of {self.n} images")
        return self._generate(int(index) % self.n)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """All items stacked: images (N, 3, H, W) float32, masks (N, H, W) uint8."""
        items = [self._generate(i) for i in range(self.n)]
        return np.stack([im for im, _ in items]), np.stack([m for _, m in items])

    def _generate(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, index])
        S = self.size
        t = (np.arange(S) + 0.5) / S * 2 - 1            # pixel centres in [-1, 1]
        yy, xx = t[:, None], t[None, :]

        # --- mucosa: a reddish base colour, fine texture, darker vessels
        mucosa = np.array([rng.uniform(0.62, 0.85), rng.uniform(0.28, 0.48), rng.uniform(0.22, 0.42)])
        texture = 0.06 * _smooth_noise(rng, S, rng.uniform(0.008, 0.02) * S) \
            + 0.05 * _smooth_noise(rng, S, 0.06 * S)
        vessel_field = _smooth_noise(rng, S, rng.uniform(0.03, 0.06) * S)
        vessels = np.abs(vessel_field) < rng.uniform(0.04, 0.1)         # thin lines along the zero set
        vessel_colour = np.array([0.85, 0.7, 0.75])                     # darker, less green/blue
        colour = mucosa[:, None, None] * (1 + texture)
        colour = np.where(vessels, colour * vessel_colour[:, None, None], colour)

        # --- light: vignetting around a light centre, a linear gradient, maybe a dark lumen
        light_y, light_x = rng.uniform(-0.5, 0.5, 2)
        radius2 = (yy - light_y) ** 2 + (xx - light_x) ** 2
        angle = rng.uniform(0, 2 * np.pi)
        light = (1 - rng.uniform(0.2, 0.5) * radius2 / 2) * (1 + rng.uniform(0, 0.25) * (np.cos(angle) * yy
                                                                                          + np.sin(angle) * xx))
        if rng.random() < 0.6:
            lumen_centre = rng.uniform(-0.7, 0.7, 2)
            lumen_r = rng.uniform(0.15, 0.35)
            lumen_d2 = ((yy - lumen_centre[0]) ** 2 + (xx - lumen_centre[1]) ** 2) / lumen_r ** 2
            light = light * (1 - rng.uniform(0.5, 0.85) * np.exp(-lumen_d2))

        # --- the black corner box (drawn last, over the image and the mask), mostly bottom-left as in Kvasir
        box = None
        if rng.random() < 0.7:
            box_h, box_w = (rng.uniform(0.18, 0.3, 2) * S).astype(int)
            corner = rng.integers(4) if rng.random() < 0.3 else 2
            box = (slice(0, box_h) if corner in (0, 1) else slice(S - box_h, S),
                   slice(0, box_w) if corner in (0, 2) else slice(S - box_w, S))
            in_box = np.zeros((S, S), dtype=bool)
            in_box[box] = True

        # --- polyps: small and large, weak contrast, own texture, dome shading
        mask = np.zeros((S, S), dtype=bool)
        for _ in range(1 if rng.random() < 0.75 else 2):
            radius = np.exp(rng.uniform(np.log(0.04), np.log(0.3)))     # fraction of the frame size
            for _ in range(20):     # a centre outside the box, so that some of the polyp shows
                centre = rng.uniform(-0.85 + radius, 0.85 - radius, 2)
                row, col = (np.clip(((centre + 1) / 2 * S).astype(int), 0, S - 1))
                if box is None or not in_box[row, col]:
                    break
            radii = (2 * radius * rng.uniform(0.75, 1.0), 2 * radius)   # in [-1, 1] units
            blob = _blob(yy, xx, centre, radii, _shape(rng, 0.1, np.pi)) & ~mask
            if not blob.any():
                continue
            gain = 1 + rng.choice([-1.0, 1.0]) * rng.uniform(0.04, 0.2) * rng.dirichlet(np.ones(3)) * 3
            own_texture = 0.05 * _smooth_noise(rng, S, rng.uniform(0.01, 0.03) * S)
            # dome: brighter towards the light, a darker rim
            d = np.hypot((yy - centre[0]) / radii[0], (xx - centre[1]) / radii[1])
            toward = ((light_y - centre[0]) * (yy - centre[0]) + (light_x - centre[1]) * (xx - centre[1]))
            toward = toward / (np.hypot(light_y - centre[0], light_x - centre[1]) * 2 * radius + 1e-6)
            dome = 1 + rng.uniform(0.03, 0.12) * np.clip(toward, -1, 1) - rng.uniform(0.0, 0.12) * np.clip(d, 0, 1) ** 4
            polyp = mucosa[:, None, None] * np.clip(gain, 0.5, 1.6)[:, None, None] * (1 + own_texture) * dome
            colour = np.where(blob, polyp, colour)
            mask |= blob

        image = np.stack([_blur(c, rng.uniform(0.5, 1.0) * S / 128) for c in colour * light])

        # --- specular highlights: small saturated white spots, more of them on polyps
        highlight = np.zeros((S, S))
        n_spots = rng.integers(3, 12)
        on_polyp = np.flatnonzero(mask)
        for k in range(n_spots):
            if on_polyp.size and k < n_spots // 2:
                cy, cx = np.unravel_index(rng.choice(on_polyp), mask.shape)
                centre = (t[cy], t[cx])
            else:
                centre = tuple(rng.uniform(-0.95, 0.95, 2))
            r = rng.uniform(0.006, 0.025)
            spot = ((yy - centre[0]) ** 2 + ((xx - centre[1]) / rng.uniform(0.5, 2.0)) ** 2) / r ** 2
            highlight = np.maximum(highlight, np.exp(-spot ** 2))
        image = image + highlight[None] * 1.2
        image = image + rng.uniform(0.01, 0.03) * rng.standard_normal(image.shape)
        image = np.clip(image, 0.0, 1.0)

        if box is not None:
            image[:, box[0], box[1]] = 0.0
            mask[box] = False
        return image.astype(np.float32), mask.astype(np.uint8)
