"""The ``tinyseg`` command: train, evaluate, predict, check-data, gradcheck, bench.

Bad arguments and bad data end with a one-line message on stderr and exit status 2,
never a traceback (set TINYSEG_DEBUG=1 to see the traceback).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np


class UsageError(Exception):
    """A problem with what the user asked for: reported in one line, exit status 2."""


# ----------------------------------------------------------------------------- output folders

def check_out_folder(path, option: str = "--out") -> None:
    """Raise UsageError unless ``path`` can be used as an output folder: it is a folder, or
    it can be created, and tinyseg may write in it. Checked before any work is done, so a
    bad ``--out`` costs one line, not a training run that fails when it saves."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{option} {path}: is an existing file; expected a folder (existing or new) for the outputs")
    existing = path
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise UsageError(f"{option} {path}: {existing} is a file, so no folder can be made under it; "
                         f"expected a path whose existing part is a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        which = "" if existing == path else " (the nearest existing folder on that path)"
        raise UsageError(f"{option} {path}: no permission to write in {existing}{which}; "
                         f"expected a folder you can write to")


# ----------------------------------------------------------------------------- data

def _dataset(path, foreground, skip_bad, num_classes=None, patient_regex=None):
    from .data import FolderDataset
    if not Path(path).is_dir():
        raise UsageError(f"--data {path}: no such folder (expected DIR/images + DIR/masks, or an nnU-Net "
                         f"folder with imagesTr/ + labelsTr/)")
    return FolderDataset(path, foreground=foreground, skip_bad=skip_bad, num_classes=num_classes,
                         patient_regex=patient_regex)


def _count_cases(subset) -> str:
    """'5 cases (120 slices)' for volumes, '8 images' for 2-D data."""
    from .data import case_groups
    cases = len(set(case_groups(subset)))
    if cases == len(subset):
        return f"{len(subset)} image{'s' * (len(subset) != 1)}"
    return f"{cases} case{'s' * (cases != 1)} ({len(subset)} slices)"


def _normalise(image):
    from .data.transforms import zscore
    return zscore(image)


def build_data(args):
    """(train set, validation set, description) from the command-line arguments."""
    from .data import SyntheticPhantoms, SyntheticPolyps, split
    if args.data is None:
        size = args.synthetic_size or args.image_size or 128
        if args.synthetic == "polyps":
            if args.classes not in (None, 2):
                raise UsageError(f"--classes {args.classes}: the synthetic polyp frames have 2 classes "
                                 f"(background, polyp)")
            data = SyntheticPolyps(n=args.synthetic_count, size=size, seed=args.seed)
            description = f"synthetic polyp frames (RGB, {len(data)} images of {size}²)"
        else:
            mode = "binary" if (args.classes or 2) == 2 else "multiclass"
            if args.classes not in (None, 2, 3):
                raise UsageError(f"--classes {args.classes}: the synthetic phantoms have 2 (lesion) or 3 "
                                 f"(background, organ, lesion) classes")
            data = SyntheticPhantoms(n=args.synthetic_count, size=size, mode=mode, seed=args.seed)
            description = f"synthetic phantoms ({mode}, {len(data)} images of {size}²)"
    else:
        data = _dataset(args.data, args.foreground, args.skip_bad, args.classes, args.patient_regex)
        description = f"{args.data} ({_count_cases(data)}, {data.mask_encoding})"
    if args.val_data is not None:
        val = _dataset(args.val_data, args.foreground, args.skip_bad, args.classes, args.patient_regex)
        return data, val, description + f"; validation: {args.val_data} ({_count_cases(val)})"
    if not 0 < args.val_split < 1:
        raise UsageError(f"--val-split {args.val_split}: expected a fraction between 0 and 1")
    train, val = split(data, args.val_split, seed=args.seed, mode=args.split_mode, by=args.split_by)
    return train, val, description + (f"; {args.split_mode} split by {args.split_by}: train {_count_cases(train)}, "
                                      f"validation {_count_cases(val)}")


def _image_size(args, dataset, depth):
    if args.image_size is not None:
        size = args.image_size
    else:
        first = dataset[0][0]
        size = min(256, min(first.shape[1:]))
        size -= size % 2 ** depth
    if size < 2 ** depth or size % 2 ** depth:
        raise UsageError(f"--image-size {size}: must be a positive multiple of 2^depth = {2 ** depth} "
                         f"(e.g. {max(2 ** depth, size - size % 2 ** depth)} or {size - size % 2 ** depth + 2 ** depth})")
    return size


# ----------------------------------------------------------------------------- train

def _train(args) -> int:
    import tinyseg as ts
    from .data import DataLoader, transforms as T
    from .train import Trainer, TrainConfig

    ts.manual_seed(args.seed)
    train_set, val_set, description = build_data(args)
    num_classes = args.classes or train_set.num_classes
    in_channels = train_set[0][0].shape[0]
    size = _image_size(args, train_set, args.depth)

    train_tf = [T.ZScore(), T.RandomCrop(size)]
    if args.augment == "nnunet":
        train_tf.append(T.nnunet_augmentation())
    elif args.augment == "unet":
        train_tf.append(T.default_augmentation())
    if not 0 <= args.oversample_foreground <= 1:
        raise UsageError(f"--oversample-foreground {args.oversample_foreground}: expected a fraction in [0, 1]")
    train_loader = DataLoader(train_set, args.batch_size, shuffle=True, seed=args.seed, transform=T.Compose(train_tf),
                              oversample_foreground=args.oversample_foreground)
    val_loader = DataLoader(val_set, args.batch_size, shuffle=False, transform=T.Compose([T.ZScore(),
                                                                                      T.CenterCropOrPad(size)]))
    model = ts.models.UNet(in_channels=in_channels, out_channels=1 if num_classes == 2 else num_classes,
                           base_channels=args.base_channels, depth=args.depth, padding="same",
                           upsample=args.upsample, norm=None if args.norm == "none" else args.norm,
                           dropout=args.dropout)
    if args.device == "cuda":
        model.to("cuda")
    warmup = args.warmup_epochs if args.warmup_epochs is not None else args.epochs // 20
    if args.schedule in ("step", "constant") and args.warmup_epochs:
        raise UsageError(f"--warmup-epochs: the {args.schedule} schedule has no warm-up; use --schedule poly or cosine")
    if not 0 <= warmup < args.epochs:
        raise UsageError(f"--warmup-epochs {warmup}: expected 0 <= warm-up < --epochs ({args.epochs})")
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer,
                         schedule=args.schedule, warmup_epochs=warmup if args.schedule in ("poly", "cosine") else 0,
                         loss=args.loss, border_weights=args.border_weights, early_stopping=args.early_stopping,
                         seed=args.seed, progress=not args.no_progress,
                         extra={"data": description, "image_size": size, "num_classes": num_classes,
                                "normalise": "zscore", "foreground": args.foreground})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(model, train_loader, val_loader, config, out_dir=str(out))
    if args.resume:
        state = trainer.resume(args.resume)
        print(f"resumed from {args.resume} at epoch {state['epoch']}")
    with open(out / "config.json", "w") as f:
        json.dump({"command": "train", "arguments": vars(args) | {"handler": None}, "model": model.config,
                   "train": config.__dict__}, f, indent=2, default=str)
    print(f"data:  {description}")
    print(f"model: U-Net, {model.num_parameters():,} parameters, depth {args.depth}, base {args.base_channels}, "
          f"input {in_channels}×{size}×{size}, {num_classes} classes, device {args.device}")
    start = time.perf_counter()
    history = trainer.fit()
    elapsed = time.perf_counter() - start

    from .viz import overlay, plot_curves
    plot_curves(trainer.history, out / "curves.png")
    best_model, _ = ts.models.from_checkpoint(out / "best.npz") if (out / "best.npz").exists() else (model, None)
    result, items, units = _validation_report(best_model, val_loader, num_classes, out, overlays=4,
                                              overlay_fn=overlay)
    best = max(history, key=lambda row: row.get("val_dice", -1)) if history else {}
    print(f"\ntrained {len(history)} epochs in {elapsed:.0f} s; best validation Dice {best.get('val_dice', float('nan')):.4f} "
          f"at epoch {best.get('epoch')}; run folder {out}")
    from .metrics import format_table
    print(format_table(result, items=items, units=units))
    return 0


def _validation_report(model, val_loader, num_classes, out, overlays, overlay_fn):
    """Full metrics of ``model`` on the validation crops, and overlay PNGs of the first few.

    Returns (evaluate result, what a row is, distance unit). Slices of one volume are scored
    together as one case in 3-D, with the volume's voxel spacing when known; 2-D images one by one.
    """
    from .data import case_groups
    from .inference import predict
    from .metrics import evaluate
    dataset = val_loader.dataset
    groups = case_groups(dataset)
    val_loader.set_epoch(val_loader.epoch)
    order = [int(i) for i in val_loader.order(val_loader.epoch)]
    preds, targets, images = [], [], []
    for batch_images, batch_masks in val_loader:
        for image, mask in zip(batch_images, batch_masks):
            preds.append(predict(model, image).mask)
            targets.append(mask)
            images.append(image)
    for i in range(min(overlays, len(images))):
        overlay_fn(images[i][0], targets[i], preds[i], path=out / f"overlay_{i}.png", title=f"validation case {i}")
    if len(set(groups)) == len(groups):
        return evaluate(preds, targets, num_classes=num_classes), "images", "pixels"
    members: dict = {}
    for n, index in enumerate(order[:len(preds)]):
        members.setdefault(groups[index], []).append(n)
    volume_spacing = getattr(dataset, "volume_spacing", None)
    spacings = [volume_spacing(order[items[0]]) if volume_spacing else None for items in members.values()]
    units = "mm" if all(s is not None for s in spacings) else "voxels"
    result = evaluate([np.stack([preds[n] for n in items]) for items in members.values()],
                      [np.stack([targets[n] for n in items]) for items in members.values()],
                      num_classes=num_classes, spacings=spacings if units == "mm" else None)
    return result, "cases", units


# ----------------------------------------------------------------------------- evaluate / predict

def _load_model(path, device="cpu"):
    import tinyseg as ts
    if not Path(path).is_file():
        raise UsageError(f"--checkpoint {path}: no such file")
    model, state = ts.models.from_checkpoint(path)
    return model.to(device), state.get("config", {}).get("extra", {})


def check_device(device):
    """--device cuda needs CuPy and a CUDA device: say so in one line, before any work."""
    if device != "cuda":
        return
    from . import backend
    try:
        backend.cupy_module()
    except RuntimeError as exc:
        raise UsageError(f"--device cuda: {exc}; use --device cpu here") from None
    if not backend.gpu_available():
        raise UsageError("--device cuda: CuPy is installed but sees no CUDA device (driver or GPU missing); "
                         "use --device cpu here")


def _tile_for(model, extra, shape):
    """Whole-image prediction up to 2× the training size, overlap-tile beyond."""
    train_size = extra.get("image_size") or 256
    if max(shape) <= 2 * train_size:
        return None
    return train_size


def _evaluate(args) -> int:
    from .inference import predict
    from .metrics import evaluate, format_table, write_report
    model, extra = _load_model(args.checkpoint, args.device)
    foreground = args.foreground if args.foreground is not None else extra.get("foreground")
    num_classes = extra.get("num_classes") or max(2, model.out_channels)
    data = _dataset(args.data, foreground, args.skip_bad, num_classes)
    preds, targets = [], []
    for i in range(len(data)):
        image, mask = data[i]
        preds.append(predict(model, _normalise(image), tile=_tile_for(model, extra, image.shape[1:])).mask)
        targets.append(mask)
    out = Path(args.out or ".")
    out.mkdir(parents=True, exist_ok=True)
    context = {"checkpoint": str(args.checkpoint), "data": str(args.data)}
    pixel_spacings = [data.spacing(i) for i in range(len(data))]
    pixel_units = "mm" if all(s is not None for s in pixel_spacings) else "pixels"
    if all(s is None for s in data.slice_indices):
        # 2-D images: one row per image, distances with each file's pixel spacing when all are known.
        result = evaluate(preds, targets, num_classes=num_classes,
                          spacings=pixel_spacings if pixel_units == "mm" else None)
        print(format_table(result, items="images", units=pixel_units))
        write_report(out / "metrics.json", result, data.ids, **context, units=pixel_units)
        print(f"wrote {out / 'metrics.json'}")
        return 0
    # Volumes: each case scored as a whole in 3-D (overlap of the volume, surface distances in mm
    # from the voxel spacing), as nnU-Net reports; per-slice rows only on request.
    cases = list(dict.fromkeys(data.case_ids))
    members = {case: [i for i, c in enumerate(data.case_ids) if c == case] for case in cases}

    def stacked(arrays, items):
        return np.stack([arrays[i] for i in items]) if data.slice_indices[items[0]] is not None else arrays[items[0]]

    case_spacings = [data.volume_spacing(items[0]) if data.slice_indices[items[0]] is not None
                     else data.spacing(items[0]) for items in members.values()]
    units = "mm" if all(s is not None for s in case_spacings) else "voxels"
    result = evaluate([stacked(preds, items) for items in members.values()],
                      [stacked(targets, items) for items in members.values()], num_classes=num_classes,
                      spacings=case_spacings if units == "mm" else None)
    for row, items, spacing in zip(result["per_image"], members.values(), case_spacings):
        row["slices"] = len(items) if data.slice_indices[items[0]] is not None else None
        row["spacing"] = list(spacing) if spacing is not None else None
    print(f"per-case 3-D metrics ({len(cases)} cases; spacing (dz, dy, dx) from each volume's header)")
    print(format_table(result, items="cases", units=units))
    if args.per_slice:
        slices = evaluate(preds, targets, num_classes=num_classes,
                          spacings=pixel_spacings if pixel_units == "mm" else None)
        print(f"\nper-slice 2-D metrics ({len(preds)} slices)")
        print(format_table(slices, items="slices", units=pixel_units))
        context["per_slice_mean"] = slices["mean"]
        context["per_slice"] = [{"id": data.ids[i], "case": data.case_ids[i], "slice": data.slice_indices[i],
                                 **{k: v for k, v in row.items() if k != "per_class"}}
                                for i, row in enumerate(slices["per_image"])]
        context["per_slice_units"] = pixel_units
    write_report(out / "metrics.json", result, cases, rows="per_case", **context, units=units)
    print(f"wrote {out / 'metrics.json'}")
    return 0


def _inputs(paths):
    from .data.io import is_image_file
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if is_image_file(f))
        elif p.is_file():
            files.append(p)
        else:
            raise UsageError(f"{p}: no such file or folder")
    if not files:
        raise UsageError(f"no image files found in {' '.join(paths)}")
    return files


def _label_volume_path(path: Path, out: Path, inputs: list[Path], written: set) -> Path:
    """out/<case>.nii(.gz): the input's name without nnU-Net's '_0000' modality suffix, as nnU-Net
    names predictions; never an input file, never twice."""
    import re
    from .data.io import split_extension
    stem, extension = split_extension(path)
    target = out / (re.sub(r"_0000$", "", stem) + extension)
    if any(target.resolve() == p.resolve() for p in inputs):
        raise UsageError(f"--out {out}: writing the labels of {path} to {target} would overwrite an input image; "
                         "expected an --out folder apart from the inputs")
    if target in written:
        raise UsageError(f"{path}: its labels would go to {target}, already written for another input; "
                         "expected input names that differ once '_0000' and the extension are removed")
    written.add(target)
    return target


def _model_channels(slices, info, channels, path):
    """Slices (S, C, H, W) with the model's channel count: a grey image stored as RGB (read
    as one channel) gets its three equal channels back for a colour model; any other
    mismatch is an error naming both counts."""
    have = slices.shape[1]
    if have == channels:
        return slices
    if have == 1 and channels == 3 and info.grey_from_colour:
        return np.repeat(slices, 3, axis=1)
    raise UsageError(f"{path}: {have} channel(s) ({info.encoding or info.source}); the model takes {channels}: "
                     f"expected images like its training data")


def _predict(args) -> int:
    from .data.io import read_image, split_extension, write_nifti_labels
    from .inference import predict
    from .viz import overlay_png, save_mask_png
    model, extra = _load_model(args.checkpoint, args.device)
    num_classes = extra.get("num_classes") or max(2, model.out_channels)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    inputs = _inputs(args.inputs)
    written: set = set()
    for path in inputs:
        image, info = read_image(path)
        slices = _model_channels(image if image.ndim == 4 else image[None], info, model.in_channels, path)
        stem = split_extension(path)[0]
        nifti = split_extension(path)[1] in (".nii", ".nii.gz")
        target = _label_volume_path(path, out, inputs, written) if nifti else None
        masks = []
        for s, img in enumerate(slices):
            name = stem if len(slices) == 1 else f"{stem}_slice{s:03d}"
            result = predict(model, _normalise(img), tile=_tile_for(model, extra, img.shape[1:]), tta=args.tta)
            masks.append(result.mask)
            if not nifti or args.png_slices:
                save_mask_png(result.mask, out / f"{name}_mask.png", num_classes=num_classes)
                overlay_png(img[0], result.mask, out / f"{name}_overlay.png")
                print(f"{path}: {name}_mask.png, {name}_overlay.png "
                      f"(foreground {100 * (result.mask > 0).mean():.1f}%)")
        if nifti:
            # One label volume on the image's grid (affine and header copied), as medical viewers expect.
            labels = np.stack(masks)
            write_nifti_labels(target, labels, like=path)
            print(f"{path}: {target.name} (label volume, {len(masks)} slice(s) of {labels.shape[1]}x"
                  f"{labels.shape[2]}, the image's affine; foreground {100 * (labels > 0).mean():.1f}%)")
    return 0


# ----------------------------------------------------------------------------- other commands

def _check_data(args) -> int:
    from .data import check_data
    if not Path(args.data).is_dir():
        raise UsageError(f"{args.data}: no such folder")
    report = check_data(args.data, foreground=args.foreground, num_classes=args.classes)
    print(report.format())
    if args.files:
        print("Files:")
        for path, encoding in report.files:
            print(f"  {path}: {encoding}")
    return 0


def _gradcheck(args) -> int:
    from .gradcheck_table import run
    return 0 if run() else 1


def _bench(args) -> int:
    from . import bench
    if args.bench_device or args.quick:
        from . import bench_gpu
        bench_gpu.run(device=args.bench_device or "cpu", quick=args.quick, out_dir=args.out,
                      cpu_kernels=args.cpu_kernels)
        return 0
    if args.tune:
        bench.tune(configs=args.configs, threads=args.threads, out_dir=args.out)
    elif args.layers:
        bench.run_layers(configs=args.configs, repeats=args.repeats, threads=args.threads, out_dir=args.out)
    else:
        bench.run(configs=args.configs, repeats=args.repeats, steps=args.steps, threads=args.threads,
                  out_dir=args.out, kernel=args.kernel, block_mb=args.block_mb)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tinyseg", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    def foreground(p):
        p.add_argument("--foreground", type=int, default=None,
                       help="mask value that is foreground in a binary task (e.g. 0 for ISBI membrane masks)")
        p.add_argument("--skip-bad", action="store_true", help="warn about and skip unreadable or bad pairs")

    p = commands.add_parser("train", help="train a U-Net (synthetic phantoms unless --data is given)")
    p.add_argument("--data", help="dataset folder: DIR/images + DIR/masks, or nnU-Net imagesTr/labelsTr")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--image-size", type=int, default=None, help="training crop size (multiple of 2^depth)")
    p.add_argument("--base-channels", type=int, default=16)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--classes", type=int, default=None, help="number of classes incl. background (default: from data)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--seed", type=int, default=0)
    val = p.add_mutually_exclusive_group()
    val.add_argument("--val-split", type=float, default=0.2, help="fraction of the data held out for validation")
    val.add_argument("--val-data", help="a separate validation folder")
    p.add_argument("--split-mode", choices=["random", "contiguous"], default="random",
                   help="random cases, or the last cases in name order (contiguous: for consecutive 2-D "
                        "slices stored as separate images, e.g. ISBI)")
    p.add_argument("--split-by", choices=["case", "item"], default="case",
                   help="case (default): all slices of a volume (all cases of a patient) on one side; "
                        "item: slice by slice, only for a single volume")
    p.add_argument("--patient-regex", default=None,
                   help="regular expression whose first group in a case name is the patient id "
                        "(e.g. '(patient\\d+)'); a patient's cases stay on one side of the split")
    foreground(p)
    p.add_argument("--out", default="runs/train", help="run folder")
    p.add_argument("--resume", help="checkpoint (last.npz) to continue from")
    p.add_argument("--loss", choices=["ce", "bce", "dice", "ce+dice", "bce+dice"], default="ce+dice")
    p.add_argument("--optimizer", choices=["adam", "adamw", "sgd"], default="adam")
    p.add_argument("--upsample", choices=["nearest", "bilinear", "transpose"], default="nearest")
    p.add_argument("--norm", choices=["batch", "instance", "none"], default="instance",
                   help="normalisation after every conv: instance (default; nnU-Net's, per image), batch or none")
    p.add_argument("--schedule", choices=["poly", "cosine", "step", "constant"], default="poly",
                   help="learning-rate schedule per epoch: poly (default; nnU-Net's (1 - e/E)^0.9), cosine, "
                        "step (x0.1 every third of the run) or constant")
    p.add_argument("--warmup-epochs", type=int, default=None,
                   help="linear warm-up epochs of the poly or cosine schedule (default: epochs // 20)")
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--border-weights", action="store_true", help="U-Net paper's border weight map on the CE term")
    p.add_argument("--early-stopping", type=int, default=0, help="patience in epochs (0: off)")
    p.add_argument("--augment", choices=["nnunet", "unet", "none"], default="nnunet",
                   help="training augmentation: nnunet (default; flips, 90° turns, arbitrary rotation, zoom, "
                        "noise, brightness/contrast/colour, gamma), unet (flips, 90° turns, elastic deformation, "
                        "brightness/contrast: the default before) or none")
    p.add_argument("--no-augment", dest="augment", action="store_const", const="none", help="same as --augment none")
    p.add_argument("--oversample-foreground", type=float, default=1 / 3,
                   help="fraction of each batch whose crops are centred on foreground (default 1/3, as nnU-Net; "
                        "0: plain random crops)")
    p.add_argument("--synthetic", choices=["phantoms", "polyps"], default="phantoms",
                   help="built-in data without --data: CT-like phantoms (grey) or colonoscopy-like polyp "
                        "frames (RGB)")
    p.add_argument("--synthetic-count", type=int, default=160, help="number of synthetic images")
    p.add_argument("--synthetic-size", type=int, default=None,
                   help="size of the synthetic images (default: --image-size, or 128); larger than "
                        "--image-size makes training crops")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(handler=_train)

    p = commands.add_parser("evaluate", help="metrics of a checkpoint on a dataset, at each image's resolution "
                                             "(volumes: per case in 3-D)")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out", default=None, help="folder for metrics.json (default: current folder)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--per-slice", action="store_true",
                   help="volumes: also 2-D metrics of every slice (default: per case, in 3-D, in mm)")
    foreground(p)
    p.set_defaults(handler=_evaluate)

    p = commands.add_parser("predict", help="mask and overlay PNGs for images of any size; one NIfTI "
                                            "label volume per NIfTI input")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    p.add_argument("--out", required=True)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--tta", action="store_true", help="flip test-time augmentation")
    p.add_argument("--png-slices", action="store_true",
                   help="for NIfTI inputs, also write mask and overlay PNGs of every slice (by default one "
                        "NIfTI label volume per input, with the input's affine and header)")
    p.set_defaults(handler=_predict)

    p = commands.add_parser("check-data", help="report what training would see in a dataset folder")
    p.add_argument("data", metavar="DIR")
    p.add_argument("--foreground", type=int, default=None)
    p.add_argument("--classes", type=int, default=None)
    p.add_argument("--files", action="store_true", help="list every file with its encoding and what the loader does")
    p.set_defaults(handler=_check_data)

    p = commands.add_parser("gradcheck", help="check every op's backward against finite differences")
    p.set_defaults(handler=_gradcheck)

    p = commands.add_parser("bench", help="time the reference U-Net against PyTorch (when installed); "
                                          "--device cpu|cuda: every kernel of every op, and a step")
    p.add_argument("--configs", nargs="+", default=None, help="B16-b4-128 B32-b2-256 B64-b1-256")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="bench_out")
    p.add_argument("--layers", action="store_true", help="per-layer conv timings of every kernel instead")
    p.add_argument("--tune", action="store_true",
                   help="fill this machine's cache of measured kernel choices for the benchmark U-Nets "
                        "(what 'auto' otherwise measures on first use; tinyseg/tuning.py) and list them")
    p.add_argument("--kernel", default=None, help="tinyseg's conv2d kernel (default: auto)")
    p.add_argument("--block-mb", type=float, default=None, help="conv work-block size in MB (default: 32)")
    # dest is not "device": without a GPU, `bench --device cuda` says so and runs the CPU part
    # (main() would stop every other command with --device cuda there).
    p.add_argument("--device", dest="bench_device", choices=["cpu", "cuda"], default=None,
                   help="every kernel of every op on the U-Net's shapes and a training step, on this device "
                        "(tables, JSON, roofline chart in --out; docs/gpu.md)")
    p.add_argument("--quick", action="store_true", help="with --device: tiny shapes, few repeats")
    p.add_argument("--cpu-kernels", choices=["all", "default"], default=None,
                   help="with --device cuda: time every CPU kernel too (default: the reference and default ones)")
    p.set_defaults(handler=_bench)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .data.io import DataError
    from .train import TrainingDiverged
    try:
        if hasattr(args, "out"):             # every command that writes files; evaluate defaults to "."
            check_out_folder(args.out if args.out is not None else ".")
        check_device(getattr(args, "device", "cpu"))
        return args.handler(args)
    except (UsageError, DataError, TrainingDiverged, FileNotFoundError, ValueError, ImportError) as exc:
        if os.environ.get("TINYSEG_DEBUG"):
            raise
        message = " ".join(str(exc).split())
        print(f"tinyseg {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tinyseg {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
