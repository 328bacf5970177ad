"""The ablation behind docs/recipe.md: `tinyseg train` with its old defaults, its new
(nnU-Net-like) defaults, and the new defaults minus one component at a time.

    python benchmarks/recipe_ablation.py --task polyps --variants old new --out runs/ablation
    python benchmarks/recipe_ablation.py --task isbi --variants old new --crop 128

Each run goes through the command line (`tinyseg.cli.main`), picks its best epoch on the
validation split, and that checkpoint is then scored on a held-out test set of whole
images it never saw:
- polyps:   SyntheticPolyps frames of --size² (train + validation from --seed, test from
            seed 1000 + --seed), crops of --crop²;
- phantoms: SyntheticPhantoms of --size² (the built-in set; test from seed 1000 + --seed);
- isbi:     ISBI 2012 slices 00-23 for training and validation (contiguous split: the last
            5 validate), slices 24-29 as the test set (whole 512² slices).
One JSON line per run is appended to OUT/results.jsonl.
"""
import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import tinyseg as ts      # before NumPy: tinyseg tells OpenBLAS to let its idle threads sleep
import numpy as np
from tinyseg.cli import main as cli
from tinyseg.data import FolderDataset, SyntheticPhantoms, SyntheticPolyps
from tinyseg.data.transforms import zscore
from tinyseg.inference import predict
from tinyseg.metrics import evaluate

ISBI = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "isbi2012_em"

# Each variant: the flags that differ from the new defaults of `tinyseg train`.
VARIANTS = {
    "old": ["--norm", "none", "--schedule", "cosine", "--warmup-epochs", "0", "--augment", "unet",
            "--oversample-foreground", "0"],
    "new": [],
    "new-no-instance-norm": ["--norm", "none"],
    "new-batch-norm": ["--norm", "batch"],
    "new-cosine": ["--schedule", "cosine"],
    "new-constant-lr": ["--schedule", "constant", "--warmup-epochs", "0"],
    "new-no-warmup": ["--warmup-epochs", "0"],
    "new-unet-augment": ["--augment", "unet"],
    "new-no-augment": ["--augment", "none"],
    "new-no-oversampling": ["--oversample-foreground", "0"],
    "new-ce-only": ["--loss", "ce"],
}


def data_arguments(args, workdir):
    """(training flags, test images, test masks) for the task."""
    if args.task == "isbi":
        folder = Path(workdir) / "isbi_train"
        for sub in ("images", "masks"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
            for i in range(24):                      # links, not copies
                link = folder / sub / f"{i:02d}.png"
                if not link.exists():
                    os.symlink((Path(args.isbi) / sub / f"{i:02d}.png").resolve(), link)
        test = FolderDataset(args.isbi, foreground=0)
        items = [test[i] for i, name in enumerate(test.ids) if int(name) >= 24]
        flags = ["--data", str(folder), "--foreground", "0", "--split-mode", "contiguous", "--val-split", "0.2"]
    else:
        make = SyntheticPolyps if args.task == "polyps" else SyntheticPhantoms
        items = list(make(n=args.test_count, size=args.size, seed=1000 + args.seed))
        flags = ["--synthetic", args.task, "--synthetic-count", str(args.count), "--synthetic-size", str(args.size),
                 "--val-split", str(args.val_split)]
    return flags, [zscore(image) for image, _ in items], [mask for _, mask in items]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", choices=["polyps", "phantoms", "isbi"], default="polyps")
    p.add_argument("--variants", nargs="+", default=["old", "new"], choices=list(VARIANTS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--crop", type=int, default=64)
    p.add_argument("--size", type=int, default=96, help="synthetic image size")
    p.add_argument("--count", type=int, default=80, help="synthetic images for training + validation")
    p.add_argument("--val-split", type=float, default=0.1)
    p.add_argument("--test-count", type=int, default=20)
    p.add_argument("--base-channels", type=int, default=8)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--isbi", default=str(ISBI))
    p.add_argument("--out", default="runs/ablation")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as workdir:
        for seed in args.seeds:
            args.seed = seed
            flags, images, masks = data_arguments(args, workdir)
            for variant in args.variants:
                run = out / f"{args.task}-{variant}-s{seed}"
                argv = ["train", *flags, "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
                        "--image-size", str(args.crop), "--base-channels", str(args.base_channels),
                        "--depth", str(args.depth), "--lr", str(args.lr), "--seed", str(seed),
                        "--out", str(run), "--no-progress", *VARIANTS[variant]]
                start = time.perf_counter()
                assert cli(argv) == 0, argv
                seconds = time.perf_counter() - start
                history = [row for row in _read_history(run / "history.csv")]
                best = max(history, key=lambda row: row["val_dice"])
                model, _ = ts.models.from_checkpoint(run / "best.npz")
                preds = [predict(model, image).mask for image in images]
                test = evaluate(preds, masks, num_classes=2)["mean"]
                row = {"task": args.task, "variant": variant, "seed": seed, "test_dice": test["dice"],
                       "test_iou": test["iou"], "best_val_dice": best["val_dice"], "best_epoch": int(best["epoch"]),
                       "last_val_dice": history[-1]["val_dice"], "seconds": round(seconds, 1),
                       "argv": " ".join(argv[1:])}
                print(json.dumps(row), flush=True)
                with open(out / "results.jsonl", "a") as f:
                    f.write(json.dumps(row) + "\n")


def _read_history(path):
    import csv
    with open(path) as f:
        for row in csv.DictReader(f):
            yield {k: float(v) for k, v in row.items() if v not in ("", None)}


if __name__ == "__main__":
    main()
