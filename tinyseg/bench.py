"""Benchmarks: the reference U-Net in tinyseg against the same network in PyTorch (CPU).

The reference U-Net (the CPU-speed issue): 1 input and 1 output channel, depth 4, base
channels B doubling per level, two 3×3 convs (padding 1) + ReLU per block, 2×2 max-pool,
nearest 2× upsample + 3×3 conv (+ ReLU) halving the channels, skip concat, 1×1 head;
loss BCE-with-logits + soft Dice; Adam lr 1e-3; float32.

How it is measured, so that neither side is favoured:
* both models get the same weights, and before timing the benchmark checks that they
  compute the same loss and the same gradients;
* every measurement runs in a fresh process (``python -m tinyseg.bench worker ...``),
  alternating tinyseg / PyTorch, so thread pools, allocator state and machine drift
  do not bias one side; each process warms up, then times several steps;
* both sides use the same number of threads; peak memory is each process's peak RSS.
Results: median and spread (min–max) of the per-process medians, the time ratio
tinyseg / PyTorch, GFLOP/s (convolution FLOPs only), and peak RSS.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

CONFIGS = {
    "B16-b4-128": dict(base=16, batch=4, size=128),
    "B32-b2-256": dict(base=32, batch=2, size=256),
    "B64-b1-256": dict(base=64, batch=1, size=256),
}
DEPTH = 4


# ----------------------------------------------------------------------------- tinyseg side

def tinyseg_model(base, seed=0):
    import tinyseg as ts
    ts.manual_seed(seed)
    return ts.models.UNet(1, 1, base_channels=base, depth=DEPTH, padding="same", upsample="nearest")


def tinyseg_data(batch, size, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, 1, size, size)).astype(np.float32)
    yy, xx = np.mgrid[:size, :size]
    mask = (((yy - size / 2) ** 2 + (xx - size / 3) ** 2) < (size / 4) ** 2).astype(np.int64)
    return x, np.broadcast_to(mask, (batch, size, size)).copy()


def tinyseg_loss(model, x, y):
    import tinyseg as ts
    from tinyseg.train import segmentation_loss
    logits = model(ts.Tensor(x))
    return segmentation_loss(logits, y, "ce+dice")


# ----------------------------------------------------------------------------- PyTorch side

def torch_unet(base, depth=DEPTH, norm=None):
    """The PyTorch module of ``ts.models.UNet(1, 1, base, depth, padding="same", upsample="nearest", norm=norm)``
    for norm None or "batch": the same layers in the same order, with the same state-dict names
    (3×3 conv [without bias, then BatchNorm] -> ReLU, twice per block; 2×2 max-pool; nearest ×2
    upsample -> 3×3 conv -> ReLU; skip concat [skip, up]; 1×1 head)."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=norm is None)
            self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=norm is None)
            if norm == "batch":          # eps 1e-5, momentum 0.1, unbiased running variance: as tinyseg
                self.norm1, self.norm2 = nn.BatchNorm2d(cout), nn.BatchNorm2d(cout)
            else:
                self.norm1 = self.norm2 = nn.Identity()

        def forward(self, x):
            return torch.relu(self.norm2(self.conv2(torch.relu(self.norm1(self.conv1(x))))))

    class Up(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            self.conv = nn.Conv2d(cin, cout, 3, padding=1)

        def forward(self, x):
            return torch.relu(self.conv(nn.functional.interpolate(x, scale_factor=2, mode="nearest")))

    class TorchUNet(nn.Module):
        def __init__(self):
            super().__init__()
            ch = [base * 2 ** i for i in range(depth + 1)]
            self.encoder = nn.ModuleList([Block(1 if i == 0 else ch[i - 1], ch[i]) for i in range(depth + 1)])
            self.ups = nn.ModuleList([Up(ch[i + 1], ch[i]) for i in reversed(range(depth))])
            self.decoder = nn.ModuleList([Block(2 * ch[i], ch[i]) for i in reversed(range(depth))])
            self.head = nn.Conv2d(ch[0], 1, 1)

        def forward(self, x):
            skips = []
            for i, block in enumerate(self.encoder):
                if i > 0:
                    x = nn.functional.max_pool2d(x, 2)
                x = block(x)
                skips.append(x)
            skips.pop()
            for up, block in zip(self.ups, self.decoder):
                x = block(torch.cat([skips.pop(), up(x)], dim=1))
            return self.head(x)

    if norm not in (None, "batch"):
        raise ValueError(f"torch_unet: norm {norm!r}: expected None or 'batch'")
    return TorchUNet()


def torch_model_like(ts_model):
    """The same U-Net in PyTorch with every parameter and buffer of ``ts_model`` copied in
    (strict: the same names and shapes, or an error naming the difference)."""
    import torch
    config = ts_model.config
    model = torch_unet(config["base_channels"], config["depth"], config.get("norm"))
    ours = {name: np.ascontiguousarray(np.asarray(value)) for name, value in ts_model.state_dict().items()}
    theirs = model.state_dict()
    if set(ours) != set(theirs):
        raise RuntimeError(f"parameter names differ: {sorted(set(ours) ^ set(theirs))}")
    model.load_state_dict({name: torch.from_numpy(value) for name, value in ours.items()}, strict=True)
    return model


def torch_loss(model, x, y):
    import torch
    logits = model(torch.from_numpy(x))
    target = torch.from_numpy(y).float()[:, None]
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    p = torch.sigmoid(logits)
    dice = (2 * (p * target).sum() + 1.0) / (p.sum() + target.sum() + 1.0)
    return bce + (1 - dice)


def check_same_results(base=8, batch=2, size=64) -> dict:
    """Loss and every parameter gradient of both implementations, compared (float32)."""
    import torch
    model = tinyseg_model(base)
    tmodel = torch_model_like(model)
    x, y = tinyseg_data(batch, size)
    loss = tinyseg_loss(model, x, y)
    loss.backward()
    tloss = torch_loss(tmodel, x, y)
    tloss.backward()
    worst = 0.0
    tparams = dict(tmodel.named_parameters())
    for name, p in model.named_parameters():
        g, tg = p.grad, tparams[name].grad.numpy()
        worst = max(worst, float(np.abs(g - tg).max() / (np.abs(tg).max() + 1e-12)))
    return {"loss_tinyseg": float(loss.item()), "loss_torch": float(tloss.item()),
            "loss_rel_diff": abs(float(loss.item()) - float(tloss.item())) / abs(float(tloss.item())),
            "grad_max_rel_diff": worst}


# ----------------------------------------------------------------------------- one measurement

def conv_flops(base, batch, size) -> float:
    """Multiply-adds ×2 of every convolution in one forward pass of the reference U-Net."""
    ch = [base * 2 ** i for i in range(DEPTH + 1)]
    flops, s = 0.0, size
    for i in range(DEPTH + 1):
        cin = 1 if i == 0 else ch[i - 1]
        flops += 2 * 9 * (cin * ch[i] + ch[i] * ch[i]) * s * s
        if i < DEPTH:
            s //= 2
    for i in reversed(range(DEPTH)):
        s *= 2
        flops += 2 * 9 * ch[i + 1] * ch[i] * s * s                  # up conv
        flops += 2 * 9 * (2 * ch[i] * ch[i] + ch[i] * ch[i]) * s * s  # block
    flops += 2 * ch[0] * s * s
    return flops * batch


def _configure_tinyseg():
    """The conv2d kernel and block size a benchmark process runs with (BENCH_KERNEL, BENCH_BLOCK_MB)."""
    from . import backend
    from .functional import conv
    if os.environ.get("BENCH_KERNEL"):
        backend.set_kernel("conv2d", os.environ["BENCH_KERNEL"])
    if os.environ.get("BENCH_BLOCK_MB"):
        conv.BLOCK_BYTES = int(float(os.environ["BENCH_BLOCK_MB"]) * 2**20)


def worker(framework, mode, base, batch, size, steps, warmup) -> dict:
    x, y = tinyseg_data(batch, size)
    times = []
    if framework == "tinyseg":
        import tinyseg as ts
        _configure_tinyseg()
        model = tinyseg_model(base)
        if mode == "train":
            opt = ts.optim.Adam(model.parameters(), lr=1e-3)

            def step():
                loss = tinyseg_loss(model, x, y)
                loss.backward()
                opt.step()
                opt.zero_grad()
        else:
            model.eval()
            x1 = ts.Tensor(x[:1])

            def step():
                with ts.no_grad():
                    model(x1)
    else:
        import torch
        torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
        model = torch_model_like(tinyseg_model(base))
        if mode == "train":
            opt = torch.optim.Adam(model.parameters(), lr=1e-3)

            def step():
                loss = torch_loss(model, x, y)
                loss.backward()
                opt.step()
                opt.zero_grad()
        else:
            model.eval()
            x1 = torch.from_numpy(x[:1])

            def step():
                with torch.no_grad():
                    model(x1)
    switches = []
    for i in range(warmup + steps):
        before = resource.getrusage(resource.RUSAGE_SELF)
        start = time.perf_counter()
        step()
        if i >= warmup:
            times.append(time.perf_counter() - start)
            after = resource.getrusage(resource.RUSAGE_SELF)
            switches.append({"involuntary": after.ru_nivcsw - before.ru_nivcsw,
                             "voluntary": after.ru_nvcsw - before.ru_nvcsw,
                             "cpu_s": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)})
    return {"framework": framework, "mode": mode, "times": times, "peak_rss_mb": peak_rss_mb(),
            "context_switches": switches}


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB.

    From /proc/self/status (VmHWM, the high-water mark of this process's own memory)
    where it exists: getrusage's ru_maxrss survives fork + exec on Linux, so a worker
    would report at least the peak of the benchmark process that started it (measured:
    every small worker reported the runner's 388 MB).
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _worker_env(threads, kernel=None, block_mb=None):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads), NUMBA_NUM_THREADS=str(threads), BENCH_THREADS=str(threads))
    if kernel:
        env["BENCH_KERNEL"] = kernel
    if block_mb:
        env["BENCH_BLOCK_MB"] = str(block_mb)
    return env


def _spawn(framework, mode, cfg, steps, warmup, threads, kernel=None, block_mb=None) -> dict:
    env = _worker_env(threads, kernel, block_mb)
    cmd = [sys.executable, "-m", "tinyseg.bench", "worker", framework, mode, str(cfg["base"]), str(cfg["batch"]),
           str(cfg["size"]), str(steps), str(warmup)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"benchmark worker failed: {' '.join(cmd)}\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
        return True
    except ImportError:
        return False


def run(configs=None, repeats=3, steps=5, warmup=2, threads=2, out_dir="bench_out", log=print,
        kernel=None, block_mb=None) -> list[dict]:
    """Alternate tinyseg / PyTorch worker processes for each config and mode; write table, JSON, chart.

    ``kernel`` and ``block_mb`` choose tinyseg's conv2d kernel and block size (default:
    the library's defaults), to measure what each one buys.
    """
    configs = configs or list(CONFIGS)
    frameworks = ["tinyseg"] + (["torch"] if torch_available() else [])
    log(machine_line())
    if len(frameworks) == 1:
        log("PyTorch is not installed: timing tinyseg alone (pip install torch for the comparison)")
    else:
        check = check_same_results()
        log(f"same network check (B8, batch 2, 64²): loss {check['loss_tinyseg']:.6f} vs {check['loss_torch']:.6f}, "
            f"max relative gradient difference {check['grad_max_rel_diff']:.2e}")
    rows = []
    for name in configs:
        cfg = CONFIGS[name]
        for mode in ("train", "infer"):
            medians = {f: [] for f in frameworks}
            peaks = {f: [] for f in frameworks}
            involuntary = {f: [] for f in frameworks}
            cpu_seconds = {f: [] for f in frameworks}
            for r in range(repeats):
                order = frameworks if r % 2 == 0 else frameworks[::-1]
                for f in order:
                    result = _spawn(f, mode, cfg, steps, warmup, threads, kernel, block_mb)
                    medians[f].append(statistics.median(result["times"]))
                    peaks[f].append(result["peak_rss_mb"])
                    involuntary[f] += [s["involuntary"] for s in result.get("context_switches", [])]
                    cpu_seconds[f] += [s["cpu_s"] for s in result.get("context_switches", [])]
            flops = conv_flops(cfg["base"], cfg["batch"] if mode == "train" else 1, cfg["size"])
            flops *= 3 if mode == "train" else 1          # backward ≈ 2× forward (dX and dW)
            row = {"config": name, "mode": mode, **cfg, "kernel": kernel or "default"}
            for f in frameworks:
                med = statistics.median(medians[f])
                row[f"{f}_ms"] = 1000 * med
                row[f"{f}_spread_ms"] = [1000 * min(medians[f]), 1000 * max(medians[f])]
                row[f"{f}_gflops"] = flops / med / 1e9
                row[f"{f}_peak_rss_mb"] = max(peaks[f])
                if involuntary[f]:
                    # ru_nivcsw: the times the kernel took a core from one of the process's threads
                    row[f"{f}_nivcsw_per_step"] = statistics.median(involuntary[f])
                    row[f"{f}_cpu_s_per_step"] = statistics.median(cpu_seconds[f])
            if "torch" in frameworks:
                row["time_ratio"] = row["tinyseg_ms"] / row["torch_ms"]
                row["memory_ratio"] = row["tinyseg_peak_rss_mb"] / row["torch_peak_rss_mb"]
            rows.append(row)
            log(_format_row(row))
    write_reports(rows, out_dir, threads)
    return rows


def _format_row(row) -> str:
    text = f"{row['config']:<12} {row['mode']:<6} tinyseg {row['tinyseg_ms']:8.1f} ms"
    if "torch_ms" in row:
        text += (f"  torch {row['torch_ms']:8.1f} ms  ratio {row['time_ratio']:.2f}  "
                 f"memory {row['tinyseg_peak_rss_mb']:.0f}/{row['torch_peak_rss_mb']:.0f} MB")
    if "tinyseg_nivcsw_per_step" in row:
        text += f"  involuntary switches/step {row['tinyseg_nivcsw_per_step']:.0f}"
        if "torch_nivcsw_per_step" in row:
            text += f" vs {row['torch_nivcsw_per_step']:.0f}"
    return text


def markdown_table(rows) -> str:
    has_torch = any("torch_ms" in r for r in rows)
    has_switches = any("tinyseg_nivcsw_per_step" in r for r in rows)
    head = "| config | mode | tinyseg ms (min–max) | GFLOP/s | peak RSS MB |"
    if has_switches:
        head += " invol. switches / CPU s per step |"
    if has_torch:
        head += " PyTorch ms (min–max) | GFLOP/s | peak RSS MB |"
        if has_switches:
            head += " invol. switches / CPU s per step |"
        head += " time ratio | memory ratio |"
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for r in rows:
        s = r["tinyseg_spread_ms"]
        line = (f"| {r['config']} | {r['mode']} | {r['tinyseg_ms']:.1f} ({s[0]:.1f}–{s[1]:.1f}) | "
                f"{r['tinyseg_gflops']:.1f} | {r['tinyseg_peak_rss_mb']:.0f} |")
        if has_switches:
            line += _switches_cell(r, "tinyseg")
        if "torch_ms" in r:
            t = r["torch_spread_ms"]
            line += (f" {r['torch_ms']:.1f} ({t[0]:.1f}–{t[1]:.1f}) | {r['torch_gflops']:.1f} | "
                     f"{r['torch_peak_rss_mb']:.0f} |")
            if has_switches:
                line += _switches_cell(r, "torch")
            line += f" {r['time_ratio']:.2f} | {r['memory_ratio']:.2f} |"
        lines.append(line)
    return "\n".join(lines)


def machine_line() -> str:
    """CPU model, ISA flags, OpenBLAS core, cores and load: what every figure must be quoted with."""
    from . import threads as thread_control, tuning
    model, isa = tuning.cpu_description()
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    return (f"machine: {model}, ISA {' '.join(isa) or '?'}, OpenBLAS core {thread_control.blas_core()}, "
            f"{thread_control.available_cores()} cores available{load}; tuning "
            f"{'on' if tuning.enabled() else 'off'}")


def _switches_cell(row, framework) -> str:
    if f"{framework}_nivcsw_per_step" not in row:
        return " – |"
    return f" {row[f'{framework}_nivcsw_per_step']:.0f} / {row[f'{framework}_cpu_s_per_step']:.2f} |"


def write_reports(rows, out_dir, threads):
    os.makedirs(out_dir, exist_ok=True)
    from . import threads as thread_control, tuning
    model, isa = tuning.cpu_description()
    meta = {"machine": platform.processor() or platform.machine(), "cpu": model, "isa": isa,
            "openblas_core": thread_control.blas_core(), "cpus": os.cpu_count(),
            "cores_available": thread_control.available_cores(), "threads": threads,
            "python": platform.python_version(), "numpy": np.__version__, "tuning": tuning.enabled(),
            "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}
    with open(os.path.join(out_dir, "bench.json"), "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=2)
    with open(os.path.join(out_dir, "bench.md"), "w") as f:
        f.write(markdown_table(rows) + "\n")
    from .viz import plot_benchmark
    plot_benchmark([{"name": f"{r['config']} {r['mode']}", "config": r["config"], "tinyseg_ms": r["tinyseg_ms"],
                     "torch_ms": r.get("torch_ms")} for r in rows], os.path.join(out_dir, "bench.png"))


# ----------------------------------------------------------------------------- per-layer timings

def conv_layers(base, batch, size) -> list[dict]:
    """The distinct conv2d shapes of the reference U-Net's training step, with where they occur."""
    ch = [base * 2 ** i for i in range(DEPTH + 1)]
    found: dict = {}

    def add(name, cin, cout, s, k=3):
        key = (batch, cin, cout, s, k)
        found.setdefault(key, []).append(name)

    for i in range(DEPTH + 1):
        s = size // 2 ** i
        add(f"enc{i}.conv1", 1 if i == 0 else ch[i - 1], ch[i], s)
        add(f"enc{i}.conv2", ch[i], ch[i], s)
    for i in reversed(range(DEPTH)):
        s = size // 2 ** i
        add(f"up{i}.conv", ch[i + 1], ch[i], s)
        add(f"dec{i}.conv1", 2 * ch[i], ch[i], s)
        add(f"dec{i}.conv2", ch[i], ch[i], s)
    add("head", ch[0], 1, size, k=1)
    return [{"N": N, "C": C, "O": O, "size": S, "k": k, "layers": names}
            for (N, C, O, S, k), names in found.items()]


def _median_ms(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def layer_worker(framework, base, batch, size, repeats, kernels) -> dict:
    """Forward, input-gradient and weight-gradient time of each conv shape (one process)."""
    rng = np.random.default_rng(0)
    results = []
    if framework == "tinyseg":
        _configure_tinyseg()
        from .functional import conv
    else:
        import torch
        torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    for layer in conv_layers(base, batch, size):
        N, C, O, S, k = layer["N"], layer["C"], layer["O"], layer["size"], layer["k"]
        x = rng.standard_normal((N, C, S, S)).astype(np.float32)
        w = (rng.standard_normal((O, C, k, k)) * 0.1).astype(np.float32)
        dy = rng.standard_normal((N, O, S, S)).astype(np.float32)
        row = dict(layer)
        if framework == "tinyseg":
            p = k // 2
            geometry = conv._ConvGeometry.for_conv2d((S, S), (k, k), (1, 1), ((p, p), (p, p)), (1, 1))
            for name in kernels:
                kernel = conv.CONV2D_KERNELS[name]
                row[name] = {"forward": _median_ms(lambda: kernel.forward(x, w, geometry), repeats),
                             "input_grad": _median_ms(lambda: kernel.input_grad(dy, w, geometry), repeats),
                             "weight_grad": _median_ms(lambda: kernel.weight_grad(x, dy, geometry), repeats)}
        else:
            xt, wt, dyt = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(dy)
            args = (dyt, xt, wt, None, [1, 1], [k // 2, k // 2], [1, 1], False, [0, 0], 1)
            backward = torch.ops.aten.convolution_backward
            with torch.no_grad():
                row["torch"] = {
                    "forward": _median_ms(lambda: torch.nn.functional.conv2d(xt, wt, padding=k // 2), repeats),
                    "input_grad": _median_ms(lambda: backward(*args, [True, False, False]), repeats),
                    "weight_grad": _median_ms(lambda: backward(*args, [False, True, False]), repeats)}
        results.append(row)
    return {"framework": framework, "layers": results}


def run_layers(configs=None, repeats=5, threads=2, out_dir="bench_out", log=print, kernels=None) -> list[dict]:
    """Per-layer conv timings of each config: every tinyseg kernel and, when installed, PyTorch."""
    from .functional import conv
    configs = configs or list(CONFIGS)
    # By default the CPU kernels: these timings run on NumPy arrays ("cuda*", "numba_cuda*" and
    # "cupy" run on the GPU).
    kernels = kernels or [name for name in sorted(conv.CONV2D_KERNELS)
                          if not name.startswith(("cuda", "numba_cuda", "cupy"))]
    frameworks = ["tinyseg"] + (["torch"] if torch_available() else [])
    rows = []
    for name in configs:
        cfg = CONFIGS[name]
        merged = None
        for f in frameworks:
            cmd = [sys.executable, "-m", "tinyseg.bench", "layers", f, str(cfg["base"]), str(cfg["batch"]),
                   str(cfg["size"]), str(repeats), ",".join(kernels)]
            out = subprocess.run(cmd, env=_worker_env(threads), capture_output=True, text=True, check=False)
            if out.returncode != 0:
                raise RuntimeError(f"benchmark worker failed: {' '.join(cmd)}\n{out.stderr[-2000:]}")
            layers = json.loads(out.stdout.strip().splitlines()[-1])["layers"]
            merged = layers if merged is None else [{**a, **b} for a, b in zip(merged, layers)]
        for layer in merged:
            layer["config"] = name
            rows.append(layer)
            log(_format_layer(layer, kernels))
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "layers.json"), "w") as f:
        json.dump({"kernels": kernels, "rows": rows}, f, indent=2)
    with open(os.path.join(out_dir, "layers.md"), "w") as f:
        f.write(layers_markdown(rows, kernels) + "\n")
    return rows


def _step_ms(times):
    return times["forward"] + times["input_grad"] + times["weight_grad"]


def _format_layer(layer, kernels):
    text = f"{layer['config']:<11} N{layer['N']} {layer['C']:>4}->{layer['O']:<4} {layer['size']:>3}² k{layer['k']}"
    for name in kernels + (["torch"] if "torch" in layer else []):
        text += f"  {name} {_step_ms(layer[name]):7.1f}"
    return text + " ms (fwd+dX+dW)"


def layers_markdown(rows, kernels) -> str:
    """One line per conv shape: forward / dX / dW in ms per kernel and PyTorch, and the count in the network."""
    names = kernels + (["torch"] if rows and "torch" in rows[0] else [])
    head = "| config | shape (N, C→O, size², k) | × | " + " | ".join(f"{n} fwd / dX / dW ms" for n in names) + " |"
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    totals = {}
    for r in rows:
        cells = []
        for n in names:
            t = r[n]
            cells.append(f"{t['forward']:.1f} / {t['input_grad']:.1f} / {t['weight_grad']:.1f}")
            totals.setdefault(r["config"], {}).setdefault(n, 0.0)
            totals[r["config"]][n] += len(r["layers"]) * _step_ms(t)
        lines.append(f"| {r['config']} | {r['N']}, {r['C']}→{r['O']}, {r['size']}², {r['k']}×{r['k']} | "
                     f"{len(r['layers'])} | " + " | ".join(cells) + " |")
    for config, per_kernel in totals.items():
        lines.append(f"| {config} | **all convs of one step** | | "
                     + " | ".join(f"**{per_kernel[n]:.0f}**" for n in names) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the tuning cache

def tune_worker(base, batch, size) -> dict:
    """One training step and one single-image inference of the reference U-Net with tuning on.

    Every convolution shape they meet is measured (or read from the cache): afterwards the
    benchmark's workers, with the same thread counts, find every choice in the cache.
    """
    import tinyseg as ts
    from . import backend, tuning
    backend.set_tuning(True)
    tuning.TUNER.store_when_busy = True          # asked for: written even if the machine is busy
    _configure_tinyseg()
    model = tinyseg_model(base)
    x, y = tinyseg_data(batch, size)
    tinyseg_loss(model, x, y).backward()
    model.eval()
    with ts.no_grad():
        model(ts.Tensor(x[:1]))
    key = tuning.machine_key()
    return {"key": key, "file": str(tuning.TUNER.path(key)), "measured": tuning.TUNER.measured,
            "decisions": {name.split("/", 1)[1]: entry for name, entry in tuning.TUNER.decisions.items()}}


def tune(configs=None, threads=2, out_dir="bench_out", log=print) -> list[dict]:
    """Fill this machine's tuning cache for the benchmark U-Nets (``tinyseg bench --tune``), one
    process per config with the benchmark's thread counts; writes tuning.md / tuning.json."""
    configs = configs or list(CONFIGS)
    results = []
    for name in configs:
        cfg = CONFIGS[name]
        cmd = [sys.executable, "-m", "tinyseg.bench", "tune", str(cfg["base"]), str(cfg["batch"]), str(cfg["size"])]
        env = dict(_worker_env(threads), TINYSEG_TUNE="1")
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"tuning worker failed: {' '.join(cmd)}\n{out.stderr[-2000:]}")
        result = dict(json.loads(out.stdout.strip().splitlines()[-1]), config=name)
        results.append(result)
        winners = [entry["winner"] for entry in result["decisions"].values()]
        log(f"{name}: {len(winners)} choices ({result['measured']} measured now, the rest from the cache "
            f"{result['file']}): " + ", ".join(f"{w} {winners.count(w)}" for w in sorted(set(winners))))
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "tuning.json"), "w") as f:
        json.dump(results, f, indent=2)
    with open(os.path.join(out_dir, "tuning.md"), "w") as f:
        f.write(tuning_markdown(results) + "\n")
    return results


def tuning_markdown(results) -> str:
    """The machine key, then one line per decision: the winner and every candidate's median (ms)."""
    lines = []
    if results:
        key = results[0]["key"]
        lines.append(f"Machine: {key['cpu']}, ISA {' '.join(key['isa']) or '?'}, OpenBLAS core {key.get('blas')}, "
                     f"threads {key['threads']}, NumPy {key['numpy']}, Numba {key['numba']}")
        lines.append("")
    lines += ["| config | decision | winner | candidates (median ms) |", "| --- | --- | --- | --- |"]
    for result in results:
        for decision, entry in result["decisions"].items():
            times = ", ".join(f"{name} {ms:.2f}" for name, ms in sorted(entry["ms"].items(), key=lambda kv: kv[1]))
            lines.append(f"| {result['config']} | {decision} | {entry['winner']} | {times} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tinyseg.bench")
    sub = parser.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("worker")
    for name in ("framework", "mode"):
        w.add_argument(name)
    for name in ("base", "batch", "size", "steps", "warmup"):
        w.add_argument(name, type=int)
    layers = sub.add_parser("layers")
    layers.add_argument("framework")
    for name in ("base", "batch", "size", "repeats"):
        layers.add_argument(name, type=int)
    layers.add_argument("kernels")
    tuner = sub.add_parser("tune")
    for name in ("base", "batch", "size"):
        tuner.add_argument(name, type=int)
    args = parser.parse_args(argv)
    if args.cmd == "worker":
        result = worker(args.framework, args.mode, args.base, args.batch, args.size, args.steps, args.warmup)
    elif args.cmd == "tune":
        result = tune_worker(args.base, args.batch, args.size)
    else:
        result = layer_worker(args.framework, args.base, args.batch, args.size, args.repeats, args.kernels.split(","))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
