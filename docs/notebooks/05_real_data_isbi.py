# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 5 · Real data: ISBI 2012 electron-microscopy membranes
#
# **What you will learn**
# - how to point tinyseg at a real data set (a folder of images and masks), and the two
#   things to check first: which mask value is the foreground, and how to split
#   correlated slices;
# - training with `tinyseg.train.Trainer` (history, checkpoints, best model);
# - evaluation of whole 512×512 slices with the metrics of notebook 4;
# - **overlap-tile prediction** (the U-Net paper's Fig. 2): a large image cut into
#   overlapping tiles, each predicted, and the outputs blended back — with the tiles, their
#   weights and the blended result drawn, and checked against `tinyseg.inference.predict`.
#
# **Time:** about 20 minutes to read; the code runs in a few minutes on a 2-core CPU
# (training is most of it). The times printed below come from the build of this notebook,
# on a 2-core machine shared with other jobs.
#
# **The data** are the 30 training slices of the ISBI 2012 challenge "Segmentation of
# neuronal structures in EM stacks" (serial-section TEM of a *Drosophila* larva's ventral
# nerve cord; Cardona et al. 2010, PLoS Biology; Arganda-Carreras et al. 2015), the first
# experiment of the U-Net paper. They are **not** in this repository: the notebook reads
# them from `../shared/data/isbi2012_em` next to the repository (see `SOURCE.md` there for
# provenance and terms of use: non-commercial development and testing of segmentation
# software, citing the sources above), or from the folder you name below or in the
# environment variable `TINYSEG_DATA`. Without the data it falls back to synthetic
# phantoms and says so, so that it still runs top to bottom.

# %%
import os
import tempfile
import time
from pathlib import Path

import tinyseg as ts          # before NumPy: tinyseg asks OpenBLAS to let idle threads sleep
import numpy as np
import matplotlib.pyplot as plt
from matplotlib.patches import Rectangle
from tinyseg import metrics
from tinyseg.data import DataLoader, FolderDataset, Subset, SyntheticPhantoms
from tinyseg.data import transforms as T
from tinyseg.inference import predict
from tinyseg.train import Trainer, TrainConfig
from tinyseg.viz import overlay, plot_curves

DATA_DIR = None      # set to your copy of isbi2012_em (a folder with images/ and masks/) to use it

FAST = os.environ.get("TINYSEG_NOTEBOOK_FAST") == "1"   # small settings (the test suite sets it)
plt.rcParams.update({"figure.dpi": 64, "savefig.dpi": 64})   # EM texture makes large PNGs
# Full settings: a small U-Net (base 8) on 128×128 crops, about a minute of training on 2 quiet
# cores. benchmarks/isbi2012.py trains base 16 on 256×256 crops for 30 epochs (Dice 0.80, docs/results.md).
EPOCHS, CROP, BASE, DEPTH, TILE = (1, 64, 4, 2, 128) if FAST else (20, 128, 8, 4, 256)


def repository_root(start=Path.cwd()):
    """The folder holding pyproject.toml, from here upwards (the notebook runs in docs/notebooks)."""
    return next(p for p in [start, *start.parents] if (p / "pyproject.toml").is_file())


def find_data():
    """DATA_DIR, else $TINYSEG_DATA (the folder itself or one holding isbi2012_em), else ../shared/data.

    A folder named by DATA_DIR or TINYSEG_DATA is the only place looked at: a wrong name
    falls back to phantoms (and says so) rather than to some other copy of the data.
    """
    named = DATA_DIR or os.environ.get("TINYSEG_DATA")
    candidate = Path(named) if named else repository_root().parent / "shared" / "data"
    for folder in (candidate, candidate / "isbi2012_em"):
        if (folder / "images").is_dir() and (folder / "masks").is_dir():
            return folder
    return None


data_dir = find_data()
if data_dir is not None:
    # Membrane is drawn black (mask value 0): foreground=0 makes membrane class 1.
    dataset = FolderDataset(data_dir, foreground=0)
    print(f"ISBI 2012 data from {data_dir}: {len(dataset)} slices, masks: {dataset.mask_encoding}")
else:
    dataset = SyntheticPhantoms(n=30, size=128 if FAST else 256, seed=0)
    print("THE ISBI 2012 DATA WERE NOT FOUND (looked at DATA_DIR, else $TINYSEG_DATA, else ../shared/data next "
          "to the repository).\nFalling back to 30 synthetic phantoms so that the notebook runs; the pictures and "
          "numbers below are then about phantoms, not membranes.")
REAL = data_dir is not None
print(f"{'fast' if FAST else 'full'} settings: {EPOCHS} epochs, {CROP}×{CROP} crops, U-Net depth {DEPTH}, "
      f"base {BASE} channels, tiles of {TILE}")

# %% [markdown]
# ## 1. Look at the data first
#
# Two facts from the data's `SOURCE.md`, both easy to get wrong:
# - the masks mark **membrane with 0 (black)** and cell interior with 255. A model told
#   that 255 is the foreground learns the interior — fine, but then its "Dice" is about
#   the interior (78 % of the pixels) and looks far better than a membrane Dice. Here
#   `foreground=0` makes membrane the positive class;
# - the slices are **consecutive sections** of one volume: neighbours are nearly the same
#   image. A random split puts near-copies of validation slices into training, so the
#   split is contiguous: slices 00–23 train, 24–29 validate.

# %%
train_ids, val_ids = list(range(24)), list(range(24, 30))
image, mask = dataset[0]
print(f"image {image.shape} {image.dtype}, range {image.min():.0f}..{image.max():.0f}; "
      f"mask values {np.unique(mask)}; positive class: {mask.mean():.1%} of the pixels")
means = [dataset[i][0].mean() for i in range(len(dataset))]
print(f"mean intensity per slice: {min(means):.0f} .. {max(means):.0f} (normalised per image below)")

fig, axes = plt.subplots(1, 4, figsize=(12, 3.4))
for ax, i in zip(axes[:2], (0, 24)):
    ax.imshow(dataset[i][0][0], cmap="gray")
    ax.set_title(f"slice {i:02d}" if REAL else f"phantom {i}", fontsize=10)
axes[2].imshow(dataset[0][1], cmap="gray")
axes[2].set_title("its mask, positive class white" if REAL else "mask", fontsize=10)
axes[3].imshow(dataset[0][0][0][:128, :128], cmap="gray")
axes[3].imshow(np.ma.masked_where(dataset[0][1][:128, :128] == 0, dataset[0][1][:128, :128]), cmap="autumn",
               alpha=0.5)
axes[3].set_title("top-left 128×128, membrane in colour" if REAL else "top-left 128×128", fontsize=10)
for ax in axes:
    ax.set_axis_off()
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 2. Training with `Trainer`
#
# The paper trains on whole 512×512 slices with heavy augmentation. To fit a CPU we train
# on random 128×128 crops (a U-Net is fully convolutional: it takes any size that is a
# multiple of $2^\text{depth}$) with the same augmentation as notebook 4 — elastic
# deformation, flips, 90° rotations, brightness/contrast — after a per-image z-score
# (the brightness drifts along the stack). Validation after each epoch uses the centre
# crop of each validation slice. `Trainer` runs the loop of notebook 4, writes
# `history.csv` and the last and best checkpoints to its folder (a temporary one here),
# and can resume a run exactly.

# %%
ts.manual_seed(0)
train_loader = DataLoader(Subset(dataset, train_ids), batch_size=4, shuffle=True, seed=0,
                          transform=T.Compose([T.ZScore(), T.RandomCrop(CROP), T.default_augmentation()]))
val_loader = DataLoader(Subset(dataset, val_ids), batch_size=2, shuffle=False,
                        transform=T.Compose([T.ZScore(), T.CenterCropOrPad(CROP)]))
model = ts.models.UNet(1, 1, base_channels=BASE, depth=DEPTH, norm="batch")
print(f"U-Net with {model.num_parameters():,} parameters")

run_dir = Path(tempfile.mkdtemp(prefix="tinyseg_isbi_"))
config = TrainConfig(epochs=EPOCHS, batch_size=4, lr=2e-3, loss="ce+dice", progress=False)
trainer = Trainer(model, train_loader, val_loader, config, out_dir=str(run_dir))
start, cpu_start = time.perf_counter(), time.process_time()
history = trainer.fit()
print(f"training: {time.perf_counter() - start:.0f} s wall clock, {time.process_time() - cpu_start:.0f} s of CPU "
      f"time; best validation Dice (centre crops) {trainer.best_dice:.4f}")

# %%
plot_curves(history)

# %% [markdown]
# ## 3. Evaluation on whole slices
#
# The best checkpoint (by validation Dice) predicts each whole validation slice. The
# challenge's simplest figure is the **pixel error**, 1 − accuracy; with 22 % membrane it
# is dominated by the interior, so Dice/IoU of the membrane class and HD95 are reported
# beside it (notebook 4, section 5).

# %%
best, _ = ts.models.from_checkpoint(run_dir / "best.npz")
val_images = [T.zscore(dataset[i][0]) for i in val_ids]
val_masks = [dataset[i][1] for i in val_ids]
start = time.perf_counter()
predictions = [predict(best, image) for image in val_images]
seconds = (time.perf_counter() - start) / len(val_images)
result = metrics.evaluate([p.mask for p in predictions], val_masks)
print(metrics.format_table(result))
print(f"\npixel error {1 - result['mean']['accuracy']:.4f}; prediction {seconds:.2f} s per "
      f"{val_images[0].shape[1]}×{val_images[0].shape[2]} slice")

# %%
figure = overlay(val_images[0][0], val_masks[0], predictions[0].mask,
                 title=f"validation {'slice 24' if REAL else 'phantom 24'}: positive class")
figure.set_dpi(64)      # overlay picks a high DPI for files; 64 keeps the notebook small
figure

# %% [markdown]
# ## 4. Overlap-tile prediction
#
# A whole slice fits in memory here, but a microscope mosaic or a CT volume may not, and
# training crops are smaller than the images. The U-Net paper's answer (Fig. 2) is
# **overlap-tile**: mirror the image at its borders, cut it into tiles the network takes,
# and predict each. `predict(model, image, tile=T, overlap=0.5)` does it
# (`docs/inference.md` derives the details):
# - tiles of $T\times T$ pixels, a multiple of $2^\text{depth}$, placed at multiples of
#   $2^\text{depth}$ so that every tile pools on the same grid as the whole image;
# - near a tile's edge a same-padding network sees zero padding instead of the real
#   neighbourhood, so a margin along each edge is not trusted (weight $10^{-8}$);
# - where tiles overlap, their probabilities are averaged with a **Gaussian window**
#   (a tile's centre counts more than its edges): no seams.
#
# Below the same computation is written out: the tile positions, each tile's output, the
# weighted sum and its normalisation — then compared with `predict`.

# %%
from tinyseg.inference import _TileLayout      # the layout predict() uses, shown here for teaching

image = val_images[0]
layout = _TileLayout(best, TILE, overlap=0.5, margin=None)
top, bottom, starts_y = layout.axis(image.shape[1], 0)
left, right, starts_x = layout.axis(image.shape[2], 1)
print(f"tile {layout.tile_in}, output tile {layout.tile_out}, untrusted margin {layout.margin} px, "
      f"step {layout.step}")
print(f"mirror padding: top {top}, bottom {bottom}, left {left}, right {right}; "
      f"{len(starts_y)}×{len(starts_x)} = {len(starts_y) * len(starts_x)} tiles")

padded = np.pad(image, ((0, 0), (top, bottom), (left, right)), mode="reflect")
window = layout.window("gaussian")
weighted_sum = np.zeros(padded.shape[1:], np.float32)
weight_sum = np.zeros(padded.shape[1:], np.float32)
tile_outputs = []
best.eval()
with ts.no_grad():
    for y in starts_y:
        for x in starts_x:
            tile = padded[None, :, y:y + TILE, x:x + TILE]
            probability = 1 / (1 + np.exp(-best(ts.Tensor(tile)).numpy()[0, 0]))     # sigmoid of the logits
            tile_outputs.append(((y, x), probability))
            weighted_sum[y:y + TILE, x:x + TILE] += window * probability
            weight_sum[y:y + TILE, x:x + TILE] += window
H, W = image.shape[1:]
blended = (weighted_sum / weight_sum)[top:top + H, left:left + W]
reference = predict(best, image, tile=TILE, overlap=0.5).probabilities[0]
print(f"max |written-out blend − predict(tile={TILE})| = {np.abs(blended - reference).max():.1e}")
whole = predictions[0].probabilities[0]
print(f"max |tiled − whole-slice probabilities| = {np.abs(reference - whole).max():.3f}; "
      f"masks differ on {np.mean((reference > 0.5) != (whole > 0.5)):.2%} of the pixels")

# %% [markdown]
# The tiles on the mirror-padded slice (the image itself is the dashed square; the
# alternating colours only tell neighbouring tiles apart), one tile's blending window with
# its untrusted margin, four of the tile outputs, and the blended result:

# %%
fig = plt.figure(figsize=(10, 6.4))
grid = fig.add_gridspec(2, 4)
ax = fig.add_subplot(grid[0, :2])
ax.imshow(padded[0], cmap="gray")
colors = plt.cm.tab10.colors
for k, ((y, x), _) in enumerate(tile_outputs):
    ax.add_patch(Rectangle((x - 0.5, y - 0.5), TILE, TILE, fill=False, lw=1.6, color=colors[k % 4]))
ax.add_patch(Rectangle((left - 0.5, top - 0.5), W, H, fill=False, lw=2, ls="--", color="w"))
ax.set_title(f"{len(tile_outputs)} tiles of {TILE}×{TILE} on the mirror-padded slice", fontsize=10)
ax.set_axis_off()
ax = fig.add_subplot(grid[0, 2])
ax.imshow(window / window.max(), cmap="viridis", norm=plt.matplotlib.colors.LogNorm(1e-9, 1))
ax.set_title(f"blending window (log scale):\nGaussian, margin {layout.margin} px ≈ 0", fontsize=10)
ax.set_axis_off()
ax = fig.add_subplot(grid[0, 3])
ax.imshow((weight_sum / weight_sum.max())[top:top + H, left:left + W], cmap="viridis")
ax.set_title("sum of the windows\nover the slice", fontsize=10)
ax.set_axis_off()
for k, ax in zip((0, 1, len(starts_x), len(starts_x) + 1), [fig.add_subplot(grid[1, i]) for i in range(3)]):
    (y, x), probability = tile_outputs[k]
    ax.imshow(probability, cmap="magma", vmin=0, vmax=1)
    ax.set_title(f"tile at ({y}, {x}) of the padded slice", fontsize=10)
    ax.set_axis_off()
ax = fig.add_subplot(grid[1, 3])
ax.imshow(blended, cmap="magma", vmin=0, vmax=1)
ax.set_title("blended P(positive class)", fontsize=10)
ax.set_axis_off()
fig.tight_layout()
plt.show()

# %% [markdown]
# Why the window and the margin matter: the same tiles averaged with equal weights and
# every output pixel trusted (`blend="constant", margin=0`) let the disturbed tile edges
# into the result. The difference to the whole-slice prediction shows where. Along the
# image's own border both tiled results differ from the whole-slice pass for another
# reason: there the whole-slice pass sees the network's zero padding, the tiles see the
# mirrored image; so the numbers are also given for the interior, 32 pixels in.

# %%
plain = predict(best, image, tile=TILE, overlap=0.5, blend="constant", margin=0).probabilities[0]
inner = (slice(32, -32), slice(32, -32))
fig, axes = plt.subplots(1, 2, figsize=(9, 4.4))
for ax, (name, probabilities) in zip(axes, (("Gaussian window + margin", reference),
                                            ("plain mean, no margin", plain))):
    difference = np.abs(probabilities - whole)
    shown = ax.imshow(difference, cmap="inferno", vmin=0, vmax=0.5)
    ax.set_title(f"{name}: |tiled − whole|\nmax {difference.max():.2f}; interior: mean "
                 f"{difference[inner].mean():.4f}, max {difference[inner].max():.2f}", fontsize=9)
    ax.set_axis_off()
fig.colorbar(shown, ax=axes, fraction=0.03)
plt.show()

# %% [markdown]
# ## What to take away
# - Read the data's documentation: which value is the foreground, how the slices relate;
#   split correlated slices in contiguous blocks.
# - `Trainer` is notebook 4's loop with the bookkeeping (history, checkpoints, resume).
# - Pixel error is accuracy again: report the structure's Dice/IoU and HD95 next to it.
# - Overlap-tile prediction = mirror padding + tiles on the pooling grid + trusted centres +
#   a Gaussian blend; written out in twenty lines above, and equal to `predict`.
#
# For longer runs: `python benchmarks/isbi2012.py --epochs 30` (its results are in
# `docs/results.md`), or `tinyseg train --data ../shared/data/isbi2012_em --foreground 0
# --image-size 256 --split-mode contiguous`.
