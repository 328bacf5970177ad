"""examples/train_unet.py runs end to end (tiny settings) and leaves what it promises."""
import json
import runpy
import sys
from pathlib import Path

from tinyseg.metrics import METRICS

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "train_unet.py"


def test_train_unet_example_writes_metrics_json_like_evaluate(tmp_path, monkeypatch, capsys):
    out = tmp_path / "example"
    monkeypatch.setattr(sys, "argv", [str(EXAMPLE), "--epochs", "1", "--count", "10", "--image-size", "32",
                                      "--base-channels", "2", "--depth", "2", "--batch-size", "4",
                                      "--out", str(out)])
    runpy.run_path(str(EXAMPLE), run_name="__main__")
    for name in ("curves.png", "case_0.png", "model.npz", "metrics.json"):
        assert (out / name).is_file(), name
    report = json.loads((out / "metrics.json").read_text())
    # evaluate's layout: every metric's mean at the top level, one row per validation image
    assert set(METRICS) <= set(report) and {"per_image", "pooled", "empty", "units"} <= set(report)
    assert len(report["per_image"]) == 2                    # 20 % of 10 phantoms
    for row in report["per_image"]:
        assert isinstance(row["id"], str) and set(METRICS) <= set(row)
    assert abs(report["dice"] - sum(row["dice"] for row in report["per_image"]) / 2) < 1e-12
    assert f"dice        {report['dice']:>10.4f}" in capsys.readouterr().out
