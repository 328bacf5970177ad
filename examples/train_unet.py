"""Train a U-Net with tinyseg, step by step.

    python examples/train_unet.py                      # synthetic CT-like phantoms, ~3 minutes on 2 cores
    python examples/train_unet.py --data DIR --foreground 0 --image-size 256   # a folder of real images
    python examples/train_unet.py --synthetic polyps   # RGB colonoscopy-like frames (harder)

This is the script to read first. Every piece is explicit: the data, the model, the
training loop (forward, loss, backward, optimizer step), the evaluation and the pictures.
`tinyseg train` does the same with checkpoints, resume and early stopping on top.
"""
import argparse
import time
from pathlib import Path

import tinyseg as ts      # before NumPy: tinyseg tells OpenBLAS to let its idle threads sleep
import numpy as np
import tinyseg.functional as F
from tinyseg.data import DataLoader, FolderDataset, SyntheticPhantoms, SyntheticPolyps, split
from tinyseg.data import transforms as T
from tinyseg.inference import predict
from tinyseg.metrics import evaluate, format_table, write_report
from tinyseg.viz import overlay, plot_curves


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", help="folder with images/ and masks/ (default: synthetic phantoms)")
    p.add_argument("--foreground", type=int, default=None, help="mask value that is foreground (e.g. 0 for ISBI)")
    p.add_argument("--image-size", type=int, default=96, help="training crop size, a multiple of 2^depth")
    p.add_argument("--epochs", type=int, default=14)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--base-channels", type=int, default=16)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--synthetic", choices=["phantoms", "polyps"], default="phantoms",
                   help="without --data: CT-like phantoms (grey) or colonoscopy-like polyp frames (RGB)")
    p.add_argument("--count", type=int, default=192, help="number of synthetic images")
    p.add_argument("--out", default="runs/example")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def main():
    args = parse_args()
    ts.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    # 1. Data: image (C, H, W) float32 and mask (H, W) of class indices.
    if args.data:
        dataset = FolderDataset(args.data, foreground=args.foreground)
        train_set, val_set = split(dataset, 0.2, seed=args.seed, mode="contiguous")
    else:
        make = SyntheticPolyps if args.synthetic == "polyps" else SyntheticPhantoms
        dataset = make(n=args.count, size=args.image_size, seed=args.seed)
        train_set, val_set = split(dataset, 0.2, seed=args.seed)
    num_classes = dataset.num_classes
    in_channels = dataset[0][0].shape[0]
    print(f"data: {len(train_set)} training and {len(val_set)} validation images, {num_classes} classes")

    # Per-image z-score, then (training only) random crops and augmentation:
    # flips, 90° rotations, elastic deformation, brightness/contrast.
    size = args.image_size
    train_loader = DataLoader(train_set, args.batch_size, shuffle=True, seed=args.seed,
                              transform=T.Compose([T.ZScore(), T.RandomCrop(size), T.default_augmentation()]))
    val_images = [T.zscore(image) for image, _ in val_set]
    val_masks = [mask for _, mask in val_set]

    # 2. The model: a U-Net whose logits have one channel (binary) or one per class.
    out_channels = 1 if num_classes == 2 else num_classes
    model = ts.models.UNet(in_channels, out_channels, base_channels=args.base_channels, depth=args.depth,
                           norm="batch")
    print(f"model: U-Net with {model.num_parameters():,} parameters")

    # 3. Optimiser and learning-rate schedule.
    optimizer = ts.optim.Adam(model.parameters(), lr=args.lr)
    schedule = ts.optim.CosineAnnealingLR(optimizer, T_max=args.epochs)

    # 4. The training loop.
    history, start = [], time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        losses = []
        for images, masks in train_loader:
            logits = model(ts.Tensor(images))
            if out_channels == 1:   # loss = BCE(sigmoid(logits), mask) + soft Dice
                loss = F.binary_cross_entropy_with_logits(logits, masks[:, None].astype(np.float32))
            else:                   # loss = cross-entropy(softmax(logits), mask) + soft Dice
                loss = F.cross_entropy(logits, masks)
            loss = loss + F.dice_loss(logits, masks)
            loss.backward()          # fills p.grad for every parameter p
            optimizer.step()         # p <- p - lr · Adam(p.grad)
            optimizer.zero_grad()
            losses.append(loss.item())
        schedule.step()

        # Validation: predict each whole image, compare with its mask.
        preds = [predict(model, image).mask for image in val_images]
        dice = evaluate(preds, val_masks, num_classes=num_classes)["mean"]["dice"]
        history.append({"epoch": epoch + 1, "train_loss": float(np.mean(losses)), "val_dice": dice})
        print(f"epoch {epoch + 1:>2}/{args.epochs}  loss {np.mean(losses):.4f}  validation Dice {dice:.4f}  "
              f"({time.perf_counter() - start:.0f} s)")

    # 5. Evaluation: every metric, per image, then averaged.
    preds = [predict(model, image).mask for image in val_images]
    result = evaluate(preds, val_masks, num_classes=num_classes)
    print(f"\nvalidation results after {time.perf_counter() - start:.0f} s of training:")
    print(format_table(result))
    # metrics.json as `tinyseg evaluate` writes it: the means at the top level, one row per image.
    ids = getattr(val_set, "ids", None) or [f"validation_{i:03d}" for i in range(len(val_set))]
    write_report(out / "metrics.json", result, ids, data=args.data or f"synthetic {args.synthetic}", units="pixels")

    # 6. Pictures: training curves and a few validation cases.
    plot_curves(history, out / "curves.png")
    for i in range(min(3, len(val_images))):
        overlay(val_images[i][0], val_masks[i], preds[i], path=out / f"case_{i}.png", title=f"validation case {i}")
    ts.save({"model": model.state_dict(), "model_config": model.config}, out / "model.npz")
    print(f"figures, model and metrics.json in {out}/")


if __name__ == "__main__":
    main()
