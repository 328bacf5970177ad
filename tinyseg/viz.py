"""Pictures of training and predictions: curves, overlays, mask PNGs, benchmark charts.

Every figure is a ``matplotlib.figure.Figure`` drawn by the Agg canvas, never through
``pyplot``: no display is needed (servers, CI, ``tinyseg predict`` over ssh), no global
figure list grows in a loop, and the caller's own pyplot backend is left alone. The
plotting functions return the Figure (Jupyter shows it) and write a PNG when given a path.

Colours used throughout:
    ground truth outline   green          GT_COLOR
    prediction outline     magenta        PRED_COLOR
    false positive pixel   red            FP_COLOR   (predicted foreground the target does not have)
    false negative pixel   blue           FN_COLOR   (target foreground the prediction missed)
    class c of a multi-class mask: CLASS_COLORS[(c - 1) % 10] (matplotlib's tab10)

Outlines are the boundary of each mask, ``mask & ~erode(mask)``, with a 3×3 cross as the
erosion's structuring element and the outside of the image counted as background (the
convention of ``tinyseg.metrics``): one pixel wide, drawn on the pixels of the mask itself.
"""
from __future__ import annotations

import csv
import math
import os

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from . import metrics
from .tensor import Tensor

GT_COLOR = (0.0, 0.8, 0.0)
PRED_COLOR = (1.0, 0.0, 1.0)
FP_COLOR = (1.0, 0.15, 0.1)
FN_COLOR = (0.1, 0.45, 1.0)
CLASS_COLORS = tuple(tuple(c[:3]) for c in colormaps["tab10"].colors)

# Opacity of the filled prediction in overlay_png: enough to see the region, little enough
# to see the anatomy under it.
_FILL_ALPHA = 0.35


# ---------------------------------------------------------------------------------------
# training curves


def plot_curves(history, path=None) -> Figure:
    """Loss and validation-metric curves of a training run.

    history  a list of dicts, one per epoch (keys as written by ``tinyseg.train``: epoch,
             train_loss, val_loss, val_dice, val_iou, lr; any may be missing or None), or the
             path of a ``history.csv``.
    Left panel: train and validation loss against epoch, with the learning rate on a log
    axis at the right when the history has one. Right panel: validation Dice (and IoU when
    present) against epoch, the best Dice marked. Writes a PNG to ``path`` if given.
    """
    rows = _read_history(history) if isinstance(history, (str, os.PathLike)) else list(history)
    if not rows:
        raise ValueError("plot_curves: the history is empty (no epoch finished yet?)")
    epochs = [i + 1 if _number(row.get("epoch")) is None else _number(row.get("epoch"))
              for i, row in enumerate(rows)]

    def series(key):
        """(epochs, values) where the history has a value for ``key``."""
        points = [(e, _number(row.get(key))) for e, row in zip(epochs, rows)]
        points = [(e, v) for e, v in points if v is not None]
        return [e for e, _ in points], [v for _, v in points]

    fig = _new_figure(figsize=(11, 4))
    loss_ax, metric_ax = fig.subplots(1, 2)
    marker = "o" if len(rows) <= 30 else None     # dots help read short runs, clutter long ones

    for key, label, color in (("train_loss", "train loss", "C0"), ("val_loss", "validation loss", "C1")):
        x, y = series(key)
        if x:
            loss_ax.plot(x, y, color=color, marker=marker, markersize=3, label=label)
    loss_ax.set(xlabel="epoch", ylabel="loss", title="loss")
    loss_ax.grid(alpha=0.3)
    handles, labels = loss_ax.get_legend_handles_labels()
    x, lr = series("lr")
    if x and min(lr) > 0:
        lr_ax = loss_ax.twinx()
        lr_ax.plot(x, lr, color="0.5", linestyle="--", linewidth=1, label="learning rate")
        lr_ax.set_yscale("log")
        lr_ax.set_ylabel("learning rate", color="0.4")
        more_handles, more_labels = lr_ax.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    if handles:
        loss_ax.legend(handles, labels, loc="upper right")

    x_dice, dice = series("val_dice")
    x_iou, iou = series("val_iou")
    if x_dice:
        metric_ax.plot(x_dice, dice, color="C2", marker=marker, markersize=3, label="validation Dice")
        best = int(np.argmax(dice))
        metric_ax.plot(x_dice[best], dice[best], marker="*", markersize=14, color="C2", linestyle="none",
                       label=f"best Dice {dice[best]:.3f} (epoch {x_dice[best]:g})")
    if x_iou:
        metric_ax.plot(x_iou, iou, color="C4", marker=marker, markersize=3, label="validation IoU")
    if x_dice or x_iou:
        metric_ax.set_ylim(0, 1.02)
        metric_ax.legend(loc="lower right")
    else:
        metric_ax.text(0.5, 0.5, "no validation metrics in this history", ha="center", va="center",
                       transform=metric_ax.transAxes, color="0.4")
    metric_ax.set(xlabel="epoch", ylabel="score", title="validation")
    metric_ax.grid(alpha=0.3)
    for ax in (loss_ax, metric_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    return _save(fig, path, dpi=120)


def _read_history(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _number(value) -> float | None:
    """A history cell as a float; None for missing, empty, 'None' or NaN cells."""
    if value is None or value == "" or value == "None":
        return None
    value = float(value)
    return None if math.isnan(value) else value


# ---------------------------------------------------------------------------------------
# segmentation overlays


def overlay(image, target, pred, path=None, title=None) -> Figure:
    """Four panels comparing a prediction with its ground truth, on the image.

    image   (H, W) or (C, H, W); one channel is shown in grey (the first, or RGB for C = 3),
            contrast-stretched between its 0.5th and 99.5th percentiles.
    target, pred  (H, W) label maps (bool, 0/1, or class indices 0..K-1; 0 = background).
    Panels: the image; the ground-truth outline (green); the predicted outline (magenta),
    with the Dice for binary masks; the error map, false positives in red and false
    negatives in blue over the dimmed image. With more than one foreground class the
    outlines take one colour per class and an error is a pixel whose labels differ: a false
    positive if a foreground class was predicted there, a false negative if background was.
    Returns the Figure; writes a PNG to ``path`` if given.
    """
    grey = _display_image(image)
    target, pred = _label_map(target, "target"), _label_map(pred, "pred")
    if not (target.shape == pred.shape == grey.shape[:2]):
        raise ValueError(f"overlay: image, target and pred must have the same height and width, got image "
                         f"{np.shape(image)}, target {target.shape}, pred {pred.shape}")
    classes = sorted((set(np.unique(target)) | set(np.unique(pred))) - {0})
    binary = classes in ([], [1])

    if binary:
        truth_panel = _draw(grey, _boundary(target > 0), GT_COLOR)
        pred_panel = _draw(grey, _boundary(pred > 0), PRED_COLOR)
        class_legend = None           # one colour per panel: the titles say what it is
        dice = metrics.dice(pred > 0, target > 0)
        pred_title = f"prediction (Dice {dice:.3f})"
    else:
        truth_panel, pred_panel = grey, grey
        for c in classes:
            truth_panel = _draw(truth_panel, _boundary(target == c), _class_color(c))
            pred_panel = _draw(pred_panel, _boundary(pred == c), _class_color(c))
        class_legend = [Patch(color=_class_color(c), label=f"class {c}") for c in classes]
        pred_title = "prediction"

    false_positive = (pred != target) & (pred > 0)
    false_negative = (pred != target) & (pred == 0)
    dimmed = 0.6 * grey               # so that the error colours stand out against bright tissue
    error_panel = _draw(_draw(dimmed, false_positive, FP_COLOR), false_negative, FN_COLOR)
    error_legend = [Patch(color=FP_COLOR, label=f"false positive ({np.count_nonzero(false_positive)} px)"),
                    Patch(color=FN_COLOR, label=f"false negative ({np.count_nonzero(false_negative)} px)")]

    panel_inches = 3.2
    height, width = target.shape
    # Enough dots per inch that each panel shows the image at (at least) its own resolution,
    # so that one-pixel outlines are not lost when the figure is rasterised.
    dpi = int(np.clip(max(height, width) / panel_inches, 100, 300))
    fig = _new_figure(figsize=(4 * panel_inches, panel_inches * height / width + 0.9))
    axes = fig.subplots(1, 4)
    panels = (("image", grey, None), ("ground truth", truth_panel, class_legend), (pred_title, pred_panel, None),
              ("errors", error_panel, error_legend))
    for ax, (panel_title, picture, handles) in zip(axes, panels):
        ax.imshow(picture, interpolation="nearest")
        ax.set_title(panel_title, fontsize=10)
        ax.set_axis_off()
        if handles:
            ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), fontsize=8, frameon=False,
                      ncol=1 if len(handles) <= 2 else 2)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path, dpi=dpi)


def overlay_png(image, pred, path, min_side=256) -> None:
    """Write the image with the predicted mask on it: a translucent fill and an opaque outline.

    image  (H, W) or (C, H, W);  pred  (H, W) label map (0 = background).
    Binary masks are drawn in magenta, class c of a multi-class mask in CLASS_COLORS[c - 1].
    The PNG is the image's own pixel grid, enlarged by a whole factor (nearest neighbour)
    until its longer side is at least ``min_side``, so that thin outlines stay visible.
    """
    grey = _display_image(image)
    pred = _label_map(pred, "pred")
    if pred.shape != grey.shape[:2]:
        raise ValueError(f"overlay_png: image and pred must have the same height and width, "
                         f"got image {np.shape(image)} and pred {pred.shape}")
    classes = sorted(set(np.unique(pred)) - {0})
    picture = grey
    for c in classes:
        color = PRED_COLOR if classes == [1] else _class_color(c)
        picture = _draw(picture, pred == c, color, alpha=_FILL_ALPHA)
        picture = _draw(picture, _boundary(pred == c), color)
    factor = max(1, math.ceil(min_side / max(pred.shape)))
    picture = picture.repeat(factor, axis=0).repeat(factor, axis=1)
    _write_png(np.round(picture * 255).astype(np.uint8), path)


def save_mask_png(mask, path, num_classes=None) -> None:
    """Write a label map as an 8-bit greyscale PNG that a person can look at.

    mask         (H, W) bool or integer labels 0..K-1 (0 = background).
    num_classes  K; default: 2 if the mask holds only 0 and 1, else mask.max() + 1.
    Labels are spread over the grey range: value = label · (255 // (K - 1)), so a binary
    mask is stored as 0/255 and K = 3 as 0/127/254; the label is value // (255 // (K - 1)).
    Give ``num_classes`` when saving the masks of one model, so that a class gets the same
    grey in every file even where some classes are absent.
    """
    labels = _label_map(mask, "mask")
    if labels.size and labels.min() < 0:
        raise ValueError(f"save_mask_png: labels must be >= 0, got minimum {labels.min()}")
    largest = int(labels.max()) if labels.size else 0
    if num_classes is None:
        num_classes = max(2, largest + 1)
    if not 2 <= num_classes <= 256 or largest >= num_classes:
        raise ValueError(f"save_mask_png: num_classes must be in [2, 256] and above every label, got "
                         f"num_classes={num_classes} for labels up to {largest}")
    scale = 255 // (num_classes - 1)
    _write_png((labels * scale).astype(np.uint8), path)


# ---------------------------------------------------------------------------------------
# benchmark chart


def plot_benchmark(rows, path=None) -> Figure:
    """Horizontal bars of the time per call, tinyseg next to PyTorch where it was measured.

    rows  dicts with ``name``, ``config``, ``tinyseg_ms`` and optionally ``torch_ms`` (None
          or absent when PyTorch was not run). A row is labelled by its name, with the
          config added when the name does not already contain it. The time axis is
          logarithmic when the times span more than a factor 30.
    """
    rows = list(rows)
    if not rows:
        raise ValueError("plot_benchmark: no rows to plot")
    labels = [row["name"] if str(row.get("config", "")) in str(row["name"]) else f"{row['name']} ({row['config']})"
              for row in rows]
    series = [("tinyseg", [row["tinyseg_ms"] for row in rows], "C0")]
    torch_ms = [row.get("torch_ms") for row in rows]
    if any(t is not None for t in torch_ms):
        series.append(("PyTorch", [np.nan if t is None else t for t in torch_ms], "C1"))

    fig = _new_figure(figsize=(8, 1.2 + 0.45 * len(rows) * len(series)))
    ax = fig.subplots()
    bar = 0.8 / len(series)
    positions = np.arange(len(rows))
    for i, (label, times, color) in enumerate(series):
        y = positions + (i - (len(series) - 1) / 2) * bar
        bars = ax.barh(y, times, height=bar, color=color, label=label)
        bar_labels = ["" if np.isnan(t) else f"{t:.0f} ms" if t >= 100 else f"{t:.3g} ms"
                      for t in np.asarray(times, float)]
        ax.bar_label(bars, labels=bar_labels,
                     padding=3, fontsize=8)
    times = np.array([t for _, values, _ in series for t in values], dtype=float)
    times = times[np.isfinite(times) & (times > 0)]
    if times.size and times.max() / times.min() > 30:
        ax.set_xscale("log")
    ax.set_yticks(positions, labels)
    ax.invert_yaxis()                      # first row at the top, as in the table
    ax.set_xlabel("time per call (ms, lower is better)")
    ax.margins(x=0.15)                     # room for the value labels
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    return _save(fig, path, dpi=120)


_OP_MARKERS = {"conv2d": "o", "max_pool2d": "v", "avg_pool2d": "^", "upsample_nearest": "<",
               "upsample_bilinear": ">", "relu": "s", "bce_with_logits": "D", "adam": "P"}


def plot_roofline(points, peaks, path=None, title="roofline") -> Figure:
    """Each kernel a point under its device's roofs: arithmetic intensity against achieved GFLOP/s, log-log.

    points  dicts with ``kernel``, ``where`` ("cpu", "gpu", "emulation"), ``op``,
            ``primitive``, ``intensity`` (FLOP/byte) and ``gflops`` (tinyseg.bench_gpu's
            ``roofline_points``: one per kernel and op primitive, all shapes together).
    peaks   {"gpu": Peaks, "cpu": Peaks} (either may be missing or unknown): each drawn as
            min(peak FLOP/s, intensity × bandwidth), the GPU's solid, the CPU's dashed,
            with the ridge point (where the two roofs meet) marked.
    Colour: the kernel; marker: the op (filled: GPU, hollow: CPU). Writes a PNG if ``path``.
    """
    points = [p for p in points if p.get("gflops", 0) > 0 and 0 < p.get("intensity", 0) < math.inf]
    fig = _new_figure(figsize=(9, 6))
    ax = fig.subplots()
    intensities = [p["intensity"] for p in points] or [1.0]
    low, high = min(intensities + [0.05]) / 2, max(intensities + [50.0]) * 2
    x = np.geomspace(low, high, 200)
    for where, style in (("gpu", "-"), ("cpu", "--")):
        peak = peaks.get(where)
        if peak is None or not getattr(peak, "known", False):
            continue
        roof = np.minimum(peak.fp32_gflops, x * peak.bandwidth_gbs)
        ax.plot(x, roof, style, color="0.25", lw=1.5,
                label=f"{where.upper()} roof: {peak.fp32_gflops:,.0f} GFLOP/s FP32, {peak.bandwidth_gbs:,.0f} GB/s")
        ridge = peak.fp32_gflops / peak.bandwidth_gbs
        ax.axvline(ridge, color="0.6", ls=":", lw=1)
        ax.annotate(f"ridge {ridge:.1f} FLOP/B", (ridge, peak.fp32_gflops), textcoords="offset points",
                    xytext=(4, -12), fontsize=7, color="0.4")
    kernels = list(dict.fromkeys((p["kernel"], p["where"]) for p in points))
    colors = {k: colormaps["tab20"](i % 20) for i, k in enumerate(kernels)}
    for p in points:
        color = colors[(p["kernel"], p["where"])]
        filled = p["where"] != "cpu"
        ax.scatter(p["intensity"], p["gflops"], marker=_OP_MARKERS.get(p["op"], "o"), s=42,
                   facecolors=color if filled else "none", edgecolors=color, linewidths=1.3, zorder=3)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(low, high)
    ax.set_xlabel("arithmetic intensity (FLOP / byte of compulsory memory traffic)")
    ax.set_ylabel("achieved GFLOP/s")
    ax.set_title(title)
    ax.grid(which="both", alpha=0.25)
    handles = [Patch(color=colors[k], label=f"{k[0]} ({k[1]})") for k in kernels]
    handles += [Line2D([], [], marker=m, ls="", color="0.3", label=op) for op, m in _OP_MARKERS.items()
                if any(p["op"] == op for p in points)]
    roof_legend = ax.legend(loc="lower right", fontsize=7)
    ax.add_artist(roof_legend)
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7,
              title="kernel (where) / op", title_fontsize=8)
    fig.tight_layout()
    return _save(fig, path, dpi=120)


def plot_thread_map(owner, path=None, title="which thread computes each output", colour_by=None,
                    labels=None, cell=0.42, fontsize=None, xlabel="output column j", ylabel="output row i",
                    separators=()) -> Figure:
    """A 2-D map of who computed each output element: a colour per group of threads, a label per cell.

    owner      (H, W) int array: the thread that wrote each element (-1: nobody; drawn white).
    colour_by  (H, W) int array: what the colour shows (a block, a thread...); default: owner.
    labels     (H, W) array of strings written in the cells (default: owner; None entries: no text).
    separators column positions where a vertical rule is drawn (between panels of a figure).
    Drawn from the owner maps of ``tinyseg.cuda.trace.thread_owners`` by
    docs/img/gen_gpu_pictures.py (the pictures of docs/gpu.md).
    """
    owner = np.asarray(owner)
    key = np.asarray(colour_by) if colour_by is not None else owner
    H, W = owner.shape
    fig = _new_figure(figsize=(cell * W + 1.4, cell * H + 1.1))
    ax = fig.subplots()
    distinct = {v: i for i, v in enumerate(sorted(set(key[owner >= 0].ravel().tolist())))}
    palette = colormaps["tab20"]
    picture = np.ones((H, W, 3))
    for (i, j), v in np.ndenumerate(key):
        if owner[i, j] >= 0:
            picture[i, j] = palette(distinct[v] % 20)[:3]
    ax.imshow(picture, interpolation="nearest")
    text = labels if labels is not None else owner.astype(str)
    size = fontsize or (8 if W <= 12 else 6 if W <= 30 else 4.5)
    for (i, j), value in np.ndenumerate(owner):
        if value >= 0 and text[i, j] is not None:
            ax.text(j, i, str(text[i, j]), ha="center", va="center", fontsize=size)
    for x in separators:
        ax.axvline(x - 0.5, color="black", lw=1.5)
    ax.set_xticks(range(0, W, 1 if W <= 32 else 8))
    ax.set_yticks(range(0, H, 1 if H <= 32 else 8))
    ax.tick_params(labelsize=6)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path, dpi=110)


# ---------------------------------------------------------------------------------------
# helpers


def _new_figure(figsize) -> Figure:
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)                   # attaches itself as fig.canvas; no display needed
    return fig


def _save(fig: Figure, path, dpi: int) -> Figure:
    if path is not None:
        # "tight" grows the saved area to include legends placed below the axes.
        fig.savefig(path, dpi=dpi, format="png", bbox_inches="tight", pad_inches=0.1)
    return fig


def _write_png(pixels: np.ndarray, path) -> None:
    """Write a uint8 (H, W) greyscale or (H, W, 3) RGB array as a PNG, pixel for pixel."""
    from PIL import Image                  # Pillow is a dependency of matplotlib itself
    Image.fromarray(pixels).save(path, format="PNG")


def _as_array(x) -> np.ndarray:
    return x.numpy() if isinstance(x, Tensor) else np.asarray(x)


def _label_map(mask, name: str) -> np.ndarray:
    labels = _as_array(mask)
    if labels.ndim != 2:
        raise ValueError(f"{name}: expected an (H, W) label map, got shape {labels.shape}")
    if labels.dtype == bool:
        return labels.astype(np.uint8)
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.all(labels == np.round(labels)):
            raise ValueError(f"{name}: expected integer labels (a mask, not probabilities), got values such as "
                             f"{labels[labels != np.round(labels)][0]}")
        labels = labels.astype(np.int64)
    return labels


def _display_image(image) -> np.ndarray:
    """(H, W, 3) RGB in [0, 1] to draw on: grey from one channel, or the image itself if RGB."""
    image = _as_array(image).astype(np.float64)
    if image.ndim == 3:
        image = np.moveaxis(image, 0, -1) if image.shape[0] == 3 else image[0]
    elif image.ndim != 2:
        raise ValueError(f"image: expected shape (H, W) or (C, H, W), got {image.shape}")
    # Percentiles rather than min/max so that a few extreme pixels (metal in CT, a hot spot
    # in PET) do not flatten the contrast of everything else.
    low, high = np.percentile(image, [0.5, 99.5])
    image = np.clip((image - low) / (high - low), 0, 1) if high > low else np.zeros_like(image)
    return image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=-1)


def _boundary(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` with at least one 4-neighbour outside it (the image outside counts)."""
    inside = np.pad(mask.astype(bool), 1, constant_values=False)
    eroded = (inside[1:-1, 1:-1] & inside[:-2, 1:-1] & inside[2:, 1:-1]
              & inside[1:-1, :-2] & inside[1:-1, 2:])
    return mask.astype(bool) & ~eroded


def _draw(picture: np.ndarray, where: np.ndarray, color, alpha: float = 1.0) -> np.ndarray:
    """A copy of the (H, W, 3) picture with ``color`` blended in at the pixels ``where``."""
    out = picture.copy()
    out[where] = (1 - alpha) * out[where] + alpha * np.asarray(color)
    return out


def _class_color(c: int):
    return CLASS_COLORS[(int(c) - 1) % len(CLASS_COLORS)]
