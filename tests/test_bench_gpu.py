"""`tinyseg bench --device`: the CPU path end to end, the roofline arithmetic, WRONG kernels, the GPU path's structure.

No speed is asserted: the GPU path runs on the CUDA emulation (NumPy arrays) or on the
CuPy stand-in of tests/gpu_standin.py with an injected timer, or on the real CuPy when a
GPU is here.
"""
import json
import math

import numpy as np
import pytest

from tinyseg import backend, bench, bench_gpu, cli, cuda
from tinyseg.functional import activation, conv

from . import gpu_standin


class FixedTimer:
    """Runs the timed call once (so it is exercised) and reports 1 ms per repeat."""

    name = "fixed (test)"

    def __init__(self):
        self.calls = 0

    def __call__(self, fn, warmup, repeats, budget_s):
        fn()
        self.calls += 1
        return [1e-3] * max(1, repeats)


def test_cpu_path_end_to_end_writes_table_json_and_chart(tmp_path, capsys, monkeypatch):
    """--device cuda without a GPU: one line says so, then the CPU part runs and writes everything.

    (PyTorch is left out here, to keep the test short; the next test runs it.)"""
    if backend.gpu_available():
        pytest.skip("a GPU is here: the no-GPU message does not apply")
    monkeypatch.setattr(bench_gpu, "torch_module", lambda: None)
    assert cli.main(["bench", "--device", "cuda", "--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.count("no GPU here") == 1
    result = json.loads((tmp_path / "kernels.json").read_text())
    ops = {r["op"] for r in result["rows"]}
    assert ops == set(bench_gpu.registries())
    for op, registry in bench_gpu.registries().items():
        cpu_names = {n for n in registry if not bench_gpu.is_gpu_kernel(n)}
        measured = {r["kernel"] for r in result["rows"] if r["op"] == op and r["where"] == "cpu"}
        assert cpu_names <= measured, op                # every CPU kernel of every registry
    assert all(r["status"] == "ok" for r in result["rows"]), [r for r in result["rows"] if r["status"] != "ok"]
    conv_rows = [r for r in result["rows"] if r["op"] == "conv2d" and r["kernel"] == "auto"]
    assert {r["primitive"] for r in conv_rows} == {"forward", "input_grad", "weight_grad"}
    assert len(conv_rows) == 3 * len(bench.conv_layers(2, 1, 16))
    assert result["steps"][0]["kernel"] == "auto" and result["steps"][0]["status"] == "ok"
    table = (tmp_path / "kernels.md").read_text()
    assert "## Training step" in table and "### conv2d" in table and "weight_grad" in table
    assert (tmp_path / "roofline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_pytorch_is_checked_and_timed_beside_the_kernels(tmp_path):
    pytest.importorskip("torch")
    result = bench_gpu.run("cpu", quick=True, ops=["relu", "adam"], timer=FixedTimer(), out_dir=str(tmp_path),
                           log=lambda line: None, step_kernels=["torch CPU"])
    torch_rows = [r for r in result["rows"] if r["kernel"] == "torch CPU"]
    assert {r["op"] for r in torch_rows} == {"relu", "adam"}
    assert all(r["status"] == "ok" and r["error"] < 1e-5 for r in torch_rows), torch_rows
    steps = {s["kernel"]: s for s in result["steps"]}
    assert steps["torch CPU"]["status"] == "ok" and steps["torch CPU"]["error"] < bench_gpu.STEP_TOLERANCE


def test_roofline_arithmetic_on_known_numbers():
    h200 = bench_gpu.peaks_for_name("NVIDIA H200")
    assert (h200.fp32_gflops, h200.bandwidth_gbs) == (67_000, 4_800)
    assert bench_gpu.peaks_for_name("NVIDIA H100 PCIe").fp32_gflops == 51_000     # specific before generic
    assert bench_gpu.peaks_for_name("NVIDIA H100 80GB HBM3").bandwidth_gbs == 3_350
    assert bench_gpu.peaks_for_name("Some Future GPU") is None
    assert bench_gpu.ridge_point(67_000, 4_800) == pytest.approx(13.958, abs=1e-3)
    # ReLU forward, float32: 1 FLOP per 8 bytes; at 0.125 FLOP/B the H200 allows 600 GFLOP/s
    relu = bench_gpu.arithmetic_intensity(1e6, 8e6)
    assert relu == 0.125
    assert bench_gpu.attainable_gflops(relu, 67_000, 4_800) == 600
    assert bench_gpu.fraction_of_roof(300, relu, 67_000, 4_800) == 0.5
    assert bench_gpu.bound_by(relu, 67_000, 4_800) == "memory"
    # The 64→64 conv at 256², batch 8: 38.65 GFLOP over 268.6 MB: compute bound, roof = peak
    flops = 2 * 8 * 64 * 64 * 9 * 256 * 256
    nbytes = 4 * (2 * 8 * 64 * 256 * 256 + 64 * 64 * 9)
    conv_intensity = bench_gpu.arithmetic_intensity(flops, nbytes)
    assert conv_intensity == pytest.approx(143.9, abs=0.1)
    assert bench_gpu.bound_by(conv_intensity, 67_000, 4_800) == "compute"
    assert bench_gpu.fraction_of_roof(33_500, conv_intensity, 67_000, 4_800) == 0.5
    # a measured row gets its % of the roof and the bound
    row = bench_gpu._with_times({"flops": flops, "bytes": nbytes}, [flops / 33_500e9])
    filled = bench_gpu.add_roofline(dict(row, status="ok"), h200)
    assert filled["pct_of_roof"] == pytest.approx(50.0) and filled["bound"] == "compute"
    assert filled["gflops"] == pytest.approx(33_500)


def test_the_case_list_counts_the_unets_work():
    cases = bench_gpu.op_cases(bench_gpu.FULL)
    conv_forward = [c for c in cases if c.op == "conv2d" and c.primitive == "forward"]
    assert sum(c.count * c.flops for c in conv_forward) == bench.conv_flops(64, 8, 256)
    assert sum(c.count for c in conv_forward) == 2 * 5 + 3 * 4 + 1
    relu = [c for c in cases if c.op == "relu" and c.primitive == "forward"]
    assert sum(c.count for c in relu) == 2 * 5 + 3 * 4                 # every 3×3 conv, not the head
    assert {c.shape for c in cases if c.op == "max_pool2d"} == \
        {"N8 C64 256²→128²", "N8 C128 128²→64²", "N8 C256 64²→32²", "N8 C512 32²→16²"}


class _WrongRelu:
    name = "wrong"

    @staticmethod
    def forward(x, xp):
        return xp.maximum(x, 0) * 1.01          # 1 % off: a wrong kernel, not rounding

    @staticmethod
    def backward(grad, y, xp):
        return grad * (y > 0)


class _BrokenRelu:
    name = "broken"

    @staticmethod
    def forward(*args):
        raise RuntimeError("launch failed")

    backward = forward


class _WrongConv(conv.Im2colKernel):
    name = "wrong-conv"

    @classmethod
    def forward(cls, x, weight, geometry):
        y = super().forward(x, weight, geometry)
        y[..., 0, 0] += 1.0                     # one corner off
        return y


def test_a_kernel_that_disagrees_is_reported_wrong_and_not_timed(monkeypatch, tmp_path):
    monkeypatch.setitem(activation.RELU_KERNELS, "wrong", _WrongRelu)
    monkeypatch.setitem(activation.RELU_KERNELS, "broken", _BrokenRelu)
    monkeypatch.setitem(conv.CONV2D_KERNELS, "wrong-conv", _WrongConv)
    timer = FixedTimer()
    result = bench_gpu.run("cpu", quick=True, ops=["relu", "conv2d"], with_torch=False, timer=timer,
                           out_dir=str(tmp_path), log=lambda line: None)
    rows = {(r["op"], r["primitive"], r["shape"], r["kernel"]): r for r in result["rows"]}
    wrong = [r for k, r in rows.items() if k[3] == "wrong" and k[1] == "forward"]
    assert wrong and all(r["status"] == "WRONG" and "ms" not in r for r in wrong)
    assert all(r["error"] == pytest.approx(0.01, rel=1e-3) for r in wrong)
    backward = [r for k, r in rows.items() if k[3] == "wrong" and k[1] == "backward"]
    assert all(r["status"] == "ok" for r in backward)           # its backward is right
    broken = [r for k, r in rows.items() if k[3] == "broken"]
    assert broken and all(r["status"] == "ERROR" and "launch failed" in r["message"] for r in broken)
    conv_forward = [r for k, r in rows.items() if k[3] == "wrong-conv" and k[1] == "forward"]
    assert conv_forward and all(r["status"] == "WRONG" for r in conv_forward)
    steps = {s["kernel"]: s for s in result["steps"]}
    assert steps["wrong-conv"]["status"] == "WRONG" and "ms" not in steps["wrong-conv"]
    assert steps["auto"]["status"] == "ok" and steps["reference"]["status"] == "ok"
    table = (tmp_path / "kernels.md").read_text()
    assert "WRONG" in table and "ERROR" in table


def test_gpu_path_structure_under_the_cuda_emulation(tmp_path):
    """device cuda + emulate: the GPU kernels run on NumPy arrays in cuda_emulation(), checked, then 'timed'."""
    timer = FixedTimer()
    result = bench_gpu.run("cuda", quick=True, emulate=True, ops=["relu"], with_torch=False, timer=timer,
                           out_dir=str(tmp_path), log=lambda line: None)
    assert result["meta"]["emulated"] and result["meta"]["timers"]["emulation"] == "fixed (test)"
    emulated = [r for r in result["rows"] if r["where"] == "emulation"]
    gpu_names = {n for n in activation.RELU_KERNELS if bench_gpu.is_gpu_kernel(n) and n != "cupy"}
    assert {r["kernel"] for r in emulated} == gpu_names
    assert all(r["status"] == "ok" and r["ms"] == 1.0 and "pct_of_roof" not in r for r in emulated)
    emulated_steps = [s for s in result["steps"] if s["where"] == "emulation"]
    assert {s["kernel"] for s in emulated_steps} == gpu_names
    assert all(s["status"] == "ok" for s in emulated_steps), emulated_steps
    assert "CUDA emulation" in (tmp_path / "kernels.md").read_text()


def _real_gpu():
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


@pytest.fixture
def gpu(monkeypatch):
    """The real CuPy when a GPU is here, else the stand-in (device arrays in host memory, kernels emulated)."""
    if _real_gpu():
        yield "real"
        return
    monkeypatch.setattr(backend, "_cupy", gpu_standin.build())
    yield "stand-in"
    for key in [k for k in cuda._modules if k[1]]:
        del cuda._modules[key]


def test_gpu_path_structure_on_device_arrays(gpu, tmp_path):
    """device cuda with CuPy: device arrays, CUDA-event timer, results copied back and checked, a GPU step."""
    # the "cupy" step: every op's CuPy kernel (the others would run the emulation, slowly)
    result = bench_gpu.run("cuda", quick=True, ops=["relu"], with_torch=False, out_dir=str(tmp_path),
                           log=lambda line: None, timer=None if gpu == "real" else FixedTimer(),
                           step_kernels=["cupy"])
    gpu_rows = [r for r in result["rows"] if r["where"] == "gpu"]
    expected = {n for n in activation.RELU_KERNELS if bench_gpu.is_gpu_kernel(n)} | {"auto (GPU)"}
    assert {r["kernel"] for r in gpu_rows} == expected
    assert all(r["status"] == "ok" for r in gpu_rows), gpu_rows
    assert all("speedup_vs_cpu" in r for r in gpu_rows)
    steps = {s["kernel"]: s for s in result["steps"]}
    assert set(steps) == {"auto", "cupy"}
    assert steps["cupy"]["where"] == "gpu" and steps["cupy"]["status"] == "ok", steps
    assert steps["cupy"]["error"] < bench_gpu.STEP_TOLERANCE
    if gpu == "stand-in":
        assert not result["meta"]["peaks"]["gpu"]["fp32_gflops"]      # unknown device: no roofs claimed
    assert math.isfinite(result["steps"][0]["ms"])


def test_cuda_event_timer_uses_events_on_the_stream():
    cp = gpu_standin.build()
    calls = []
    times = bench_gpu.CudaEventTimer(cp)(lambda: calls.append(1), warmup=2, repeats=3, budget_s=10.0)
    assert len(calls) == 5 and len(times) == 3 and all(t >= 0 for t in times)


def test_relative_error_flags_shape_and_nan_mismatches():
    a = np.ones((2, 3), np.float32)
    assert bench_gpu.relative_error(a, a) == 0
    assert bench_gpu.relative_error(a[:1], a) == math.inf
    b = a.copy()
    b[0, 0] = np.nan
    assert bench_gpu.relative_error(b, a) == math.inf
    assert bench_gpu.relative_error((a, a * 2), (a, a * 2.02)) == pytest.approx(0.02 / 2.02, rel=1e-5)


def test_the_report_states_the_issues_three_targets():
    def step(kernel, where, ms):
        return {"kernel": kernel, "where": where, "status": "ok", "ms": ms, "kernels": "", "flops": 1e12,
                "spread_ms": [ms, ms]}

    def conv(kernel, ms):
        return {"op": "conv2d", "primitive": "forward", "shape": "s", "count": 2, "kernel": kernel, "where": "gpu",
                "status": "ok", "ms": ms, "flops": 1e12, "bytes": 1e10}

    h200 = vars(bench_gpu.peaks_for_name("NVIDIA H200"))
    result = {"meta": {"peaks": {"gpu": h200}},
              "steps": [step("auto", "cpu", 30_000.0), step("auto (GPU)", "gpu", 500.0), step("cuda", "gpu", 400.0),
                        step("torch cuDNN", "gpu", 250.0), step("torch cuDNN TF32", "gpu", 160.0)],
              "rows": [conv("cuda_v3", 60.0), conv("cuda_v1", 600.0), conv("cuda_im2col", 50.0)]}
    lines = bench_gpu.targets(result)
    assert "(cuda) 400.0 ms = **1.60×** PyTorch + cuDNN" in lines[0] and "2.50× with TF32 on" in lines[0]
    assert "**75×** faster" in lines[1]
    # per step: 2 calls of 60 ms against 2 of 50 ms; 2 TFLOP in 0.12 s = 16,667 GFLOP/s at 100 FLOP/byte
    assert "(cuda_v3) 120.0 ms = **1.20×** im2col + cuBLAS (100.0 ms" in lines[2]
    assert "16,667 GFLOP/s, 25% of its roof (compute-bound at 100 FLOP/byte)" in lines[2]
