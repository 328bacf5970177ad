"""Prediction on images of any size: whole-image or overlap-tile, with optional flip TTA.

    pred = ts.inference.predict(model, image)                  # one pass over the whole image
    pred = ts.inference.predict(model, image, tile=256)        # overlap-tile (U-Net paper, Fig. 2)
    pred.probabilities   # (K, H, W) float32: P(foreground) for K = 1, class probabilities for K > 1
    pred.mask            # (H, W) uint8: probability > threshold for K = 1, argmax over classes for K > 1

The model is a U-Net-like module that returns logits and answers the size questions of
``tinyseg.models.UNet``: ``in_channels``, ``out_channels``, ``depth``, ``output_size(side)``,
``check_input_size(h, w)``, ``predict_proba(logits)`` and ``device``.

Three facts shape the code; docs/inference.md derives them.

1. Mirror padding. A network only takes some input sizes (same padding: multiples of
   2^depth; valid padding: sizes whose convolutions and poolings divide evenly, and the
   output is smaller than the input by a fixed context on every side). The image is
   therefore padded by reflection, which continues the anatomy plausibly, and the output
   is cropped back to (H, W).
2. Alignment. Each 2×2 max-pool halves the grid, so the network commutes with shifts of
   its input only when the shift is a multiple of 2^depth: a tile placed at any other
   offset would see its pixels grouped into different pooling cells than in the
   whole-image pass, and compute different values. Every tile origin is therefore a
   multiple of 2^depth away from the origin of the whole-image pass (the step between
   tiles is a multiple of 2^depth, and so is the part of the top/left padding that is not
   the network's own context).
3. Trusted interior. A same-padding network sees zeros beyond every tile edge, where the
   whole-image pass sees real pixels, so its outputs near tile edges differ from the
   whole-image pass. Tiles overlap, and each tile's outer ``margin`` pixels get an almost
   zero blending weight; the step is at most To - 2·margin, so every image pixel lies in
   the trusted interior of at least one tile. The tiled result equals the whole-image one
   exactly (to float rounding) wherever the margin is at least the network's receptive-field
   radius (how far in the zero padding can still be felt: 8·2^depth - 6 pixels for the
   plain U-Net); the default margin To//8 is a cheaper compromise that removes most of the
   edge effect. A valid-padding network with the paper's up-convolution sees no zeros, so
   its tiles need no margin and agree with the whole-image pass everywhere.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import backend
from .tensor import Tensor, no_grad

# The four flips of test-time augmentation, as the axes of a (C, H, W) array they reverse.
_FLIPS = ((), (1,), (2,), (1, 2))

# Blending weight of a tile's untrusted margin, relative to its window: small enough not to
# disturb pixels that some tile trusts, positive so that the weighted mean is always defined.
_MARGIN_WEIGHT = 1e-8


@dataclass
class Prediction:
    """The result of ``predict``.

    probabilities  (K, H, W) float32; K = model.out_channels. For a binary model (K = 1)
                   the single channel is P(foreground); for K > 1 the channels sum to 1.
    mask           (H, W) uint8; probabilities[0] > threshold for K = 1, else the argmax class.
    """

    probabilities: np.ndarray
    mask: np.ndarray


def predict(model, image, tile=None, overlap=0.5, blend="gaussian", margin=None, tta=False,
            batch_size=4, threshold=0.5) -> Prediction:
    """Segment one image of any size.

    image       (H, W) or (C, H, W) array or Tensor, C = model.in_channels, already
                normalised the way the model was trained; cast to float32.
    tile        None: one pass over the whole image, mirror-padded up to the nearest size
                the network takes. An int T (or a pair (Th, Tw)): overlap-tile prediction
                with input tiles of T pixels, which must be a size the network takes.
    overlap     fraction of the output tile To = model.output_size(T) shared by neighbouring
                tiles: step = To·(1 - overlap), rounded down to a multiple of 2^depth so that
                every tile's pooling grid lines up with the whole image's.
    blend       "gaussian" (weight exp(-r²/2σ²), σ = To/8, centred on the tile: a tile's
                centre counts more than its edges) or "constant" (plain mean of the tiles).
    margin      width in pixels of the band along each tile edge whose outputs are not
                trusted (weight 1e-8 × the window). Default: To//8 for same-padding
                networks, whose outputs near tile edges are disturbed by zero padding; 0 for
                valid-padding networks, which never see padding. The step is capped at
                To - 2·margin so that every pixel is in some tile's trusted interior.
                A margin of at least the receptive-field radius (8·2^depth - 6 for the plain
                U-Net) makes the tiled result equal the whole-image one (docs/inference.md).
    tta         average the probabilities over the four flips (none, horizontal, vertical,
                both) of the image, each un-flipped before averaging.
    batch_size  tiles per forward pass.
    threshold   foreground threshold of a binary (K = 1) model.

    Runs under ``no_grad`` with the model in eval mode (its previous mode is restored) on
    the model's device. Returns a ``Prediction`` with (K, H, W) probabilities and an
    (H, W) uint8 mask.
    """
    image = _as_image(image, model.in_channels)
    if blend not in ("gaussian", "constant"):
        raise ValueError(f"predict: blend expected 'gaussian' or 'constant', got {blend!r}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"predict: overlap expected a fraction in [0, 1), got {overlap!r}")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"predict: batch_size expected a positive integer, got {batch_size!r}")

    if tile is None:
        def run(img):
            return _predict_whole(model, img)
    else:
        layout = _TileLayout(model, tile, overlap, margin)

        def run(img):
            return _predict_tiled(model, img, layout, blend, batch_size)

    was_training = model.training
    model.eval()
    try:
        with no_grad():
            if tta:
                # Un-flipping each output puts all four on the image's own grid before averaging;
                # this makes the result exactly flip-equivariant (the set of flips is a group).
                probabilities = sum(np.flip(run(np.flip(image, axes)), axes) for axes in _FLIPS) / len(_FLIPS)
            else:
                probabilities = run(image)
    finally:
        model.train(was_training)

    probabilities = np.ascontiguousarray(probabilities, dtype=np.float32)
    if model.out_channels == 1:
        mask = (probabilities[0] > threshold).astype(np.uint8)
    else:
        mask = probabilities.argmax(axis=0).astype(np.uint8)
    return Prediction(probabilities=probabilities, mask=mask)


def predict_batch(model, images, **kwargs) -> list[Prediction]:
    """``predict`` on each image of a list (the images may differ in size); same keywords."""
    return [predict(model, image, **kwargs) for image in images]


# ---------------------------------------------------------------------------------------
# input


def _as_image(image, in_channels: int) -> np.ndarray:
    """The image as a (C, H, W) float32 NumPy array, after checking it."""
    if isinstance(image, Tensor):
        image = image.numpy()
    image = np.asarray(image)
    given_shape = image.shape
    if image.ndim == 2:
        image = image[None]
    elif image.ndim != 3:
        raise ValueError(f"predict: image expected shape (H, W) or (C, H, W), got shape {image.shape}")
    if image.shape[0] != in_channels:
        raise ValueError(f"predict: the model takes {in_channels} input channel(s) but the image has "
                         f"{image.shape[0]} (shape {given_shape}); images are channels-first (C, H, W)")
    if image.shape[1] == 0 or image.shape[2] == 0:
        raise ValueError(f"predict: image is empty, shape {given_shape}")
    image = image.astype(np.float32, copy=False)
    bad = np.count_nonzero(~np.isfinite(image))
    if bad:
        raise ValueError(f"predict: image has {bad} non-finite value(s) (NaN or inf); clean or normalise it first")
    return image


def _forward(model, batch: np.ndarray):
    """Probabilities (N, K, h, w) for a batch (N, C, H, W), as an array on the model's device."""
    logits = model(Tensor(batch).to(model.device))
    return model.predict_proba(logits).data


# ---------------------------------------------------------------------------------------
# whole image


def _whole_input_size(model, length: int) -> tuple[int, int]:
    """The smallest input side whose output covers ``length`` pixels, and its context.

    The context is what the network eats on each side, (input - output) / 2: 0 with same
    padding, a fixed number of pixels with valid padding (92 for the paper's 572 -> 388).
    """
    size = length
    while (out := model.output_size(size)) is None or out < length:
        size += 1
    return size, (size - out) // 2


def _predict_whole(model, image: np.ndarray) -> np.ndarray:
    """(C, H, W) image -> (K, H, W) probabilities, in one forward pass.

    The image is mirror-padded by the context on the top/left (so that output pixel (0, 0)
    is image pixel (0, 0)) and by the rest on the bottom/right, then the output is cropped.
    """
    _, height, width = image.shape
    size_h, context_h = _whole_input_size(model, height)
    size_w, context_w = _whole_input_size(model, width)
    padded = np.pad(image, ((0, 0), (context_h, size_h - height - context_h), (context_w, size_w - width - context_w)),
                    mode="reflect")
    probabilities = _forward(model, padded[None])[0, :, :height, :width]
    return backend.to_device(probabilities, "cpu")


# ---------------------------------------------------------------------------------------
# overlap-tile


class _TileLayout:
    """Where the tiles go, and how much each of their output pixels counts.

    Along each axis: input tile ``tile_in``, output tile ``tile_out``, network context
    ``context`` = (tile_in - tile_out) / 2, untrusted ``margin`` and ``step`` between tiles.
    """

    def __init__(self, model, tile, overlap: float, margin):
        tile_h, tile_w = (tile, tile) if isinstance(tile, (int, np.integer)) else tuple(tile)
        model.check_input_size(tile_h, tile_w)     # names the nearest valid sizes when it fails
        self.cell = 2 ** model.depth
        self.tile_in = (tile_h, tile_w)
        self.tile_out = (model.output_size(tile_h), model.output_size(tile_w))
        self.context = tuple((t_in - t_out) // 2 for t_in, t_out in zip(self.tile_in, self.tile_out))
        if margin is None:
            margin = min(self.tile_out) // 8 if model.padding == "same" else 0
        if not isinstance(margin, (int, np.integer)) or margin < 0:
            raise ValueError(f"predict: margin expected a non-negative integer number of pixels, got {margin!r}")
        self.margin = int(margin)
        self.step = tuple(self._step(t_out, overlap) for t_out in self.tile_out)

    def _step(self, tile_out: int, overlap: float) -> int:
        trusted = tile_out - 2 * self.margin
        if trusted < self.cell:
            raise ValueError(f"predict: tile too small: its {tile_out}-pixel output minus a {self.margin}-pixel "
                             f"margin on each side leaves {trusted} trusted pixels, fewer than one pooling cell "
                             f"({self.cell} = 2^depth); use a larger tile or a smaller margin")
        step = min(int(tile_out * (1.0 - overlap)), trusted)
        return max(step // self.cell * self.cell, self.cell)

    def axis(self, length: int, dim: int) -> tuple[int, int, list[int]]:
        """Padding before and after the image along axis ``dim`` (0: rows, 1: columns), and
        the tile starts in the padded image.

        A tile starting at s (padded coordinates) outputs padded pixels [s + context,
        s + context + tile_out) and trusts the ones ``margin`` away from both ends. The
        padding before is the context plus the margin rounded up to a multiple of 2^depth:
        the first tile then trusts image pixel 0, and its origin sits a multiple of 2^depth
        away from the whole-image pass's origin (which is minus the context). Tiles are
        added until the last trusted pixel passes the image's end.
        """
        tile_in, tile_out, context, step = self.tile_in[dim], self.tile_out[dim], self.context[dim], self.step[dim]
        pad_before = context + -(-self.margin // self.cell) * self.cell
        # In image coordinates tile k trusts up to k·step - pad_before + context + tile_out - margin;
        # the last tile's bound must reach the image's length.
        reach = length + pad_before - context - tile_out + self.margin
        count = 1 + max(0, math.ceil(reach / step))
        pad_after = (count - 1) * step + tile_in - pad_before - length
        return pad_before, pad_after, [k * step for k in range(count)]

    def window(self, blend: str) -> np.ndarray:
        """(To_h, To_w) float32 blending weights of one output tile."""
        axes = []
        for size in self.tile_out:
            if blend == "gaussian":
                r = np.arange(size) - (size - 1) / 2
                axes.append(np.exp(-0.5 * (r / (size / 8)) ** 2))
            else:
                axes.append(np.ones(size))
        weights = np.outer(*axes)
        trusted = np.zeros(weights.shape, dtype=bool)
        m = self.margin
        trusted[m:weights.shape[0] - m, m:weights.shape[1] - m] = True
        weights[~trusted] *= _MARGIN_WEIGHT
        return weights.astype(np.float32)


def _predict_tiled(model, image: np.ndarray, layout: _TileLayout, blend: str, batch_size: int) -> np.ndarray:
    """(C, H, W) image -> (K, H, W) probabilities, as the weighted mean of overlapping tiles.

    probabilities[k, y, x] = Σ_t w_t(y, x) · p_t[k, y, x] / Σ_t w_t(y, x), over the tiles t
    whose output covers (y, x), with w_t the tile's window at that pixel.
    """
    _, height, width = image.shape
    top, bottom, starts_y = layout.axis(height, 0)
    left, right, starts_x = layout.axis(width, 1)
    padded = np.pad(image, ((0, 0), (top, bottom), (left, right)), mode="reflect")
    (tile_h, tile_w), (out_h, out_w), (ctx_h, ctx_w) = layout.tile_in, layout.tile_out, layout.context
    origins = [(y, x) for y in starts_y for x in starts_x]

    # Accumulate on the model's device, in the padded image's coordinates.
    xp = backend.cupy_module() if model.device == "cuda" else np
    window = xp.asarray(layout.window(blend))
    weighted_sum = xp.zeros((model.out_channels,) + padded.shape[1:], dtype=xp.float32)
    weight_sum = xp.zeros(padded.shape[1:], dtype=xp.float32)
    for first in range(0, len(origins), batch_size):
        batch_origins = origins[first:first + batch_size]
        batch = np.stack([padded[:, y:y + tile_h, x:x + tile_w] for y, x in batch_origins])
        probabilities = _forward(model, batch)
        for (y, x), tile_probabilities in zip(batch_origins, probabilities):
            rows = slice(y + ctx_h, y + ctx_h + out_h)
            cols = slice(x + ctx_w, x + ctx_w + out_w)
            weighted_sum[:, rows, cols] += window * tile_probabilities
            weight_sum[rows, cols] += window
    result = weighted_sum[:, top:top + height, left:left + width] / weight_sum[top:top + height, left:left + width]
    return backend.to_device(result, "cpu")
