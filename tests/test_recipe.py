"""The default training recipe of `tinyseg train` (docs/recipe.md): the RGB polyp phantoms
on the command line, the defaults themselves, and that each can be switched off."""
import json

from tinyseg.cli import main


def test_train_on_the_synthetic_polyp_frames(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--synthetic", "polyps", "--synthetic-count", "6", "--synthetic-size", "48",
                 "--image-size", "32", "--epochs", "1", "--batch-size", "2", "--base-channels", "2", "--depth", "2",
                 "--out", str(run), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "synthetic polyp frames (RGB, 6 images of 48²)" in out
    assert "input 3×32×32" in out
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["in_channels"] == 3


def test_polyps_are_binary(tmp_path, capsys):
    assert main(["train", "--synthetic", "polyps", "--classes", "3", "--out", str(tmp_path / "r")]) == 2
    assert "2 classes" in capsys.readouterr().err
