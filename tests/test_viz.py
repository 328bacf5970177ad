"""Tests of tinyseg.viz: every function writes a real, non-blank PNG, and the overlays put
the documented colours on the documented pixels."""
import csv

import matplotlib.image
import numpy as np
import pytest
from PIL import Image

from tinyseg import viz

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png_with_content(path):
    with open(path, "rb") as f:
        assert f.read(8) == PNG_SIGNATURE
    pixels = matplotlib.image.imread(path)
    assert pixels.ndim in (2, 3) and np.ptp(pixels) > 0, "the PNG is blank"


@pytest.fixture
def scene():
    """A 40×48 image with a bright square, its target, and a prediction shifted 3 px to the right."""
    image = np.random.default_rng(0).normal(0.0, 0.1, size=(40, 48)).astype(np.float32)
    target = np.zeros((40, 48), np.uint8)
    target[10:30, 10:30] = 1
    image[target == 1] += 1.0
    pred = np.zeros_like(target)
    pred[10:30, 13:33] = 1
    return image, target, pred


def history_rows():
    rows = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e, "val_dice": 1 - 1 / (e + 1),
             "val_iou": 1 - 1.5 / (e + 1.5), "lr": 1e-3 * 0.5 ** (e // 3)} for e in range(1, 9)]
    rows[2]["val_loss"] = None        # a missing value must be skipped, not plotted as 0
    del rows[4]["val_iou"]
    return rows


# ---------------------------------------------------------------------------------------
# curves and benchmark chart


def test_plot_curves_from_rows(tmp_path):
    path = tmp_path / "curves.png"
    fig = viz.plot_curves(history_rows(), path)
    assert_png_with_content(path)
    loss_ax, metric_ax = fig.axes[:2]
    _, val_line = loss_ax.get_lines()[:2]
    assert list(val_line.get_xdata()) == [1, 2, 4, 5, 6, 7, 8]      # epoch 3 had no val_loss


def test_plot_curves_from_csv_with_missing_columns(tmp_path):
    rows = [{"epoch": e, "train_loss": 1 / e, "lr": 0.01} for e in range(1, 5)]   # no validation at all
    csv_path = tmp_path / "history.csv"
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    path = tmp_path / "curves.png"
    viz.plot_curves(str(csv_path), path)
    assert_png_with_content(path)


def test_plot_curves_rejects_empty_history(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        viz.plot_curves([], tmp_path / "curves.png")


def test_plot_benchmark(tmp_path):
    rows = [{"name": "B8 train", "config": "B8", "tinyseg_ms": 120.0, "torch_ms": 30.0},
            {"name": "B8 infer", "config": "B8", "tinyseg_ms": 40.0, "torch_ms": None},
            {"name": "conv2d", "config": "64²", "tinyseg_ms": 2.0}]
    path = tmp_path / "bench.png"
    fig = viz.plot_benchmark(rows, path)
    assert_png_with_content(path)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["B8 train", "B8 infer", "conv2d (64²)"]
    values = {t.get_text() for t in ax.texts}
    assert {"120 ms", "30 ms", "40 ms", "2 ms"} <= values
    path = tmp_path / "bench_tinyseg_only.png"
    viz.plot_benchmark([{k: v for k, v in row.items() if k != "torch_ms"} for row in rows], path)
    assert_png_with_content(path)


# ---------------------------------------------------------------------------------------
# overlays


def panel(fig, index):
    """The (H, W, 3) picture drawn in panel ``index`` of an overlay figure."""
    return np.asarray(fig.axes[index].images[0].get_array())


def test_overlay_colours_errors_and_outlines(tmp_path, scene):
    image, target, pred = scene
    path = tmp_path / "overlay.png"
    fig = viz.overlay(image, target, pred, path, title="case 1")
    assert_png_with_content(path)
    errors = panel(fig, 3)
    np.testing.assert_allclose(errors[20, 31], viz.FP_COLOR)       # predicted, not in the target
    np.testing.assert_allclose(errors[20, 11], viz.FN_COLOR)       # in the target, missed
    assert not np.allclose(errors[20, 20], viz.FP_COLOR) and not np.allclose(errors[20, 20], viz.FN_COLOR)
    np.testing.assert_allclose(panel(fig, 1)[10, 20], viz.GT_COLOR)   # top edge of the target
    np.testing.assert_allclose(panel(fig, 2)[10, 20], viz.PRED_COLOR)
    assert not np.allclose(panel(fig, 1)[20, 20], viz.GT_COLOR)       # inside: no outline


def test_overlay_multiclass_outlines_each_class(scene):
    image, target, pred = scene
    target = target.copy()
    target[15:20, 15:20] = 2
    fig = viz.overlay(image, target, pred)
    truth = panel(fig, 1)
    np.testing.assert_allclose(truth[10, 20], viz.CLASS_COLORS[0])
    np.testing.assert_allclose(truth[15, 17], viz.CLASS_COLORS[1])
    # class 2 predicted as class 1: a wrong foreground label counts as a false positive
    np.testing.assert_allclose(panel(fig, 3)[17, 17], viz.FP_COLOR)


def test_overlay_rejects_mismatched_shapes(scene):
    image, target, pred = scene
    with pytest.raises(ValueError, match="same height and width"):
        viz.overlay(image, target, pred[:, :-1])


def test_overlay_png(tmp_path, scene):
    image, _, pred = scene
    path = tmp_path / "pred_overlay.png"
    viz.overlay_png(image, pred, path)
    assert_png_with_content(path)
    pixels = np.asarray(Image.open(path).convert("RGB"))
    factor = 256 // 48 + 1                          # enlarged until the longer side is >= 256
    assert pixels.shape == (40 * factor, 48 * factor, 3)
    np.testing.assert_array_equal(pixels[10 * factor, 20 * factor], np.round(np.array(viz.PRED_COLOR) * 255))


def test_save_mask_png_binary_and_multiclass(tmp_path, scene):
    _, target, _ = scene
    path = tmp_path / "mask.png"
    viz.save_mask_png(target, path)
    assert_png_with_content(path)
    stored = np.asarray(Image.open(path))
    assert stored.dtype == np.uint8 and stored.shape == target.shape
    np.testing.assert_array_equal(stored, target * 255)

    labels = target.copy()
    labels[15:20, 15:20] = 2
    viz.save_mask_png(labels, path, num_classes=3)
    np.testing.assert_array_equal(np.asarray(Image.open(path)), labels * 127)
    with pytest.raises(ValueError, match="num_classes"):
        viz.save_mask_png(labels, path, num_classes=2)
