"""Training: resume equivalence, divergence stop, empty-prediction warning, early stopping,
and the command line end to end (train -> evaluate -> predict) on tiny data."""
import json

import numpy as np
import pytest
from PIL import Image

import tinyseg as ts
from tinyseg.cli import main
from tinyseg.data import DataLoader, SyntheticPhantoms, split
from tinyseg.data import transforms as T
from tinyseg.train import Trainer, TrainConfig, TrainingDiverged


def make_trainer(out_dir, epochs=3, lr=1e-2, dropout=0.2, **config):
    ts.manual_seed(0)
    data = SyntheticPhantoms(n=12, size=32, seed=1)
    train, val = split(data, 0.25, seed=0)
    augment = T.Compose([T.ZScore(), T.default_augmentation()])
    train_loader = DataLoader(train, 3, shuffle=True, seed=0, transform=augment)
    val_loader = DataLoader(val, 3, shuffle=False, transform=T.ZScore())
    model = ts.models.UNet(1, 1, base_channels=2, depth=2, dropout=dropout)
    cfg = TrainConfig(epochs=epochs, batch_size=3, lr=lr, progress=False, **config)
    return Trainer(model, train_loader, val_loader, cfg, out_dir=str(out_dir), log=lambda *_: None)


def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path):
    full = make_trainer(tmp_path / "full")
    full.fit()

    first = make_trainer(tmp_path / "split", epochs=3)
    first.config.epochs = 2            # stop after 2 of 3 epochs, as an interrupted run
    first.fit()
    resumed = make_trainer(tmp_path / "other", epochs=3)
    ts.manual_seed(123)                # a different random state, which resume must overwrite
    resumed.resume(tmp_path / "split" / "last.npz")
    assert resumed.epoch == 2
    resumed.fit()

    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in full.history]
    assert [r["val_loss"] for r in resumed.history] == [r["val_loss"] for r in full.history]
    for (name, a), (_, b) in zip(full.model.named_parameters(), resumed.model.named_parameters()):
        np.testing.assert_array_equal(a.data, b.data, err_msg=name)


def test_run_folder_holds_history_and_checkpoints(tmp_path):
    trainer = make_trainer(tmp_path, epochs=2)
    trainer.fit()
    lines = (tmp_path / "history.csv").read_text().splitlines()
    assert lines[0].startswith("epoch,train_loss,lr,val_loss,val_dice")
    assert len(lines) == 3
    state = ts.load(tmp_path / "last.npz")
    assert state["epoch"] == 2 and "model" in state and "optimizer" in state
    assert (tmp_path / "best.npz").exists()


def test_nan_loss_stops_with_the_last_good_checkpoint_kept(tmp_path):
    trainer = make_trainer(tmp_path, epochs=3)
    trainer.config.epochs = 1
    trainer.fit()
    good = ts.load(tmp_path / "last.npz")["model"]
    trainer.config.epochs = 3
    trainer.model.head.bias.data[:] = np.nan
    with pytest.raises(TrainingDiverged, match=r"nan at epoch 2.*last good checkpoint is kept.*epoch 1"):
        trainer.fit()
    kept = ts.load(tmp_path / "last.npz")
    assert kept["epoch"] == 1
    for name, value in good.items():
        np.testing.assert_array_equal(kept["model"][name], value)


def test_warns_when_validation_predictions_stay_empty(tmp_path):
    trainer = make_trainer(tmp_path, epochs=2, lr=1e-12, dropout=0.0, empty_warning_epochs=2)
    trainer.model.head.bias.data[:] = -50.0       # sigmoid(-50) ~ 0: only background
    with pytest.warns(RuntimeWarning, match="only background.*foreground value.*class balance.*learning rate"):
        trainer.fit()


def test_early_stopping(tmp_path):
    trainer = make_trainer(tmp_path, epochs=10, lr=1e-12, dropout=0.0, early_stopping=2)
    history = trainer.fit()
    assert len(history) == 3        # epoch 1 sets the best, epochs 2 and 3 do not improve


def test_bad_config_is_a_clear_error():
    with pytest.raises(ValueError, match="loss"):
        TrainConfig(loss="focal")
    with pytest.raises(ValueError, match="lr"):
        TrainConfig(lr=0)


# ----------------------------------------------------------------------------- command line

@pytest.fixture
def png_folder(tmp_path):
    """A DIR/images + DIR/masks folder of 10 phantoms as 8-bit PNGs, masks 0/255."""
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    data = SyntheticPhantoms(n=10, size=40, seed=3)
    for i in range(len(data)):
        image, mask = data[i]
        Image.fromarray((np.clip(image[0], 0, 1) * 255).astype(np.uint8)).save(root / "images" / f"case{i:02d}.png")
        Image.fromarray((mask * 255).astype(np.uint8)).save(root / "masks" / f"case{i:02d}.png")
    return root


def test_train_evaluate_predict_end_to_end(png_folder, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", str(png_folder), "--epochs", "2", "--batch-size", "4", "--image-size", "32",
                 "--base-channels", "2", "--depth", "2", "--out", str(run), "--no-progress"]) == 0
    for name in ("config.json", "history.csv", "curves.png", "last.npz", "best.npz", "overlay_0.png"):
        assert (run / name).exists(), name

    assert main(["evaluate", "--checkpoint", str(run / "best.npz"), "--data", str(png_folder),
                 "--out", str(tmp_path / "eval")]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    for key in ("dice", "iou", "precision", "recall", "f1", "accuracy", "hd95", "per_image"):
        assert key in metrics
    assert len(metrics["per_image"]) == 10
    assert "dice" in capsys.readouterr().out

    # predict works at each image's own size (40×40 here, trained on 32×32 crops)
    assert main(["predict", "--checkpoint", str(run / "best.npz"), str(png_folder / "images" / "case00.png"),
                 "--out", str(tmp_path / "pred")]) == 0
    mask = np.asarray(Image.open(tmp_path / "pred" / "case00_mask.png"))
    assert mask.shape == (40, 40)
    assert (tmp_path / "pred" / "case00_overlay.png").exists()


def test_resume_from_the_command_line_after_an_interruption(png_folder, tmp_path, monkeypatch):
    args = ["train", "--data", str(png_folder), "--batch-size", "4", "--image-size", "32", "--base-channels", "2",
            "--depth", "2", "--no-progress", "--epochs", "3"]
    assert main(args + ["--out", str(tmp_path / "a")]) == 0

    original, calls = Trainer.train_epoch, []

    def interrupted_in_epoch_3(self):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(Trainer, "train_epoch", interrupted_in_epoch_3)
    assert main(args + ["--out", str(tmp_path / "b")]) == 130
    monkeypatch.setattr(Trainer, "train_epoch", original)
    assert main(args + ["--out", str(tmp_path / "b"), "--resume", str(tmp_path / "b" / "last.npz")]) == 0
    a = (tmp_path / "a" / "history.csv").read_text().splitlines()
    b = (tmp_path / "b" / "history.csv").read_text().splitlines()
    assert len(a) == 4
    column = a[0].split(",").index("train_loss"), a[0].split(",").index("val_dice")
    assert [[line.split(",")[c] for c in column] for line in a] == [[line.split(",")[c] for c in column] for line in b]


@pytest.mark.parametrize("argv, message", [
    (["evaluate", "--checkpoint", "missing.npz", "--data", "."], "missing.npz: no such file"),
    (["train", "--data", "/nonexistent/folder", "--epochs", "1"], "no such folder"),
    (["train", "--epochs", "1", "--image-size", "30", "--depth", "2"], "multiple of 2^depth = 4"),
    (["train", "--epochs", "1", "--val-split", "1.5"], "between 0 and 1"),
    (["check-data", "/nonexistent"], "no such folder"),
])
def test_bad_arguments_give_one_line_and_exit_status_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_bad_data_gives_one_line_naming_the_file(png_folder, tmp_path, capsys):
    (png_folder / "masks" / "case03.png").unlink()
    assert main(["train", "--data", str(png_folder), "--epochs", "1", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "case03" in err and err.count("\n") == 1


def test_check_data_reports_the_folder(png_folder, capsys):
    assert main(["check-data", str(png_folder)]) == 0
    out = capsys.readouterr().out
    assert "Pairs:" in out and "0, 255" in out


def test_best_checkpoint_is_the_improving_epochs_file_without_a_second_write(tmp_path, monkeypatch):
    import os
    trainer = make_trainer(tmp_path, epochs=1)
    trainer.fit()
    assert os.path.samefile(tmp_path / "last.npz", tmp_path / "best.npz")      # one write, two names
    best_epoch = ts.load(tmp_path / "best.npz")["epoch"]
    trainer.config.epochs = 2
    monkeypatch.setattr(trainer, "validate", lambda: {"val_loss": 1.0, "val_dice": -1.0, "val_iou": 0.0,
                                                      "val_fg_pred": 1, "val_fg_true": 1})
    trainer.fit()                      # not an improvement: last.npz is replaced, best.npz keeps its file
    assert not os.path.samefile(tmp_path / "last.npz", tmp_path / "best.npz")
    assert ts.load(tmp_path / "best.npz")["epoch"] == best_epoch == 1
    assert ts.load(tmp_path / "last.npz")["epoch"] == 2
    assert sorted(p.name for p in tmp_path.iterdir() if "tmp" in p.name) == []


def test_best_checkpoint_is_saved_again_where_hard_links_fail(tmp_path, monkeypatch):
    import os

    def no_links(*args):
        raise OSError("links not supported here")

    monkeypatch.setattr(os, "link", no_links)
    trainer = make_trainer(tmp_path, epochs=1)
    trainer.fit()
    assert not os.path.samefile(tmp_path / "last.npz", tmp_path / "best.npz")
    assert ts.load(tmp_path / "best.npz")["epoch"] == 1
