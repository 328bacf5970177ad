"""Reading files (tinyseg.data.io) and folder datasets (tinyseg.data.folder).

Every test builds its own small dataset under tmp_path; the last test reads the real
ISBI 2012 EM data from /work/shared when it is there.
"""
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tinyseg.data import DataError, FolderDataset, check_data, read_image, read_mask, write_png
from tinyseg.data import Subset
from tinyseg.data.io import split_extension

ISBI = Path(__file__).resolve().parents[2] / "../shared/data/isbi2012_em"


# --- helpers ---------------------------------------------------------------------------

def disk(size=16, centre=(8, 8), radius=5):
    yy, xx = np.mgrid[:size, :size]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius ** 2


def save(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path)


def save_palette(path, indices, colours=((0, 0, 0), (255, 0, 0), (0, 255, 0))):
    image = Image.fromarray(indices.astype(np.uint8), mode="P")
    image.putpalette([c for colour in colours for c in colour])
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def make_pairs(root, masks, images=None, ext=".png"):
    """root/images/<i>.png (grey, derived from the mask) + root/masks/<i><ext>."""
    for i, mask in enumerate(masks):
        image = images[i] if images is not None else (40 + 100 * (mask > 0)).astype(np.uint8)
        save(root / "images" / f"{i:02d}.png", image)
        save(root / "masks" / f"{i:02d}{ext}", mask.astype(np.uint8))
    return root


def save_nifti(path, data, zooms):
    nibabel = pytest.importorskip("nibabel")
    image = nibabel.Nifti1Image(data, np.diag([*zooms, 1.0]))     # zooms: (dx, dy, dz)
    image.header.set_zooms(zooms)
    path.parent.mkdir(parents=True, exist_ok=True)
    nibabel.save(image, str(path))


# --- io: formats -----------------------------------------------------------------------

def test_split_extension_treats_nii_gz_as_one_extension():
    assert split_extension("a/case_01.nii.gz") == ("case_01", ".nii.gz")
    assert split_extension("x.PNG") == ("x", ".png")


def test_png_grey_rgb_16bit_and_palette(tmp_path):
    grey = np.arange(48, dtype=np.uint8).reshape(6, 8)
    save(tmp_path / "grey.png", grey)
    image, info = read_image(tmp_path / "grey.png")
    assert image.shape == (1, 6, 8) and image.dtype == np.float32
    np.testing.assert_array_equal(image[0], grey)
    assert info.spacing is None and info.num_slices is None and "PNG" in info.source

    rgb = np.random.default_rng(0).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    save(tmp_path / "rgb.png", rgb)
    image, _ = read_image(tmp_path / "rgb.png")
    assert image.shape == (3, 6, 8)
    np.testing.assert_array_equal(image, np.moveaxis(rgb, -1, 0))

    deep = (np.arange(48, dtype=np.uint16) * 1000).reshape(6, 8)
    save(tmp_path / "deep.png", deep)
    image, info = read_image(tmp_path / "deep.png")
    np.testing.assert_array_equal(image[0], deep)          # not squeezed into 8 bits
    assert info.dtype == "uint16"

    indices = (np.arange(48).reshape(6, 8) % 3).astype(np.uint8)
    save_palette(tmp_path / "palette.png", indices)
    mask = read_mask(tmp_path / "palette.png")
    np.testing.assert_array_equal(mask, indices)           # a mask keeps the palette indices
    image, _ = read_image(tmp_path / "palette.png")        # an image gets the colours
    assert image.shape == (3, 6, 8)
    np.testing.assert_array_equal(image[0], np.where(indices == 1, 255, 0))


def test_tiff_2d_rgb_and_multipage(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    plane = np.arange(30, dtype=np.uint16).reshape(5, 6)
    tifffile.imwrite(tmp_path / "plane.tif", plane, resolution=(20.0, 10.0), resolutionunit="CENTIMETER")
    image, info = read_image(tmp_path / "plane.tif")
    assert image.shape == (1, 5, 6) and info.num_slices is None
    np.testing.assert_array_equal(image[0], plane)
    assert info.spacing == pytest.approx((1.0, 0.5))       # 10 px/cm -> 1 mm, 20 px/cm -> 0.5 mm

    rgb = np.random.default_rng(1).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tiff", rgb, photometric="rgb")
    assert read_image(tmp_path / "rgb.tiff")[0].shape == (3, 5, 6)

    stack = np.random.default_rng(2).integers(0, 4, (4, 5, 6), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "stack.tif", stack, photometric="minisblack")   # pages, not colour planes
    image, info = read_image(tmp_path / "stack.tif")
    assert image.shape == (4, 1, 5, 6) and info.num_slices == 4
    np.testing.assert_array_equal(read_mask(tmp_path / "stack.tif"), stack)


def test_nifti_volume_is_sliced_along_the_last_axis_with_spacing(tmp_path):
    data = np.random.default_rng(3).normal(size=(6, 5, 4)).astype(np.float32)   # (x, y, z)
    save_nifti(tmp_path / "vol.nii.gz", data, (0.5, 0.8, 2.0))
    image, info = read_image(tmp_path / "vol.nii.gz")
    assert image.shape == (4, 1, 5, 6) and info.num_slices == 4
    for k in range(4):
        np.testing.assert_allclose(image[k, 0], data[:, :, k].T)   # rows = y, columns = x
    assert info.spacing == pytest.approx((0.8, 0.5))
    sagittal, info = read_image(tmp_path / "vol.nii.gz", slice_axis=0)
    assert sagittal.shape == (6, 1, 4, 5) and info.spacing == pytest.approx((2.0, 0.8))


def test_dicom_rescale_and_pixel_spacing(tmp_path):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    stored = np.arange(20, dtype=np.uint16).reshape(4, 5) * 10
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"     # CT image storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = 2, -1024
    ds.PixelSpacing = [0.7, 0.6]
    ds.PixelData = stored.tobytes()
    ds.save_as(tmp_path / "slice.dcm", enforce_file_format=True)

    image, info = read_image(tmp_path / "slice.dcm")
    assert image.shape == (1, 4, 5)
    np.testing.assert_allclose(image[0], stored * 2.0 - 1024)      # Hounsfield units
    assert info.spacing == pytest.approx((0.7, 0.6)) and "DICOM" in info.source


def test_unknown_missing_and_corrupt_files_raise_data_error_naming_them(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="notes.txt.*expected one of"):
        read_image(tmp_path / "notes.txt")
    with pytest.raises(DataError, match="absent.png"):
        read_image(tmp_path / "absent.png")
    (tmp_path / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(DataError, match="broken.png"):
        read_image(tmp_path / "broken.png")


def test_missing_optional_reader_names_the_io_extra(tmp_path, monkeypatch):
    (tmp_path / "volume.nii.gz").write_bytes(b"whatever")
    monkeypatch.setitem(sys.modules, "nibabel", None)      # makes "import nibabel" fail
    with pytest.raises(ImportError, match=r"volume.nii.gz.*nibabel.*pip install 'tinyseg\[io\]'"):
        read_image(tmp_path / "volume.nii.gz")


def test_colour_and_fractional_masks_are_rejected(tmp_path):
    colour = np.zeros((4, 4, 3), np.uint8)
    colour[0, 0] = (255, 0, 0)
    save(tmp_path / "colour.png", colour)
    with pytest.raises(DataError, match="colour.png.*colour mask"):
        read_mask(tmp_path / "colour.png")
    grey_rgb = np.repeat((disk(8, (4, 4), 2) * 255).astype(np.uint8)[..., None], 3, axis=-1)
    save(tmp_path / "grey_rgb.png", grey_rgb)            # equal channels: one grey mask
    np.testing.assert_array_equal(read_mask(tmp_path / "grey_rgb.png"), grey_rgb[..., 0])
    tifffile = pytest.importorskip("tifffile")
    labels = disk(8, (4, 4), 2).astype(np.float32)
    tifffile.imwrite(tmp_path / "float.tif", labels)     # integer values stored as floats: fine
    mask = read_mask(tmp_path / "float.tif")
    assert mask.dtype == np.int64 and np.array_equal(mask, labels)
    tifffile.imwrite(tmp_path / "soft.tif", labels * 0.5)
    with pytest.raises(DataError, match="soft.tif.*non-integer"):
        read_mask(tmp_path / "soft.tif")


def test_write_png_round_trips_masks_and_scales_images(tmp_path):
    mask = (np.arange(12).reshape(3, 4) % 3).astype(np.int64)
    write_png(tmp_path / "out" / "mask.png", mask)
    np.testing.assert_array_equal(read_mask(tmp_path / "out" / "mask.png"), mask)
    image = np.linspace(-1, 1, 12, dtype=np.float32).reshape(1, 3, 4)
    write_png(tmp_path / "image.png", image)
    stored = read_image(tmp_path / "image.png")[0][0]
    assert stored.min() == 0 and stored.max() == 255
    write_png(tmp_path / "bool.png", mask > 0)
    assert set(np.unique(read_mask(tmp_path / "bool.png"))) == {0, 255}
    with pytest.raises(ValueError, match="0..255"):
        write_png(tmp_path / "big.png", mask * 150)


# --- folder datasets: encodings ------------------------------------------------------

def test_binary_01_masks(tmp_path):
    masks = [disk(16, (8, 8), r).astype(np.uint8) for r in (3, 5)]
    ds = FolderDataset(make_pairs(tmp_path, masks))
    assert len(ds) == 2 and ds.ids == ["00", "01"] and ds.num_classes == 2
    assert ds.mask_encoding.startswith("binary 0/1")
    image, mask = ds[1]
    assert image.shape == (1, 16, 16) and image.dtype == np.float32
    np.testing.assert_array_equal(mask, masks[1])
    assert ds.spacing(0) is None
    assert ds.files(1) == ([tmp_path / "images" / "01.png"], tmp_path / "masks" / "01.png")
    subset = Subset(ds, [1])
    assert subset.ids == ["01"] and subset.spacing(0) is None and subset.num_classes == 2


def test_binary_0_255_masks_become_0_1(tmp_path):
    masks = [disk() * np.uint8(255), np.zeros((16, 16), np.uint8)]
    ds = FolderDataset(make_pairs(tmp_path, masks))
    assert "255 = foreground" in ds.mask_encoding
    np.testing.assert_array_equal(ds[0][1], disk())
    assert ds[0][1].max() == 1 and ds.num_classes == 2


def test_class_index_masks_and_num_classes(tmp_path):
    mask = np.zeros((16, 16), np.uint8)
    mask[2:6, 2:6], mask[9:14, 9:14] = 1, 2
    root = make_pairs(tmp_path, [mask, (mask == 1).astype(np.uint8)])
    ds = FolderDataset(root)
    assert ds.num_classes == 3 and "class indices 0..2" in ds.mask_encoding
    np.testing.assert_array_equal(ds[0][1], mask)
    assert FolderDataset(root, num_classes=5).num_classes == 5   # a class that is never drawn


def test_palette_masks_give_their_indices(tmp_path):
    mask = np.zeros((16, 16), np.uint8)
    mask[3:8, 3:8], mask[10:15, 2:6] = 1, 2
    save(tmp_path / "images" / "a.png", np.full((16, 16), 90, np.uint8))
    save_palette(tmp_path / "masks" / "a.png", mask)
    ds = FolderDataset(tmp_path)
    assert ds.num_classes == 3 and "palette" in ds.mask_encoding
    np.testing.assert_array_equal(ds[0][1], mask)


def test_isbi_like_inverted_masks_with_foreground_zero(tmp_path):
    membrane = ~disk(16, (8, 8), 6)                       # membrane drawn in black (0)
    ds = FolderDataset(make_pairs(tmp_path, [np.where(membrane, 0, 255).astype(np.uint8)]), foreground=0)
    np.testing.assert_array_equal(ds[0][1], membrane)
    assert "equal to 0" in ds.mask_encoding and ds.num_classes == 2


def test_foreground_value_absent_from_every_mask(tmp_path):
    root = make_pairs(tmp_path, [disk().astype(np.uint8)])
    with pytest.raises(DataError, match="foreground=7 occurs in no mask"):
        FolderDataset(root, foreground=7)


def test_rgb_images_and_channel_conversion(tmp_path):
    rgb = np.random.default_rng(4).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    save(tmp_path / "images" / "a.png", rgb)
    save(tmp_path / "images" / "b.png", rgb[..., 0])
    for case in "ab":
        save(tmp_path / "masks" / f"{case}.png", disk().astype(np.uint8))
    with pytest.raises(DataError, match="different channel counts.*channels=1"):
        FolderDataset(tmp_path)
    grey = FolderDataset(tmp_path, channels=1)
    assert grey[0][0].shape == (1, 16, 16)
    np.testing.assert_allclose(grey[0][0][0], rgb @ np.array([0.299, 0.587, 0.114]), rtol=1e-5)
    assert FolderDataset(tmp_path, channels=3)[1][0].shape == (3, 16, 16)


def test_nifti_volumes_in_images_masks_layout_become_slices(tmp_path):
    volume_mask = np.zeros((16, 16, 3), np.uint8)
    volume_mask[4:10, 5:12, 1] = 1
    save_nifti(tmp_path / "images" / "vol.nii.gz", np.random.default_rng(5).normal(size=(16, 16, 3)).astype(
        np.float32), (0.9, 0.9, 3.0))
    save_nifti(tmp_path / "masks" / "vol.nii.gz", volume_mask, (0.9, 0.9, 3.0))
    ds = FolderDataset(tmp_path)
    assert ds.ids == ["vol_slice000", "vol_slice001", "vol_slice002"]
    assert ds.slice_indices == [0, 1, 2] and ds.case_ids == ["vol"] * 3
    np.testing.assert_array_equal(ds[1][1], volume_mask[:, :, 1].T)
    assert ds.spacing(2) == pytest.approx((0.9, 0.9))
    assert check_data(tmp_path).empty_masks == 2


def test_nnunet_layout_with_two_modalities_and_dataset_json(tmp_path):
    rng = np.random.default_rng(6)
    for case in ("case_001", "case_002"):
        label = np.zeros((12, 10, 2), np.uint8)
        label[2:6, 3:7, :] = 1
        label[7:9, 1:4, 1] = 2
        save_nifti(tmp_path / "labelsTr" / f"{case}.nii.gz", label, (1.5, 1.0, 4.0))
        for modality in range(2):
            save_nifti(tmp_path / "imagesTr" / f"{case}_{modality:04d}.nii.gz",
                       rng.normal(size=(12, 10, 2)).astype(np.float32) + 10 * modality, (1.5, 1.0, 4.0))
    (tmp_path / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "T1", "1": "T2"},
        "labels": {"background": 0, "organ": 1, "lesion": 2, "vessel": 3},
        "numTraining": 2, "file_ending": ".nii.gz"}))
    (tmp_path / "imagesTr" / "._case_001_0000.nii.gz").write_bytes(b"macOS resource fork")   # hidden: ignored
    ds = FolderDataset(tmp_path)
    assert ds.layout.startswith("nnU-Net") and len(ds) == 4
    assert ds.num_classes == 4 and ds.class_names == ["background", "organ", "lesion", "vessel"]
    assert ds.channel_names == ["T1", "T2"]
    image, mask = ds[1]
    assert image.shape == (2, 10, 12) and mask.shape == (10, 12)
    assert image[1].mean() > image[0].mean() + 5          # modality _0001 is channel 1
    assert set(np.unique(mask)) == {0, 1, 2}
    assert ds.spacing(0) == pytest.approx((1.0, 1.5))
    report = check_data(tmp_path)
    assert report.class_names == ds.class_names and report.channels == {2: 2}


# --- folder datasets: errors ---------------------------------------------------------

def test_empty_and_missing_folders(tmp_path):
    with pytest.raises(DataError, match="expected ROOT/images/<id>"):
        FolderDataset(tmp_path)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(DataError, match="found no image files"):
        FolderDataset(tmp_path)
    with pytest.raises(DataError, match="no such folder"):
        FolderDataset(tmp_path / "nowhere")


def test_missing_partner_names_the_file(tmp_path):
    root = make_pairs(tmp_path, [disk().astype(np.uint8)] * 2)
    (root / "masks" / "01.png").unlink()
    with pytest.raises(DataError, match="01.png: no mask"):
        FolderDataset(root)
    save(root / "masks" / "01.png", disk().astype(np.uint8))
    save(root / "masks" / "02.png", disk().astype(np.uint8))
    with pytest.raises(DataError, match="02.png: no image"):
        FolderDataset(root)


def test_size_mismatch_names_both_files(tmp_path):
    root = make_pairs(tmp_path, [disk().astype(np.uint8)])
    save(root / "masks" / "00.png", np.zeros((12, 16), np.uint8))
    with pytest.raises(DataError, match=r"00.png.*16x16.*00.png.*12x16.*sizes differ"):
        FolderDataset(root)


def test_unreadable_file_names_it(tmp_path):
    root = make_pairs(tmp_path, [disk().astype(np.uint8)] * 2)
    (root / "images" / "01.png").write_bytes(b"\x89PNG truncated")
    with pytest.raises(DataError, match="01.png: cannot read"):
        FolderDataset(root)


def test_jpeg_compressed_mask_is_rejected_with_the_values_seen(tmp_path):
    root = make_pairs(tmp_path, [disk(32, (16, 16), 9) * np.uint8(255)], ext=".jpg")
    with pytest.raises(DataError, match=r"00.jpg: unexpected mask values 0, 1, .*JPEG"):
        FolderDataset(root)
    with pytest.warns(UserWarning, match="00.jpg"), pytest.raises(DataError, match="no usable"):
        FolderDataset(root, skip_bad=True)
    report = check_data(root)
    assert report.pairs_usable == 0 and "unexpected mask values" in report.problems[0]


def test_mixed_0_255_and_index_masks(tmp_path):
    masks = [disk() * np.uint8(255)] * 3 + [disk().astype(np.uint8) * 2]
    root = make_pairs(tmp_path, masks)
    with pytest.raises(DataError, match="mix encodings.*03.png"):
        FolderDataset(root)
    with pytest.warns(UserWarning, match="03.png"):
        ds = FolderDataset(root, skip_bad=True)
    assert ds.ids == ["00", "01", "02"] and "255 = foreground" in ds.mask_encoding


def test_skip_bad_warns_and_skips(tmp_path):
    root = make_pairs(tmp_path, [disk().astype(np.uint8)] * 4)
    save(root / "masks" / "01.png", np.zeros((10, 16), np.uint8))      # size mismatch
    (root / "images" / "02.png").write_bytes(b"garbage")                # unreadable
    (root / "masks" / "03.png").unlink()                                 # missing partner
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = FolderDataset(root, skip_bad=True)
    messages = " | ".join(str(w.message) for w in caught)
    assert ds.ids == ["00"]
    for name in ("01.png", "02.png", "03.png"):
        assert name in messages
    report = check_data(root)
    assert report.pairs_usable == 1 and report.pairs_found == 3 and len(report.problems) == 3


def test_check_data_report(tmp_path):
    masks = [disk(16, (8, 8), 4) * np.uint8(255), np.zeros((16, 16), np.uint8)]
    root = make_pairs(tmp_path, masks)
    (root / "images" / "readme.txt").write_text("not an image")
    report = check_data(root)
    assert report.layout == "images/ + masks/" and report.pairs_usable == 2 and report.items == 2
    assert report.image_sizes == {"16x16": 2} and report.channels == {1: 2}
    assert report.mask_values == [0, 255] and report.empty_masks == 1
    fraction = disk(16, (8, 8), 4).mean()
    assert report.foreground_fraction == pytest.approx((fraction / 2, 0.0, fraction))
    assert report.class_fractions == pytest.approx([1 - fraction / 2, fraction / 2])
    assert any("readme.txt" in p for p in report.problems)
    text = report.format()
    for line in ("Layout:", "Mask values:    0, 255", "Mask encoding:  binary 0/255", "Empty masks:    1 of 2"):
        assert line in text


# --- the real data -------------------------------------------------------------------

@pytest.mark.skipif(not ISBI.is_dir(), reason="ISBI 2012 EM data not present in ../shared/data")
def test_isbi2012_em_folder():
    report = check_data(ISBI, foreground=0)
    assert report.pairs_usable == 30 and report.image_sizes == {"512x512": 30} and not report.problems
    assert report.mask_values == [0, 255]
    mean, low, high = report.foreground_fraction          # membrane: 17-27 %, 22 % on average
    assert 0.20 < mean < 0.24 and low > 0.15 and high < 0.29
    ds = FolderDataset(ISBI, foreground=0)
    image, mask = ds[0]
    assert ds.ids[0] == "00" and ds.ids[-1] == "29"
    assert image.shape == (1, 512, 512) and set(np.unique(mask)) == {0, 1}
    # Membrane (class 1) is darker than the cell interior.
    assert image[0][mask == 1].mean() < image[0][mask == 0].mean()
