"""Train and evaluate a U-Net on the ISBI 2012 EM membrane data (the U-Net paper's first experiment).

    python benchmarks/isbi2012.py [--data ../shared/data/isbi2012_em] [--epochs 40] [--out runs/isbi]

Data: 30 serial-section TEM slices of 512×512 (see the folder's SOURCE.md). Membrane is
the mask value 0, so the task is binary with foreground = 0. Slices 00–23 train, 24–29
validate: neighbouring slices are nearly identical, so a random split would leak.
Training sees random 256×256 crops with the paper's augmentation (elastic deformation,
flips, rotations); validation predicts each whole 512×512 slice. Reported: pixel error
(1 − accuracy, the challenge's simplest figure), Dice and IoU of the membrane class,
HD95, and the wall time. This is a benchmark, not a test: it prints a table and writes
results.json; docs/results.md records the numbers measured with it.
"""
import argparse
import json
import time
from pathlib import Path

import tinyseg as ts      # before NumPy: tinyseg tells OpenBLAS to let its idle threads sleep
import numpy as np
from tinyseg.data import DataLoader, FolderDataset, Subset
from tinyseg.data import transforms as T
from tinyseg.inference import predict
from tinyseg.metrics import evaluate, format_table
from tinyseg.train import Trainer, TrainConfig
from tinyseg.viz import overlay, plot_curves

DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "isbi2012_em"
DEPTH = 4


def build_recipe(args):
    """Data, loaders, the initial U-Net and its TrainConfig (also used by benchmarks/isbi_vs_torch.py).

    ``args`` needs data, crop, batch_size, base_channels, epochs and lr.
    """
    ts.manual_seed(0)
    data = FolderDataset(args.data, foreground=0)                  # membrane (value 0) = class 1
    train_ids = [i for i, name in enumerate(data.ids) if int(name) <= 23]
    val_ids = [i for i, name in enumerate(data.ids) if int(name) >= 24]
    augment = T.Compose([T.ZScore(), T.RandomCrop(args.crop), T.default_augmentation()])
    train_loader = DataLoader(Subset(data, train_ids), args.batch_size, shuffle=True, seed=0, transform=augment)
    val_loader = DataLoader(Subset(data, val_ids), 2, shuffle=False,
                            transform=T.Compose([T.ZScore(), T.CenterCropOrPad(args.crop)]))
    model = ts.models.UNet(1, 1, base_channels=args.base_channels, depth=DEPTH, norm="batch")
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, progress=False)
    return dict(data=data, train_ids=train_ids, val_ids=val_ids, train_loader=train_loader,
                val_loader=val_loader, model=model, config=config)


def add_recipe_arguments(p):
    """The command-line options ``build_recipe`` reads (also used by benchmarks/isbi_vs_torch.py)."""
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--base-channels", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_recipe_arguments(p)
    p.add_argument("--out", default="runs/isbi")
    args = p.parse_args()
    if not Path(args.data).is_dir():
        raise SystemExit(f"{args.data}: not found (the ISBI 2012 slices live in ../shared/data/isbi2012_em)")

    r = build_recipe(args)
    data, val_ids, model, config = r["data"], r["val_ids"], r["model"], r["config"]
    train_loader, val_loader = r["train_loader"], r["val_loader"]
    out = Path(args.out)
    trainer = Trainer(model, train_loader, val_loader, config, out_dir=str(out))

    start = time.perf_counter()
    trainer.fit()
    train_seconds = time.perf_counter() - start

    best, _ = ts.models.from_checkpoint(out / "best.npz")
    start = time.perf_counter()
    images = [T.zscore(data[i][0]) for i in val_ids]
    masks = [data[i][1] for i in val_ids]
    preds = [predict(best, image).mask for image in images]          # whole 512×512 slices
    predict_seconds = time.perf_counter() - start
    result = evaluate(preds, masks, num_classes=2)
    print(format_table(result))
    summary = {
        "pixel_error": 1 - result["mean"]["accuracy"], "dice": result["mean"]["dice"],
        "iou": result["mean"]["iou"], "hd95_px": result["mean"]["hd95"],
        "train_seconds": train_seconds, "predict_seconds_per_slice": predict_seconds / len(val_ids),
        "epochs": args.epochs, "crop": args.crop, "base_channels": args.base_channels,
        "parameters": best.num_parameters(),
    }
    print("\n| pixel error | Dice | IoU | HD95 (px) | training | prediction per 512² slice |")
    print("| --- | --- | --- | --- | --- | --- |")
    print(f"| {summary['pixel_error']:.4f} | {summary['dice']:.4f} | {summary['iou']:.4f} | "
          f"{summary['hd95_px']:.2f} | {train_seconds / 60:.1f} min | {summary['predict_seconds_per_slice']:.2f} s |")
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    plot_curves(trainer.history, out / "curves.png")
    overlay(images[0][0], masks[0], preds[0], path=out / "slice24.png", title="ISBI 2012, slice 24 (membrane)")


if __name__ == "__main__":
    main()
