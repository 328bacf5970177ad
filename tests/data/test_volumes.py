"""Volumes are cases, not piles of slices: splits by case (and patient), NIfTI label volumes
from ``predict``, per-case 3-D metrics from ``evaluate``, spacing and orientation in
``check-data``. Volumes are tiny (16×16×6) so that the file runs in seconds."""
import json

import numpy as np
import pytest

import tinyseg as ts
from tinyseg.cli import main
from tinyseg.data import ArrayDataset, DataLoader, FolderDataset, Subset, case_groups, split
from tinyseg.data import transforms as T
from tinyseg.metrics import confusion_per_class, overlap_from_counts
from tinyseg.train import Trainer, TrainConfig, predict_labels

SPACING = (0.8, 0.8, 2.5)       # NIfTI zooms (x, y, z), as in the CT-like folder


def ball_volume(shape=(16, 16, 6), centre=(8, 8, 3), radius=(5, 4, 2)):
    """A binary ellipsoid in NIfTI (x, y, z) array order."""
    grid = np.indices(shape)
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radius)) <= 1


def ct_affine(zooms=SPACING, origin=(-12.5, 30.0, -40.0)):
    """A non-trivial affine: LPS-like flips on the first two axes, the given spacing and an origin."""
    affine = np.diag([-zooms[0], -zooms[1], zooms[2], 1.0])
    affine[:3, 3] = origin
    return affine


def save_nifti(path, data, affine=None):
    nibabel = pytest.importorskip("nibabel")
    affine = ct_affine() if affine is None else affine
    image = nibabel.Nifti1Image(data, affine)          # voxel sizes in the header come from the affine
    path.parent.mkdir(parents=True, exist_ok=True)
    nibabel.save(image, str(path))
    return path


def nnunet_folder(root, cases=6, shape=(16, 16, 6), names=None):
    """ROOT/imagesTr/<case>_0000.nii.gz + ROOT/labelsTr/<case>.nii.gz; each case a shifted ball."""
    rng = np.random.default_rng(0)
    names = names or [f"case_{i:03d}" for i in range(cases)]
    for i, name in enumerate(names):
        label = ball_volume(shape, centre=(6 + i % 4, 7 + i % 3, 3)).astype(np.uint8)
        image = (100.0 * label + rng.normal(0, 10, shape)).astype(np.float32)
        save_nifti(root / "labelsTr" / f"{name}.nii.gz", label)
        save_nifti(root / "imagesTr" / f"{name}_0000.nii.gz", image)
    return root


def sides(train, val, groups):
    return {groups[i] for i in train.indices}, {groups[i] for i in val.indices}


# --- 1. splits by case ----------------------------------------------------------------

def volumes_as_items(slices_per_case=(5, 3, 7, 4, 6, 2, 8)):
    """An ArrayDataset of 2-D slices with case ids, one case per 'volume' of a different depth."""
    case_ids = [f"vol{c}" for c, depth in enumerate(slices_per_case) for _ in range(depth)]
    images = np.zeros((len(case_ids), 4, 4), np.float32)
    return ArrayDataset(images, np.zeros((len(case_ids), 4, 4), np.uint8), case_ids=case_ids)


@pytest.mark.parametrize("mode", ["random", "contiguous"])
@pytest.mark.parametrize("fraction", [0.2, 0.3, 0.5])
def test_split_never_puts_a_case_on_both_sides(mode, fraction):
    data = volumes_as_items()
    for seed in range(8):
        train, val = split(data, fraction, seed=seed, mode=mode)
        train_cases, val_cases = sides(train, val, data.case_ids)
        assert not train_cases & val_cases
        assert sorted(train.indices + val.indices) == list(range(len(data)))
        assert len(val_cases) == max(1, round(7 * fraction))        # the fraction counts cases, not slices
        # every slice of a held-out case is held out
        assert val.indices == [i for i, case in enumerate(data.case_ids) if case in val_cases]
        if mode == "contiguous":
            assert val_cases == {f"vol{c}" for c in range(7 - len(val_cases), 7)}


def test_random_split_draws_different_cases_per_seed_and_the_same_for_a_seed():
    data = volumes_as_items()
    drawn = {frozenset(sides(*split(data, 0.3, seed=seed), data.case_ids)[1]) for seed in range(10)}
    assert len(drawn) > 1
    assert split(data, 0.3, seed=4)[1].indices == split(data, 0.3, seed=4)[1].indices


def test_split_of_2d_images_is_image_by_image_as_before():
    data = ArrayDataset(np.zeros((10, 4, 4), np.float32), np.zeros((10, 4, 4), np.uint8))
    assert case_groups(data) == list(range(10))
    for mode in ("random", "contiguous"):
        by_case, by_item = split(data, 0.3, seed=2, mode=mode), split(data, 0.3, seed=2, mode=mode, by="item")
        assert by_case[1].indices == by_item[1].indices and len(by_case[1]) == 3


def test_a_single_case_cannot_be_split_by_case_but_by_item_on_request():
    data = ArrayDataset(np.zeros((6, 4, 4), np.float32), np.zeros((6, 4, 4), np.uint8), case_ids=["vol"] * 6)
    with pytest.raises(ValueError, match=r"all 6 items belong to one case \('vol'\).*--val-data.*by='item'"):
        split(data, 0.2)
    train, val = split(data, 0.2, mode="contiguous", by="item")
    assert val.indices == [5]
    with pytest.raises(ValueError, match="by must be 'case' or 'item'"):
        split(data, 0.2, by="slice")


@pytest.mark.parametrize("mode", ["random", "contiguous"])
def test_nifti_folder_splits_by_volume(tmp_path, mode):
    data = FolderDataset(nnunet_folder(tmp_path))
    assert len(data) == 36 and len(set(data.case_ids)) == 6 and data.patient_ids == data.case_ids
    for seed in range(4):
        train, val = split(data, 0.2, seed=seed, mode=mode)
        train_cases, val_cases = sides(train, val, data.case_ids)
        assert not train_cases & val_cases and len(val_cases) == 1 and len(val) == 6
        assert val.case_ids == [next(iter(val_cases))] * 6 and val.slice_indices == list(range(6))
    if mode == "contiguous":
        assert val_cases == {"case_005"}


def test_patients_from_dataset_json_and_from_a_regex_stay_together(tmp_path):
    names = [f"patient{p:03d}_frame{f:02d}" for p in range(1, 5) for f in (1, 12)]   # ACDC-like: 2 per patient
    root = nnunet_folder(tmp_path / "acdc", names=names, shape=(16, 16, 2))
    by_regex = FolderDataset(root, patient_regex=r"(patient\d+)_")
    assert sorted(set(by_regex.patient_ids)) == ["patient001", "patient002", "patient003", "patient004"]
    by_case = FolderDataset(root)
    (root / "dataset.json").write_text(json.dumps({
        "labels": {"background": 0, "heart": 1}, "channel_names": {"0": "MRI"},
        "patients": {f"p{p}": [f"patient{p:03d}_frame01", f"patient{p:03d}_frame12"] for p in range(1, 5)}}))
    by_json = FolderDataset(root)
    assert by_json.patient_ids[0] == "p1" and len(set(by_json.patient_ids)) == 4
    for data in (by_regex, by_json):
        for mode in ("random", "contiguous"):
            for seed in range(6):
                train, val = split(data, 0.25, seed=seed, mode=mode)
                train_patients, val_patients = sides(train, val, data.patient_ids)
                assert not train_patients & val_patients and len(val_patients) == 1
                assert len(set(val.case_ids)) == 2          # both frames of the held-out patient
    # without patient information the two frames of one patient can be split apart
    apart = [split(by_case, 0.25, seed=seed) for seed in range(6)]
    assert any(len(set(val.case_ids)) == 2 and len({c[:10] for c in val.case_ids}) == 2 for _, val in apart)
    with pytest.raises(ts.data.DataError, match=r"'patient001_frame01'.*does not match patient_regex 'P\\d'"):
        FolderDataset(root, patient_regex=r"P\d")
    (root / "dataset.json").write_text(json.dumps({"patients": ["patient001_frame01"]}))
    with pytest.raises(ts.data.DataError, match='"patients" must map each patient id to a list'):
        FolderDataset(root)


def test_subset_forwards_the_case_information():
    data = volumes_as_items((2, 3))
    subset = Subset(data, [4, 0])
    assert subset.case_ids == ["vol1", "vol0"] and subset.patient_ids is None and case_groups(subset) == ["vol1", "vol0"]
    assert Subset(ArrayDataset(np.zeros((2, 4, 4)), np.zeros((2, 4, 4), np.uint8)), [1]).case_ids is None


def test_trainer_validation_dice_is_per_case_in_3d():
    """Slices of one case are scored as one 3-D mask: their confusion counts are summed."""
    ts.manual_seed(0)
    rng = np.random.default_rng(1)
    masks = (rng.random((7, 8, 8)) < 0.3).astype(np.uint8)
    masks[2] = 0                                     # an empty slice: per-slice Dice would count it as 1.0
    images = (masks + rng.normal(0, 0.5, masks.shape)).astype(np.float32)
    data = ArrayDataset(images, masks, case_ids=["a", "a", "a", "b", "b", "c", "c"])
    model = ts.models.UNet(1, 1, base_channels=2, depth=1)
    loader = DataLoader(data, 3, shuffle=False)
    trainer = Trainer(model, loader, loader, TrainConfig(epochs=1, progress=False), log=lambda *_: None)
    row = trainer.validate()
    model.eval()
    with ts.no_grad():
        pred = predict_labels(model(ts.Tensor(images[:, None])).numpy())
    expected = []
    for case in "abc":
        items = [i for i, c in enumerate(data.case_ids) if c == case]
        expected.append(overlap_from_counts(confusion_per_class(pred[items], masks[items], 2)[0])["dice"])
    assert row["val_dice"] == pytest.approx(np.mean(expected), rel=1e-12)
    per_slice = np.mean([overlap_from_counts(confusion_per_class(p, t, 2)[0])["dice"] for p, t in zip(pred, masks)])
    assert row["val_dice"] != pytest.approx(per_slice)


def test_train_cli_splits_a_volume_folder_by_case(tmp_path, capsys):
    root = nnunet_folder(tmp_path / "data")
    run = tmp_path / "run"
    assert main(["train", "--data", str(root), "--epochs", "1", "--batch-size", "6", "--image-size", "16",
                 "--base-channels", "2", "--depth", "2", "--out", str(run), "--no-progress",
                 "--split-mode", "contiguous"]) == 0
    out = capsys.readouterr().out
    assert "6 cases (36 slices)" in out
    assert "contiguous split by case: train 5 cases (30 slices), validation 1 case (6 slices)" in out
    # the closing validation table scores the held-out volume as one case, distances in mm
    assert "pooled over all pixels (1 cases)" in out and "hd95 and assd in mm" in out
    config = json.loads((run / "config.json").read_text())
    assert config["arguments"]["split_by"] == "case"


# --- 2. predict writes one NIfTI label volume on the image's grid --------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny checkpoint trained for one epoch on six 16×16×6 NIfTI cases, and their folder."""
    root = nnunet_folder(tmp_path_factory.mktemp("data"))
    run = tmp_path_factory.mktemp("run")
    assert main(["train", "--data", str(root), "--epochs", "1", "--batch-size", "6", "--image-size", "16",
                 "--base-channels", "2", "--depth", "2", "--out", str(run), "--no-progress"]) == 0
    return run / "last.npz", root


def rotated_affine():
    """Spacing 0.8 × 0.8 × 2.5 mm, rotated 30° about z, with an origin: nothing about it is trivial."""
    angle = np.deg2rad(30)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([-0.8, 0.8, 2.5])
    affine[:3, 3] = (-12.5, 30.0, -40.0)
    return affine


def test_predict_on_nifti_writes_one_label_volume_with_the_input_geometry(trained, tmp_path, capsys):
    nibabel = pytest.importorskip("nibabel")
    from tinyseg.data import read_image, read_mask
    from tinyseg.data.transforms import zscore
    from tinyseg.inference import predict
    checkpoint, _ = trained
    shape = (16, 12, 5)                     # not square: a transposed output would not fit
    image = (100.0 * ball_volume(shape, centre=(8, 6, 2), radius=(5, 4, 2))
             + np.random.default_rng(3).normal(0, 10, shape)).astype(np.float32)
    source = save_nifti(tmp_path / "in" / "scan_0000.nii.gz", image, affine=rotated_affine())
    assert main(["predict", "--checkpoint", str(checkpoint), str(source), "--out", str(tmp_path / "pred")]) == 0
    assert sorted(p.name for p in (tmp_path / "pred").iterdir()) == ["scan.nii.gz"]   # no PNG slices
    assert "scan.nii.gz (label volume, 5 slice(s) of 12x16" in capsys.readouterr().out
    original, written = nibabel.load(str(source)), nibabel.load(str(tmp_path / "pred" / "scan.nii.gz"))
    labels = np.asanyarray(written.dataobj)
    assert labels.shape == shape and labels.dtype == np.uint8 and written.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(written.affine, original.affine)
    np.testing.assert_allclose(written.header.get_zooms(), (0.8, 0.8, 2.5), rtol=1e-6)
    assert nibabel.aff2axcodes(written.affine) == nibabel.aff2axcodes(original.affine)
    for code in ("qform_code", "sform_code"):
        assert int(written.header[code]) == int(original.header[code])
    assert written.header.get_slope_inter() == (None, None) or written.header.get_slope_inter() == (1.0, 0.0)
    # voxel (i, j, k) of the output is the prediction for voxel (i, j, k) of the image
    model, _ = ts.models.from_checkpoint(checkpoint)
    slices = read_image(source)[0]
    expected = np.stack([predict(model, zscore(s)).mask for s in slices])
    np.testing.assert_array_equal(read_mask(tmp_path / "pred" / "scan.nii.gz"), expected)
    assert set(np.unique(labels)) <= {0, 1}


def test_predict_png_slices_on_request_and_never_over_an_input(trained, tmp_path, capsys):
    checkpoint, root = trained
    source = root / "imagesTr" / "case_001_0000.nii.gz"
    assert main(["predict", "--checkpoint", str(checkpoint), str(source), "--out", str(tmp_path / "p"),
                 "--png-slices"]) == 0
    names = sorted(p.name for p in (tmp_path / "p").iterdir())
    assert "case_001.nii.gz" in names and "case_001_0000_slice005_mask.png" in names and len(names) == 13
    # an MSD-style input (no _0000) predicted into its own folder would be overwritten: refused
    msd = tmp_path / "msd" / "liver_3.nii.gz"
    msd.parent.mkdir()
    msd.write_bytes(source.read_bytes())
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(checkpoint), str(msd), "--out", str(msd.parent)]) == 2
    assert "would overwrite an input image" in capsys.readouterr().err
    assert msd.read_bytes() == source.read_bytes()


@pytest.mark.parametrize("slice_axis", [0, 1, 2])
def test_write_nifti_labels_inverts_the_reader_for_3d_4d_and_2d_images(tmp_path, slice_axis):
    nibabel = pytest.importorskip("nibabel")
    from tinyseg.data import read_mask
    from tinyseg.data.io import write_nifti_labels
    rng = np.random.default_rng(slice_axis)
    for shape in ((7, 5, 4), (7, 5, 4, 2), (7, 5)):
        if len(shape) == 2 and slice_axis != 2:
            continue
        image = save_nifti(tmp_path / f"image{len(shape)}.nii.gz", rng.normal(size=shape).astype(np.float32))
        labels = rng.integers(0, 3, shape[:3]).astype(np.uint8)
        label_file = save_nifti(tmp_path / f"labels{len(shape)}.nii.gz", labels)
        as_read = read_mask(label_file, slice_axis=slice_axis)
        out = write_nifti_labels(tmp_path / f"out{len(shape)}.nii", as_read, like=image, slice_axis=slice_axis)
        written = nibabel.load(str(out))
        np.testing.assert_array_equal(np.asanyarray(written.dataobj), labels)
        np.testing.assert_array_equal(written.affine, nibabel.load(str(image)).affine)
    with pytest.raises(ValueError, match=r"do not fit the image .* of shape \(7, 5, 4\)"):
        write_nifti_labels(tmp_path / "bad.nii.gz", np.zeros((4, 5, 5), np.uint8), like=tmp_path / "image3.nii.gz")
    with pytest.raises(ValueError, match="expected integer class maps"):
        write_nifti_labels(tmp_path / "bad.nii.gz", np.zeros((4, 5, 7)), like=tmp_path / "image3.nii.gz")
    many = np.zeros((4, 5, 7), np.int64)
    many[0, 0, 0] = 300
    out = write_nifti_labels(tmp_path / "many.nii.gz", many, like=tmp_path / "image3.nii.gz")
    assert nibabel.load(str(out)).get_data_dtype() == np.int16


# --- 3. evaluate per case in 3-D, in mm; check-data reports spacing and orientation -------

def test_evaluate_reports_per_case_3d_metrics_in_mm(trained, tmp_path, capsys):
    from tinyseg.data import read_image, read_mask
    from tinyseg.data.transforms import zscore
    from tinyseg.inference import predict
    from tinyseg.metrics import assd, dice, hd95
    checkpoint, root = trained
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--data", str(root), "--out", str(tmp_path / "e")]) == 0
    out = capsys.readouterr().out
    assert "per-case 3-D metrics (6 cases" in out and "hd95 and assd in mm" in out
    report = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert report["units"] == "mm" and "per_slice" not in report and "per_image" not in report
    rows = report["per_case"]
    assert [row["id"] for row in rows] == [f"case_{i:03d}" for i in range(6)]
    assert all(row["slices"] == 6 and row["spacing"] == pytest.approx([2.5, 0.8, 0.8]) for row in rows)
    for metric in ("dice", "iou", "hd95", "assd"):
        assert report[metric] == pytest.approx(np.mean([row[metric] for row in rows]))
    # one case recomputed independently: the whole volume, spacing (dz, dy, dx) = (2.5, 0.8, 0.8)
    model, _ = ts.models.from_checkpoint(checkpoint)
    slices = read_image(root / "imagesTr" / "case_002_0000.nii.gz")[0]
    pred = np.stack([predict(model, zscore(s)).mask for s in slices]) == 1
    target = read_mask(root / "labelsTr" / "case_002.nii.gz") == 1
    assert rows[2]["dice"] == pytest.approx(dice(pred, target))
    assert rows[2]["hd95"] == pytest.approx(hd95(pred, target, spacing=(2.5, 0.8, 0.8)))
    assert rows[2]["assd"] == pytest.approx(assd(pred, target, spacing=(2.5, 0.8, 0.8)))

    assert main(["evaluate", "--checkpoint", str(checkpoint), "--data", str(root), "--out", str(tmp_path / "s"),
                 "--per-slice"]) == 0
    assert "per-slice 2-D metrics (36 slices)" in capsys.readouterr().out
    report = json.loads((tmp_path / "s" / "metrics.json").read_text())
    assert len(report["per_case"]) == 6 and len(report["per_slice"]) == 36
    assert report["per_slice"][7]["case"] == "case_001" and report["per_slice"][7]["slice"] == 1
    assert report["per_slice_units"] == "mm" and set(report["per_slice_mean"]) >= {"dice", "hd95"}


def test_evaluate_on_2d_images_keeps_per_image_rows_and_says_pixels(tmp_path, capsys):
    from PIL import Image
    root = tmp_path / "png"
    for i in range(4):
        mask = np.zeros((16, 16), np.uint8)
        mask[3 + i:9 + i, 4:10] = 255
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "masks").mkdir(exist_ok=True)
        Image.fromarray((mask // 2 + 40).astype(np.uint8)).save(root / "images" / f"im{i}.png")
        Image.fromarray(mask).save(root / "masks" / f"im{i}.png")
    run = tmp_path / "run"
    assert main(["train", "--data", str(root), "--epochs", "1", "--batch-size", "2", "--image-size", "16",
                 "--base-channels", "2", "--depth", "2", "--out", str(run), "--no-progress"]) == 0
    assert main(["evaluate", "--checkpoint", str(run / "last.npz"), "--data", str(root),
                 "--out", str(tmp_path / "e")]) == 0
    assert "hd95 and assd in pixels" in capsys.readouterr().out
    report = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert report["units"] == "pixels" and [row["id"] for row in report["per_image"]] == [f"im{i}" for i in range(4)]
    assert "per_case" not in report


def test_check_data_reports_spacing_of_three_axes_and_orientation(tmp_path, capsys):
    root = nnunet_folder(tmp_path / "data", cases=2)
    ras = np.diag([0.7, 0.9, 3.0, 1.0])
    save_nifti(root / "imagesTr" / "case_001_0000.nii.gz", np.zeros((16, 16, 6), np.float32), affine=ras)
    save_nifti(root / "labelsTr" / "case_001.nii.gz", ball_volume().astype(np.uint8), affine=ras)
    assert main(["check-data", str(root)]) == 0
    out = capsys.readouterr().out
    assert "Volumes:        2 (shape and voxel spacing along the file's axes i x j x k" in out
    assert "  - case_000: 16 x 16 x 6 voxels, spacing 0.8 x 0.8 x 2.5 mm, orientation LPS" in out
    assert "  - case_001: 16 x 16 x 6 voxels, spacing 0.7 x 0.9 x 3 mm, orientation RAS" in out
    data = FolderDataset(root)
    assert data.volume_spacing(0) == pytest.approx((2.5, 0.8, 0.8))        # (dz, dy, dx) of the (S, H, W) stack
    assert data.volume_spacing(6) == pytest.approx((3.0, 0.9, 0.7))
    # a mask whose affine differs in orientation from its image is named in the report
    save_nifti(root / "labelsTr" / "case_001.nii.gz", ball_volume().astype(np.uint8), affine=ct_affine())
    report = ts.data.check_data(root)
    assert any("oriented RAS but" in problem and "LPS" in problem for problem in report.problems)
