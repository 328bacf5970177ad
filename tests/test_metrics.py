"""Tests of tinyseg.metrics: hand-computed values, the empty-mask rules, the exact EDT, multi-class."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from tinyseg.metrics import (
    METRICS,
    _squared_edt,
    accuracy,
    assd,
    dice,
    evaluate,
    f1,
    format_table,
    hd95,
    iou,
    per_class,
    precision,
    recall,
    specificity,
)

OVERLAP = {"dice": dice, "iou": iou, "precision": precision, "recall": recall,
           "specificity": specificity, "f1": f1, "accuracy": accuracy}

# ---------------------------------------------------------------------------------------
# hand-computed cases


def test_overlap_metrics_hand_computed_square_shift():
    pred = np.array([[1, 1, 0, 0],
                     [1, 1, 0, 0],
                     [0, 0, 0, 0]])
    target = np.array([[0, 1, 1, 0],
                       [0, 1, 1, 0],
                       [0, 0, 0, 0]])
    # TP = 2 (column 1), FP = 2 (column 0), FN = 2 (column 2), TN = 12 - 6 = 6
    assert dice(pred, target) == pytest.approx(4 / 8)          # 2·2 / (2·2 + 2 + 2)
    assert f1(pred, target) == pytest.approx(4 / 8)
    assert iou(pred, target) == pytest.approx(2 / 6)           # 2 / (2 + 2 + 2)
    assert precision(pred, target) == pytest.approx(2 / 4)     # 2 / (2 + 2)
    assert recall(pred, target) == pytest.approx(2 / 4)
    assert specificity(pred, target) == pytest.approx(6 / 8)   # 6 / (6 + 2)
    assert accuracy(pred, target) == pytest.approx(8 / 12)     # (2 + 6) / 12


def test_overlap_metrics_hand_computed_asymmetric():
    pred = np.array([[1, 1, 1, 0, 0],
                     [0, 0, 0, 0, 0]], dtype=bool)
    target = np.array([[0, 1, 1, 1, 1],
                       [0, 0, 0, 0, 0]], dtype=bool)
    # TP = 2, FP = 1 (0,0), FN = 2 (0,3),(0,4), TN = 5 (second row)
    assert dice(pred, target) == pytest.approx(4 / 7)          # 4 / (4 + 1 + 2)
    assert iou(pred, target) == pytest.approx(2 / 5)
    assert precision(pred, target) == pytest.approx(2 / 3)
    assert recall(pred, target) == pytest.approx(2 / 4)
    assert specificity(pred, target) == pytest.approx(5 / 6)
    assert accuracy(pred, target) == pytest.approx(7 / 10)
    # f1 = 2 p r / (p + r) = 2·(2/3)·(1/2) / (2/3 + 1/2) = 4/7
    assert f1(pred, target) == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))


def test_hd95_and_assd_hand_computed_with_interpolation():
    pred = np.zeros((1, 5), dtype=bool)
    pred[0, 0] = True
    target = np.zeros((1, 5), dtype=bool)
    target[0, [0, 4]] = True
    # every pixel is a boundary pixel. pred -> target: [0]; target -> pred: [0, 4]
    # percentile_95([0, 4]) = 0 + 0.95·(4 - 0) = 3.8 (linear interpolation)
    assert hd95(pred, target) == pytest.approx(3.8)
    # assd = (0 + 0 + 4) / (1 + 2)
    assert assd(pred, target) == pytest.approx(4 / 3)


def test_single_pixel_vs_single_pixel():
    pred = np.zeros((8, 10), dtype=bool)
    target = np.zeros((8, 10), dtype=bool)
    pred[2, 3] = True
    target[5, 7] = True
    # 3 rows and 4 columns apart: a 3-4-5 triangle
    assert hd95(pred, target) == pytest.approx(5.0)
    assert assd(pred, target) == pytest.approx(5.0)
    # with spacing (dy, dx) = (2, 0.5): sqrt((3·2)² + (4·0.5)²) = sqrt(40)
    assert hd95(pred, target, spacing=(2.0, 0.5)) == pytest.approx(math.sqrt(40))
    assert assd(pred, target, spacing=(2.0, 0.5)) == pytest.approx(math.sqrt(40))
    assert hd95(pred, pred) == 0.0


def _square(shape, top, left, side):
    m = np.zeros(shape, dtype=bool)
    m[top:top + side, left:left + side] = True
    return m


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_hd95_of_squares_offset_by_k_is_k(k):
    a = _square((48, 48), 10, 10, 20)
    assert hd95(a, _square((48, 48), 10, 10 + k, 20)) == pytest.approx(k)
    assert hd95(a, _square((48, 48), 10 + k, 10, 20)) == pytest.approx(k)


@pytest.mark.parametrize("k", [1, 3])
def test_hd95_with_anisotropic_spacing_scales_each_axis(k):
    a = _square((48, 48), 10, 10, 20)
    spacing = (2.5, 0.7)
    # shifted along x: every distance is measured in units of dx; along y: of dy
    assert hd95(a, _square((48, 48), 10, 10 + k, 20), spacing=spacing) == pytest.approx(k * 0.7)
    assert hd95(a, _square((48, 48), 10 + k, 10, 20), spacing=spacing) == pytest.approx(k * 2.5)
    # isotropic scalar spacing scales everything
    assert hd95(a, _square((48, 48), 10, 10 + k, 20), spacing=3.0) == pytest.approx(3 * k)


# ---------------------------------------------------------------------------------------
# empty-mask rules


def test_both_empty_is_perfect():
    z = np.zeros((3, 4), dtype=np.uint8)
    for name in ("dice", "iou", "f1", "precision", "recall", "specificity", "accuracy"):
        assert OVERLAP[name](z, z) == 1.0, name
    assert hd95(z, z) == 0.0
    assert assd(z, z) == 0.0


def test_pred_empty_target_not():
    pred = np.zeros((3, 4), dtype=np.uint8)
    target = np.zeros((3, 4), dtype=np.uint8)
    target[1, 1] = 1
    # TP = 0, FP = 0, FN = 1, TN = 11
    assert dice(pred, target) == 0.0
    assert iou(pred, target) == 0.0
    assert f1(pred, target) == 0.0
    assert precision(pred, target) == 0.0   # undefined (no prediction) and the lesion was missed
    assert recall(pred, target) == 0.0
    assert specificity(pred, target) == 1.0
    # worst distance: the diagonal of the field of view, sqrt(3² + 4²)
    assert hd95(pred, target) == pytest.approx(5.0)
    assert assd(pred, target) == pytest.approx(5.0)
    assert hd95(pred, target, spacing=(2.0, 0.5)) == pytest.approx(math.hypot(6.0, 2.0))


def test_target_empty_pred_not():
    pred = np.zeros((3, 4), dtype=np.uint8)
    pred[0, 2] = 1
    target = np.zeros((3, 4), dtype=np.uint8)
    # TP = 0, FP = 1, FN = 0, TN = 11
    assert dice(pred, target) == 0.0
    assert iou(pred, target) == 0.0
    assert precision(pred, target) == 0.0
    assert recall(pred, target) == 0.0      # undefined (nothing to find), and a false alarm was raised
    assert specificity(pred, target) == pytest.approx(11 / 12)
    assert hd95(pred, target) == pytest.approx(5.0)
    assert assd(pred, target, spacing=2.0) == pytest.approx(10.0)


def test_specificity_when_target_has_no_background():
    full = np.ones((2, 2), dtype=bool)
    partial = full.copy()
    partial[0, 0] = False
    assert specificity(full, full) == 1.0
    assert specificity(partial, full) == 0.0


@settings(max_examples=60, deadline=None)
@given(arrays(bool, st.tuples(st.integers(1, 9), st.integers(1, 9)), elements=st.booleans()),
       st.data())
def test_never_nan_and_in_range(pred, data):
    target = data.draw(arrays(bool, pred.shape, elements=st.booleans()))
    for name, fn in OVERLAP.items():
        v = fn(pred, target)
        assert 0.0 <= v <= 1.0, name
    diagonal = math.hypot(*pred.shape)
    for fn in (hd95, assd):
        v = fn(pred, target)
        assert math.isfinite(v) and 0.0 <= v <= diagonal


# ---------------------------------------------------------------------------------------
# symmetry


def test_symmetry():
    rng = np.random.default_rng(3)
    for _ in range(10):
        a, b = rng.random((2, 20, 24)) < 0.3
        assert dice(a, b) == pytest.approx(dice(b, a))
        assert iou(a, b) == pytest.approx(iou(b, a))
        assert hd95(a, b) == pytest.approx(hd95(b, a))
        assert assd(a, b, spacing=(1.5, 0.5)) == pytest.approx(assd(b, a, spacing=(1.5, 0.5)))
        assert precision(a, b) == pytest.approx(recall(b, a))


# ---------------------------------------------------------------------------------------
# exact Euclidean distance transform


def _brute_force_edt(features, spacing):
    ys, xs = np.nonzero(features)
    if ys.size == 0:
        return np.full(features.shape, np.inf)
    gy, gx = np.indices(features.shape)
    d2 = ((gy[..., None] - ys) * spacing[0]) ** 2 + ((gx[..., None] - xs) * spacing[1]) ** 2
    return np.sqrt(d2.min(axis=-1))


@settings(max_examples=200, deadline=None)
@given(arrays(bool, st.tuples(st.integers(1, 14), st.integers(1, 14)), elements=st.booleans()),
       st.floats(0.2, 5.0), st.floats(0.2, 5.0))
def test_edt_matches_brute_force(features, dy, dx):
    got = np.sqrt(_squared_edt(features, (dy, dx)))
    np.testing.assert_allclose(got, _brute_force_edt(features, (dy, dx)), rtol=1e-12, atol=1e-12)


def test_edt_sparse_and_batched():
    rng = np.random.default_rng(0)
    # a few feature pixels in a wide image exercise long lower envelopes; planes are independent
    feats = rng.random((3, 17, 61)) < np.array([0.002, 0.02, 0.0])[:, None, None]
    feats[0, 5, 40] = True
    got = np.sqrt(_squared_edt(feats, (1.3, 0.6)))
    for plane in range(3):
        np.testing.assert_allclose(got[plane], _brute_force_edt(feats[plane], (1.3, 0.6)), rtol=1e-12)
    assert np.isinf(got[2]).all()


def _scipy_hd95_assd(pred, target, spacing):
    """MedPy's definition, written with SciPy."""
    ndimage = pytest.importorskip("scipy.ndimage")
    cross = ndimage.generate_binary_structure(2, 1)

    def border(m):
        return m ^ ndimage.binary_erosion(m, structure=cross, iterations=1)

    bp, bt = border(pred), border(target)
    d_pt = ndimage.distance_transform_edt(~bt, sampling=spacing)[bp]
    d_tp = ndimage.distance_transform_edt(~bp, sampling=spacing)[bt]
    return (max(np.percentile(d_pt, 95), np.percentile(d_tp, 95)),
            np.concatenate([d_pt, d_tp]).mean())


def _blob(rng, shape):
    yy, xx = np.indices(shape)
    cy, cx = rng.uniform(0.3, 0.7, 2) * shape
    ry, rx = rng.uniform(0.1, 0.3, 2) * shape
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1 + 0.3 * rng.standard_normal(shape)


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (0.8, 2.4)])
def test_hd95_assd_match_scipy_reference(spacing):
    rng = np.random.default_rng(7)
    for _ in range(8):
        pred, target = _blob(rng, (64, 80)), _blob(rng, (64, 80))
        ref_hd95, ref_assd = _scipy_hd95_assd(pred, target, spacing)
        assert hd95(pred, target, spacing=spacing) == pytest.approx(ref_hd95, rel=1e-12)
        assert assd(pred, target, spacing=spacing) == pytest.approx(ref_assd, rel=1e-12)


# ---------------------------------------------------------------------------------------
# multi-class and batches

PRED3 = np.array([[0, 1, 1, 2],
                  [0, 1, 2, 2],
                  [0, 0, 0, 0]])
TARGET3 = np.array([[0, 1, 1, 1],
                    [0, 1, 1, 2],
                    [0, 0, 0, 2]])
# class 1: pred {(0,1),(0,2),(1,1)}, target {(0,1),(0,2),(0,3),(1,1),(1,2)}: TP 3, FP 0, FN 2
# class 2: pred {(0,3),(1,2),(1,3)}, target {(1,3),(2,3)}: TP 1, FP 2, FN 1
# class 0: pred {(1,0),(2,0..3),(0,0)} 6 px, target {(0,0),(1,0),(2,0..2)} 5 px: TP 5, FP 1, FN 0


def test_per_class_dice():
    got = per_class(dice, PRED3, TARGET3, num_classes=3)
    assert set(got) == {1, 2}
    assert got[1] == pytest.approx(6 / 8)     # 2·3 / (6 + 0 + 2)
    assert got[2] == pytest.approx(2 / 5)     # 2·1 / (2 + 2 + 1)
    with_bg = per_class(dice, PRED3, TARGET3, num_classes=3, include_background=True)
    assert with_bg[0] == pytest.approx(10 / 11)  # 2·5 / (10 + 1 + 0)
    # keyword arguments reach the metric
    hd = per_class(hd95, PRED3, TARGET3, num_classes=3, spacing=2.0)
    assert hd[1] == pytest.approx(2 * per_class(hd95, PRED3, TARGET3, num_classes=3)[1])


def test_evaluate_multiclass():
    target2 = np.zeros((3, 4), dtype=np.int64)
    target2[0, 0] = 1
    pred2 = np.zeros((3, 4), dtype=np.int64)
    # image 2: class 1 missed (pred empty only), class 2 absent from both (both empty)
    result = evaluate([PRED3, pred2], [TARGET3, target2], num_classes=3)
    assert set(result) == {"per_image", "mean", "pooled", "empty"}
    first, second = result["per_image"]
    assert set(first) == set(METRICS) | {"per_class"}
    assert first["per_class"][1]["dice"] == pytest.approx(6 / 8)
    assert first["dice"] == pytest.approx((6 / 8 + 2 / 5) / 2)
    assert first["precision"] == pytest.approx((3 / 3 + 1 / 3) / 2)
    assert second["per_class"][1]["dice"] == 0.0
    assert second["per_class"][2]["dice"] == 1.0
    assert second["per_class"][1]["hd95"] == pytest.approx(5.0)
    assert second["per_class"][2]["hd95"] == 0.0
    for m in METRICS:
        assert result["mean"][m] == pytest.approx((first[m] + second[m]) / 2)
    # pooled class 1: TP 3, FP 0, FN 2 + 1 = 3; class 2: TP 1, FP 2, FN 1 (image 2 adds nothing)
    assert result["pooled"]["dice"] == pytest.approx((6 / 9 + 2 / 5) / 2)
    assert result["pooled"]["recall"] == pytest.approx((3 / 6 + 1 / 2) / 2)
    assert set(result["pooled"]) == {"dice", "iou", "precision", "recall", "accuracy"}
    assert result["empty"] == {"both_empty": 1, "pred_empty_only": 1, "target_empty_only": 0}


def test_evaluate_binary_array_input_and_table():
    rng = np.random.default_rng(1)
    targets = (rng.random((4, 16, 16)) < 0.3).astype(np.uint8)
    preds = targets.copy()
    preds[1, :4] = 1 - preds[1, :4]
    preds[3] = 0
    from_array = evaluate(preds, targets, spacing=(1.0, 2.0))
    from_list = evaluate(list(preds), list(targets), spacing=(1.0, 2.0))
    assert from_array == from_list
    for k in range(4):
        image = from_array["per_image"][k]
        assert image["dice"] == pytest.approx(dice(preds[k], targets[k]))
        assert image["accuracy"] == pytest.approx(np.mean(preds[k] == targets[k]))
        assert image["hd95"] == pytest.approx(hd95(preds[k], targets[k], spacing=(1.0, 2.0)))
    assert from_array["per_image"][0]["dice"] == 1.0
    assert from_array["empty"]["pred_empty_only"] == 1
    table = format_table(from_array)
    for m in METRICS:
        assert m in table
    assert "pred empty only 1" in table
    assert "pooled" in table


# ---------------------------------------------------------------------------------------
# errors


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(3, 4\).*\(4, 3\)"):
        dice(np.zeros((3, 4)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"\(3, 4\).*\(3, 5\)"):
        hd95(np.zeros((3, 4)), np.zeros((3, 5)))
    with pytest.raises(ValueError, match=r"\(2, 2\).*\(2, 3\)"):
        per_class(dice, np.zeros((2, 2), int), np.zeros((2, 3), int), num_classes=2)
    with pytest.raises(ValueError, match="image 1"):
        evaluate([np.zeros((2, 2), int), np.zeros((2, 2), int)],
                 [np.zeros((2, 2), int), np.zeros((3, 2), int)])


def test_bad_inputs_raise_clearly():
    with pytest.raises(ValueError, match="binary mask"):
        dice(np.array([[0, 2]]), np.array([[0, 1]]))
    with pytest.raises(ValueError, match=r"2-D masks \(H, W\) or 3-D volumes \(D, H, W\), got shape \(2, 2, 3, 3\)"):
        hd95(np.zeros((2, 2, 3, 3)), np.zeros((2, 2, 3, 3)))     # 3-D volumes are measured (3-D tests below)
    with pytest.raises(ValueError, match=r"a triple \(dz, dy, dx\).*3-D masks"):
        hd95(np.zeros((2, 3, 3)), np.zeros((2, 3, 3)), spacing=(1.0, 1.0))
    with pytest.raises(ValueError, match="spacing"):
        hd95(np.zeros((3, 3)), np.zeros((3, 3)), spacing=(1.0, -1.0))
    with pytest.raises(ValueError, match=r"labels outside 0\.\.1"):
        per_class(dice, np.array([[0, 2]]), np.array([[0, 1]]), num_classes=2)
    with pytest.raises(ValueError, match="num_classes"):
        evaluate(np.zeros((2, 2), int), np.zeros((2, 2), int), num_classes=1)
    with pytest.raises(ValueError, match="same number of images"):
        evaluate(np.zeros((2, 3, 3), int), np.zeros((1, 3, 3), int))


# ---------------------------------------------------------------------------------------
# 3-D volumes with anisotropic voxels (spacing per axis: (dz, dy, dx))


def _brute_force_edt_nd(features, spacing):
    points = np.argwhere(features)
    grid = np.indices(features.shape).reshape(features.ndim, -1).T
    if points.size == 0:
        return np.full(features.shape, np.inf)
    d2 = (((grid[:, None, :] - points[None, :, :]) * np.asarray(spacing)) ** 2).sum(axis=-1)
    return np.sqrt(d2.min(axis=1)).reshape(features.shape)


def _surface_reference(pred, target, spacing):
    """hd95 and assd from the definition, by brute force on the surface voxels: a surface voxel
    is a foreground voxel with a 6-neighbour outside the mask or outside the volume."""
    def surface(m):
        out = []
        for idx in np.argwhere(m):
            for axis in range(m.ndim):
                for step in (-1, 1):
                    n = idx.copy()
                    n[axis] += step
                    if n[axis] < 0 or n[axis] >= m.shape[axis] or not m[tuple(n)]:
                        out.append(idx)
                        break
                else:
                    continue
                break
        return np.array(out, dtype=float) * np.asarray(spacing)

    sp, st_ = surface(pred), surface(target)
    d = np.sqrt(((sp[:, None, :] - st_[None, :, :]) ** 2).sum(axis=-1))
    d_pt, d_tp = d.min(axis=1), d.min(axis=0)
    return (max(np.percentile(d_pt, 95), np.percentile(d_tp, 95)),
            (d_pt.sum() + d_tp.sum()) / (d_pt.size + d_tp.size))


@settings(max_examples=60, deadline=None)
@given(arrays(bool, st.tuples(st.integers(1, 6), st.integers(1, 7), st.integers(1, 8)), elements=st.booleans()),
       st.tuples(st.floats(0.2, 5.0), st.floats(0.2, 5.0), st.floats(0.2, 5.0)))
def test_edt_3d_matches_brute_force(features, spacing):
    got = np.sqrt(_squared_edt(features, spacing))
    np.testing.assert_allclose(got, _brute_force_edt_nd(features, spacing), rtol=1e-12, atol=1e-12)


def test_edt_3d_sparse_and_batched():
    rng = np.random.default_rng(3)
    feats = rng.random((2, 5, 9, 23)) < 0.01
    feats[0, 4, 0, 22] = True
    got = np.sqrt(_squared_edt(feats, (2.5, 0.8, 0.8)))
    for volume in range(2):
        np.testing.assert_allclose(got[volume], _brute_force_edt_nd(feats[volume], (2.5, 0.8, 0.8)), rtol=1e-12)


def _ball(shape, centre, radii):
    grid = np.indices(shape)
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.5, 0.8, 0.8), (0.7, 1.9, 1.1)])
def test_hd95_assd_3d_match_brute_force_on_surface_points(spacing):
    rng = np.random.default_rng(11)
    for _ in range(4):
        shape = (6, 12, 10)
        pred = _ball(shape, rng.uniform(1, 5, 3) * (1, 2, 2), rng.uniform(1.5, 4, 3)) | (rng.random(shape) < 0.02)
        target = _ball(shape, rng.uniform(1, 5, 3) * (1, 2, 2), rng.uniform(1.5, 4, 3))
        ref_hd95, ref_assd = _surface_reference(pred, target, spacing)
        assert hd95(pred, target, spacing=spacing) == pytest.approx(ref_hd95, rel=1e-12)
        assert assd(pred, target, spacing=spacing) == pytest.approx(ref_assd, rel=1e-12)


def test_hd95_3d_of_boxes_offset_along_each_axis_is_offset_times_spacing():
    spacing = (2.5, 0.8, 0.6)
    target = np.zeros((12, 14, 16), bool)
    target[3:7, 4:9, 5:11] = True
    for axis, step in enumerate(spacing):
        pred = np.roll(target, 2, axis=axis)
        assert hd95(pred, target, spacing=spacing) == pytest.approx(2 * step)
        # the same shift counted in voxels, as it was before spacing was known
        assert hd95(pred, target) == pytest.approx(2.0)


def test_3d_empty_masks_get_the_volume_diagonal():
    empty, one = np.zeros((4, 5, 6), bool), np.zeros((4, 5, 6), bool)
    one[1, 2, 3] = True
    worst = math.sqrt((4 * 2.5) ** 2 + (5 * 0.8) ** 2 + (6 * 0.8) ** 2)
    assert hd95(one, empty, spacing=(2.5, 0.8, 0.8)) == pytest.approx(worst)
    assert assd(empty, one, spacing=(2.5, 0.8, 0.8)) == pytest.approx(worst)
    assert hd95(empty, empty, spacing=(2.5, 0.8, 0.8)) == 0.0


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.5, 0.8, 0.8)])
def test_hd95_assd_3d_match_scipy_reference(spacing):
    ndimage = pytest.importorskip("scipy.ndimage")
    cross = ndimage.generate_binary_structure(3, 1)

    def border(m):
        return m ^ ndimage.binary_erosion(m, structure=cross, iterations=1)

    rng = np.random.default_rng(5)
    for _ in range(4):
        shape = (10, 32, 28)
        pred = _ball(shape, rng.uniform(0.3, 0.7, 3) * shape, rng.uniform(0.15, 0.35, 3) * shape)
        target = _ball(shape, rng.uniform(0.3, 0.7, 3) * shape, rng.uniform(0.15, 0.35, 3) * shape)
        bp, bt = border(pred), border(target)
        d_pt = ndimage.distance_transform_edt(~bt, sampling=spacing)[bp]
        d_tp = ndimage.distance_transform_edt(~bp, sampling=spacing)[bt]
        assert hd95(pred, target, spacing=spacing) == pytest.approx(
            max(np.percentile(d_pt, 95), np.percentile(d_tp, 95)), rel=1e-12)
        assert assd(pred, target, spacing=spacing) == pytest.approx(np.concatenate([d_pt, d_tp]).mean(), rel=1e-12)


def test_evaluate_scores_each_volume_as_one_case_in_3d():
    rng = np.random.default_rng(2)
    targets = [_ball((5, 12, 12), (2, 6, 6), (2, 4, 4)).astype(np.uint8), np.zeros((3, 8, 9), np.uint8)]
    targets[1][1, 2:5, 3:7] = 1
    preds = [np.roll(targets[0], 1, axis=0), targets[1] | (rng.random((3, 8, 9)) < 0.05).astype(np.uint8)]
    spacings = [(2.5, 0.8, 0.8), (3.0, 0.5, 0.5)]
    result = evaluate(preds, targets, spacings=spacings)
    assert len(result["per_image"]) == 2
    for row, p, t, s in zip(result["per_image"], preds, targets, spacings):
        assert row["dice"] == pytest.approx(dice(p, t))              # 3-D overlap of the whole volume
        assert row["hd95"] == pytest.approx(hd95(p, t, spacing=s))
        assert row["assd"] == pytest.approx(assd(p, t, spacing=s))
    assert result["per_image"][0]["hd95"] == pytest.approx(2.5)      # shifted one slice of 2.5 mm
    assert result["mean"]["dice"] == pytest.approx(np.mean([dice(p, t) for p, t in zip(preds, targets)]))
    with pytest.raises(ValueError, match="mix known spacings .* and None .* for 1 of 2 items"):
        evaluate(preds, targets, spacings=[(2.5, 0.8, 0.8), None])
    with pytest.raises(ValueError, match="one spacing per item, got 1 for 2 items"):
        evaluate(preds, targets, spacings=[(2.5, 0.8, 0.8)])
    assert "hd95 and assd in mm" in format_table(result, items="cases", units="mm")
