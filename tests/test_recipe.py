"""The default training recipe of `tinyseg train` (docs/recipe.md): the RGB polyp phantoms
on the command line, the defaults themselves, and that each can be switched off."""
import json

from tinyseg.cli import main


def test_train_on_the_synthetic_polyp_frames_with_the_default_recipe(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--synthetic", "polyps", "--synthetic-count", "6", "--synthetic-size", "48",
                 "--image-size", "32", "--epochs", "2", "--warmup-epochs", "1", "--batch-size", "3",
                 "--base-channels", "2", "--depth", "2", "--out", str(run), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "synthetic polyp frames (RGB, 6 images of 48²)" in out
    assert "input 3×32×32" in out
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["in_channels"] == 3 and config["model"]["norm"] == "instance"
    assert (config["train"]["schedule"], config["train"]["warmup_epochs"]) == ("poly", 1)
    assert (config["arguments"]["augment"], config["arguments"]["oversample_foreground"]) == ("nnunet", 1 / 3)


def test_polyps_are_binary(tmp_path, capsys):
    assert main(["train", "--synthetic", "polyps", "--classes", "3", "--out", str(tmp_path / "r")]) == 2
    assert "2 classes" in capsys.readouterr().err


def test_the_defaults_are_the_nnunet_like_recipe():
    from tinyseg.cli import build_parser
    args = build_parser().parse_args(["train"])
    assert (args.norm, args.loss, args.schedule, args.augment) == ("instance", "ce+dice", "poly", "nnunet")
    assert abs(args.oversample_foreground - 1 / 3) < 1e-12 and args.warmup_epochs is None
    assert build_parser().parse_args(["train", "--no-augment"]).augment == "none"


def test_each_part_of_the_recipe_can_be_switched_off(tmp_path):
    old = ["--norm", "none", "--schedule", "cosine", "--warmup-epochs", "0", "--augment", "unet",
           "--oversample-foreground", "0"]
    assert main(["train", "--synthetic-count", "6", "--image-size", "16", "--epochs", "1", "--batch-size", "3",
                 "--base-channels", "2", "--depth", "2", "--no-progress", "--out", str(tmp_path / "old"), *old]) == 0
    config = json.loads((tmp_path / "old" / "config.json").read_text())
    assert config["model"]["norm"] is None
    assert (config["train"]["schedule"], config["train"]["warmup_epochs"]) == ("cosine", 0)
    assert config["arguments"]["augment"] == "unet"


def test_bad_recipe_options(tmp_path, capsys):
    base = ["train", "--out", str(tmp_path / "r"), "--epochs", "3"]
    assert main(base + ["--warmup-epochs", "3"]) == 2
    assert "--warmup-epochs 3" in capsys.readouterr().err
    assert main(base + ["--oversample-foreground", "2"]) == 2
    assert "--oversample-foreground 2" in capsys.readouterr().err
    assert main(base + ["--schedule", "constant", "--warmup-epochs", "1"]) == 2
    assert "no warm-up" in capsys.readouterr().err
