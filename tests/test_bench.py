"""The benchmark harness: same network on both sides, workers run, tables render (no timings asserted)."""
import numpy as np
import pytest

from tinyseg import bench


def test_tinyseg_and_torch_compute_the_same_loss_and_gradients():
    pytest.importorskip("torch")
    check = bench.check_same_results(base=2, batch=1, size=32)
    assert check["loss_rel_diff"] < 1e-5
    assert check["grad_max_rel_diff"] < 1e-4


@pytest.mark.parametrize("mode", ["train", "infer"])
def test_a_worker_runs_and_reports_times_and_memory(mode):
    result = bench.worker("tinyseg", mode, base=2, batch=1, size=32, steps=2, warmup=0)
    assert len(result["times"]) == 2 and all(t > 0 for t in result["times"])
    assert result["peak_rss_mb"] > 0


def test_conv_flops_of_the_first_block_by_hand():
    # base 1, batch 1, 16²: level 0 alone is 2·9·(1·1 + 1·1)·256 multiply-adds·2
    total = bench.conv_flops(1, 1, 16)
    assert total > 2 * 9 * 2 * 256
    assert bench.conv_flops(1, 2, 16) == 2 * total


def test_markdown_table_has_one_row_per_measurement():
    rows = [{"config": "B16-b4-128", "mode": "train", "tinyseg_ms": 10.0, "tinyseg_spread_ms": [9.0, 11.0],
             "tinyseg_gflops": 50.0, "tinyseg_peak_rss_mb": 300.0, "torch_ms": 8.0, "torch_spread_ms": [7.5, 8.5],
             "torch_gflops": 60.0, "torch_peak_rss_mb": 400.0, "time_ratio": 1.25, "memory_ratio": 0.75}]
    table = bench.markdown_table(rows)
    lines = table.splitlines()
    assert len(lines) == 3 and "1.25" in lines[2] and lines[1].count("---") == lines[0].count("|") - 1


def test_conv_layers_cover_every_convolution_of_the_network():
    """The per-layer list holds each of the network's convolutions once: its FLOPs add up to conv_flops."""
    base, batch, size = 4, 2, 32
    layers = bench.conv_layers(base, batch, size)
    flops = sum(2 * L["N"] * L["C"] * L["O"] * L["k"] ** 2 * L["size"] ** 2 * len(L["layers"]) for L in layers)
    assert flops == bench.conv_flops(base, batch, size)
    names = [name for L in layers for name in L["layers"]]
    assert len(names) == len(set(names)) == 2 * 5 + 3 * 4 + 1


def test_layer_worker_times_every_kernel_on_every_shape(monkeypatch):
    monkeypatch.delenv("BENCH_KERNEL", raising=False)
    result = bench.layer_worker("tinyseg", base=2, batch=1, size=16, repeats=1, kernels=["im2col", "auto"])
    assert len(result["layers"]) == len(bench.conv_layers(2, 1, 16))
    for layer in result["layers"]:
        for name in ("im2col", "auto"):
            assert set(layer[name]) == {"forward", "input_grad", "weight_grad"}
            assert all(t > 0 for t in layer[name].values())
    table = bench.layers_markdown([dict(r, config="tiny") for r in result["layers"]], ["im2col", "auto"])
    assert table.count("\n") == len(result["layers"]) + 2       # header, rule, shapes, total


def test_a_worker_runs_with_a_chosen_kernel_and_block_size(monkeypatch):
    from tinyseg import backend
    from tinyseg.functional import conv
    monkeypatch.setenv("BENCH_KERNEL", "im2col")
    monkeypatch.setenv("BENCH_BLOCK_MB", "0.01")
    monkeypatch.setattr(conv, "BLOCK_BYTES", conv.BLOCK_BYTES)
    try:
        result = bench.worker("tinyseg", "train", base=2, batch=1, size=32, steps=1, warmup=0)
        assert backend.kernel_for("conv2d", "auto") == "im2col"
        assert conv.BLOCK_BYTES == int(0.01 * 2**20)
    finally:
        backend.set_kernel("conv2d", None)
    assert len(result["times"]) == 1


def test_a_worker_reports_context_switches_and_cpu_time_per_step():
    result = bench.worker("tinyseg", "infer", base=2, batch=1, size=32, steps=2, warmup=0)
    assert len(result["context_switches"]) == 2
    for step in result["context_switches"]:
        assert step["involuntary"] >= 0 and step["voluntary"] >= 0 and step["cpu_s"] >= 0


def test_markdown_table_shows_context_switches_when_measured():
    row = {"config": "B16-b4-128", "mode": "train", "tinyseg_ms": 10.0, "tinyseg_spread_ms": [9.0, 11.0],
           "tinyseg_gflops": 50.0, "tinyseg_peak_rss_mb": 300.0, "tinyseg_nivcsw_per_step": 640,
           "tinyseg_cpu_s_per_step": 0.7, "torch_ms": 8.0, "torch_spread_ms": [7.5, 8.5], "torch_gflops": 60.0,
           "torch_peak_rss_mb": 400.0, "torch_nivcsw_per_step": 12, "torch_cpu_s_per_step": 0.9,
           "time_ratio": 1.25, "memory_ratio": 0.75}
    lines = bench.markdown_table([row]).splitlines()
    assert "invol. switches" in lines[0] and "| 640 / 0.70 |" in lines[2] and "| 12 / 0.90 |" in lines[2]
    assert lines[1].count("---") == lines[0].count("|") - 1 == lines[2].count("|") - 1


def test_tune_worker_measures_every_conv_primitive_and_lists_them(tmp_path, monkeypatch):
    from tinyseg import backend, tuning
    monkeypatch.setattr(tuning, "TUNER", tuning.Tuner(directory=tmp_path, budget_s=0.001, max_repeats=1))
    try:
        result = bench.tune_worker(base=2, batch=1, size=32)
    finally:
        backend.set_tuning(None)
    primitives = {decision.split()[0] for decision in result["decisions"]}
    assert primitives == {"conv2d/forward", "conv2d/input_grad", "conv2d/weight_grad"}
    assert result["measured"] == len(result["decisions"]) and result["file"].startswith(str(tmp_path))
    table = bench.tuning_markdown([dict(result, config="B2")])
    assert table.count("\n| B2 |") == len(result["decisions"]) and "Machine:" in table
