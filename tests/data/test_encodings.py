"""Image and mask encodings that real folders contain: each case writes such files with
Pillow or tifffile, runs ``tinyseg check-data --files`` on the folder (in-process), and
checks both what it reports and what the dataset then holds."""
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from tinyseg.cli import main
from tinyseg.data import FolderDataset

SIZE = 16


def disk():
    yy, xx = np.mgrid[:SIZE, :SIZE]
    return (yy - 8) ** 2 + (xx - 8) ** 2 <= 25


def grey_image(seed=0, dtype=np.uint8, high=256):
    return np.random.default_rng(seed).integers(0, high, (SIZE, SIZE)).astype(dtype)


def colour_image(seed=0):
    return np.random.default_rng(seed).integers(0, 256, (SIZE, SIZE, 3)).astype(np.uint8)


def with_alpha(pixels):
    """``pixels`` with an opaque alpha channel."""
    return np.dstack([pixels, np.full(pixels.shape[:2], 255, np.uint8)])


def png(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path)


def png16_colour(path, rgb16):
    """A 16-bit-per-channel RGB PNG written by hand (Pillow cannot write one)."""
    height, width = rgb16.shape[:2]
    raw = b"".join(b"\x00" + rgb16[row].astype(">u2").tobytes() for row in range(height))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def palette_png(path, indices, colours):
    image = Image.fromarray(indices.astype(np.uint8), mode="P")
    image.putpalette([c for colour in colours for c in colour])
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def check_data(root, capsys, *extra):
    assert main(["check-data", str(root), "--files", *extra]) == 0
    return capsys.readouterr().out


def folder(tmp_path, image_writer, mask_writer, n=2):
    """root/images/<i>.png|tif and root/masks/<i>.png|tif from two writers(path_stem, i)."""
    root = tmp_path / "data"
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        image_writer(root / "images" / f"case{i}", i)
        mask_writer(root / "masks" / f"case{i}", i)
    return root


def grey_png(stem, i):
    png(stem.with_suffix(".png"), grey_image(i))


def binary_png(stem, i):
    png(stem.with_suffix(".png"), disk().astype(np.uint8) * 255)


# ----------------------------------------------------------------------------- 16-bit masks

@pytest.mark.parametrize("values, expected_encoding, file_note, classes", [
    ((0, 65535), "binary 0/255", "PNG 16-bit grey, 0/65535 -> binary 0/255", [0, 1]),
    ((0, 1), "binary 0/1", "PNG 16-bit grey", [0, 1]),
    ((0, 1, 2, 3), "class indices 0..3", "PNG 16-bit grey", [0, 1, 2, 3]),
])
def test_16_bit_masks(tmp_path, capsys, values, expected_encoding, file_note, classes):
    def mask16(stem, i):
        labels = np.zeros((SIZE, SIZE), np.uint16)
        for k, value in enumerate(values):
            labels[:, k * SIZE // len(values):] = value
        png(stem.with_suffix(".png"), labels)

    root = folder(tmp_path, grey_png, mask16)
    out = check_data(root, capsys)
    assert f"mask: {file_note}: 2 file(s)" in out and expected_encoding in out
    assert "Problems:       none" in out
    data = FolderDataset(root)
    assert sorted(np.unique(data[0][1]).tolist()) == classes


# ----------------------------------------------------------------------------- 16-bit images

def test_16_bit_grey_images_keep_their_values(tmp_path, capsys):
    def image16(stem, i):
        png(stem.with_suffix(".png"), grey_image(i, np.uint16, 60000))

    root = folder(tmp_path, image16, binary_png)
    out = check_data(root, capsys)
    assert "image: PNG 16-bit grey: 2 file(s)" in out
    np.testing.assert_array_equal(FolderDataset(root)[1][0][0], grey_image(1, np.uint16, 60000))


def test_16_bit_colour_png_is_read_at_8_bits_and_says_so(tmp_path, capsys):
    rgb16 = np.random.default_rng(0).integers(0, 65536, (SIZE, SIZE, 3)).astype(np.uint16)
    root = folder(tmp_path, lambda stem, i: png16_colour(stem.with_suffix(".png"), rgb16), binary_png)
    out = check_data(root, capsys)
    assert "image: PNG 16-bit RGB, 16-bit colour read at 8 bits per channel" in out
    image = FolderDataset(root)[0][0]
    np.testing.assert_array_equal(image, np.moveaxis(rgb16 >> 8, -1, 0))


def test_16_bit_colour_tiff_keeps_16_bits(tmp_path, capsys):
    tifffile = pytest.importorskip("tifffile")
    rgb16 = np.random.default_rng(0).integers(0, 65536, (SIZE, SIZE, 3)).astype(np.uint16)
    root = folder(tmp_path, lambda stem, i: tifffile.imwrite(stem.with_suffix(".tif"), rgb16, photometric="rgb"),
                  binary_png)
    assert "image: TIFF 16-bit RGB: 2 file(s)" in check_data(root, capsys)
    np.testing.assert_array_equal(FolderDataset(root)[0][0], np.moveaxis(rgb16, -1, 0))


# ----------------------------------------------------------------------------- alpha

def test_opaque_rgba_colour_images_drop_alpha(tmp_path, capsys):
    root = folder(tmp_path, lambda stem, i: png(stem.with_suffix(".png"), with_alpha(colour_image(i))), binary_png)
    out = check_data(root, capsys)
    assert "image: PNG 8-bit RGBA, alpha opaque -> alpha dropped: 2 file(s)" in out
    image = FolderDataset(root)[0][0]
    np.testing.assert_array_equal(image, np.moveaxis(colour_image(0), -1, 0))


def test_opaque_rgba_and_la_grey_images_become_one_channel(tmp_path, capsys):
    def rgba_grey(stem, i):
        grey = grey_image(i)
        png(stem.with_suffix(".png"), with_alpha(np.dstack([grey] * 3)))

    def la(stem, i):
        png(stem.with_suffix(".png"), np.dstack([grey_image(i), np.full((SIZE, SIZE), 255, np.uint8)]), mode="LA")

    for name, writer, found in [("rgba", rgba_grey, "PNG 8-bit RGBA, alpha opaque -> alpha dropped; channels equal "
                                                     "-> 1 grey channel"),
                                ("la", la, "PNG 8-bit grey+alpha (LA), alpha opaque -> alpha dropped")]:
        root = folder(tmp_path / name, writer, binary_png)
        out = check_data(root, capsys)
        assert f"image: {found}: 2 file(s)" in out, out
        assert "Channels:       1 (2)" in out
        np.testing.assert_array_equal(FolderDataset(root)[1][0][0], grey_image(1))


def test_opaque_la_mask_is_accepted(tmp_path, capsys):
    def la_mask(stem, i):
        png(stem.with_suffix(".png"), np.dstack([disk().astype(np.uint8) * 255, np.full((SIZE, SIZE), 255, np.uint8)]),
            mode="LA")

    root = folder(tmp_path, grey_png, la_mask)
    out = check_data(root, capsys)
    assert "mask: PNG 8-bit grey+alpha (LA), alpha opaque -> alpha dropped: 2 file(s)" in out
    np.testing.assert_array_equal(FolderDataset(root)[0][1], disk())


@pytest.mark.parametrize("role", ["image", "mask"])
def test_see_through_alpha_is_rejected_saying_what_to_do(tmp_path, capsys, role):
    alpha = np.full((SIZE, SIZE), 255, np.uint8)
    alpha[:4] = 0                                           # a quarter transparent

    def transparent(stem, i):
        content = colour_image(i) if role == "image" else np.dstack([disk().astype(np.uint8) * 255] * 3)
        png(stem.with_suffix(".png"), np.dstack([content, alpha]))

    root = folder(tmp_path, transparent if role == "image" else grey_png,
                  transparent if role == "mask" else binary_png)
    out = check_data(root, capsys)
    assert "RGBA image whose alpha channel is not opaque (25.0% of pixels, alpha down to 0 of 255)" in out
    assert "flatten the image onto its background" in out and "(skipped)" in out

    assert main(["train", "--data", str(root), "--epochs", "1", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "alpha channel is not opaque" in err and f"case0.png" in err


def test_opaque_rgba_tiff_drops_alpha(tmp_path, capsys):
    tifffile = pytest.importorskip("tifffile")
    rgba = with_alpha(colour_image(0))
    root = folder(tmp_path, lambda stem, i: tifffile.imwrite(stem.with_suffix(".tif"), rgba, photometric="rgb",
                                                            extrasamples=["unassalpha"]), binary_png)
    assert "image: TIFF 8-bit RGBA, alpha opaque -> alpha dropped: 2 file(s)" in check_data(root, capsys)
    np.testing.assert_array_equal(FolderDataset(root)[0][0], np.moveaxis(colour_image(0), -1, 0))


# ----------------------------------------------------------------------------- palettes, grey as RGB

def test_palette_masks_and_images(tmp_path, capsys):
    indices = np.zeros((SIZE, SIZE), np.uint8)
    indices[4:8], indices[10:] = 1, 2
    colours = [(0, 0, 0), (255, 0, 0), (0, 255, 0)]
    greys = [(0, 0, 0), (90, 90, 90), (200, 200, 200)]

    def images(stem, i):
        palette_png(stem.with_suffix(".png"), indices, greys if i == 0 else colours)

    root = folder(tmp_path, images, lambda stem, i: palette_png(stem.with_suffix(".png"), indices, colours))
    out = check_data(root, capsys, "--classes", "3")     # Pillow stores 3 colours in 2 bits per pixel
    assert "mask: PNG 2-bit palette, palette indices -> mask values: 2 file(s)" in out
    assert "image: PNG 2-bit palette, palette colours -> grey: 1 file(s)" in out
    assert "image: PNG 2-bit palette, palette colours -> RGB: 1 file(s)" in out
    # one grey-palette image among colour ones is a real channel mismatch (its pixels are not RGB triplets)
    assert "different channel counts" in out
    np.testing.assert_array_equal(FolderDataset(root, channels=3)[0][1], indices)


def test_grey_stored_as_rgb_is_read_as_one_channel(tmp_path, capsys):
    def rgb_grey(stem, i):
        png(stem.with_suffix(".png"), np.dstack([grey_image(i)] * 3))

    def rgb_mask(stem, i):
        png(stem.with_suffix(".png"), np.dstack([disk().astype(np.uint8) * 255] * 3))

    root = folder(tmp_path, rgb_grey, rgb_mask)
    out = check_data(root, capsys)
    assert "image: PNG 8-bit RGB, channels equal -> 1 grey channel: 2 file(s)" in out
    assert "mask: PNG 8-bit RGB, channels equal -> 1 grey channel: 2 file(s)" in out
    assert "binary 0/255" in out and "Channels:       1 (2)" in out
    image, mask = FolderDataset(root)[0]
    np.testing.assert_array_equal(image[0], grey_image(0))
    np.testing.assert_array_equal(mask, disk())


def test_grey_frames_stored_as_rgb_among_colour_frames_keep_three_channels(tmp_path, capsys):
    def frames(stem, i):
        png(stem.with_suffix(".png"), colour_image(i) if i else np.dstack([grey_image(i)] * 3))

    root = folder(tmp_path, frames, binary_png, n=3)
    out = check_data(root, capsys)
    assert "1 image(s) with equal RGB channels" in out and "read as 3 channels, like the others" in out
    data = FolderDataset(root)
    assert [data[i][0].shape for i in range(3)] == [(3, SIZE, SIZE)] * 3
    np.testing.assert_array_equal(data[0][0], np.stack([grey_image(0)] * 3))
    assert main(["train", "--data", str(root), "--epochs", "1", "--image-size", "16", "--depth", "2",
                 "--base-channels", "2", "--batch-size", "2", "--no-progress", "--out", str(tmp_path / "run")]) == 0


# ----------------------------------------------------------------------------- multi-page TIFF

def test_multi_page_tiff_images_and_masks_become_slices(tmp_path, capsys):
    tifffile = pytest.importorskip("tifffile")
    stack = np.stack([grey_image(k) for k in range(3)])
    masks = np.stack([disk(), ~disk(), disk()]).astype(np.uint8)
    root = folder(tmp_path, lambda stem, i: tifffile.imwrite(stem.with_suffix(".tif"), stack, photometric="minisblack"),
                  lambda stem, i: tifffile.imwrite(stem.with_suffix(".tif"), masks, photometric="minisblack"))
    out = check_data(root, capsys)
    assert "image: multi-page TIFF 8-bit grey, 3 pages of 16x16, -> 3 slices: 2 file(s)" in out
    assert "6 2-D items" in out
    data = FolderDataset(root)
    np.testing.assert_array_equal(data[1][0][0], stack[1])
    np.testing.assert_array_equal(data[1][1], masks[1])


def test_tiff_with_pages_of_two_sizes_reads_the_first_series_and_says_so(tmp_path, capsys):
    tifffile = pytest.importorskip("tifffile")

    def with_thumbnail(stem, i):
        with tifffile.TiffWriter(stem.with_suffix(".tif")) as tif:
            tif.write(grey_image(i), photometric="minisblack")
            tif.write(grey_image(i)[::2, ::2], photometric="minisblack")     # a thumbnail

    root = folder(tmp_path, with_thumbnail, binary_png)
    out = check_data(root, capsys)
    assert "image: TIFF 8-bit grey, only the first series read (1 of 2 pages; the 1 other series" in out
    np.testing.assert_array_equal(FolderDataset(root)[0][0][0], grey_image(0))


def test_predict_gives_a_colour_model_back_the_channels_of_a_grey_frame_stored_as_rgb(tmp_path, capsys):
    def frames(stem, i):
        png(stem.with_suffix(".png"), colour_image(i))

    root = folder(tmp_path, frames, binary_png, n=4)
    run = tmp_path / "run"
    assert main(["train", "--data", str(root), "--epochs", "1", "--image-size", "16", "--depth", "2",
                 "--base-channels", "2", "--batch-size", "2", "--no-progress", "--out", str(run)]) == 0
    grey_rgb, grey = tmp_path / "grey_rgb.png", tmp_path / "grey.png"
    png(grey_rgb, np.dstack([grey_image(7)] * 3))
    png(grey, grey_image(7))
    assert main(["predict", "--checkpoint", str(run / "last.npz"), str(grey_rgb), "--out", str(tmp_path / "p")]) == 0
    assert (tmp_path / "p" / "grey_rgb_mask.png").is_file()
    capsys.readouterr()
    # a true one-channel image is not silently turned into colour
    assert main(["predict", "--checkpoint", str(run / "last.npz"), str(grey), "--out", str(tmp_path / "q")]) == 2
    err = capsys.readouterr().err
    assert "grey.png: 1 channel(s) (PNG 8-bit grey); the model takes 3" in err and err.count("\n") == 1
