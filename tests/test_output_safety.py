"""Unusable --out folders and checkpoints with NaN/Inf weights are refused up front, in one
line with exit status 2; a training run never writes such a checkpoint."""
import os

import numpy as np
import pytest

import tinyseg as ts
from tinyseg.cli import main
from tinyseg.data import DataLoader, SyntheticPhantoms, split
from tinyseg.data import transforms as T
from tinyseg.data.io import write_png
from tinyseg.train import Trainer, TrainConfig, TrainingDiverged

# Each command with inputs that would fail *later* (missing data or checkpoint): the --out
# message proves the folder is checked before any other work.
COMMANDS = {
    "train": ["train", "--data", "/nonexistent/data", "--epochs", "1"],
    "evaluate": ["evaluate", "--checkpoint", "/nonexistent/best.npz", "--data", "/nonexistent/data"],
    "predict": ["predict", "--checkpoint", "/nonexistent/best.npz", "/nonexistent/image.png"],
    "bench": ["bench", "--configs", "B2-b1-16", "--repeats", "1", "--steps", "1"],
}


def one_error_line(capsys):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_out_naming_an_existing_file(command, tmp_path, capsys):
    target = tmp_path / "results.txt"
    target.write_text("keep me")
    assert main(COMMANDS[command] + ["--out", str(target)]) == 2
    err = one_error_line(capsys)
    assert f"--out {target}: is an existing file; expected a folder" in err
    assert target.read_text() == "keep me"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_out_under_a_file(command, tmp_path, capsys):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("")
    target = blocker / "run" / "deeper"
    assert main(COMMANDS[command] + ["--out", str(target)]) == 2
    err = one_error_line(capsys)
    assert f"{blocker} is a file, so no folder can be made under it" in err


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="root writes into any folder whatever its mode: test_out_without_permission_as_seen_by_access "
                           "covers the check there")
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_out_in_a_read_only_folder(command, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert main(COMMANDS[command] + ["--out", str(locked / "run")]) == 2
    finally:
        locked.chmod(0o700)
    err = one_error_line(capsys)
    assert f"no permission to write in {locked}" in err


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_out_without_permission_as_seen_by_access(command, tmp_path, capsys, monkeypatch):
    """The permission check asks os.access, which here answers as for a non-root user
    (root, as in CI containers, may write anywhere, so chmod alone cannot show it)."""
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if str(p) == str(locked) else real_access(p, mode))
    assert main(COMMANDS[command] + ["--out", str(locked / "run")]) == 2
    err = one_error_line(capsys)
    assert f"--out {locked / 'run'}: no permission to write in {locked} (the nearest existing folder" in err
    assert not (locked / "run").exists()


def test_existing_writable_folder_is_accepted(tmp_path):
    from tinyseg.cli import check_out_folder
    check_out_folder(tmp_path)                  # exists
    check_out_folder(tmp_path / "new" / "run")  # can be created
    assert not (tmp_path / "new").exists()      # the check itself creates nothing


# ----------------------------------------------------------------------------- NaN / Inf checkpoints

@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """A run folder from one tiny epoch on the phantoms (last.npz, best.npz)."""
    run = tmp_path_factory.mktemp("run")
    assert main(["train", "--epochs", "1", "--synthetic-count", "8", "--image-size", "32", "--base-channels", "2",
                 "--depth", "2", "--batch-size", "4", "--no-progress", "--out", str(run)]) == 0
    return run


def poisoned_copy(checkpoint, path, value):
    """``checkpoint`` with one element of its second weight tensor set to ``value``."""
    state = ts.load(checkpoint)
    name = list(state["model"])[1]
    state["model"][name] = state["model"][name].copy()
    state["model"][name].flat[0] = value
    ts.save(state, path)
    return name


@pytest.mark.parametrize("value, kind", [(np.nan, "1 NaN"), (np.inf, "1 +Inf"), (-np.inf, "1 -Inf")])
def test_evaluate_predict_and_resume_refuse_non_finite_weights(run_folder, tmp_path, capsys, value, kind):
    bad = tmp_path / "bad.npz"
    name = poisoned_copy(run_folder / "last.npz", bad, value)
    image = tmp_path / "image.png"
    write_png(image, np.random.default_rng(0).random((32, 32)).astype(np.float32))
    runs = [
        ["evaluate", "--checkpoint", str(bad), "--data", str(tmp_path), "--out", str(tmp_path / "eval")],
        ["predict", "--checkpoint", str(bad), str(image), "--out", str(tmp_path / "pred")],
        ["train", "--epochs", "2", "--synthetic-count", "8", "--image-size", "32", "--base-channels", "2",
         "--depth", "2", "--batch-size", "4", "--no-progress", "--out", str(tmp_path / "resumed"),
         "--resume", str(bad)],
    ]
    for argv in runs:
        assert main(argv) == 2, argv[0]
        err = one_error_line(capsys)
        assert f"weight {name!r} holds {kind} of" in err and str(bad) in err, (argv[0], err)
    assert not (tmp_path / "pred").exists() or not any((tmp_path / "pred").iterdir())
    assert not (tmp_path / "resumed" / "last.npz").exists()


def test_a_finite_checkpoint_still_loads(run_folder):
    model, _ = ts.models.from_checkpoint(run_folder / "best.npz")
    assert model.num_parameters() > 0


def test_training_never_writes_non_finite_weights_over_a_good_checkpoint(tmp_path):
    ts.manual_seed(0)
    data = SyntheticPhantoms(n=8, size=32, seed=1)
    train, val = split(data, 0.25, seed=0)
    trainer = Trainer(ts.models.UNet(1, 1, base_channels=2, depth=2),
                      DataLoader(train, 3, shuffle=True, seed=0, transform=T.ZScore()),
                      DataLoader(val, 3, shuffle=False, transform=T.ZScore()),
                      TrainConfig(epochs=2, batch_size=3, lr=1e-2, progress=False), out_dir=str(tmp_path),
                      log=lambda *_: None)
    validate = trainer.validate

    def validate_then_blow_up():
        # The weights go bad after the epoch's last step, where no loss is computed to see it.
        row = validate()
        if trainer.epoch == 1:
            trainer.model.parameters()[0].data[...] = np.inf
        return row

    trainer.validate = validate_then_blow_up
    trainer.config.epochs = 1
    trainer.fit()
    good = {name: (tmp_path / name).read_bytes() for name in ("last.npz", "best.npz")}
    trainer.config.epochs = 2
    with pytest.raises(TrainingDiverged, match=r"holds \d+ \+Inf of \d+ values, so no checkpoint was written; .*last.npz is kept"):
        trainer.fit()
    for name, content in good.items():
        assert (tmp_path / name).read_bytes() == content, name
    assert ts.serialization.first_non_finite(ts.load(tmp_path / "last.npz")["model"]) is None


def test_every_command_with_out_is_covered_here():
    """A new command taking --out gets the check from main(); this list must name it too."""
    import argparse
    from tinyseg.cli import build_parser
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    with_out = {name for name, sub in commands.choices.items() if any(a.dest == "out" for a in sub._actions)}
    assert with_out == set(COMMANDS)
