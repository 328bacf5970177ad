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
# # 4 · The whole pipeline on synthetic phantoms
#
# **What you will learn**
# - the steps the article lists (§3: preprocessing, feature extraction, segmentation,
#   evaluation), each done for real on synthetic CT-like slices with exact masks;
# - what preprocessing (intensity normalisation) and augmentation (flips, rotations,
#   elastic deformation, brightness/contrast, …) do to an image and its mask — as pictures;
# - a training loop written out (forward, loss, backward, optimizer step) and its curves;
# - why the article's metric, **accuracy**, misleads on segmentation masks, where the
#   structure is a few percent of the pixels: a model that predicts nothing scores ~95 %;
# - Dice, IoU and HD95, and the rules for empty masks;
# - how to look at good and bad cases (overlays).
#
# **Time:** about 20 minutes to read; the code runs in a few minutes on a 2-core CPU
# (training is most of it). The times printed below come from the build of this notebook,
# on a 2-core machine shared with other jobs.
#
# Code: `tinyseg/data/` (phantoms, transforms, loader), `tinyseg/metrics.py`,
# `tinyseg/viz.py`; the same loop as a script: `examples/train_unet.py`.

# %%
import os
import time
from pathlib import Path

import tinyseg as ts          # before NumPy: tinyseg asks OpenBLAS to let idle threads sleep
import numpy as np
import matplotlib.pyplot as plt
import tinyseg.functional as F
from tinyseg import metrics
from tinyseg.data import DataLoader, SyntheticPhantoms, split
from tinyseg.data import transforms as T
from tinyseg.inference import predict
from tinyseg.viz import overlay, plot_curves

FAST = os.environ.get("TINYSEG_NOTEBOOK_FAST") == "1"   # small settings (the test suite sets it)
plt.rcParams.update({"figure.dpi": 80, "savefig.dpi": 80})

# Settings: the full ones train for about a minute on 2 quiet cores.
COUNT, SIZE, EPOCHS, BASE = (24, 64, 2, 8) if FAST else (128, 64, 15, 16)
ts.manual_seed(0)
print(f"{'fast' if FAST else 'full'} settings: {COUNT} phantoms of {SIZE}×{SIZE}, {EPOCHS} epochs, "
      f"U-Net base {BASE} channels")


def outline(mask):
    """The boundary pixels of a binary mask (mask minus its erosion by a 3×3 cross)."""
    m = np.pad(mask > 0, 1)
    inner = m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
    return (mask > 0) & ~inner


def show(ax, image, mask=None, title=""):
    ax.imshow(image, cmap="gray")
    if mask is not None:
        ax.imshow(np.ma.masked_where(~outline(mask), np.ones(mask.shape)), cmap="autumn", vmin=0, vmax=1)
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()

# %% [markdown]
# ## 1. The data
#
# `SyntheticPhantoms` draws CT-like abdominal slices: a body, fat, a spine, an organ and a
# lesion inside it, with smooth noise and blur. The mask is exact (it is how the image was
# drawn): 1 = lesion, 0 = everything else. Item *i* is always the same image (seeded by
# *i*), so results are reproducible without storing any data.

# %%
dataset = SyntheticPhantoms(n=COUNT, size=SIZE, seed=0)
train_set, val_set = split(dataset, 0.2, seed=0)
print(f"{len(train_set)} training and {len(val_set)} validation images")

fractions = np.array([np.mean(mask > 0) for _, mask in (dataset[i] for i in range(len(dataset)))])
print(f"lesion pixels per image: mean {fractions.mean():.1%}, from {fractions.min():.1%} to {fractions.max():.1%}")

fig, axes = plt.subplots(1, 5, figsize=(12, 2.7))
for k, ax in enumerate(axes):
    image, mask = dataset[k]
    show(ax, image[0], mask, f"phantom {k}: lesion {np.mean(mask > 0):.1%}")
fig.suptitle("synthetic phantoms, lesion outlined", fontsize=10)
fig.tight_layout()
plt.show()

# %% [markdown]
# The lesion covers a few percent of each image: **the classes are imbalanced**, about
# 95 : 5. Remember this number for section 5.
#
# ## 2. Preprocessing: intensity normalisation
#
# Networks train best when inputs have a similar scale everywhere. Three common choices
# (`tinyseg.data.transforms`):
# - **z-score** per image: $(x - \mu)/\sigma$ — mean 0, standard deviation 1; used here;
# - **min-max**: $(x - \min)/(\max - \min)$ into [0, 1];
# - **CT windowing**: clip to a window (level ± width/2) of Hounsfield units, then scale
#   to [0, 1] — e.g. a soft-tissue window, which spends the whole grey range on the organ
#   and the lesion (here the phantom's intensities 0.2–0.7).
#
# The histograms (log counts) show the whole image in grey and the lesion in red: the
# normalisations change the scale, not the shape; the window clips everything outside it.

# %%
image, mask = dataset[1]
normalised = {"raw": image[0], "z-score": T.zscore(image)[0], "min-max": T.minmax(image)[0],
              "window 0.2–0.7": T.window(image, level=0.45, width=0.5)[0]}
fig, axes = plt.subplots(2, 4, figsize=(12, 5.2), gridspec_kw={"height_ratios": [3, 1.4]})
for (name, img), top, bottom in zip(normalised.items(), axes[0], axes[1]):
    show(top, img, title=f"{name}\nmean {img.mean():+.2f}, std {img.std():.2f}")
    edges = np.linspace(img.min(), img.max(), 61)
    bottom.hist(img.ravel(), bins=edges, color="0.3", log=True)
    bottom.hist(img[mask > 0], bins=edges, color="tab:red", alpha=0.8, log=True)
    bottom.set_yticks([])
    bottom.tick_params(labelsize=8)
axes[1, 0].legend(["all pixels", "lesion"], fontsize=7)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 3. Augmentation
#
# With few annotated images, the network is shown random variations of them — each a
# plausible image with the *same* anatomy, so the mask is transformed along with it
# (geometric transforms) or left alone (intensity transforms). The U-Net paper singles
# out **elastic deformation**: a smooth random displacement field, interpolated from a
# coarse grid, bilinear for the image and nearest-neighbour for the mask. Below, one
# phantom under each transform, with the transformed mask outlined.

# %%
image, mask = T.zscore(dataset[2][0]), dataset[2][1]
augmentations = [
    ("original", None),
    ("flip", T.RandomFlip(p=1.0)),
    ("rotate 90°", T.RandomRot90()),
    ("affine ±15°, scale", T.RandomAffine(degrees=15, scale=(0.85, 1.15))),
    ("elastic, σ = 10 px", T.ElasticDeformation(grid=3, sigma=10.0)),
    ("elastic, σ = 25 px (too much)", T.ElasticDeformation(grid=3, sigma=25.0)),
    ("brightness / contrast", T.BrightnessContrast(0.3, 0.4)),
    ("gamma", T.Gamma((0.5, 0.6))),
    ("Gaussian noise", T.GaussianNoise(0.08)),
    (f"random crop {SIZE * 2 // 3}", T.RandomCrop(SIZE * 2 // 3)),
]
fig, axes = plt.subplots(2, 5, figsize=(12, 5.4))
for ax, (name, transform) in zip(axes.ravel(), augmentations):
    img, m = (image, mask) if transform is None else transform(image, mask, rng=np.random.default_rng(3))
    show(ax, img[0], m, name)
fig.tight_layout()
plt.show()

# %% [markdown]
# For training, `T.default_augmentation()` combines these with probabilities (flips,
# rotations, elastic deformation half of the time, brightness/contrast). A `DataLoader`
# applies z-score, a random crop and the augmentation to every image of every batch, with
# a generator seeded per epoch (so a run is reproducible):

# %%
train_transform = T.Compose([T.ZScore(), T.RandomCrop(SIZE), T.default_augmentation()])
print(train_transform)
train_loader = DataLoader(train_set, batch_size=8, shuffle=True, seed=0, transform=train_transform)
images, masks = next(iter(train_loader))
print(f"one batch: images {images.shape} {images.dtype}, masks {masks.shape} {masks.dtype}")

# %% [markdown]
# ## 4. Training
#
# A U-Net (`ts.models.UNet`, "same" padding, batch norm) with one output channel: the
# logit of "lesion". The loss is binary cross-entropy computed from the logits plus the
# soft Dice loss (BCE alone is dominated by the 95 % background). Each step is the four
# lines every training loop has: forward, loss, backward, optimizer step. After each
# epoch the model predicts every validation image whole and we record the Dice.

# %%
model = ts.models.UNet(1, 1, base_channels=BASE, depth=3, norm="batch")
optimizer = ts.optim.Adam(model.parameters(), lr=3e-3)
schedule = ts.optim.CosineAnnealingLR(optimizer, T_max=EPOCHS)
val_images = [T.zscore(image) for image, _ in val_set]
val_masks = [mask for _, mask in val_set]
print(f"U-Net with {model.num_parameters():,} parameters")

history, start = [], time.perf_counter()
for epoch in range(EPOCHS):
    model.train()
    losses = []
    for images, masks in train_loader:
        logits = model(ts.Tensor(images))                                         # forward
        loss = (F.binary_cross_entropy_with_logits(logits, masks[:, None].astype(np.float32))
                + F.dice_loss(logits, masks))                                     # loss
        loss.backward()                                                           # backward
        optimizer.step()                                                          # update
        optimizer.zero_grad()
        losses.append(loss.item())
    schedule.step()
    preds = [predict(model, image).mask for image in val_images]
    dice = metrics.evaluate(preds, val_masks)["mean"]["dice"]
    history.append({"epoch": epoch + 1, "train_loss": float(np.mean(losses)), "val_dice": dice,
                    "lr": optimizer.param_groups[0]["lr"]})
    print(f"epoch {epoch + 1:>2}/{EPOCHS}  loss {np.mean(losses):.4f}  validation Dice {dice:.4f}  "
          f"({time.perf_counter() - start:.0f} s)")

# %%
plot_curves(history)

# %% [markdown]
# ## 5. Why accuracy misleads
#
# The article evaluates its U-Net with **accuracy**, the fraction of pixels labelled
# correctly (§3, §4.3, and `metrics=['accuracy']` in its Keras listing). On a mask where the
# structure is 5 % of the pixels, a "model" that answers *background* everywhere is right
# on 95 % of them. Computed on our validation images with `tinyseg.metrics`:

# %%
predictions = [predict(model, image) for image in val_images]
rows = {
    "all background (predicts nothing)": [np.zeros_like(m) for m in val_masks],
    "all lesion (predicts everything)": [np.ones_like(m) for m in val_masks],
    "the trained U-Net": [p.mask for p in predictions],
}
print(f"{'prediction':<36}{'accuracy':>10}{'Dice':>8}{'IoU':>8}{'recall':>8}")
for name, preds in rows.items():
    acc = np.mean([metrics.accuracy(p, t) for p, t in zip(preds, val_masks)])
    dice = np.mean([metrics.dice(p, t) for p, t in zip(preds, val_masks)])
    iou = np.mean([metrics.iou(p, t) for p, t in zip(preds, val_masks)])
    rec = np.mean([metrics.recall(p, t) for p, t in zip(preds, val_masks)])
    print(f"{name:<36}{acc:>10.3f}{dice:>8.3f}{iou:>8.3f}{rec:>8.3f}")

# %% [markdown]
# The empty prediction's accuracy is close to the trained model's, yet it has found
# nothing: Dice 0. Accuracy counts the true negatives — the huge, easy background — so on
# imbalanced masks it mostly measures how much background there is. Overlap metrics
# ignore true negatives:
#
# $$ \text{Dice} = \frac{2\,TP}{2\,TP + FP + FN}, \qquad
#    \text{IoU} = \frac{TP}{TP + FP + FN} = \frac{\text{Dice}}{2 - \text{Dice}}, $$
#
# and a distance metric measures *where* the errors are: **HD95** is the 95th percentile of
# the distances from each boundary pixel of one mask to the nearest boundary pixel of the
# other (both directions, the larger one), in pixels (or mm with a pixel spacing). Dice
# says "how much overlaps", HD95 says "how far off the outline is"; a small stray blob
# far away barely moves the Dice but jumps the HD95.

# %%
truth = np.zeros((64, 64), np.uint8); truth[20:40, 20:40] = 1
shifted = np.zeros_like(truth); shifted[22:42, 21:41] = 1
with_blob = truth.copy(); with_blob[55:58, 55:58] = 1
for name, pred in (("shifted by (2, 1) px", shifted), ("exact + a 3×3 blob far away", with_blob)):
    print(f"{name:<30} Dice {metrics.dice(pred, truth):.3f}  IoU {metrics.iou(pred, truth):.3f}  "
          f"HD95 {metrics.hd95(pred, truth):5.2f} px")

# %% [markdown]
# ### Empty masks
#
# A slice without a lesion is common (in real data, most slices). Dice and IoU are then
# 0/0 when nothing is predicted either. tinyseg never returns NaN; it follows the rules
# below (see the docstring of `tinyseg/metrics.py`), so that "nothing to find, nothing
# found" is perfect and any miss or false alarm is the worst score:

# %%
empty, blob = np.zeros((32, 32), np.uint8), np.zeros((32, 32), np.uint8)
blob[10:16, 10:16] = 1
print(f"{'target':<8}{'prediction':<12}{'Dice':>6}{'IoU':>6}{'precision':>11}{'recall':>8}{'HD95':>8}")
for t_name, target in (("empty", empty), ("lesion", blob)):
    for p_name, pred in (("empty", empty), ("lesion", blob)):
        print(f"{t_name:<8}{p_name:<12}{metrics.dice(pred, target):>6.1f}{metrics.iou(pred, target):>6.1f}"
              f"{metrics.precision(pred, target):>11.1f}{metrics.recall(pred, target):>8.1f}"
              f"{metrics.hd95(pred, target):>8.2f}")
print(f"(HD95 with exactly one mask empty = the image diagonal, {np.hypot(32, 32):.2f} px: the worst value)")

# %% [markdown]
# `metrics.evaluate` computes everything per image and averages (and also pools the
# confusion counts over all pixels, labelled as such), counting the empty cases:

# %%
result = metrics.evaluate([p.mask for p in predictions], val_masks)
print(metrics.format_table(result))

# %% [markdown]
# ## 6. Looking at the cases
#
# Numbers hide *how* a model fails. `tinyseg.viz.overlay` draws the image, the ground
# truth (green), the prediction (magenta) and the errors (false positives red, false
# negatives blue). The best and the worst validation cases by Dice:

# %%
dices = [metrics.dice(p.mask, t) for p, t in zip(predictions, val_masks)]
best, worst = int(np.argmax(dices)), int(np.argmin(dices))
figure = overlay(val_images[best][0], val_masks[best], predictions[best].mask,
                 title=f"best validation case (#{best})")
figure.set_dpi(80)      # overlay picks a high DPI for files; 80 keeps the notebook small
figure

# %%
figure = overlay(val_images[worst][0], val_masks[worst], predictions[worst].mask,
                 title=f"worst validation case (#{worst})")
figure.set_dpi(80)
figure

# %% [markdown]
# The probabilities behind the worst mask show whether the model was unsure (values near
# 0.5) or confidently wrong:

# %%
fig, axes = plt.subplots(1, 2, figsize=(7, 3.3))
show(axes[0], val_images[worst][0], val_masks[worst], "image, true lesion outlined")
shown = axes[1].imshow(predictions[worst].probabilities[0], cmap="magma", vmin=0, vmax=1)
axes[1].set_title("P(lesion)", fontsize=9)
axes[1].set_axis_off()
fig.colorbar(shown, ax=axes[1], fraction=0.046)
fig.tight_layout()
plt.show()

if not FAST:    # the README's picture: written by this cell at full settings only
    picture = overlay(val_images[best][0], val_masks[best], predictions[best].mask,
                      title=f"U-Net on a validation phantom ({EPOCHS} epochs on a 2-core CPU)")
    Path("../img").mkdir(exist_ok=True)
    picture.savefig("../img/phantom_overlay.png", dpi=90)
    print("wrote docs/img/phantom_overlay.png")

# %% [markdown]
# ## What to take away
# - Preprocessing puts every image on one scale; augmentation multiplies the data, moving
#   the mask with the image.
# - Training is forward → loss → backward → step, repeated; watch the validation Dice.
# - On imbalanced masks, accuracy rewards predicting nothing: report Dice/IoU (overlap)
#   and HD95 (boundary distance), with explicit rules for empty masks.
#
# Next: **5 · Real data**, the same pipeline on electron-microscopy slices of the U-Net
# paper's first experiment.
