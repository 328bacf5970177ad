"""Segmentation metrics on label maps (NumPy arrays, not Tensors).

Overlap metrics, from the confusion counts of a binary prediction ``P`` against a
binary target ``T`` (TP = |P ∩ T|, FP = |P \\ T|, FN = |T \\ P|, TN = the rest):

    dice = f1   = 2 TP / (2 TP + FP + FN)
    iou         = TP / (TP + FP + FN)            (Jaccard index)
    precision   = TP / (TP + FP)
    recall      = TP / (TP + FN)                 (sensitivity)
    specificity = TN / (TN + FP)
    accuracy    = (TP + TN) / (TP + FP + FN + TN)

Distance metrics compare the boundaries of the two masks. The boundary of a mask is
the set of its pixels that are not in its binary erosion by a 3×3 cross, with the
outside of the image counted as background (so foreground pixels on the image edge are
boundary pixels) -- the convention of MedPy. For every boundary pixel of ``P`` its
Euclidean distance to the nearest boundary pixel of ``T`` is taken, and vice versa,
in pixels or, with ``spacing=(dy, dx)``, in physical units (e.g. mm):

    hd95 = max(percentile_95(d(∂P → ∂T)), percentile_95(d(∂T → ∂P)))
    assd = (Σ d(∂P → ∂T) + Σ d(∂T → ∂P)) / (|∂P| + |∂T|)

with ``np.percentile``'s linear interpolation, as MedPy and MONAI do. Distances come
from an exact Euclidean distance transform (Felzenszwalb & Huttenlocher 2012), written
here in NumPy, so no SciPy is needed.

Empty masks. A ratio whose denominator is 0 is undefined; following the spirit of
"Metrics Reloaded" (Maier-Hein et al., Nature Methods 2024) each metric then gets the
value that a reader would expect, and no metric ever returns NaN:

* both masks empty (nothing to find, nothing found): dice = iou = f1 = precision =
  recall = 1.0 and hd95 = assd = 0.0 -- a perfect answer.
* exactly one mask empty: dice = iou = f1 = 0.0, and hd95 = assd = the worst value,
  the diagonal of the image's field of view, sqrt((H·dy)² + (W·dx)²), which is longer
  than any distance between two pixels of the image.
* precision is undefined when the prediction is empty: 1.0 if the target is empty
  too, else 0.0 (every lesion missed). Symmetrically recall is undefined when the
  target is empty: 1.0 if the prediction is empty too, else 0.0 (only false alarms).
  specificity, undefined when the target has no background, is 1.0 if the prediction
  has no background either, else 0.0.

Binary metrics take one image: two boolean or 0/1 arrays of the same shape; values
other than 0 and 1 are refused, so that a label map cannot pass for a mask by accident
(use :func:`per_class` or :func:`evaluate` for label maps). The overlap metrics accept
any shape (a 3-D volume is one image to them); the distance metrics need 2-D masks.
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


def _check_2d(p: np.ndarray) -> None:
    if p.ndim != 2:
        raise ValueError(f"distance metrics need 2-D masks (H, W), got shape {p.shape}")


def _spacing(spacing) -> tuple[float, float]:
    """``None`` -> (1, 1) pixels; a number -> isotropic; a pair -> (dy, dx)."""
    if spacing is None:
        return 1.0, 1.0
    values = np.asarray(spacing, dtype=float)
    if values.ndim == 0:
        values = np.repeat(values, 2)
    if values.shape != (2,) or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError(f"spacing must be None, a positive number or a pair (dy, dx) of positive numbers, "
                         f"got {spacing!r}")
    return float(values[0]), float(values[1])


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


def _squared_edt(features: np.ndarray, spacing: tuple[float, float]) -> np.ndarray:
    """Squared Euclidean distance from every pixel to the nearest True pixel of ``features``.

    ``features``: bool array (..., H, W); distances use ``spacing = (dy, dx)``; +inf where
    an image has no feature pixel. Exact: a 1-D transform down the columns, then the
    lower-envelope transform along the rows (the separable scheme of Felzenszwalb &
    Huttenlocher): min over (i, j) of (y-i)²dy² + (x-j)²dx² = min_j [min_i (y-i)²dy²] + (x-j)²dx².
    """
    dy, dx = spacing
    *lead, H, W = features.shape
    # Column pass on binary input: the distance to the nearest feature above or below,
    # from running max/min of the feature row indices (NumPy scans, no Python loop).
    i = np.arange(H, dtype=float)[:, None]
    above = np.maximum.accumulate(np.where(features, i, -np.inf), axis=-2)
    below = np.flip(np.minimum.accumulate(np.flip(np.where(features, i, np.inf), axis=-2), axis=-2), axis=-2)
    g = (np.minimum(i - above, below - i) * dy) ** 2
    return _lower_envelope(g.reshape(-1, W), dx * dx).reshape(*lead, H, W)


# ---------------------------------------------------------------------------------------
# distance metrics


def _boundary(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` not in its erosion by a 3×3 cross; outside the image counts as background."""
    m = np.pad(mask, 1, constant_values=False)
    eroded = m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
    return mask & ~eroded


def _diagonal(shape: tuple[int, int], spacing: tuple[float, float]) -> float:
    return math.hypot(shape[0] * spacing[0], shape[1] * spacing[1])


def _distances(p: np.ndarray, t: np.ndarray, spacing: tuple[float, float]) -> dict[str, float]:
    """hd95 and assd of two 2-D masks, with the empty-mask rules of the module docstring."""
    if not p.any() and not t.any():
        return {"hd95": 0.0, "assd": 0.0}
    if not p.any() or not t.any():
        worst = _diagonal(p.shape, spacing)
        return {"hd95": worst, "assd": worst}
    bp, bt = _boundary(p), _boundary(t)
    # one batched transform: plane 0 = distance to ∂T, plane 1 = distance to ∂P
    dist = np.sqrt(_squared_edt(np.stack([bt, bp]), spacing))
    d_pt, d_tp = dist[0][bp], dist[1][bt]
    return {
        "hd95": float(max(np.percentile(d_pt, 95), np.percentile(d_tp, 95))),
        "assd": float((d_pt.sum() + d_tp.sum()) / (d_pt.size + d_tp.size)),
    }


def hd95(pred, target, spacing=None) -> float:
    """95th-percentile Hausdorff distance between the mask boundaries (see the module docstring).

    ``spacing``: None (pixels), a number, or (dy, dx) in physical units per pixel.
    0.0 when both masks are empty; the image diagonal when exactly one is.
    """
    p, t = _check_pair(pred, target)
    _check_2d(p)
    return _distances(p, t, _spacing(spacing))["hd95"]


def assd(pred, target, spacing=None) -> float:
    """Average symmetric surface distance: the mean of all boundary-to-boundary distances, both ways.

    assd = (Σ_{a∈∂P} d(a, ∂T) + Σ_{b∈∂T} d(b, ∂P)) / (|∂P| + |∂T|). Empty rules as for :func:`hd95`.
    """
    p, t = _check_pair(pred, target)
    _check_2d(p)
    return _distances(p, t, _spacing(spacing))["assd"]


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
        if im.ndim != 2:
            raise ValueError(f"argument '{name}' must be (N, H, W) or a sequence of (H, W) label maps, "
                             f"got an item {k} of shape {im.shape}")
    return images


def evaluate(preds, targets, num_classes: int = 2, spacing=None, include_background: bool = False) -> dict:
    """All metrics on a batch of label maps.

    ``preds``, ``targets``: (N, H, W) arrays or sequences of (H, W) integer label maps
    (a single (H, W) map is one image). For every image and every evaluated class c
    (1..num_classes-1, plus 0 with ``include_background``) the binary metrics of
    ``pred == c`` against ``target == c`` are computed. Returns::

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
    sp = _spacing(spacing)
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
            values[c] = {**_overlap(*counts), **_distances(pc, tc, sp)}
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


def write_report(path, result: dict, ids, **context) -> dict:
    """Write ``metrics.json`` from an :func:`evaluate` result and return the document.

    The document, as ``tinyseg evaluate`` writes it: the mean over images of each metric at
    the top level (``"dice"``, ``"iou"``, ...), ``"per_image"`` rows (``"id"`` from ``ids``,
    one per image, then that image's metrics), ``"pooled"`` and ``"empty"``, then
    ``context`` (e.g. checkpoint, data, units). One writer, so every metrics.json reads alike.
    """
    import json
    ids = list(ids) if ids is not None else [str(i) for i in range(len(result["per_image"]))]
    if len(ids) != len(result["per_image"]):
        raise ValueError(f"write_report: {len(ids)} ids for {len(result['per_image'])} images; expected one id per image")
    report = {**result["mean"],
              "per_image": [{"id": ids[i], **{k: v for k, v in image.items() if k != "per_class"}}
                            for i, image in enumerate(result["per_image"])],
              "pooled": result["pooled"], "empty": result["empty"], **context}
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
    return report


def format_table(result: dict) -> str:
    """A text table of an :func:`evaluate` result: mean, std, min, max over images per metric,
    then the pooled metrics and the empty-mask counts (std is the population std, ddof=0)."""
    per_image = result["per_image"]
    lines = [f"{'metric':<12}{'mean':>10}{'std':>10}{'min':>10}{'max':>10}"]
    for m in METRICS:
        v = np.array([im[m] for im in per_image])
        lines.append(f"{m:<12}{v.mean():>10.4f}{v.std():>10.4f}{v.min():>10.4f}{v.max():>10.4f}")
    lines.append(f"pooled over all pixels ({len(per_image)} images): "
                 + ", ".join(f"{m} {v:.4f}" for m, v in result["pooled"].items()))
    e = result["empty"]
    lines.append(f"empty masks (image, class pairs): both empty {e['both_empty']}, "
                 f"pred empty only {e['pred_empty_only']}, target empty only {e['target_empty_only']}")
    return "\n".join(lines)
