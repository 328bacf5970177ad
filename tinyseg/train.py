"""Training: the loop, validation, history, checkpoints, resume, early stopping.

One epoch is:  for each batch:  logits = model(x);  L = loss(logits, y);
               L.backward();  optimizer.step();  optimizer.zero_grad()
followed by a validation pass (no graph, eval mode) that computes the validation loss,
Dice and IoU per image. After every epoch the run folder gets a row in ``history.csv``
and a checkpoint ``last.npz`` (and ``best.npz`` when validation Dice improved), written
atomically. A checkpoint holds everything that decides what happens next (weights,
optimizer moments, LR schedule, epoch, the random state, the loader's position), so
``resume`` continues exactly where the run stopped: a run interrupted after epoch k and
resumed gives the same losses as an uninterrupted one.
"""
from __future__ import annotations

import csv
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from . import functional as F
from . import metrics
from . import optim
from . import random as ts_random
from .backend import get_array_module, to_device
from .serialization import first_non_finite, load, require_finite, save
from .tensor import Tensor, no_grad

LOSSES = ("ce", "dice", "ce+dice")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class TrainConfig:
    epochs: int = 20
    batch_size: int = 8
    lr: float = 1e-3
    optimizer: str = "adam"            # adam | adamw | sgd
    momentum: float = 0.9              # sgd only
    weight_decay: float = 0.0
    schedule: str = "cosine"           # cosine | poly | step | constant
    warmup_epochs: int = 0
    loss: str = "ce+dice"              # ce (BCE for one output channel, CE for K) | dice | ce+dice
    border_weights: bool = False       # the U-Net paper's weight map (w0, sigma) on the CE term
    w0: float = 10.0
    sigma: float = 5.0
    early_stopping: int = 0            # stop after this many epochs without a better val Dice (0: never)
    threshold: float = 0.5
    seed: int = 0
    empty_warning_epochs: int = 3      # warn when val predictions stay empty this long
    progress: bool = True              # tqdm progress bars, on a terminal only (else one line per epoch)
    extra: dict = field(default_factory=dict)   # free-form notes stored with the run (data, sizes, ...)

    def __post_init__(self):
        loss = {"bce": "ce", "bce+dice": "ce+dice"}.get(self.loss, self.loss)
        if loss not in LOSSES:
            raise ValueError(f"TrainConfig: loss expected one of {LOSSES} (or bce, bce+dice), got {self.loss!r}")
        self.loss = loss
        if self.optimizer not in ("adam", "adamw", "sgd"):
            raise ValueError(f"TrainConfig: optimizer expected adam, adamw or sgd, got {self.optimizer!r}")
        if self.schedule not in ("cosine", "poly", "step", "constant"):
            raise ValueError(f"TrainConfig: schedule expected cosine, poly, step or constant, got {self.schedule!r}")
        for name in ("epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"TrainConfig: {name} expected a positive integer, got {getattr(self, name)!r}")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise ValueError(f"TrainConfig: warmup_epochs expected 0 <= warmup_epochs < epochs ({self.epochs}), "
                             f"got {self.warmup_epochs!r}")
        if not self.lr > 0:
            raise ValueError(f"TrainConfig: lr expected a positive number, got {self.lr!r}")

    @classmethod
    def from_dict(cls, d):
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def segmentation_loss(logits: Tensor, masks, kind: str = "ce+dice", weight=None) -> Tensor:
    """The training loss on logits (N, K, H, W) and integer masks (N, H, W).

    One output channel: BCE-with-logits against mask ∈ {0,1}; K channels: cross-entropy
    against the class map. "dice" is the soft Dice loss; "ce+dice" their sum (the default,
    as in nnU-Net: CE gives well-behaved early gradients, Dice counters class imbalance).
    ``weight`` (N, H, W), e.g. the U-Net border weight map, multiplies the CE term per pixel.
    """
    terms = []
    if kind in ("ce", "ce+dice"):
        if logits.shape[1] == 1:
            w = None if weight is None else weight[:, None]
            terms.append(F.binary_cross_entropy_with_logits(logits, masks[:, None].astype(logits.dtype), weight=w))
        else:
            ce = F.cross_entropy(logits, masks) if weight is None else _weighted_ce(logits, masks, weight)
            terms.append(ce)
    if kind in ("dice", "ce+dice"):
        terms.append(F.dice_loss(logits, masks))
    total = terms[0]
    for t in terms[1:]:
        total = total + t
    return total


def _weighted_ce(logits, masks, weight):
    """Mean over pixels of w(x) · (−log p_{t(x)}(x)): cross-entropy with a per-pixel weight map."""
    xp = get_array_module(logits.data, masks, weight)
    classes = xp.arange(logits.shape[1]).reshape(1, -1, 1, 1)
    onehot = (masks[:, None] == classes).astype(logits.dtype)
    picked = (F.log_softmax(logits, axis=1) * onehot).sum(axis=1)
    return -(picked * weight.astype(logits.dtype)).mean()


def predict_labels(logits_data, threshold=0.5):
    """Integer label maps (N, H, W) from logits: sigmoid > threshold, or argmax over classes."""
    if logits_data.shape[1] == 1:
        # sigmoid(z) > t  <=>  z > logit(t): no need to compute the sigmoid
        return (logits_data[:, 0] > math.log(threshold / (1 - threshold))).astype(np.uint8)
    return logits_data.argmax(axis=1).astype(np.uint8)


class Trainer:
    """Fits ``model`` on ``train_loader`` and validates on ``val_loader`` after each epoch.

    Loaders yield (images (B, C, H, W) float32, masks (B, H, W) int) as NumPy arrays and
    have ``set_epoch(e)`` (deterministic order per epoch). ``out_dir`` receives
    history.csv, last.npz and best.npz; with ``out_dir=None`` nothing is written.
    """

    def __init__(self, model, train_loader, val_loader=None, config: TrainConfig | None = None, out_dir=None,
                 log=print):
        self.model, self.train_loader, self.val_loader = model, train_loader, val_loader
        self.config = config or TrainConfig()
        self.out_dir = out_dir
        self.log = log
        c = self.config
        params = model.parameters()
        if c.optimizer == "sgd":
            self.optimizer = optim.SGD(params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)
        elif c.optimizer == "adamw":
            self.optimizer = optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay)
        else:
            self.optimizer = optim.Adam(params, lr=c.lr, weight_decay=c.weight_decay)
        if c.schedule == "cosine":
            self.scheduler = optim.CosineAnnealingLR(self.optimizer, T_max=c.epochs, warmup_epochs=c.warmup_epochs)
        elif c.schedule == "poly":
            self.scheduler = optim.PolyLR(self.optimizer, T_max=c.epochs, power=0.9, warmup_epochs=c.warmup_epochs)
        elif c.schedule == "step":
            self.scheduler = optim.StepLR(self.optimizer, step_size=max(1, c.epochs // 3), gamma=0.1)
        else:
            self.scheduler = None
        self.num_classes = max(2, model.out_channels)
        self.epoch = 0                 # the next epoch to run
        self.history: list[dict] = []
        self.best_dice = -1.0
        self.epochs_without_improvement = 0
        self.empty_epochs = 0
        if out_dir is not None:
            os.makedirs(out_dir, exist_ok=True)

    # ----- one batch, one epoch
    def _batch_loss(self, images, masks):
        device = self.model.device
        x = Tensor(images.astype(np.float32, copy=False)).to(device)
        y = masks.astype(np.int64, copy=False)
        weight = None
        if self.config.border_weights:
            weight = F.unet_weight_map(y, w0=self.config.w0, sigma=self.config.sigma).astype(np.float32)
        if device == "cuda":
            y = to_device(y, "cuda")
            weight = None if weight is None else to_device(weight, "cuda")
        logits = self.model(x)
        return logits, segmentation_loss(logits, y, self.config.loss, weight)

    def train_epoch(self) -> float:
        self.model.train()
        self.train_loader.set_epoch(self.epoch)
        total, count = 0.0, 0
        bar = _progress(self.train_loader, f"epoch {self.epoch + 1}/{self.config.epochs}", self.config.progress)
        for step, (images, masks) in enumerate(bar):
            _, loss = self._batch_loss(images, masks)
            value = float(loss.item())
            if not math.isfinite(value):
                kept = os.path.join(self.out_dir, "last.npz") if self.out_dir else None
                where = (f"; the last good checkpoint is kept at {kept} (epoch {self.epoch})"
                         if kept and os.path.exists(kept) else "")
                raise TrainingDiverged(f"the training loss became {value} at epoch {self.epoch + 1}, batch {step + 1}"
                                       f"{where}. Try a lower learning rate (--lr), or check the data for "
                                       f"NaN/inf values")
            loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad()
            total += value * len(images)
            count += len(images)
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{total / count:.4f}")
        return total / max(count, 1)

    def validate(self) -> dict:
        """Validation loss, mean per-case Dice and IoU (foreground classes), predicted foreground fraction.

        A case is what ``tinyseg.data.case_groups`` says of the validation set: the slices of
        one volume are scored together, as one 3-D mask (their confusion counts summed), and
        each 2-D image is its own case. Classes are averaged within a case, cases with equal weight.
        """
        from .data.loader import case_groups
        self.model.eval()
        groups = case_groups(self.val_loader.dataset)
        self.val_loader.set_epoch(self.val_loader.epoch)    # from its first batch, so order[n] is item n
        order = self.val_loader.order(self.val_loader.epoch)
        counts: dict = {}           # case -> (classes, 4) confusion counts
        losses, fg_pred, fg_true, n = [], 0, 0, 0
        with no_grad():
            for images, masks in self.val_loader:
                logits, loss = self._batch_loss(images, masks)
                losses.append(float(loss.item()) * len(images))
                pred = predict_labels(logits.numpy(), self.config.threshold)
                for p, t in zip(pred, masks):
                    case = groups[int(order[n])]
                    case_counts = metrics.confusion_per_class(p, t, self.num_classes)
                    counts[case] = counts[case] + case_counts if case in counts else case_counts
                    n += 1
                fg_pred += int((pred > 0).sum())
                fg_true += int((masks > 0).sum())
        self.model.train()
        scores = [[metrics.overlap_from_counts(row) for row in case_counts] for case_counts in counts.values()]
        dices = [np.mean([s["dice"] for s in case]) for case in scores]
        ious = [np.mean([s["iou"] for s in case]) for case in scores]
        return {"val_loss": sum(losses) / max(n, 1), "val_dice": float(np.mean(dices)),
                "val_iou": float(np.mean(ious)), "val_fg_pred": fg_pred, "val_fg_true": fg_true}

    # ----- the whole run
    def fit(self) -> list[dict]:
        c = self.config
        while self.epoch < c.epochs:
            start = time.perf_counter()
            lr = self.optimizer.param_groups[0]["lr"]
            train_loss = self.train_epoch()
            row = {"epoch": self.epoch + 1, "train_loss": train_loss, "lr": lr}
            if self.val_loader is not None:
                row.update(self.validate())
            if self.scheduler is not None:
                self.scheduler.step()
            row["seconds"] = time.perf_counter() - start
            self.epoch += 1
            self.history.append(row)
            improved = self.val_loader is not None and row["val_dice"] > self.best_dice
            if improved:
                self.best_dice, self.epochs_without_improvement = row["val_dice"], 0
            else:
                self.epochs_without_improvement += 1
            self._report(row)
            self._warn_if_predictions_stay_empty(row)
            if self.out_dir is not None:
                self._write_history()
                self.save_checkpoint(os.path.join(self.out_dir, "last.npz"))
                if improved:
                    self._keep_as_best(os.path.join(self.out_dir, "last.npz"), os.path.join(self.out_dir, "best.npz"))
            if c.early_stopping and self.epochs_without_improvement >= c.early_stopping:
                self.log(f"early stopping: no better validation Dice for {c.early_stopping} epochs "
                         f"(best {self.best_dice:.4f})")
                break
        return self.history

    def _report(self, row):
        text = f"epoch {row['epoch']:>3}/{self.config.epochs}  train loss {row['train_loss']:.4f}"
        if "val_loss" in row:
            text += f"  val loss {row['val_loss']:.4f}  val Dice {row['val_dice']:.4f}  val IoU {row['val_iou']:.4f}"
        self.log(text + f"  lr {row['lr']:.2e}  {row['seconds']:.1f} s")

    def _warn_if_predictions_stay_empty(self, row):
        if "val_fg_pred" not in row or row["val_fg_true"] == 0:
            return
        self.empty_epochs = self.empty_epochs + 1 if row["val_fg_pred"] == 0 else 0
        if self.empty_epochs == self.config.empty_warning_epochs:
            message = (f"the model has predicted only background on the validation set for {self.empty_epochs} "
                       f"epochs in a row. Check: (1) the foreground value of the masks (--foreground; e.g. ISBI "
                       f"masks mark membrane with 0), (2) the class balance (a tiny foreground fraction needs the "
                       f"Dice term: --loss ce+dice), (3) the learning rate (--lr; too high can collapse to "
                       f"background, too low may not have moved yet)")
            warnings.warn(message, RuntimeWarning, stacklevel=2)
            self.log("warning: " + message)

    def _write_history(self):
        keys = list(dict.fromkeys(k for row in self.history for k in row))
        path = os.path.join(self.out_dir, "history.csv")
        tmp = path + ".tmp"
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(self.history)
        os.replace(tmp, path)

    # ----- checkpoints
    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "model_config": getattr(self.model, "config", {}),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else {},
            "epoch": self.epoch,
            "rng": ts_random.get_state(),
            "loader": self.train_loader.state_dict(),
            "config": asdict(self.config),
            "history": {k: [row.get(k) for row in self.history] for k in dict.fromkeys(
                k for row in self.history for k in row)},
            "best_dice": self.best_dice,
            "epochs_without_improvement": self.epochs_without_improvement,
        }

    def save_checkpoint(self, path):
        """Write the state to ``path``; weights holding NaN or Inf are never written (over a
        good checkpoint or not): that raises TrainingDiverged and keeps the file as it was."""
        state = self.state_dict()
        bad = first_non_finite(state["model"])
        if bad is not None:
            kept = f"; {path} is kept as it was" if os.path.exists(path) else ""
            raise TrainingDiverged(f"after epoch {self.epoch} the weight {bad[0]!r} holds {bad[1]}, so no checkpoint "
                                   f"was written{kept}. Try a lower learning rate (--lr), or check the data for "
                                   f"NaN/inf values")
        save(state, path)

    def _keep_as_best(self, last, best):
        """best.npz := the checkpoint just written to last.npz, without writing it again: a hard
        link to last's file (the next save of last.npz puts a new file under that name, so
        best keeps this one); a second save where links are not supported."""
        temporary = best + ".link.tmp"
        try:
            if os.path.lexists(temporary):
                os.remove(temporary)
            os.link(last, temporary)
            os.replace(temporary, best)
        except OSError:
            self.save_checkpoint(best)

    def resume(self, path):
        """Restore everything from a checkpoint written by ``save_checkpoint``."""
        state = load(path)
        require_finite(state["model"], path)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler"):
            self.scheduler.load_state_dict(state["scheduler"])
        self.epoch = int(state["epoch"])
        ts_random.set_state(state["rng"])
        self.train_loader.load_state_dict(state["loader"])
        history = state.get("history") or {}
        keys = list(history)
        self.history = [{k: history[k][i] for k in keys} for i in range(len(history[keys[0]]))] if keys else []
        self.best_dice = float(state.get("best_dice", -1.0))
        self.epochs_without_improvement = int(state.get("epochs_without_improvement", 0))
        return state


def _progress(iterable, desc, enabled):
    """A tqdm bar over ``iterable`` when enabled and the bar's stream (stderr) is a terminal.

    In a log file or CI a redrawn bar is hundreds of carriage-return lines per epoch; there
    the per-epoch line of ``Trainer._report`` is the progress report.
    """
    import sys
    if not enabled or not _is_terminal(sys.stderr):
        return iterable
    from tqdm.auto import tqdm
    return tqdm(iterable, desc=desc, leave=False, dynamic_ncols=True, file=sys.stderr)


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):      # no isatty, or a closed stream
        return False
