"""Segmentation metrics on label maps (NumPy arrays, not Tensors).

Overlap metrics, from the confusion counts of a binary prediction ``P`` against a
binary target ``T`` (TP = |P ∩ T|, FP = |P \\ T|, FN = |T \\ P|, TN = the rest):

    dice = f1   = 2 TP / (2 TP + FP + FN)
    iou         = TP / (TP + FP + FN)            (Jaccard index)
    precision   = TP / (TP + FP)
    recall      = TP / (TP + FN)                 (sensitivity)
    specificity = TN / (TN + FP)
    accuracy    = (TP + TN) / (TP + FP + FN + TN)

Distance metrics compare the boundaries of the two masks, 2-D images or 3-D volumes.
The boundary of a mask is the set of its pixels (voxels) that are not in its binary
erosion by a cross (3×3 in 2-D, the 6-neighbourhood in 3-D), with the outside of the
image counted as background (so foreground pixels on the image edge are boundary
pixels) -- the convention of MedPy. For every boundary pixel of ``P`` its Euclidean
distance to the nearest boundary pixel of ``T`` is taken, and vice versa, in pixels or,
with ``spacing=(dy, dx)`` (3-D: ``(dz, dy, dx)``, one value per array axis), in physical
units (e.g. mm). Anisotropic voxels (e.g. 0.8 × 0.8 × 2.5 mm CT) are measured with
their own size on each axis; a volume is scored as a whole, with 3-D surfaces:

    hd95 = max(percentile_95(d(∂P → ∂T)), percentile_95(d(∂T → ∂P)))
    assd = (Σ d(∂P → ∂T) + Σ d(∂T → ∂P)) / (|∂P| + |∂T|)

with ``np.percentile``'s linear interpolation, as MedPy and MONAI do. Distances come
from an exact Euclidean distance transform (Felzenszwalb & Huttenlocher 2012), written
here in NumPy, so no SciPy is needed; it runs on the bounding box of the two boundaries
only, which holds every nearest boundary point, so the result is the same, faster.

Empty masks. A ratio whose denominator is 0 is undefined; following the spirit of
"Metrics Reloaded" (Maier-Hein et al., Nature Methods 2024) each metric then gets the
value that a reader would expect, and no metric ever returns NaN:

* both masks empty (nothing to find, nothing found): dice = iou = f1 = precision =
  recall = 1.0 and hd95 = assd = 0.0 -- a perfect answer.
* exactly one mask empty: dice = iou = f1 = 0.0, and hd95 = assd = the worst value,
  the diagonal of the image's field of view, sqrt((H·dy)² + (W·dx)²) (3-D:
  sqrt((D·dz)² + (H·dy)² + (W·dx)²)), which is longer than any distance between two
  pixels of the image.
* precision is undefined when the prediction is empty: 1.0 if the target is empty
  too, else 0.0 (every lesion missed). Symmetrically recall is undefined when the
  target is empty: 1.0 if the prediction is empty too, else 0.0 (only false alarms).
  specificity, undefined when the target has no background, is 1.0 if the prediction
  has no background either, else 0.0.

Binary metrics take one image: two boolean or 0/1 arrays of the same shape; values
other than 0 and 1 are refused, so that a label map cannot pass for a mask by accident
(use :func:`per_class` or :func:`evaluate` for label maps). The overlap metrics accept
any shape (a 3-D volume is one image to them); the distance metrics take 2-D or 3-D masks.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

METRICS = ("dice", "iou", "precision", "recall", "specificity", "f1", "accuracy", "hd95", "assd")
POOLED_METRICS = ("dice", "iou", "precision", "recall", "accuracy")

# ---------------------------------------------------------------------------------------
# input checks


def _as_mask(x, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype == bool:
        return a
    if not (np.issubdtype(a.dtype, np.number)) or np.any((a != 0) & (a != 1)):
        raise ValueError(f"argument '{name}' must be a binary mask (bool or 0/1 values); "
                         f"for label maps with more classes use per_class() or evaluate()")
    return a.astype(bool)


def _check_pair(pred, target) -> tuple[np.ndarray, np.ndarray]:
    p, t = _as_mask(pred, "pred"), _as_mask(target, "target")
    if p.shape != t.shape:
        raise ValueError(f"pred and target must have the same shape, got pred {p.shape} and target {t.shape}")
    if p.size == 0:
        raise ValueError(f"pred and target must not be empty arrays, got shape {p.shape}")
    return p, t


def _check_spatial(p: np.ndarray) -> None:
    if p.ndim not in (2, 3):
        raise ValueError(f"distance metrics need 2-D masks (H, W) or 3-D volumes (D, H, W), got shape {p.shape}")


def _spacing(spacing, ndim: int = 2) -> tuple[float, ...]:
    """``None`` -> 1 per axis (pixels); a number -> isotropic; else one value per axis:
    (dy, dx) for 2-D, (dz, dy, dx) for 3-D."""
    if spacing is None:
        return (1.0,) * ndim
    values = np.asarray(spacing, dtype=float)
    if values.ndim == 0:
        values = np.repeat(values, ndim)
    if values.shape != (ndim,) or not np.all(np.isfinite(values)) or np.any(values <= 0):
        expected = "a pair (dy, dx)" if ndim == 2 else "a triple (dz, dy, dx)"
        raise ValueError(f"spacing must be None, a positive number or {expected} of positive numbers for "
                         f"{ndim}-D masks, got {spacing!r}")
    return tuple(float(v) for v in values)


# ---------------------------------------------------------------------------------------
# overlap metrics


def _confusion(p: np.ndarray, t: np.ndarray) -> tuple[int, int, int, int]:
    tp = int(np.count_nonzero(p & t))
    fp = int(np.count_nonzero(p)) - tp
    fn = int(np.count_nonzero(t)) - tp
    return tp, fp, fn, p.size - tp - fp - fn


def _ratio(num: int, den: int, undefined: float) -> float:
    return undefined if den == 0 else num / den


def _overlap(tp: int, fp: int, fn: int, tn: int) -> dict[str, float]:
    """All overlap metrics from confusion counts, with the empty-mask rules of the module docstring."""
    dice_value = _ratio(2 * tp, 2 * tp + fp + fn, 1.0)  # den 0 only when both masks are empty
    return {
        "dice": dice_value,
        "iou": _ratio(tp, tp + fp + fn, 1.0),
        # pred empty: perfect when there was nothing to find (fn == 0), else everything was missed
        "precision": _ratio(tp, tp + fp, 1.0 if fn == 0 else 0.0),
        # target empty: perfect when nothing was predicted (fp == 0), else only false alarms
        "recall": _ratio(tp, tp + fn, 1.0 if fp == 0 else 0.0),
        # target has no background: perfect when the prediction has none either (fn == 0)
        "specificity": _ratio(tn, tn + fp, 1.0 if fn == 0 else 0.0),
        "f1": dice_value,
        "accuracy": (tp + tn) / (tp + fp + fn + tn),
    }


def dice(pred, target) -> float:
    """Dice similarity coefficient 2 TP / (2 TP + FP + FN); 1.0 when both masks are empty."""
    return _overlap(*_confusion(*_check_pair(pred, target)))["dice"]


def f1(pred, target) -> float:
    """F1 score 2·precision·recall / (precision + recall) = 2 TP / (2 TP + FP + FN), i.e. the Dice."""
    return _overlap(*_confusion(*_check_pair(pred, target)))["f1"]


def iou(pred, target) -> float:
    """Intersection over union (Jaccard) TP / (TP + FP + FN); 1.0 when both masks are empty."""
    return _overlap(*_confusion(*_check_pair(pred, target)))["iou"]


def precision(pred, target) -> float:
    """Precision TP / (TP + FP); with an empty prediction 1.0 if the target is empty, else 0.0."""
    return _overlap(*_confusion(*_check_pair(pred, target)))["precision"]


def recall(pred, target) -> float:
    """Recall (sensitivity) TP / (TP + FN); with an empty target 1.0 if the prediction is empty, else 0.0."""
    return _overlap(*_confusion(*_check_pair(pred, target)))["recall"]


def specificity(pred, target) -> float:
    """Specificity TN / (TN + FP); with an all-foreground target 1.0 if the prediction is too, else 0.0."""
    return _overlap(*_confusion(*_check_pair(pred, target)))["specificity"]


def accuracy(pred, target) -> float:
    """Pixel accuracy (TP + TN) / (number of pixels)."""
    return _overlap(*_confusion(*_check_pair(pred, target)))["accuracy"]


def confusion_per_class(pred, target, num_classes: int, include_background: bool = False) -> np.ndarray:
    """Confusion counts (classes, 4) = [TP, FP, FN, TN] of ``pred == c`` against ``target == c`` for
    each class c (1..num_classes-1, plus 0 with ``include_background``). Counts of the slices of
    one volume add up to the volume's counts: sum them to score a case in 3-D."""
    classes = _classes(num_classes, include_background)
    p, t = np.asarray(pred), np.asarray(target)
    if p.shape != t.shape:
        raise ValueError(f"pred and target must have the same shape, got pred {p.shape} and target {t.shape}")
    return np.array([_confusion(p == c, t == c) for c in classes], dtype=np.int64).reshape(len(classes), 4)


def overlap_from_counts(counts) -> dict[str, float]:
    """The overlap metrics (dice, iou, ...) of one class from its [TP, FP, FN, TN] counts,
    with the empty-mask rules of the module docstring."""
    return _overlap(*(int(c) for c in counts))


# ---------------------------------------------------------------------------------------
# exact Euclidean distance transform


def _lower_envelope(f: np.ndarray, w: float) -> np.ndarray:
    """1-D squared distance transform of each row of ``f``: d[r, x] = min_q f[r, q] + w·(x - q)².

    Felzenszwalb & Huttenlocher's lower envelope of parabolas, run on all rows at once:
    the Python loop walks along the row (q), NumPy does the rows. ``f`` may hold +inf
    (no feature); a row of +inf stays +inf. ``w`` is the squared sample spacing.
    """
    rows, n = f.shape
    finite = np.isfinite(f)
    # h[q] = f[q]/w + q² turns the intersection of the parabolas from v and q into
    # s = (h[q] - h[v]) / (2 (q - v)), in sample units.
    h = np.where(finite, f / w, np.inf) + np.arange(n, dtype=float) ** 2
    v = np.zeros((rows, n), dtype=np.intp)      # apex positions of the envelope's parabolas
    z = np.empty((rows, n + 1))                 # z[k], z[k+1]: where parabola k is lowest
    k = np.full(rows, -1, dtype=np.intp)        # index of the rightmost parabola; -1 = none yet
    for q in range(n):
        active = np.flatnonzero(finite[:, q])
        starts = k[active] < 0
        first, r = active[starts], active[~starts]
        k[first] = 0
        v[first, 0] = q
        z[first, 0], z[first, 1] = -np.inf, np.inf
        while r.size:
            vk = v[r, k[r]]
            s = (h[r, q] - h[r, vk]) / (2.0 * (q - vk))
            # parabola k is hidden by q wherever q is lower from s on; z[r, 0] = -inf stops the pops
            hidden = s <= z[r, k[r]]
            done, s_done = r[~hidden], s[~hidden]
            k[done] += 1
            v[done, k[done]] = q
            z[done, k[done]] = s_done
            z[done, k[done] + 1] = np.inf
            r = r[hidden]
            k[r] -= 1
    # Fill in: x lies on parabola j where j = number of breakpoints z[1..k] below x. Each
    # breakpoint z adds 1 from x = floor(z) + 1 on; a bincount and cumsum do all rows at once.
    has = k >= 0
    nb = np.where(has, k, 0)
    idx = np.arange(1, n + 1)
    valid = idx[None, :] <= nb[:, None]
    rr, cc = np.nonzero(valid)
    start = np.clip(np.floor(z[rr, cc + 1]).astype(np.intp) + 1, 0, n)
    steps = np.bincount(rr * (n + 1) + start, minlength=rows * (n + 1)).reshape(rows, n + 1)
    j = np.cumsum(steps, axis=1)[:, :n]
    apex = np.take_along_axis(v, j, axis=1)
    x = np.arange(n)
    out = w * (x - apex) ** 2 + np.take_along_axis(np.where(finite, f, np.inf), apex, axis=1)
    out[~has] = np.inf
    return out


def _squared_edt(features: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """Squared Euclidean distance from every pixel to the nearest True pixel of ``features``.

    ``features``: bool array (..., H, W) with ``spacing = (dy, dx)``, or (..., D, H, W) with
    ``spacing = (dz, dy, dx)``: the last len(spacing) axes are the image, leading axes a
    batch; +inf where an image has no feature pixel. Exact: a 1-D transform along the first
    image axis, then the lower-envelope transform along each next axis (the separable scheme
    of Felzenszwalb & Huttenlocher): in 2-D, min over (i, j) of (y-i)²dy² + (x-j)²dx² =
    min_j [min_i (y-i)²dy²] + (x-j)²dx², and each further axis adds its term the same way.
    """
    k = len(spacing)
    first = features.ndim - k
    n = features.shape[first]
    # First pass on binary input: the distance to the nearest feature before or after along
    # the first image axis, from running max/min of the feature indices (NumPy scans, no loop).
    i = np.arange(n, dtype=float).reshape((n,) + (1,) * (k - 1))
    above = np.maximum.accumulate(np.where(features, i, -np.inf), axis=first)
    below = np.flip(np.minimum.accumulate(np.flip(np.where(features, i, np.inf), axis=first), axis=first),
                    axis=first)
    d = (np.minimum(i - above, below - i) * spacing[0]) ** 2
    for offset in range(1, k):
        moved = np.moveaxis(d, first + offset, -1)
        shape = moved.shape
        d = np.moveaxis(_lower_envelope(moved.reshape(-1, shape[-1]), spacing[offset] ** 2).reshape(shape),
                        -1, first + offset)
    return d


# ---------------------------------------------------------------------------------------
# distance metrics


def _boundary(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` not in its erosion by a cross (3×3 in 2-D, 6-neighbourhood in 3-D);
    outside the image counts as background."""
    m = np.pad(mask, 1, constant_values=False)
    inner = (slice(1, -1),) * mask.ndim
    eroded = m[inner].copy()
    for axis in range(mask.ndim):
        for start in (0, 2):        # the neighbour before and after along this axis
            neighbour = list(inner)
            neighbour[axis] = slice(start, start + mask.shape[axis])
            eroded &= m[tuple(neighbour)]
    return mask & ~eroded


def _diagonal(shape: tuple[int, ...], spacing: tuple[float, ...]) -> float:
    return math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing)))


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...]:
    """The smallest box (one slice per axis) holding every True element of a non-empty ``mask``."""
    box = []
    for axis in range(mask.ndim):
        line = mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis))
        box.append(slice(int(np.argmax(line)), len(line) - int(np.argmax(line[::-1]))))
    return tuple(box)


def _distances(p: np.ndarray, t: np.ndarray, spacing: tuple[float, ...]) -> dict[str, float]:
    """hd95 and assd of two 2-D or 3-D masks, with the empty-mask rules of the module docstring."""
    if not p.any() and not t.any():
        return {"hd95": 0.0, "assd": 0.0}
    if not p.any() or not t.any():
        worst = _diagonal(p.shape, spacing)
        return {"hd95": worst, "assd": worst}
    bp, bt = _boundary(p), _boundary(t)
    # Every nearest boundary point lies in the bounding box of the two boundaries: transform only that.
    box = _bounding_box(bp | bt)
    bp, bt = bp[box], bt[box]
    # one batched transform: plane 0 = distance to ∂T, plane 1 = distance to ∂P
    dist = np.sqrt(_squared_edt(np.stack([bt, bp]), spacing))
    d_pt, d_tp = dist[0][bp], dist[1][bt]
    return {
        "hd95": float(max(np.percentile(d_pt, 95), np.percentile(d_tp, 95))),
        "assd": float((d_pt.sum() + d_tp.sum()) / (d_pt.size + d_tp.size)),
    }


def hd95(pred, target, spacing=None) -> float:
    """95th-percentile Hausdorff distance between the mask boundaries (see the module docstring).

    ``pred``, ``target``: 2-D masks (H, W) or 3-D volumes (D, H, W). ``spacing``: None
    (pixels), a number, or the physical size per pixel along each array axis: (dy, dx),
    or (dz, dy, dx) for a volume (e.g. mm). 0.0 when both masks are empty; the image
    (volume) diagonal when exactly one is.
    """
    p, t = _check_pair(pred, target)
    _check_spatial(p)
    return _distances(p, t, _spacing(spacing, p.ndim))["hd95"]


def assd(pred, target, spacing=None) -> float:
    """Average symmetric surface distance: the mean of all boundary-to-boundary distances, both ways.

    assd = (Σ_{a∈∂P} d(a, ∂T) + Σ_{b∈∂T} d(b, ∂P)) / (|∂P| + |∂T|). Shapes, spacing and
    empty rules as for :func:`hd95`.
    """
    p, t = _check_pair(pred, target)
    _check_spatial(p)
    return _distances(p, t, _spacing(spacing, p.ndim))["assd"]


# ---------------------------------------------------------------------------------------
# multi-class label maps and batches


def _check_labels(a: np.ndarray, name: str, num_classes: int) -> None:
    if not (np.issubdtype(a.dtype, np.integer) or a.dtype == bool):
        raise ValueError(f"argument '{name}' must be an integer label map, got dtype {a.dtype}")
    if a.size and (a.min() < 0 or a.max() >= num_classes):
        raise ValueError(f"argument '{name}' has labels outside 0..{num_classes - 1} "
                         f"(found {int(a.min())}..{int(a.max())}) for num_classes={num_classes}")


def _classes(num_classes: int, include_background: bool) -> range:
    if not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    return range(0 if include_background else 1, int(num_classes))


def per_class(metric_fn: Callable, pred, target, num_classes: int, include_background: bool = False,
              **kwargs) -> dict[int, float]:
    """``{c: metric_fn(pred == c, target == c, **kwargs)}`` for each class c (one-vs-rest).

    ``pred``, ``target``: integer label maps with values in 0..num_classes-1. Class 0
    (background) is left out unless ``include_background``. ``kwargs`` go to ``metric_fn``
    (e.g. ``spacing`` for :func:`hd95`).
    """
    classes = _classes(num_classes, include_background)
    p, t = np.asarray(pred), np.asarray(target)
    if p.shape != t.shape:
        raise ValueError(f"pred and target must have the same shape, got pred {p.shape} and target {t.shape}")
    _check_labels(p, "pred", num_classes)
    _check_labels(t, "target", num_classes)
    return {c: metric_fn(p == c, t == c, **kwargs) for c in classes}


def _as_images(x, name: str) -> list[np.ndarray]:
    if isinstance(x, np.ndarray):
        images = [x] if x.ndim == 2 else list(x)
    else:
        images = [np.asarray(im) for im in x]
    for k, im in enumerate(images):
        if im.ndim not in (2, 3):
            raise ValueError(f"argument '{name}' must be (N, H, W), (N, D, H, W) or a sequence of (H, W) label "
                             f"maps or (D, H, W) label volumes, got an item {k} of shape {im.shape}")
    return images


def _item_spacings(spacing, spacings, images: list[np.ndarray]) -> list[tuple[float, ...]]:
    """One spacing per item: ``spacings`` (one per item) when given, else ``spacing`` for all."""
    if spacings is None:
        return [_spacing(spacing, im.ndim) for im in images]
    spacings = list(spacings)
    if len(spacings) != len(images):
        raise ValueError(f"spacings must hold one spacing per item, got {len(spacings)} for {len(images)} items")
    known = [s is not None for s in spacings]
    if any(known) and not all(known):
        raise ValueError(f"spacings mix known spacings (physical units) and None (pixels) for "
                         f"{known.count(False)} of {len(images)} items; expected all or none, "
                         "so that every distance is in one unit")
    return [_spacing(s, im.ndim) for s, im in zip(spacings, images)]


def evaluate(preds, targets, num_classes: int = 2, spacing=None, include_background: bool = False,
             spacings=None) -> dict:
    """All metrics on a batch of label maps.

    ``preds``, ``targets``: (N, H, W) arrays or sequences of (H, W) integer label maps
    (a single (H, W) map is one image); (N, D, H, W) arrays or sequences of (D, H, W)
    volumes score each volume as one case in 3-D (3-D surfaces, 3-D overlap).
    ``spacing``: one spacing for every item (None: pixels), per axis as in :func:`hd95`;
    ``spacings``: one per item instead, all known or all None. For every item and every
    evaluated class c (1..num_classes-1, plus 0 with ``include_background``) the binary
    metrics of ``pred == c`` against ``target == c`` are computed. Returns::

        {"per_image": [{"dice": ..., ..., "assd": ...,        # mean over the classes
                        "per_class": {c: {"dice": ..., ...}}}, ...],
         "mean":   {metric: mean over images of the per-image values},
         "pooled": {dice, iou, precision, recall, accuracy from the confusion counts
                    summed over all pixels of all images, per class, then averaged over classes},
         "empty":  {"both_empty": n, "pred_empty_only": n, "target_empty_only": n}}

    Empty counts are over (image, class) pairs. Accuracy is one-vs-rest per class; with
    two classes it is the plain pixel accuracy.
    """
    classes = _classes(num_classes, include_background)
    ps, ts = _as_images(preds, "preds"), _as_images(targets, "targets")
    if len(ps) != len(ts):
        raise ValueError(f"preds and targets must hold the same number of images, got {len(ps)} and {len(ts)}")
    if not ps:
        raise ValueError("evaluate needs at least one image, got none")
    item_spacings = _item_spacings(spacing, spacings, ps)
    per_image = []
    pooled_counts = {c: np.zeros(4, dtype=np.int64) for c in classes}
    empty = {"both_empty": 0, "pred_empty_only": 0, "target_empty_only": 0}
    for k, (p, t) in enumerate(zip(ps, ts)):
        if p.shape != t.shape:
            raise ValueError(f"image {k}: pred and target must have the same shape, "
                             f"got pred {p.shape} and target {t.shape}")
        _check_labels(p, "preds", num_classes)
        _check_labels(t, "targets", num_classes)
        values = {}
        for c in classes:
            pc, tc = p == c, t == c
            counts = _confusion(pc, tc)
            pooled_counts[c] += counts
            values[c] = {**_overlap(*counts), **_distances(pc, tc, item_spacings[k])}
            p_empty, t_empty = not pc.any(), not tc.any()
            if p_empty and t_empty:
                empty["both_empty"] += 1
            elif p_empty:
                empty["pred_empty_only"] += 1
            elif t_empty:
                empty["target_empty_only"] += 1
        image = {m: float(np.mean([values[c][m] for c in classes])) for m in METRICS}
        image["per_class"] = values
        per_image.append(image)
    pooled_per_class = [_overlap(*map(int, pooled_counts[c])) for c in classes]
    return {
        "per_image": per_image,
        "mean": {m: float(np.mean([im[m] for im in per_image])) for m in METRICS},
        "pooled": {m: float(np.mean([v[m] for v in pooled_per_class])) for m in POOLED_METRICS},
        "empty": empty,
    }


def write_report(path, result: dict, ids, rows: str = "per_image", **context) -> dict:
    """Write ``metrics.json`` from an :func:`evaluate` result and return the document.

    The document, as ``tinyseg evaluate`` writes it: the mean over images of each metric at
    the top level (``"dice"``, ``"iou"``, ...), ``"per_image"`` rows (``"id"`` from ``ids``,
    one per image, then that image's metrics), ``"pooled"`` and ``"empty"``, then
    ``context`` (e.g. checkpoint, data, units). One writer, so every metrics.json reads alike.
    ``rows`` names the rows: "per_case" when each item of the result is a volume scored in 3-D.
    """
    import json
    ids = list(ids) if ids is not None else [str(i) for i in range(len(result["per_image"]))]
    if len(ids) != len(result["per_image"]):
        raise ValueError(f"write_report: {len(ids)} ids for {len(result['per_image'])} images; expected one id per image")
    report = {**result["mean"],
              rows: [{"id": ids[i], **{k: v for k, v in image.items() if k != "per_class"}}
                     for i, image in enumerate(result["per_image"])],
              "pooled": result["pooled"], "empty": result["empty"], **context}
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
    return report


def format_table(result: dict, items: str = "images", units: str | None = None) -> str:
    """A text table of an :func:`evaluate` result: mean, std, min, max over images per metric,
    then the pooled metrics and the empty-mask counts (std is the population std, ddof=0).
    ``items`` names what a row of the result is ("images", "cases", "slices"); ``units``,
    when given, the unit of hd95 and assd ("mm", "pixels")."""
    per_image = result["per_image"]
    lines = [f"{'metric':<12}{'mean':>10}{'std':>10}{'min':>10}{'max':>10}"]
    for m in METRICS:
        v = np.array([im[m] for im in per_image])
        lines.append(f"{m:<12}{v.mean():>10.4f}{v.std():>10.4f}{v.min():>10.4f}{v.max():>10.4f}")
    lines.append(f"pooled over all pixels ({len(per_image)} {items}): "
                 + ", ".join(f"{m} {v:.4f}" for m, v in result["pooled"].items()))
    if units is not None:
        lines.append(f"hd95 and assd in {units}")
    e = result["empty"]
    lines.append(f"empty masks ({items[:-1] if items.endswith('s') else items}, class pairs): "
                 f"both empty {e['both_empty']}, "
                 f"pred empty only {e['pred_empty_only']}, target empty only {e['target_empty_only']}")
    return "\n".join(lines)
