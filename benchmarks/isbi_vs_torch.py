"""End-to-end training + evaluation wall time on ISBI 2012: tinyseg against PyTorch, same recipe (issue 14).

    python benchmarks/isbi_vs_torch.py [--data ../shared/data/isbi2012_em] [--epochs 40] [--threads 2]
                                       [--repeats 1] [--out runs/isbi_vs_torch]

The recipe is benchmarks/isbi2012.py's: slices 00–23 train (random 256² crops, z-score,
the default augmentation, batch 4, shuffled with seed 0), 24–29 validate (centre 256²
crops, batch 2) after every epoch; U-Net(1, 1, base 16, depth 4, norm="batch"); the
TrainConfig defaults for everything else: loss BCE-with-logits + soft Dice, Adam
(betas 0.9/0.999, eps 1e-8, no weight decay), lr 2e-3 with cosine annealing per epoch,
no warm-up; a checkpoint every epoch (weights, optimizer moments, schedule, RNG and
loader state) and the best validation Dice kept as "best". At the end the best
checkpoint is loaded and predicts the 6 whole 512² validation slices, scored by
tinyseg.metrics.evaluate.

Each framework runs in its own child process (tinyseg first, then PyTorch; alternating
with --repeats > 1), with the same thread counts. Both use tinyseg's DataLoader and
transforms, so the batches are identical and the data cost is the same; PyTorch gets the
same U-Net (same layers in the same order) with tinyseg's initial weights copied in.
Before the timed runs a third child checks, on a batch of the real data in train mode, that
both networks compute the same loss in float32 (1e-4 relative) and the same loss and
gradients in float64 (1e-6); it fails loudly otherwise. The PyTorch side is a plain loop
with Trainer.fit's semantics.

Reported per framework: total wall time (training with validation + loading the best
checkpoint and predicting + evaluating), each part, the whole child process (start-up,
imports, data loading, JIT compilation included), Dice and pixel error of the final
prediction, the best validation Dice and its epoch, peak RSS; the ratio tinyseg / PyTorch;
the CPU model. Writes results.json (and each side's history.csv and checkpoints) to --out.

Run it on a quiet machine. tinyseg measures its kernel choices on first use and caches
them per machine (tinyseg/tuning.py), but not while the load average is above 1.5× the
cores: then every tinyseg run measures again, inside its timed training; the per-run
line says how many choices were measured. PyTorch runs with its own default
OMP_WAIT_POLICY (tinyseg sets PASSIVE only while its own Numba libgomp loads, so PyTorch
keeps its default; --torch-omp-wait-policy passive makes PyTorch's threads sleep between
parallel regions too).
"""
import os
import sys

# The user's OMP_WAIT_POLICY, if any (tinyseg leaves the environment as it found it), so that
# the PyTorch child runs with it or with PyTorch's own default (see --torch-omp-wait-policy).
_USER_OMP_WAIT_POLICY = os.environ.get("OMP_WAIT_POLICY")

import tinyseg as ts      # before NumPy: tinyseg tells OpenBLAS to let its idle threads sleep
import argparse
import csv
import hashlib
import json
import math
import statistics
import subprocess
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
from tinyseg.bench import peak_rss_mb
from tinyseg.data import transforms as T

LOSS_RTOL = 1e-4
GRAD64_RTOL = 1e-6


# ----------------------------------------------------------------------------- the shared recipe

sys.path.insert(0, str(Path(__file__).resolve().parent))
from isbi2012 import DEPTH, add_recipe_arguments, build_recipe  # noqa: E402  (the recipe, from the script that defines it)


def weights_digest(state) -> str:
    """SHA-256 over a state dict's arrays (name, dtype, shape, bytes), in name order."""
    h = hashlib.sha256()
    for name in sorted(state):
        a = np.ascontiguousarray(np.asarray(state[name]))
        h.update(f"{name}:{a.dtype.str}:{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def summarize(result) -> dict:
    return {"dice": float(result["mean"]["dice"]), "iou": float(result["mean"]["iou"]),
            "pixel_error": float(1 - result["mean"]["accuracy"]), "hd95_px": float(result["mean"]["hd95"])}


def cpu_description() -> dict:
    model, avx512f = "unknown", False
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model == "unknown":
                    model = value.strip()
                elif key == "flags":
                    avx512f = avx512f or "avx512f" in value.split()
    except OSError:
        pass
    return {"model": model, "avx512f": avx512f, "cpus": os.cpu_count()}


# ----------------------------------------------------------------------------- the PyTorch twin

def torch_unet(base_channels, depth=DEPTH):
    """The PyTorch module of ts.models.UNet(1, 1, base_channels, depth, norm="batch") (tinyseg.bench builds it)."""
    from tinyseg.bench import torch_unet as build
    return build(base_channels, depth, norm="batch")


def torch_twin(ts_model):
    """torch_unet with every parameter and buffer of ``ts_model`` copied in (strict: same names and shapes)."""
    from tinyseg.bench import torch_model_like
    return torch_model_like(ts_model)


def torch_loss(logits, masks):
    """segmentation_loss(logits, masks, "ce+dice") for one output channel: mean BCE-with-logits plus
    1 − soft Dice (smooth 1, sums over the whole batch), as tinyseg.functional.dice_loss."""
    import torch
    target = torch.from_numpy(masks).to(logits.dtype)[:, None]
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    p = torch.sigmoid(logits)
    dice = (2 * (p * target).sum() + 1.0) / (p.sum() + target.sum() + 1.0)
    return bce + (1 - dice)


def cosine_lr(base_lr, epoch, t_max, warmup=0, eta_min=0.0):
    """tinyseg.optim.CosineAnnealingLR.lr_at: the closed form, set at the start of each epoch."""
    if epoch < warmup:
        return base_lr * (epoch + 1) / (warmup + 1)
    progress = (epoch - warmup) / (t_max - warmup)
    return eta_min + (base_lr - eta_min) * (1 + math.cos(math.pi * progress)) / 2


def import_torch(args):
    if _USER_OMP_WAIT_POLICY is None and args.torch_omp_wait_policy == "default":
        os.environ.pop("OMP_WAIT_POLICY", None)      # PyTorch's libgomp reads it when it loads
    import torch
    torch.set_num_threads(args.threads)
    return torch


# ----------------------------------------------------------------------------- the children

def worker_check(args) -> dict:
    """Both networks on the first two images of the first training batch, train mode, from the initial weights.

    float32 (the precision the runs use): the losses must agree to LOSS_RTOL; the largest relative
    gradient difference is reported (it can reach 1e-2 on deep layers: a few ReLU inputs and max-pool
    windows within ~1e-5 of their switching point fall on the other side in float32, in either
    framework; with the float64 run's masks forced, float32 agrees to 3e-6 — compare against
    float64, below). float64 (the same code, weights and batch cast):
    the gradients must agree to GRAD64_RTOL, which only the same computation does.
    """
    torch = import_torch(args)
    from tinyseg.train import segmentation_loss
    r = build_recipe(args)
    model, loader = r["model"], r["train_loader"]
    initial = {name: np.array(value) for name, value in model.state_dict().items()}
    digest = weights_digest(initial)          # the initial weights, before any BN statistics move
    images, masks = loader.load_batch(0, 0, loader.order(0))
    images, masks = images[:2], masks[:2]

    def compare(dtype):
        ts_model = ts.models.UNet(**model.config)
        ts_model.load_state_dict({name: value.copy() for name, value in initial.items()})
        tmodel = torch_twin(ts_model)
        if dtype == np.float64:
            for p in ts_model.parameters():
                p.data = p.data.astype(np.float64)
            tmodel = tmodel.double()
        ts_model.train()
        tmodel.train()
        x = images.astype(dtype)
        loss = segmentation_loss(ts_model(ts.Tensor(x)), masks.astype(np.int64), r["config"].loss)
        loss.backward()
        tloss = torch_loss(tmodel(torch.from_numpy(x)), masks)
        tloss.backward()
        a, b = float(loss.item()), float(tloss.item())
        worst, worst_name = 0.0, None
        tparams = dict(tmodel.named_parameters())
        for name, p in ts_model.named_parameters():
            g, tg = np.asarray(p.grad), tparams[name].grad.numpy()
            diff = float(np.abs(g - tg).max() / (np.abs(tg).max() + 1e-30))
            if diff > worst:
                worst, worst_name = diff, name
        return {"loss_tinyseg": a, "loss_torch": b, "loss_rel_diff": abs(a - b) / abs(b),
                "grad_max_rel_diff": worst, "grad_worst_parameter": worst_name}

    return {"batch_shape": list(images.shape), **compare(np.float32),
            "float64": compare(np.float64), "weights": digest}


def worker_tinyseg(args, out: Path) -> dict:
    from tinyseg.inference import predict
    from tinyseg.metrics import evaluate
    from tinyseg.train import Trainer
    start_setup = time.perf_counter()
    r = build_recipe(args)
    data, val_ids = r["data"], r["val_ids"]
    digest = weights_digest(r["model"].state_dict())
    trainer = Trainer(r["model"], r["train_loader"], r["val_loader"], r["config"], out_dir=str(out))
    setup_seconds = time.perf_counter() - start_setup

    start = time.perf_counter()
    trainer.fit()
    train_seconds = time.perf_counter() - start

    start = time.perf_counter()
    best, _ = ts.models.from_checkpoint(out / "best.npz")
    images = [T.zscore(data[i][0]) for i in val_ids]
    masks = [data[i][1] for i in val_ids]
    preds = [predict(best, image).mask for image in images]          # whole 512×512 slices
    predict_seconds = time.perf_counter() - start

    start = time.perf_counter()
    result = evaluate(preds, masks, num_classes=2)
    evaluate_seconds = time.perf_counter() - start
    history = [{k: row[k] for k in ("epoch", "train_loss", "val_loss", "val_dice", "lr", "seconds") if k in row}
               for row in trainer.history]
    from tinyseg import tuning
    return dict(summarize(result), framework="tinyseg", setup_seconds=setup_seconds, train_seconds=train_seconds,
                predict_seconds=predict_seconds, evaluate_seconds=evaluate_seconds, weights=digest,
                history=history, parameters=best.num_parameters(), tuning=tuning.enabled(),
                tuning_measured=tuning.TUNER.measured)


def worker_torch(args, out: Path) -> dict:
    torch = import_torch(args)
    from tinyseg import metrics
    from tinyseg.data.loader import case_groups
    from tinyseg import random as ts_random
    from tinyseg.train import predict_labels

    start_setup = time.perf_counter()
    r = build_recipe(args)
    data, val_ids, c = r["data"], r["val_ids"], r["config"]
    train_loader, val_loader = r["train_loader"], r["val_loader"]
    if (c.optimizer, c.schedule, c.loss, c.border_weights, c.early_stopping) != ("adam", "cosine", "ce+dice", False, 0):
        raise SystemExit(f"TrainConfig defaults changed ({c.optimizer}, {c.schedule}, {c.loss}, border weights "
                         f"{c.border_weights}, early stopping {c.early_stopping}): update the PyTorch loop")
    model = torch_twin(r["model"])
    digest = weights_digest({k: v.numpy() for k, v in model.state_dict().items()})
    optimizer = torch.optim.Adam(model.parameters(), lr=c.lr, betas=(0.9, 0.999), eps=1e-8,
                                 weight_decay=c.weight_decay)
    os.makedirs(out, exist_ok=True)
    setup_seconds = time.perf_counter() - start_setup

    def set_lr(epoch):
        lr = cosine_lr(c.lr, epoch, c.epochs, c.warmup_epochs)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr

    def validate():                                   # Trainer.validate
        model.eval()
        groups = case_groups(val_loader.dataset)
        val_loader.set_epoch(val_loader.epoch)
        order = val_loader.order(val_loader.epoch)
        counts, losses, n = {}, [], 0
        with torch.no_grad():
            for images, masks in val_loader:
                logits = model(torch.from_numpy(images))
                losses.append(float(torch_loss(logits, masks).item()) * len(images))
                pred = predict_labels(logits.numpy(), c.threshold)
                for p, t in zip(pred, masks):
                    case = groups[int(order[n])]
                    case_counts = metrics.confusion_per_class(p, t, 2)
                    counts[case] = counts[case] + case_counts if case in counts else case_counts
                    n += 1
        model.train()
        scores = [[metrics.overlap_from_counts(row) for row in case_counts] for case_counts in counts.values()]
        return {"val_loss": sum(losses) / max(n, 1), "val_dice": float(np.mean([np.mean([s["dice"] for s in case])
                                                                                 for case in scores]))}

    def save_checkpoint(path, epoch, history, best_dice):   # Trainer.save_checkpoint: the whole state, atomically
        state = model.state_dict()
        for name, value in state.items():
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                raise RuntimeError(f"after epoch {epoch} the weight {name!r} is not finite; no checkpoint written")
        checkpoint = {"model": state, "optimizer": optimizer.state_dict(),
                      "scheduler": {"last_epoch": epoch, "base_lrs": [c.lr]}, "epoch": epoch,
                      "rng": ts_random.get_state(), "loader": train_loader.state_dict(), "config": asdict(c),
                      "history": {k: [row.get(k) for row in history] for k in history[0]},
                      "best_dice": best_dice}
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)

    def keep_as_best(last, best):                    # Trainer._keep_as_best: a hard link
        temporary = best.with_name(best.name + ".link.tmp")
        if temporary.exists():
            temporary.unlink()
        os.link(last, temporary)
        os.replace(temporary, best)

    def write_history(history):
        with open(out / "history.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(history[0]))
            writer.writeheader()
            writer.writerows(history)

    start = time.perf_counter()
    history, best_dice = [], -1.0
    for epoch in range(c.epochs):                     # Trainer.fit
        epoch_start = time.perf_counter()
        lr = set_lr(epoch)
        model.train()
        train_loader.set_epoch(epoch)
        total, count = 0.0, 0
        for step, (images, masks) in enumerate(train_loader):
            loss = torch_loss(model(torch.from_numpy(images)), masks)
            value = float(loss.item())
            if not math.isfinite(value):
                raise RuntimeError(f"the training loss became {value} at epoch {epoch + 1}, batch {step + 1}")
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            total += value * len(images)
            count += len(images)
        row = {"epoch": epoch + 1, "train_loss": total / max(count, 1), "lr": lr}
        row.update(validate())
        row["seconds"] = time.perf_counter() - epoch_start
        history.append(row)
        improved = row["val_dice"] > best_dice
        if improved:
            best_dice = row["val_dice"]
        print(f"epoch {row['epoch']:>3}/{c.epochs}  train loss {row['train_loss']:.4f}  val loss "
              f"{row['val_loss']:.4f}  val Dice {row['val_dice']:.4f}  lr {lr:.2e}  {row['seconds']:.1f} s", flush=True)
        write_history(history)
        save_checkpoint(out / "last.pt", epoch + 1, history, best_dice)
        if improved:
            keep_as_best(out / "last.pt", out / "best.pt")
    train_seconds = time.perf_counter() - start

    start = time.perf_counter()
    best = torch_unet(args.base_channels, DEPTH)
    best.load_state_dict(torch.load(out / "best.pt", weights_only=True)["model"])
    for name, value in best.state_dict().items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise RuntimeError(f"best.pt: {name!r} is not finite")
    best.eval()
    images = [T.zscore(data[i][0]) for i in val_ids]
    masks = [data[i][1] for i in val_ids]
    preds = []
    with torch.no_grad():
        for image in images:                          # whole 512×512 slices (multiples of 2^depth: no padding)
            probabilities = torch.sigmoid(best(torch.from_numpy(np.ascontiguousarray(image, np.float32)[None])))[0]
            preds.append((probabilities[0] > c.threshold).numpy().astype(np.uint8))
    predict_seconds = time.perf_counter() - start

    start = time.perf_counter()
    result = metrics.evaluate(preds, masks, num_classes=2)
    evaluate_seconds = time.perf_counter() - start
    return dict(summarize(result), framework="torch", setup_seconds=setup_seconds, train_seconds=train_seconds,
                predict_seconds=predict_seconds, evaluate_seconds=evaluate_seconds, weights=digest,
                history=[{k: row[k] for k in ("epoch", "train_loss", "val_loss", "val_dice", "lr", "seconds")}
                         for row in history],
                parameters=sum(p.numel() for p in best.parameters()),
                torch_version=torch.__version__, torch_threads=torch.get_num_threads(),
                omp_wait_policy=os.environ.get("OMP_WAIT_POLICY", "(unset: PyTorch's default)"))


def run_worker(args):
    out = Path(args.run_dir) if args.run_dir else None
    if args.worker == "check":
        result = worker_check(args)
    elif args.worker == "tinyseg":
        result = worker_tinyseg(args, out)
    else:
        result = worker_torch(args, out)
    if args.worker != "check":
        result["total_seconds"] = result["train_seconds"] + result["predict_seconds"] + result["evaluate_seconds"]
        result["best_val_dice"] = max(row["val_dice"] for row in result["history"])
        result["best_epoch"] = max(result["history"], key=lambda row: row["val_dice"])["epoch"]
    result["peak_rss_mb"] = peak_rss_mb()
    Path(args.result).write_text(json.dumps(result, indent=2))


# ----------------------------------------------------------------------------- the parent

def child_env(threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads), NUMBA_NUM_THREADS=str(threads))
    if _USER_OMP_WAIT_POLICY is None:
        env.pop("OMP_WAIT_POLICY", None)      # not the user's (e.g. --torch-omp-wait-policy passive set it)
    return env


def spawn(kind, args, run_dir=None) -> dict:
    """Run one child (``--worker kind``), its output passed through; its result dict, with its wall time."""
    with tempfile.TemporaryDirectory() as tmp:
        result_path = Path(tmp) / "result.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--result", str(result_path),
               "--data", str(args.data), "--epochs", str(args.epochs), "--crop", str(args.crop),
               "--batch-size", str(args.batch_size), "--base-channels", str(args.base_channels),
               "--lr", repr(args.lr), "--threads", str(args.threads),
               "--torch-omp-wait-policy", args.torch_omp_wait_policy]
        if run_dir is not None:
            cmd += ["--run-dir", str(run_dir)]
        load_before = os.getloadavg()[0]
        start = time.perf_counter()
        done = subprocess.run(cmd, env=child_env(args.threads), check=False)
        wall = time.perf_counter() - start
        if done.returncode != 0 or not result_path.exists():
            raise SystemExit(f"isbi_vs_torch: the {kind} child failed (exit status {done.returncode}): "
                             f"{' '.join(cmd)}")
        result = json.loads(result_path.read_text())
    result.update(process_seconds=wall, load_average_before=load_before, load_average_after=os.getloadavg()[0])
    return result


def fmt_time(seconds):
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.2f} min"


def markdown(summary) -> str:
    rows = [("total (train + predict + evaluate)", "total_seconds"), ("training incl. validation", "train_seconds"),
            ("load best + predict 6 × 512²", "predict_seconds"), ("evaluate", "evaluate_seconds"),
            ("whole child process", "process_seconds")]
    ts_, th = summary["tinyseg"], summary["torch"]
    lines = ["| | tinyseg | PyTorch | tinyseg / PyTorch |", "| --- | --- | --- | --- |"]
    for label, key in rows:
        lines.append(f"| {label} | {fmt_time(ts_[key])} | {fmt_time(th[key])} | {ts_[key] / th[key]:.2f} |")
    for label, key, spec in (("Dice (final prediction)", "dice", ".4f"), ("pixel error", "pixel_error", ".4f"),
                             ("best validation Dice (epoch)", "best_val_dice", ".4f"),
                             ("peak RSS", "peak_rss_mb", ".0f")):
        a, b = ts_[key], th[key]
        if key == "best_val_dice":
            epochs = [", ".join(map(str, s["best_epoch"])) for s in (ts_, th)]
            lines.append(f"| {label} | {a:{spec}} ({epochs[0]}) | {b:{spec}} ({epochs[1]}) | |")
        elif key == "peak_rss_mb":
            lines.append(f"| {label} | {a:{spec}} MB | {b:{spec}} MB | {a / b:.2f} |")
        else:
            lines.append(f"| {label} | {a:{spec}} | {b:{spec}} | |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_recipe_arguments(p)
    p.add_argument("--threads", type=int, default=2, help="threads of both frameworks (torch.set_num_threads, "
                                                          "OMP/OpenBLAS/MKL/NUMBA_NUM_THREADS)")
    p.add_argument("--repeats", type=int, default=1, help="runs per framework, alternating which goes first")
    p.add_argument("--out", default="runs/isbi_vs_torch")
    p.add_argument("--torch-omp-wait-policy", choices=("default", "passive"), default="default",
                   help="PyTorch's OMP_WAIT_POLICY: its own default (threads spin a while after a parallel "
                        "region), or PASSIVE (threads sleep at once, as tinyseg's own Numba threads do)")
    p.add_argument("--worker", choices=("check", "tinyseg", "torch"), help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    p.add_argument("--run-dir", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return run_worker(args)

    if not Path(args.data).is_dir():
        print(f"{args.data}: not found (the ISBI 2012 slices live in ../shared/data/isbi2012_em)", file=sys.stderr)
        sys.exit(2)
    try:
        import torch  # noqa: F401  (only to fail early here; the children import it themselves)
    except ImportError:
        print("PyTorch is not installed: pip install torch (CPU) for this comparison", file=sys.stderr)
        sys.exit(2)
    args.data = str(Path(args.data).resolve())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cpu = cpu_description()
    print(f"CPU: {cpu['model']}, avx512f {'yes' if cpu['avx512f'] else 'no'}, {cpu['cpus']} CPUs; threads "
          f"{args.threads}; load average {os.getloadavg()[0]:.2f}", flush=True)
    print(f"recipe: {args.epochs} epochs, {args.crop}² crops, batch {args.batch_size}, U-Net B{args.base_channels} "
          f"depth {DEPTH} batch norm, Adam lr {args.lr:g} cosine, loss BCE + Dice", flush=True)

    check = spawn("check", args)
    c64 = check["float64"]
    print(f"same network check ({'×'.join(map(str, check['batch_shape']))} training batch, train mode): loss "
          f"{check['loss_tinyseg']:.6f} (tinyseg) vs {check['loss_torch']:.6f} (PyTorch), relative difference "
          f"{check['loss_rel_diff']:.1e}; largest relative gradient difference {check['grad_max_rel_diff']:.1e} "
          f"({check['grad_worst_parameter']}); in float64: loss {c64['loss_rel_diff']:.1e}, gradients "
          f"{c64['grad_max_rel_diff']:.1e} ({c64['grad_worst_parameter']})", flush=True)
    if not (check["loss_rel_diff"] <= LOSS_RTOL and c64["loss_rel_diff"] <= GRAD64_RTOL
            and c64["grad_max_rel_diff"] <= GRAD64_RTOL):
        raise SystemExit(f"isbi_vs_torch: the two networks disagree: float32 loss {check['loss_tinyseg']!r} vs "
                         f"{check['loss_torch']!r} (relative {check['loss_rel_diff']:.2e}, limit {LOSS_RTOL:g}); "
                         f"float64 loss relative {c64['loss_rel_diff']:.2e}, gradients {c64['grad_max_rel_diff']:.2e} "
                         f"(limit {GRAD64_RTOL:g}); not timing different computations")

    runs = {"tinyseg": [], "torch": []}
    for r in range(args.repeats):
        order = ["tinyseg", "torch"] if r % 2 == 0 else ["torch", "tinyseg"]
        for framework in order:
            print(f"\n== {framework}, run {r + 1}/{args.repeats} ==", flush=True)
            result = spawn(framework, args, out / f"{framework}-run{r + 1}")
            if result["weights"] != check["weights"]:
                raise SystemExit(f"isbi_vs_torch: the {framework} run started from other weights "
                                 f"({result['weights']} vs {check['weights']})")
            runs[framework].append(result)
            tuned = result.get("tuning_measured")
            print(f"{framework}: total {fmt_time(result['total_seconds'])} (training "
                  f"{fmt_time(result['train_seconds'])}, prediction {fmt_time(result['predict_seconds'])}, evaluation "
                  f"{fmt_time(result['evaluate_seconds'])}), Dice {result['dice']:.4f}, pixel error "
                  f"{result['pixel_error']:.4f}"
                  + (f"; {tuned} kernel choices measured in this run (not from the tuning cache)" if tuned else ""),
                  flush=True)

    keys = ("total_seconds", "train_seconds", "predict_seconds", "evaluate_seconds", "setup_seconds",
            "process_seconds", "dice", "iou", "pixel_error", "hd95_px", "best_val_dice", "peak_rss_mb")
    summary = {}
    for framework, results in runs.items():
        summary[framework] = {k: statistics.median(res[k] for res in results) for k in keys}
        summary[framework]["best_epoch"] = [res["best_epoch"] for res in results]
        summary[framework]["total_seconds_all_runs"] = [res["total_seconds"] for res in results]
    ratios = {k: summary["tinyseg"][k] / summary["torch"][k]
              for k in ("total_seconds", "train_seconds", "predict_seconds", "evaluate_seconds", "process_seconds")}
    table = markdown(summary)
    print(f"\nCPU: {cpu['model']} (avx512f {'yes' if cpu['avx512f'] else 'no'}), threads {args.threads}, "
          f"{args.epochs} epochs, B{args.base_channels}, median of {args.repeats} run(s) per framework\n")
    print(table)
    verdict = "meets" if ratios["total_seconds"] <= 1 else "does not meet"
    print(f"\ntinyseg / PyTorch end-to-end: {ratios['total_seconds']:.2f} ({verdict} issue 14's ≤ 1)")
    report = {"cpu": cpu, "args": {k: v for k, v in vars(args).items() if k not in ("worker", "result", "run_dir")},
              "check": check, "summary": summary, "ratios": ratios, "runs": runs, "table": table,
              "python": sys.version.split()[0], "numpy": np.__version__,
              "torch": runs["torch"][0].get("torch_version"),
              "torch_omp_wait_policy": runs["torch"][0].get("omp_wait_policy")}
    (out / "results.json").write_text(json.dumps(report, indent=2))
    print(f"wrote {out / 'results.json'}")


if __name__ == "__main__":
    main()
