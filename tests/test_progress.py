"""Training progress: a tqdm bar on a terminal only; in a log file or CI one line per epoch."""
import sys

import pytest

import tinyseg as ts
from tinyseg.cli import main
from tinyseg.data import DataLoader, SyntheticPhantoms, split
from tinyseg.data import transforms as T
from tinyseg.train import Trainer, TrainConfig


def fit(epochs=3):
    ts.manual_seed(0)
    train, val = split(SyntheticPhantoms(n=12, size=16, seed=1), 0.25, seed=0)
    trainer = Trainer(ts.models.UNet(1, 1, base_channels=2, depth=2),
                      DataLoader(train, 2, shuffle=True, seed=0, transform=T.ZScore()),   # 5 batches an epoch
                      DataLoader(val, 3, shuffle=False, transform=T.ZScore()),
                      TrainConfig(epochs=epochs, batch_size=2, progress=True))
    trainer.fit()


def epoch_lines(out):
    return [line for line in out.splitlines() if line.startswith("epoch ")]


def test_not_a_terminal_gives_one_line_per_epoch_and_no_bar(capsys):
    assert not sys.stdout.isatty() and not sys.stderr.isatty()      # captured: as in a log file
    fit(epochs=3)
    out, err = capsys.readouterr()
    assert [line.split()[1] for line in epoch_lines(out)] == ["1/3", "2/3", "3/3"]
    assert len(out.splitlines()) == 3, out
    assert "\r" not in out + err and "it/s" not in err and "s/it" not in err, err


def test_a_terminal_gets_the_bar(capsys, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    fit(epochs=1)
    out, err = capsys.readouterr()
    assert "\r" in err and "epoch 1/1" in err                       # tqdm redraws with carriage returns
    assert len(epoch_lines(out)) == 1


def test_cli_train_in_a_log_file_prints_each_epoch_once(tmp_path, capfd):
    assert main(["train", "--epochs", "2", "--synthetic-count", "10", "--image-size", "16", "--base-channels", "2",
                 "--depth", "2", "--batch-size", "2", "--out", str(tmp_path / "run")]) == 0
    out, err = capfd.readouterr()
    assert [line.split()[1] for line in epoch_lines(out)] == ["1/2", "2/2"]
    assert "\r" not in out + err, err
