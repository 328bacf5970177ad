"""``tinyseg bench --device cpu|cuda``: every kernel of every op on the U-Net's shapes, and a training step.

What is measured (the GPU issue's benchmark):

* **every op on the reference U-Net's layer shapes** (base 64, depth 4, batch 8, 256²,
  float32; ``--quick``: base 2, batch 1, 16²): conv2d forward, input gradient and weight
  gradient of each distinct conv shape; 2×2 max- and avg-pool forward/backward of each
  encoder level; nearest and bilinear 2× upsampling of each decoder level; ReLU of each
  conv output; BCE-with-logits of the logits; one Adam update of each weight size;
* **for every kernel of the op's registry** (names read from the registries at run time:
  CPU "numpy"/"im2col", "numba", ..., "auto"; GPU "cupy", "cuda", "cuda_v1", ...,
  "numba_cuda", "auto"), **and PyTorch** when installed (cuDNN with TF32 off and on on
  the GPU, its CPU kernels on the CPU);
* **a full training step** (forward, backward, Adam) per kernel choice, and PyTorch's.

How:

* **checked before timed**: each op is first computed once with the CPU reference kernel
  (the op's plain NumPy kernel, itself tested against ``tinyseg/reference.py``); every
  kernel's result is compared with it (largest absolute difference over the largest
  reference magnitude, at most ``TOLERANCE``). A kernel that disagrees is reported as
  WRONG and not timed; one that raises is ERROR. A training step is checked the same way
  on its loss and every parameter gradient against the CPU step.
* **timed**: warm-up calls, then repeated calls (until ``repeats`` or a time budget per
  measurement is spent, at least one); the median is reported with the min–max.
  GPU work is timed with CUDA events on the stream the kernels run on
  (``cupy.cuda.Event``, ``torch.cuda.Event`` for PyTorch), CPU work with the wall clock.
* **reported**: ms, GFLOP/s and GB/s from counted FLOPs and the compulsory bytes (each
  input read once, each output written once), arithmetic intensity (FLOP/byte), the
  fraction of the roofline at that intensity (``min(peak FLOP/s, intensity × peak
  bandwidth)``) and which roof bounds it, and the speed-up over the CPU (the CPU's
  default kernel, "auto", on the same shape).
* **written**: ``kernels.md`` (tables), ``kernels.json`` (every measurement) and
  ``roofline.png`` (each kernel × op a point under the device's roofs) in ``out_dir``.

Without a GPU, ``device="cuda"`` says so in one line and runs the CPU part. The CPU
part on a GPU machine times the reference and the default CPU kernels (all of them with
``cpu_kernels="all"``), to keep a full run within a few minutes.

``benchmarks/gpu_bench.py`` and ``tinyseg bench --device ...`` both call ``run``;
docs/gpu.md explains the numbers, benchmarks/gpu_check.sh runs it on a lent GPU.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import statistics
import time
from dataclasses import dataclass, field

import numpy as np

from . import backend

# ----------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class Config:
    """The reference U-Net (tinyseg/bench.py, depth 4) at one size."""

    base: int
    batch: int
    size: int

    @property
    def name(self):
        return f"B{self.base}-b{self.batch}-{self.size}"


FULL = Config(base=64, batch=8, size=256)
QUICK = Config(base=2, batch=1, size=16)

# Largest |kernel − reference| / largest |reference| accepted, float32. Sums of up to
# C·9 = 9,216 (conv forward) or N·H·W = 524,288 (weight gradient) products in another
# order differ from the reference by ~1e-6..1e-4 of the largest value; 1e-3 leaves room
# for that and catches any indexing error (which is O(1)). TF32 keeps 10 mantissa bits,
# so PyTorch with TF32 on is held to 1e-2. A training step adds ~30 layers of rounding.
TOLERANCE = 1e-3
TF32_TOLERANCE = 1e-2
STEP_TOLERANCE = 5e-3

REFERENCE_NAMES = ("numpy", "im2col")       # the op's plain NumPy kernel, first found
DEFAULT_NAME = "auto"
GPU_PREFIXES = ("cupy", "cuda", "numba_cuda")


def is_gpu_kernel(name: str) -> bool:
    """GPU kernels: "cupy", "cuda", "cuda_v1", "cuda_im2col", ..., "numba_cuda"."""
    return name.startswith(GPU_PREFIXES)


def registries() -> dict:
    """Each op's kernel registry, read now (kernels registered by any module so far are in)."""
    from . import optim
    from .functional import activation, conv, loss, pool, resize
    return {"conv2d": conv.CONV2D_KERNELS, "max_pool2d": pool.MAX_POOL2D_KERNELS,
            "avg_pool2d": pool.AVG_POOL2D_KERNELS, "upsample_nearest": resize.UPSAMPLE_NEAREST_KERNELS,
            "upsample_bilinear": resize.UPSAMPLE_BILINEAR_KERNELS, "relu": activation.RELU_KERNELS,
            "bce_with_logits": loss.BCE_WITH_LOGITS_KERNELS, "adam": optim.ADAM_KERNELS}


def reference_name(registry) -> str:
    for name in REFERENCE_NAMES:
        if name in registry:
            return name
    raise KeyError(f"no reference kernel ({' or '.join(REFERENCE_NAMES)}) in {sorted(registry)}")


# ----------------------------------------------------------------------------- roofline arithmetic


@dataclass(frozen=True)
class Peaks:
    """A device's roofs: peak FLOP/s (FP32, FP64) and memory bandwidth, and where they come from."""

    name: str
    fp32_gflops: float | None
    fp64_gflops: float | None
    bandwidth_gbs: float | None
    source: str

    def gflops(self, dtype=np.float32):
        return self.fp64_gflops if np.dtype(dtype) == np.float64 else self.fp32_gflops

    @property
    def known(self):
        return bool(self.fp32_gflops and self.bandwidth_gbs)


def arithmetic_intensity(flops: float, nbytes: float) -> float:
    """FLOPs per byte moved to or from memory."""
    return flops / nbytes if nbytes > 0 else math.inf


def attainable_gflops(intensity: float, peak_gflops: float, bandwidth_gbs: float) -> float:
    """The roofline: min(peak FLOP/s, intensity × bandwidth), in GFLOP/s."""
    return min(peak_gflops, intensity * bandwidth_gbs)


def ridge_point(peak_gflops: float, bandwidth_gbs: float) -> float:
    """The intensity (FLOP/byte) where the bandwidth roof meets the compute roof."""
    return peak_gflops / bandwidth_gbs


def bound_by(intensity: float, peak_gflops: float, bandwidth_gbs: float) -> str:
    """Which roof limits a kernel of this intensity: "memory" left of the ridge, "compute" right."""
    return "memory" if intensity < ridge_point(peak_gflops, bandwidth_gbs) else "compute"


def fraction_of_roof(gflops: float, intensity: float, peak_gflops: float, bandwidth_gbs: float) -> float:
    """Achieved / attainable at this intensity (1.0 = on the roof)."""
    return gflops / attainable_gflops(intensity, peak_gflops, bandwidth_gbs)


# Datasheet figures (dense, no tensor cores: FP32 and FP64 FLOP/s of the CUDA cores;
# HBM/GDDR bandwidth), by device name. Matched in order: more specific names first.
# (H200 SXM: 67 TFLOP/s FP32, 34 FP64, 4.8 TB/s; H100 SXM: 67, 34, 3.35 TB/s; ...)
KNOWN_DEVICES = (
    ("H200", 67_000, 34_000, 4_800),
    ("H100 PCIe", 51_000, 26_000, 2_000),
    ("H100 NVL", 60_000, 30_000, 3_900),
    ("H100", 67_000, 34_000, 3_350),
    ("GH200", 67_000, 34_000, 4_000),
    ("A100-SXM4-80GB", 19_500, 9_700, 2_039),
    ("A100 80GB PCIe", 19_500, 9_700, 1_935),
    ("A100", 19_500, 9_700, 1_555),
    ("L40S", 91_600, 1_430, 864),
    ("L40", 90_500, 1_410, 864),
    ("L4", 30_300, 490, 300),
    ("A10G", 31_200, 490, 600),
    ("A10", 31_200, 980, 600),
    ("RTX 4090", 82_600, 1_290, 1_008),
    ("RTX 3090", 35_600, 560, 936),
    ("V100", 15_700, 7_800, 900),
    ("T4", 8_100, 250, 320),
)

# FP32 lanes per SM by compute capability (for devices not in the table).
_FP32_LANES_PER_SM = {7: 64, 8: 64, 9: 128, 10: 128, 12: 128}


def peaks_for_name(name: str) -> Peaks | None:
    for pattern, fp32, fp64, bandwidth in KNOWN_DEVICES:
        if pattern.lower() in name.lower():
            return Peaks(name, fp32, fp64, bandwidth, f"datasheet ({pattern})")
    return None


def gpu_peaks(cp) -> Peaks:
    """The GPU's roofs: the datasheet table by name, else computed from CuPy's device attributes."""
    name = "unknown GPU"
    try:
        properties = cp.cuda.runtime.getDeviceProperties(0)
        name = properties["name"].decode() if isinstance(properties["name"], bytes) else str(properties["name"])
    except Exception:
        properties = {}
    known = peaks_for_name(name)
    if known:
        return known
    try:
        attributes = cp.cuda.Device(0).attributes       # keys: cudaDevAttr... without the prefix
        sms = attributes["MultiProcessorCount"]
        clock_khz = attributes["ClockRate"]
        memory_khz = attributes["MemoryClockRate"]
        bus_bits = attributes["GlobalMemoryBusWidth"]
        major = attributes.get("ComputeCapabilityMajor", properties.get("major", 8))
        lanes = _FP32_LANES_PER_SM.get(int(major), 64)
        fp32 = 2 * lanes * sms * clock_khz * 1e3 / 1e9
        bandwidth = 2 * memory_khz * 1e3 * bus_bits / 8 / 1e9        # double data rate
        return Peaks(name, fp32, None, bandwidth,
                     f"device attributes ({sms} SMs × {lanes} FP32 lanes × {clock_khz / 1e6:.2f} GHz × 2; "
                     f"{bus_bits}-bit bus × {memory_khz / 1e6:.2f} GHz × 2)")
    except Exception:
        return Peaks(name, None, None, None, "unknown (not in the table, no device attributes)")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_peaks(threads: int | None = None) -> Peaks:
    """The CPU's roofs: FP32 estimated as cores × clock × FLOPs/cycle, bandwidth measured by a NumPy copy.

    FLOPs/cycle per core: 2 FMA units × 8 float32 lanes × 2 (AVX2), 64 with AVX-512 on
    Intel (AMD's Zen 4 runs AVX-512 at the AVX2 rate). An estimate, said so in the report.
    """
    threads = threads or os.cpu_count() or 1
    mhz, flags, vendor = None, "", ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key = line.split(":", 1)[0].strip().lower()
                if key == "cpu mhz" and mhz is None:
                    mhz = float(line.split(":", 1)[1])
                elif key == "flags" and not flags:
                    flags = line
                elif key == "vendor_id" and not vendor:
                    vendor = line
    except OSError:
        pass
    per_cycle = 64 if ("avx512f" in flags and "Intel" in vendor) else 32 if "avx2" in flags else 16
    fp32 = threads * (mhz or 2500.0) / 1e3 * per_cycle
    return Peaks(cpu_model(), fp32, fp32 / 2, measure_copy_bandwidth(),
                 f"estimate: {threads} cores × {(mhz or 2500.0) / 1e3:.2f} GHz × {per_cycle} FLOP/cycle; "
                 f"bandwidth: NumPy copy of 64 MB, measured")


def measure_copy_bandwidth(megabytes=64, repeats=3) -> float:
    """GB/s of np.copyto on arrays of ``megabytes`` (bytes read + bytes written), best of ``repeats``."""
    a = np.ones(megabytes * 2**20 // 4, dtype=np.float32)
    b = np.empty_like(a)
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        np.copyto(b, a)
        best = min(best, time.perf_counter() - start)
    return 2 * a.nbytes / best / 1e9


# ----------------------------------------------------------------------------- the cases


@dataclass
class Case:
    """One op primitive on one shape: how to make its inputs, run a kernel on them, count its work."""

    op: str                    # registry name: "conv2d", "max_pool2d", ...
    primitive: str             # "forward", "input_grad", "weight_grad", "backward", "update"
    shape: str                 # what it runs on, for the tables
    count: int                 # how many times one training step runs it
    flops: float
    nbytes: float
    make: object               # make(rng) -> dict of NumPy inputs
    run: object                # run(kernel, inputs, xp) -> array or tuple of arrays (the outputs compared)
    prepare: object = None     # prepare(kernel, inputs, xp) -> inputs (untimed set-up, e.g. a winner map)
    torch: object = None       # torch(torch, inputs as torch tensors) -> callable timed, returning the outputs
    layers: list = field(default_factory=list)

    @property
    def key(self):
        return f"{self.op} {self.primitive} {self.shape}"

    @property
    def intensity(self):
        return arithmetic_intensity(self.flops, self.nbytes)


F32 = 4


def _randn(rng, shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def _conv_cases(config) -> list[Case]:
    from . import bench
    from .functional import conv
    cases = []
    for layer in bench.conv_layers(config.base, config.batch, config.size):
        N, C, O, S, k = layer["N"], layer["C"], layer["O"], layer["size"], layer["k"]
        p = k // 2
        geometry = conv._ConvGeometry.for_conv2d((S, S), (k, k), (1, 1), ((p, p), (p, p)), (1, 1))
        flops = 2.0 * N * O * C * k * k * S * S
        x_bytes, w_bytes, y_bytes = F32 * N * C * S * S, F32 * O * C * k * k, F32 * N * O * S * S
        shape = f"N{N} {C}→{O} {S}² {k}×{k}"

        def make(rng, N=N, C=C, O=O, S=S, k=k):
            return {"x": _randn(rng, (N, C, S, S)), "w": _randn(rng, (O, C, k, k), 1 / math.sqrt(C * k * k)),
                    "dy": _randn(rng, (N, O, S, S))}

        def torch_forward(torch, t, p=p):
            return lambda: torch.nn.functional.conv2d(t["x"], t["w"], padding=p)

        def torch_backward(which, p=p):
            def build(torch, t):
                mask = [which == 0, which == 1, False]
                return lambda: torch.ops.aten.convolution_backward(t["dy"], t["x"], t["w"], None, [1, 1], [p, p],
                                                                   [1, 1], False, [0, 0], 1, mask)[which]
            return build

        common = dict(op="conv2d", shape=shape, count=len(layer["layers"]), flops=flops, make=make,
                      layers=layer["layers"])
        cases += [
            Case(primitive="forward", nbytes=x_bytes + w_bytes + y_bytes,
                 run=lambda K, i, xp, g=geometry: K.forward(i["x"], i["w"], g), torch=torch_forward, **common),
            Case(primitive="input_grad", nbytes=y_bytes + w_bytes + x_bytes,
                 run=lambda K, i, xp, g=geometry: K.input_grad(i["dy"], i["w"], g), torch=torch_backward(0),
                 **common),
            Case(primitive="weight_grad", nbytes=x_bytes + y_bytes + w_bytes,
                 run=lambda K, i, xp, g=geometry: K.weight_grad(i["x"], i["dy"], g), torch=torch_backward(1),
                 **common),
        ]
    return cases


def _levels(config):
    """(channels, size) of each level of the depth-4 U-Net."""
    return [(config.base * 2 ** i, config.size // 2 ** i) for i in range(5)]


def _pool_cases(config) -> list[Case]:
    from .functional import pool
    N, cases = config.batch, []
    for C, S in _levels(config)[:-1]:
        n_in, n_out = N * C * S * S, N * C * (S // 2) ** 2
        shape = f"N{N} C{C} {S}²→{S // 2}²"

        def make(rng, C=C, S=S):
            return {"x": _randn(rng, (N, C, S, S)), "dy": _randn(rng, (N, C, S // 2, S // 2))}

        geometry = pool._WindowGeometry((N, C, S, S), (2, 2), (2, 2), (0, 0))

        def max_prepare(K, i, xp, g=geometry):
            return dict(i, winner=K.forward(xp, i["x"], g, True)[1])

        def torch_max_forward(torch, t):
            return lambda: torch.nn.functional.max_pool2d(t["x"], 2)

        def torch_max_backward(torch, t):
            _, indices = torch.nn.functional.max_pool2d(t["x"], 2, return_indices=True)
            return lambda: torch.ops.aten.max_pool2d_with_indices_backward(t["dy"], t["x"], [2, 2], [2, 2], [0, 0],
                                                                           [1, 1], False, indices)

        def torch_avg_forward(torch, t):
            return lambda: torch.nn.functional.avg_pool2d(t["x"], 2)

        def torch_avg_backward(torch, t):
            return lambda: torch.ops.aten.avg_pool2d_backward(t["dy"], t["x"], [2, 2], [2, 2], [0, 0], False, True,
                                                              None)

        cases += [
            # forward: 3 comparisons per window; reads x, writes y and the 1-byte winner
            Case("max_pool2d", "forward", shape, 1, 3.0 * n_out, F32 * (n_in + n_out) + n_out, make,
                 lambda K, i, xp, g=geometry: K.forward(xp, i["x"], g, True)[0], torch=torch_max_forward),
            # backward: no arithmetic; reads dy and the winner, writes dx
            Case("max_pool2d", "backward", shape, 1, 0.0, F32 * (n_out + n_in) + n_out, make,
                 lambda K, i, xp, g=geometry: K.backward(xp, i["dy"], i["winner"], g), prepare=max_prepare,
                 torch=torch_max_backward),
            Case("avg_pool2d", "forward", shape, 0, 4.0 * n_out, F32 * (n_in + n_out), make,
                 lambda K, i, xp, g=geometry: K.forward(xp, i["x"], g), torch=torch_avg_forward),
            Case("avg_pool2d", "backward", shape, 0, 1.0 * n_in, F32 * (n_out + n_in), make,
                 lambda K, i, xp, g=geometry: K.backward(xp, i["dy"], g), torch=torch_avg_backward),
        ]
    return cases


def _upsample_cases(config) -> list[Case]:
    N, cases = config.batch, []
    levels = _levels(config)
    for (_, S), (C, s) in zip(levels[:-1], levels[1:]):       # the level below, upsampled to S
        n_in, n_out = N * C * s * s, N * C * S * S
        shape = f"N{N} C{C} {s}²→{S}²"

        def make(rng, C=C, s=s, S=S):
            return {"x": _randn(rng, (N, C, s, s)), "dy": _randn(rng, (N, C, S, S))}

        def torch_forward(mode):
            def build(torch, t):
                return lambda: torch.nn.functional.interpolate(t["x"], scale_factor=2, mode=mode,
                                                               **({} if mode == "nearest" else {"align_corners": False}))
            return build

        def torch_nearest_backward(torch, t, s=s, S=S, C=C):
            return lambda: torch.ops.aten.upsample_nearest2d_backward(t["dy"], [S, S], [N, C, s, s], 2.0, 2.0)

        def torch_bilinear_backward(torch, t, s=s, S=S, C=C):
            return lambda: torch.ops.aten.upsample_bilinear2d_backward(t["dy"], [S, S], [N, C, s, s], False, 2.0, 2.0)

        cases += [
            Case("upsample_nearest", "forward", shape, 1, 0.0, F32 * (n_in + n_out), make,
                 lambda K, i, xp: K.forward(i["x"], (2, 2)), torch=torch_forward("nearest")),
            Case("upsample_nearest", "backward", shape, 1, 3.0 * n_in, F32 * (n_out + n_in), make,
                 lambda K, i, xp: K.backward(i["dy"], (2, 2)), torch=torch_nearest_backward),
            # each output (input pixel, backward) a weighted sum of 4 inputs: 4 multiplies + 3 adds
            Case("upsample_bilinear", "forward", shape, 0, 7.0 * n_out, F32 * (n_in + n_out), make,
                 lambda K, i, xp: K.forward(xp, i["x"], (2, 2), False), torch=torch_forward("bilinear")),
            Case("upsample_bilinear", "backward", shape, 0, 7.0 * n_out, F32 * (n_out + n_in), make,
                 lambda K, i, xp: K.backward(xp, i["dy"], (2, 2), False), torch=torch_bilinear_backward),
        ]
    return cases


def _relu_cases(config) -> list[Case]:
    from . import bench
    N, found = config.batch, {}
    for layer in bench.conv_layers(config.base, config.batch, config.size):
        if layer["k"] == 3:                                      # the head (1×1) has no ReLU
            key = (layer["O"], layer["size"])
            found[key] = found.get(key, 0) + len(layer["layers"])
    cases = []
    for (C, S), count in sorted(found.items()):
        n = N * C * S * S
        shape = f"N{N} C{C} {S}²"

        def make(rng, C=C, S=S):
            x = _randn(rng, (N, C, S, S))
            return {"x": x, "y": np.maximum(x, 0), "dy": _randn(rng, (N, C, S, S))}

        def torch_forward(torch, t):
            return lambda: torch.relu(t["x"])

        def torch_backward(torch, t):
            return lambda: torch.ops.aten.threshold_backward(t["dy"], t["y"], 0)

        cases += [Case("relu", "forward", shape, count, 1.0 * n, 2.0 * F32 * n, make,
                       lambda K, i, xp: K.forward(i["x"], xp), torch=torch_forward),
                  Case("relu", "backward", shape, count, 1.0 * n, 3.0 * F32 * n, make,
                       lambda K, i, xp: K.backward(i["dy"], i["y"], xp), torch=torch_backward)]
    return cases


def _bce_cases(config) -> list[Case]:
    N, S = config.batch, config.size
    n = N * S * S
    shape = f"N{N} 1 {S}²"

    def make(rng):
        return {"z": _randn(rng, (N, 1, S, S), 3.0), "t": (rng.random((N, 1, S, S)) < 0.3).astype(np.float32),
                "g": np.ones((), np.float32)}

    def torch_forward(torch, t):
        return lambda: torch.nn.functional.binary_cross_entropy_with_logits(t["z"], t["t"])

    def torch_backward(torch, t):
        z = t["z"].detach().requires_grad_(True)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z, t["t"])
        return lambda: torch.autograd.grad(loss, z, retain_graph=True)[0]

    # softplus(±z), exp, log1p and the weighted sum: ~8 operations per element
    return [Case("bce_with_logits", "forward", shape, 1, 8.0 * n, 2.0 * F32 * n, make,
                 lambda K, i, xp: K.forward(i["z"], i["t"], None, None, xp), torch=torch_forward),
            Case("bce_with_logits", "backward", shape, 1, 8.0 * n, 3.0 * F32 * n, make,
                 lambda K, i, xp: K.backward(i["g"], i["z"], i["t"], None, None, True, False, xp)[0],
                 torch=torch_backward)]


def _adam_cases(config) -> list[Case]:
    from . import bench
    from .optim import AdamHyperparameters
    sizes = {}
    for layer in bench.conv_layers(config.base, config.batch, config.size):
        n = layer["O"] * layer["C"] * layer["k"] ** 2
        sizes[n] = sizes.get(n, 0) + len(layer["layers"])
    hyper = AdamHyperparameters(1e-3, 0.9, 0.999, 1e-8, 0.0, False, 1)
    cases = []
    for n, count in sorted(sizes.items()):
        def make(rng, n=n):
            return {"p": _randn(rng, (n,)), "g": _randn(rng, (n,), 1e-2), "m": np.zeros(n, np.float32),
                    "v": np.zeros(n, np.float32)}

        def update(K, i, xp):
            # From a fresh copy of the state each call: the check sees exactly one step (the
            # copies are made by the caller's prepare; timing repeats update in place).
            K.update(i["p"], i["g"], i["m"], i["v"], lambda: xp.empty_like(i["p"]), hyper, xp)
            return i["p"], i["m"], i["v"]

        def prepare(K, i, xp):
            return {name: a.copy() for name, a in i.items()}

        def torch_update(torch, t):
            p = t["p"].clone().requires_grad_(True)
            p.grad = t["g"].clone()
            optimizer = torch.optim.Adam([p], lr=1e-3)
            def step():
                optimizer.step()
                return p.detach()
            return step

        # m, v updates, bias corrections, sqrt, divide: ~12 operations; reads p, g, m, v, writes p, m, v
        cases.append(Case("adam", "update", f"{n:,} weights", count, 12.0 * n, 7.0 * F32 * n, make, update,
                          prepare=prepare, torch=torch_update))
    return cases


def op_cases(config: Config = FULL) -> list[Case]:
    """Every op primitive on the reference U-Net's shapes (count: calls per training step)."""
    return (_conv_cases(config) + _pool_cases(config) + _upsample_cases(config) + _relu_cases(config)
            + _bce_cases(config) + _adam_cases(config))


# ----------------------------------------------------------------------------- where kernels run, and timers


# A warm-up call longer than this ends the warm-up: a kernel that slow (v1's weight
# gradient on the 256² layers, a CPU step) has long passed its first-call costs.
LONG_CALL_S = 0.5


def _warm_up_calls(fn, count, synchronize=lambda: None):
    for _ in range(count):
        start = time.perf_counter()
        fn()
        synchronize()
        if time.perf_counter() - start > LONG_CALL_S:
            return


class WallClockTimer:
    """CPU work: ``time.perf_counter`` around each call."""

    name = "wall clock"

    def __call__(self, fn, warmup, repeats, budget_s):
        _warm_up_calls(fn, warmup)
        times, spent = [], 0.0
        while len(times) < max(1, repeats) and (not times or spent < budget_s):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
            spent += times[-1]
        return times


class CudaEventTimer:
    """GPU work: a CUDA event recorded before and after each call on the current stream;
    the elapsed time between them once the second has completed (``cupy.cuda.get_elapsed_time``).
    The device is synchronised before timing, so earlier work is not counted."""

    name = "CUDA events"

    def __init__(self, cp):
        self.cp = cp

    def __call__(self, fn, warmup, repeats, budget_s):
        cp = self.cp
        _warm_up_calls(fn, warmup, cp.cuda.Device(0).synchronize)
        cp.cuda.Device(0).synchronize()
        times, spent = [], 0.0
        while len(times) < max(1, repeats) and (not times or spent < budget_s):
            start, end = cp.cuda.Event(), cp.cuda.Event()
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(cp.cuda.get_elapsed_time(start, end) / 1000.0)
            spent += times[-1]
        return times


class TorchCudaTimer:
    """PyTorch on the GPU: ``torch.cuda.Event(enable_timing=True)`` on PyTorch's current stream."""

    name = "CUDA events (PyTorch)"

    def __init__(self, torch):
        self.torch = torch

    def __call__(self, fn, warmup, repeats, budget_s):
        torch = self.torch
        _warm_up_calls(fn, warmup, torch.cuda.synchronize)
        torch.cuda.synchronize()
        times, spent = [], 0.0
        while len(times) < max(1, repeats) and (not times or spent < budget_s):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1000.0)
            spent += times[-1]
        return times


@dataclass
class Place:
    """Where a group of kernels runs: its array module, how arrays get there and back, its timer."""

    where: str                 # "cpu", "gpu" or "emulation"
    xp: object
    timer: object
    warmup: int
    repeats: int
    budget_s: float
    context: object = contextlib.nullcontext

    def put(self, a):
        if self.where == "gpu" and isinstance(a, np.ndarray):
            return self.xp.asarray(a)
        return a

    def put_all(self, a):
        return tuple(self.put(v) for v in a) if isinstance(a, tuple) else self.put(a)

    def get(self, a):
        if isinstance(a, tuple):
            return tuple(self.get(v) for v in a)
        return None if a is None else np.asarray(backend.to_device(a, "cpu"))


# ----------------------------------------------------------------------------- checking and timing one op


def relative_error(result, expected) -> float:
    """max |result − expected| / max |expected| over every output (inf for a shape mismatch or a new NaN).

    Computed where the arrays are (on the GPU for two CuPy arrays: only two numbers come
    back), in their own precision; a NaN where the other has none, or an inf difference,
    counts as inf.
    """
    results = result if isinstance(result, tuple) else (result,)
    expecteds = expected if isinstance(expected, tuple) else (expected,)
    if len(results) != len(expecteds):
        return math.inf
    worst = 0.0
    for a, b in zip(results, expecteds):
        try:
            xp = backend.get_array_module(a, b)
        except TypeError:                        # one on each device: compare on the host
            a, b, xp = backend.to_device(a, "cpu"), backend.to_device(b, "cpu"), np
        a, b = xp.asarray(a), xp.asarray(b)
        if a.shape != b.shape:
            return math.inf
        nan_b = xp.isnan(b)
        if not bool(xp.array_equal(xp.isnan(a), nan_b)):
            return math.inf
        if a.size == 0:
            continue
        a, b = xp.where(nan_b, 0, a), xp.where(nan_b, 0, b)
        scale = max(float(xp.abs(b).max()), 1e-30)
        difference = float(xp.abs(a - b).max())
        if not math.isfinite(difference):
            return math.inf
        worst = max(worst, difference / scale)
    return worst


def _short(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:200]


def measure(case: Case, kernel, label, place: Place, inputs, expected, tolerance=TOLERANCE) -> dict:
    """Check ``kernel`` on ``case`` against ``expected`` (already on the place), then time it: one result row."""
    row = {"op": case.op, "primitive": case.primitive, "shape": case.shape, "count": case.count,
           "kernel": label, "where": place.where, "flops": case.flops, "bytes": case.nbytes}
    xp = place.xp
    try:
        with place.context():
            device_inputs = {k: place.put(v) for k, v in inputs.items()}
            prepared = case.prepare(kernel, device_inputs, xp) if case.prepare else device_inputs
            checked = case.prepare(kernel, prepared, xp) if case.op == "adam" else prepared
            error = relative_error(case.run(kernel, checked, xp), expected)
            row["error"] = error
            if not error <= tolerance:
                row["status"] = "WRONG"
                return row
            times = place.timer(lambda: case.run(kernel, prepared, xp), place.warmup, place.repeats, place.budget_s)
    except Exception as exc:                 # a kernel missing a primitive, a launch error, ...
        row.update(status="ERROR", message=_short(exc))
        return row
    return _with_times(row, times)


def _with_times(row, times):
    median = statistics.median(times)
    row.update(status="ok", ms=1000 * median, spread_ms=[1000 * min(times), 1000 * max(times)], runs=len(times))
    if median > 0:
        row["gflops"] = row["flops"] / median / 1e9
        if "bytes" in row:
            row["gbs"] = row["bytes"] / median / 1e9
    return row


def add_roofline(row, peaks: Peaks | None):
    """Intensity, % of the roof at that intensity, and the bounding roof, when the peaks are known."""
    row["intensity"] = arithmetic_intensity(row["flops"], row["bytes"])
    if row.get("status") != "ok" or peaks is None or not peaks.known:
        return row
    peak = peaks.gflops()
    if row["flops"] > 0:
        row["pct_of_roof"] = 100 * fraction_of_roof(row["gflops"], row["intensity"], peak, peaks.bandwidth_gbs)
        row["bound"] = bound_by(row["intensity"], peak, peaks.bandwidth_gbs)
    else:                                    # pure data movement: the bandwidth roof
        row["pct_of_roof"] = 100 * row["gbs"] / peaks.bandwidth_gbs
        row["bound"] = "memory"
    return row


def _torch_measure(case, torch, torch_device, label, timer, place_like, inputs, expected, tolerance):
    row = {"op": case.op, "primitive": case.primitive, "shape": case.shape, "count": case.count,
           "kernel": label, "where": "gpu" if torch_device == "cuda" else "cpu", "flops": case.flops,
           "bytes": case.nbytes}
    if case.torch is None:
        row.update(status="ERROR", message="no PyTorch equivalent")
        return row
    try:
        tensors = {k: torch.from_numpy(np.ascontiguousarray(v)).to(torch_device) for k, v in inputs.items()}
        with torch.no_grad() if case.op != "bce_with_logits" else contextlib.nullcontext():
            fn = case.torch(torch, tensors)
            result = fn()
            outputs = result if isinstance(result, tuple) else (result,)
            error = relative_error(tuple(o.detach().cpu().numpy() for o in outputs),
                                   expected if isinstance(expected, tuple) else (expected,))
            if case.op == "adam":        # PyTorch's state is its own: compare the parameter only
                error = relative_error(outputs[0].detach().cpu().numpy(), expected[0])
            row["error"] = error
            if not error <= tolerance:
                row["status"] = "WRONG"
                return row
            fn = case.torch(torch, tensors)          # a fresh set-up (Adam's state) for the timing
            times = timer(fn, place_like.warmup, place_like.repeats, place_like.budget_s)
    except Exception as exc:
        row.update(status="ERROR", message=_short(exc))
        return row
    return _with_times(row, times)


# ----------------------------------------------------------------------------- PyTorch settings


def torch_module():
    try:
        import torch
        return torch
    except ImportError:
        return None


def set_torch_tf32(torch, enabled: bool):
    """TF32 for cuDNN convolutions and cuBLAS matmuls on or off (PyTorch's newer API when present;
    mixing it with the legacy ``allow_tf32`` flags is an error in recent PyTorch)."""
    precision = "tf32" if enabled else "ieee"
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        torch.backends.cudnn.conv.fp32_precision = precision
        torch.backends.cuda.matmul.fp32_precision = precision
    else:
        torch.backends.cudnn.allow_tf32 = enabled
        torch.backends.cuda.matmul.allow_tf32 = enabled


def torch_gpu_available(torch) -> bool:
    try:
        return bool(torch is not None and torch.cuda.is_available())
    except Exception:
        return False


# ----------------------------------------------------------------------------- the training step


def _tinyseg_step_parts(config, place: Place, choice: dict):
    """(loss_and_grads(), step()) of tinyseg's U-Net on ``place`` with the kernels of ``choice``."""
    import tinyseg as ts
    from . import bench
    from .train import segmentation_loss
    model = bench.tinyseg_model(config.base)
    if place.where == "gpu":
        model.to("cuda")
    x, y = bench.tinyseg_data(config.batch, config.size)
    x, y = place.put(x), place.put(y)
    optimizer = ts.optim.Adam(model.parameters(), lr=1e-3)

    @contextlib.contextmanager
    def kernels():
        with contextlib.ExitStack() as stack:
            for op, name in choice.items():
                stack.enter_context(backend.use_kernel(op, name))
            yield

    def loss_and_grads():
        with kernels():
            optimizer.zero_grad()
            loss = segmentation_loss(model(ts.Tensor(x)), y, "ce+dice")
            loss.backward()
        grads = {name: place.get(p.grad.data if isinstance(p.grad, ts.Tensor) else p.grad)
                 for name, p in model.named_parameters()}
        return float(place.get(loss.data)), grads

    def step():
        with kernels():
            loss = segmentation_loss(model(ts.Tensor(x)), y, "ce+dice")
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()

    return loss_and_grads, step


def _torch_step_parts(config, torch, device):
    from . import bench
    model = bench.torch_model_like(bench.tinyseg_model(config.base)).to(device)
    x, y = bench.tinyseg_data(config.batch, config.size)
    x = torch.from_numpy(x).to(device)
    target = torch.from_numpy(y).float()[:, None].to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def loss_fn():
        logits = model(x)
        bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
        p = torch.sigmoid(logits)
        dice = (2 * (p * target).sum() + 1.0) / (p.sum() + target.sum() + 1.0)
        return bce + (1 - dice)

    def loss_and_grads():
        optimizer.zero_grad()
        loss = loss_fn()
        loss.backward()
        return float(loss.item()), {n: p.grad.detach().cpu().numpy() for n, p in model.named_parameters()}

    def step():
        loss = loss_fn()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    return loss_and_grads, step


def step_error(loss_grads, reference) -> float:
    """The worse of the loss's relative difference and each gradient's (max |Δ| / max |reference|)."""
    loss, grads = loss_grads
    ref_loss, ref_grads = reference
    worst = abs(loss - ref_loss) / max(abs(ref_loss), 1e-30)
    if set(grads) != set(ref_grads):
        return math.inf
    for name, g in grads.items():
        worst = max(worst, relative_error(g, ref_grads[name]))
    return worst


def _step_row(label, where, kernels_text, flops):
    return {"kernel": label, "where": where, "kernels": kernels_text, "flops": flops}


def _measure_step(row, parts, reference, timer, warmup, repeats, budget_s, tolerance=STEP_TOLERANCE):
    try:
        loss_and_grads, step = parts()
        if reference is not None:
            row["error"] = step_error(loss_and_grads(), reference)
            if not row["error"] <= tolerance:
                row["status"] = "WRONG"
                return row
        times = timer(step, warmup, repeats, budget_s)
    except Exception as exc:
        row.update(status="ERROR", message=_short(exc))
        return row
    return _with_times(row, times)


# ----------------------------------------------------------------------------- the run


def _gpu_choices(regs, names) -> list[tuple[str, dict]]:
    """A step per GPU kernel name: that kernel for every op that has it, the default for the others."""
    choices = [("auto", {})]
    for name in names:
        if name == DEFAULT_NAME:
            continue
        choices.append((name, {op: name for op, reg in regs.items() if name in reg}))
    return choices


def _describe_choice(choice: dict) -> str:
    return ", ".join(f"{op}={name}" for op, name in choice.items()) or "every op's default"


def run(device="cpu", quick=False, out_dir="bench_gpu_out", log=print, cpu_kernels=None, emulate=False,
        timer=None, with_torch=True, with_step=True, ops=None, step_kernels=None, config=None) -> dict:
    """Check and time every kernel of every op (and a training step); write kernels.md/.json and roofline.png.

    device       "cpu" or "cuda". "cuda" without a GPU logs one line and runs the CPU part,
                 unless ``emulate``: then the GPU kernels ("cuda*", "numba_cuda") run on NumPy
                 arrays inside ``cuda_emulation()``, timed by the wall clock (structure, not speed).
    quick        tiny shapes (QUICK) and few repeats.
    config       another size of the U-Net (a ``Config``), timed as carefully as the full one.
    cpu_kernels  CPU kernels to time: "all", or None (all on device "cpu"; on a GPU run the
                 reference and default ones only, to keep a full run within minutes).
    timer        replaces every timer (tests inject a fake one).
    ops          only these ops (default: all); the steps then try the kernel names these ops have.
    step_kernels only the training steps of these kernel names (default: all; the CPU default
                 step always runs: it is the reference the others are checked against).
    """
    config = config or (QUICK if quick else FULL)
    regs = {op: reg for op, reg in registries().items() if ops is None or op in ops}
    torch = torch_module() if with_torch else None
    gpu = device == "cuda" and not emulate and backend.gpu_available()
    if device == "cuda" and not gpu and not emulate:
        log("tinyseg bench: no GPU here (CuPy missing or no CUDA device): running the CPU part only")
    # On a GPU run the CPU is timed once per op (for the speed-up), after a warm-up pass on
    # tiny shapes that compiles the Numba kernels; on a CPU run, as carefully as the GPU.
    cpu_place = Place("cpu", np, timer or WallClockTimer(), warmup=0 if quick or gpu else 1,
                      repeats=2 if quick else 1 if gpu else 5, budget_s=0.2 if quick else 3.0)
    places = [cpu_place]
    gpu_place = None
    if gpu:
        cp = backend.cupy_module()
        gpu_place = Place("gpu", cp, timer or CudaEventTimer(cp), warmup=1 if quick else 2,
                          repeats=3 if quick else 10, budget_s=0.5 if quick else 2.0)
        peaks = {"gpu": gpu_peaks(cp)}
    elif device == "cuda" and emulate:
        gpu_place = Place("emulation", np, timer or WallClockTimer(), warmup=0, repeats=1, budget_s=0.0,
                          context=backend.cuda_emulation)
        peaks = {}
    else:
        peaks = {}
    if gpu_place is not None:
        places.append(gpu_place)
    peaks["cpu"] = cpu_peaks()
    if cpu_kernels is None:
        cpu_kernels = "all" if device == "cpu" or gpu_place is None else "default"

    def kernels_for(place, reg):
        names = sorted(reg)
        if place.where == "cpu":
            names = [n for n in names if not is_gpu_kernel(n)]
            if cpu_kernels != "all":
                names = [n for n in names if n in (reference_name(reg), DEFAULT_NAME)]
            return names
        names = [n for n in names if is_gpu_kernel(n) or (place.where == "gpu" and n == DEFAULT_NAME)]
        if place.where == "emulation":           # "cupy" needs a real GPU
            names = [n for n in names if n != "cupy"]
        return names

    meta = {"device": device, "config": config.name, "quick": quick, "cpu": cpu_model(), "threads": os.cpu_count(),
            "python": platform.python_version(), "numpy": np.__version__, "torch": getattr(torch, "__version__", None),
            "gpu": peaks["gpu"].name if "gpu" in peaks else None, "emulated": gpu_place is not None and not gpu,
            "timers": {p.where: getattr(p.timer, "name", type(p.timer).__name__) for p in places},
            "peaks": {k: vars(v) for k, v in peaks.items()}, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    log(f"tinyseg bench: {config.name} (base {config.base}, batch {config.batch}, {config.size}², float32) on "
        + " and ".join(p.where for p in places) + (f"; GPU: {meta['gpu']}" if meta["gpu"] else ""))

    rows, steps = [], []
    result = {"meta": meta, "rows": rows, "steps": steps}
    torch_gpu = gpu and torch_gpu_available(torch)
    # Interrupted (Ctrl-C, or SIGINT from a time box as in benchmarks/gpu_check.sh), it still
    # writes the tables and the chart of what it measured.
    try:
        if not quick:
            for case in [c for c in op_cases(QUICK) if c.op in regs]:        # compile, untimed
                _warm_up(case, regs[case.op], kernels_for(cpu_place, regs[case.op]))
        # The steps first: they are the headline, and a run cut short still has them.
        if with_step:
            run_steps(config, regs, places, torch if with_torch else None, torch_gpu, timer, quick, log,
                      step_kernels, steps)
            write_reports(result, out_dir, chart=False)
        rng = np.random.default_rng(0)
        cases = [c for c in op_cases(config) if c.op in regs]
        for case in cases:
            reg = regs[case.op]
            inputs = case.make(rng)
            reference = reg[reference_name(reg)]
            prepared = case.prepare(reference, inputs, np) if case.prepare else inputs
            expected = case.run(reference, prepared, np)
            expected = tuple(np.array(e, copy=True) for e in expected) if isinstance(expected, tuple) \
                else np.array(expected, copy=True)
            expected_on = {place.where: place.put_all(expected) for place in places}
            for place in places:
                for name in kernels_for(place, reg):
                    label = f"{name} (GPU)" if place.where == "gpu" and name == DEFAULT_NAME else name
                    roofs = {"gpu": peaks.get("gpu"), "cpu": peaks["cpu"]}.get(place.where)   # none for emulation
                    rows.append(add_roofline(measure(case, reg[name], label, place, inputs, expected_on[place.where]),
                                             roofs))
            if torch is not None:
                runs = [("torch CPU", "cpu", cpu_place.timer, cpu_place, None)]
                if torch_gpu:
                    runs += [("torch cuDNN", "cuda", timer or TorchCudaTimer(torch), gpu_place, False),
                             ("torch cuDNN TF32", "cuda", timer or TorchCudaTimer(torch), gpu_place, True)]
                for label, torch_device, torch_timer, like, tf32 in runs:
                    if tf32 is not None:
                        set_torch_tf32(torch, tf32)
                        torch.backends.cudnn.benchmark = True
                    rows.append(add_roofline(
                        _torch_measure(case, torch, torch_device, label, torch_timer, like, inputs, expected,
                                       TF32_TOLERANCE if tf32 else TOLERANCE),
                        peaks.get("gpu" if torch_device == "cuda" else "cpu")))
                if torch_gpu:
                    set_torch_tf32(torch, False)
            _add_speedups(rows, case)
            for row in rows:
                if row["op"] == case.op and row["primitive"] == case.primitive and row["shape"] == case.shape:
                    log(_format_row(row))
            if case is not cases[-1] and case.op != cases[cases.index(case) + 1].op:
                write_reports(result, out_dir, chart=False)          # a run cut short keeps what it measured
    except KeyboardInterrupt:
        meta["interrupted"] = True
        log("interrupted: writing what was measured so far")
    write_reports(result, out_dir)
    log(f"wrote {os.path.join(out_dir, 'kernels.md')}, kernels.json and roofline.png")
    return result


def _warm_up(case, registry, names):
    """Run each kernel once on a tiny case (Numba compiles on first use); errors are left to the real run."""
    inputs = case.make(np.random.default_rng(0))
    for name in names:
        try:
            kernel = registry[name]
            prepared = case.prepare(kernel, inputs, np) if case.prepare else inputs
            case.run(kernel, prepared, np)
        except Exception:
            pass


def run_steps(config, regs, places, torch, torch_gpu, timer, quick, log, step_kernels=None,
              steps=None) -> list[dict]:
    """One training step per kernel choice: checked against the CPU step (loss and gradients), then timed.

    A choice named after a kernel uses it for every op that has one by that name (of all
    the registries, not only ``regs``), the default kernel for the others.
    """
    from . import bench
    all_regs = registries()

    def wanted(label):
        return step_kernels is None or label in step_kernels

    flops = 3 * bench.conv_flops(config.base, config.batch, config.size)
    cpu_place = places[0]
    steps = [] if steps is None else steps                # appended to as they are measured
    reference = None
    warmup, repeats, budget = (0, 1, 0.0) if quick else (1, 3, 20.0)
    cpu_timer = timer or WallClockTimer()
    row = _step_row("auto", "cpu", "every op's default", flops)
    # The CPU step is the reference; a warm-up at a small size compiles the Numba kernels.
    try:
        if not quick:
            _tinyseg_step_parts(QUICK, cpu_place, {})[1]()
        loss_and_grads, step = _tinyseg_step_parts(config, cpu_place, {})
        reference = loss_and_grads()
        # (its check above was the warm-up; on a GPU run the CPU step is timed once)
        _with_times(row, cpu_timer(step, 0, 1 if len(places) > 1 else repeats, budget))
    except Exception as exc:
        row.update(status="ERROR", message=_short(exc))
    steps.append(row)
    log(_format_step(row))

    def tinyseg_on(place, label, choice):
        row = _step_row(f"{label} (GPU)" if label == "auto" else label, place.where, _describe_choice(choice), flops)
        with place.context():
            steps.append(_measure_step(row, lambda: _tinyseg_step_parts(config, place, choice), reference,
                                       place.timer, place.warmup, min(place.repeats, 5), place.budget_s * 5))
        log(_format_step(steps[-1]))

    def pytorch_on(label, torch_device, tf32):
        if not wanted(label):
            return
        if tf32 is not None:
            set_torch_tf32(torch, tf32)
            torch.backends.cudnn.benchmark = True
        row = _step_row(label, "gpu" if torch_device == "cuda" else "cpu", "PyTorch", flops)
        if torch_device == "cuda":
            counts, torch_timer = ((1, 1) if quick else (2, 5)), timer or TorchCudaTimer(torch)
        else:                                 # after its check; once on a GPU run, as tinyseg's CPU step
            counts, torch_timer = ((0, 1) if len(places) > 1 else (warmup, repeats)), cpu_timer
        steps.append(_measure_step(row, lambda: _torch_step_parts(config, torch, torch_device), reference,
                                   torch_timer, *counts, budget, TF32_TOLERANCE if tf32 else STEP_TOLERANCE))
        log(_format_step(steps[-1]))
        if tf32:
            set_torch_tf32(torch, False)

    # The GPU's default and PyTorch + cuDNN first (the headline comparison), then each
    # kernel name, the slowest expected last (v1, Numba CUDA): a run cut short loses least.
    for place in places[1:]:
        names = sorted({n for reg in regs.values() for n in reg if is_gpu_kernel(n)})
        if place.where == "emulation":
            names = [n for n in names if n != "cupy"]
        choices = sorted(_gpu_choices(all_regs, names), key=lambda c: _step_priority(c[0]))
        if place.where == "emulation":
            choices = [c for c in choices if c[0] != "auto"]
        for k, (label, choice) in enumerate([c for c in choices if wanted(c[0])]):
            tinyseg_on(place, label, choice)
            if k == 0 and place.where == "gpu" and torch_gpu and torch is not None:
                pytorch_on("torch cuDNN", "cuda", False)
                pytorch_on("torch cuDNN TF32", "cuda", True)
    if torch is not None:
        pytorch_on("torch CPU", "cpu", None)
    if len(places) == 1:                      # device "cpu": the plain NumPy kernels, and every conv kernel
        cpu_choices = [("reference", {op: reference_name(reg) for op, reg in all_regs.items()})]
        cpu_choices += [(name, {"conv2d": name}) for name in sorted(regs.get("conv2d", {}))
                        if not is_gpu_kernel(name) and name not in (DEFAULT_NAME, reference_name(regs["conv2d"]))]
        for label, choice in [c for c in cpu_choices if wanted(c[0])]:
            row = _step_row(label, "cpu", _describe_choice(choice), flops)
            steps.append(_measure_step(row, lambda c=choice: _tinyseg_step_parts(config, cpu_place, c), reference,
                                       cpu_timer, warmup, repeats, budget))
            log(_format_step(steps[-1]))
    _add_step_ratios(steps)
    return steps


def _step_priority(label):
    """Order of the GPU steps: the default, the hand-written CUDA C and CuPy, then v1, then Numba CUDA."""
    return label != "auto", "numba" in label, "v1" in label, label


def _add_speedups(rows, case):
    """× CPU: the CPU default kernel's time (else the reference kernel's) over each kernel's, same shape."""
    same = [r for r in rows if r["op"] == case.op and r["primitive"] == case.primitive and r["shape"] == case.shape]
    cpu = {r["kernel"]: r["ms"] for r in same if r["where"] == "cpu" and r.get("status") == "ok"}
    base = cpu.get(DEFAULT_NAME) or next((cpu[n] for n in REFERENCE_NAMES if n in cpu), None)
    for r in same:
        if base and r.get("status") == "ok" and r["ms"] > 0:
            r["speedup_vs_cpu"] = base / r["ms"]


def _add_step_ratios(steps):
    ok = {s["kernel"]: s["ms"] for s in steps if s.get("status") == "ok"}
    cpu, cudnn = ok.get("auto"), ok.get("torch cuDNN")
    for s in steps:
        if s.get("status") != "ok":
            continue
        if cpu:
            s["speedup_vs_cpu"] = cpu / s["ms"]
        if cudnn:
            s["vs_torch_cudnn"] = s["ms"] / cudnn
        s["gflops"] = s["flops"] / (s["ms"] / 1000) / 1e9


# ----------------------------------------------------------------------------- reports


def _format_row(row) -> str:
    text = f"  {row['op']:<17} {row['primitive']:<11} {row['shape']:<24} {row['kernel']:<18}"
    if row.get("status") != "ok":
        return text + f" {row.get('status')}" + (f" (error {row['error']:.1e})" if "error" in row else "") \
            + (f" {row['message']}" if "message" in row else "")
    text += f" {row['ms']:9.3f} ms"
    if row.get("flops"):
        text += f" {row['gflops']:9.1f} GFLOP/s"
    text += f" {row['gbs']:8.1f} GB/s"
    if "pct_of_roof" in row:
        text += f" {row['pct_of_roof']:5.1f}% of roof ({row['bound']})"
    if "speedup_vs_cpu" in row:
        text += f" ×{row['speedup_vs_cpu']:.1f} CPU"
    return text


def _format_step(row) -> str:
    text = f"step {row['kernel']:<18} ({row['kernels']})"
    if row.get("status") != "ok":
        return text + f": {row.get('status')}" + (f" (error {row['error']:.1e})" if "error" in row else "") \
            + (f" {row['message']}" if "message" in row else "")
    return text + f": {row['ms']:.1f} ms (min–max {row['spread_ms'][0]:.1f}–{row['spread_ms'][1]:.1f})"


def _cell(row) -> str:
    if row is None:
        return ""
    if row.get("status") != "ok":
        return row.get("status", "")
    return f"{row['ms']:.3g}"


def kernel_summary(rows) -> list[dict]:
    """Per kernel and op: the time of all of a training step's calls (count × median) and the FLOP/s over them.

    Ops the U-Net's step does not use (avg-pool, bilinear upsampling) count one call per shape.
    """
    groups = {}
    for r in rows:
        key = (r["kernel"], r["where"], r["op"])
        g = groups.setdefault(key, {"kernel": r["kernel"], "where": r["where"], "op": r["op"], "ms": 0.0,
                                    "flops": 0.0, "bytes": 0.0, "complete": True, "cases": 0})
        g["cases"] += 1
        g["in_step"] = r["count"] > 0
        if r.get("status") != "ok":
            g["complete"] = False
            continue
        calls = r["count"] or 1              # ops the step does not use: one call per shape
        g["ms"] += calls * r["ms"]
        g["flops"] += calls * r["flops"]
        g["bytes"] += calls * r["bytes"]
    for g in groups.values():
        if g["ms"] > 0:
            g["gflops"] = g["flops"] / (g["ms"] / 1000) / 1e9
            g["gbs"] = g["bytes"] / (g["ms"] / 1000) / 1e9
            g["intensity"] = arithmetic_intensity(g["flops"], g["bytes"])
    return list(groups.values())


def targets(result) -> list[str]:
    """The GPU issue's three targets, from a run's steps and per-kernel totals (those it measured)."""
    steps = [s for s in result["steps"] if s.get("status") == "ok"]
    gpu_steps = [s for s in steps if s["where"] == "gpu" and not s["kernel"].startswith("torch")]
    by_label = {s["kernel"]: s for s in steps}
    lines = []
    if gpu_steps:
        best = min(gpu_steps, key=lambda s: s["ms"])
        cudnn, tf32, cpu = by_label.get("torch cuDNN"), by_label.get("torch cuDNN TF32"), by_label.get("auto")
        if cudnn:
            text = (f"training step: tinyseg's fastest GPU path ({best['kernel']}) {best['ms']:.1f} ms = "
                    f"**{best['ms'] / cudnn['ms']:.2f}×** PyTorch + cuDNN, TF32 off ({cudnn['ms']:.1f} ms; "
                    f"target ≤ 2×)")
            if tf32:
                text += f"; {best['ms'] / tf32['ms']:.2f}× with TF32 on ({tf32['ms']:.1f} ms)"
            lines.append(text)
        if cpu:
            lines.append(f"GPU step against the CPU step (tinyseg's default, {cpu['ms']:.0f} ms): "
                         f"**{cpu['ms'] / best['ms']:.0f}×** faster (target ≥ 30×)")
    conv = {g["kernel"]: g for g in kernel_summary(result["rows"])
            if g["op"] == "conv2d" and g["where"] == "gpu" and g["complete"] and g["ms"] > 0}
    hand_written = [g for name, g in conv.items() if name.startswith("cuda") and name != "cuda_im2col"]
    if hand_written and "cuda_im2col" in conv:
        best = min(hand_written, key=lambda g: g["ms"])
        gemm = conv["cuda_im2col"]
        text = (f"convolutions of one step (forward, input and weight gradients, every layer shape): best "
                f"hand-written CUDA C ({best['kernel']}) {best['ms']:.1f} ms = **{best['ms'] / gemm['ms']:.2f}×** "
                f"im2col + cuBLAS ({gemm['ms']:.1f} ms; target ≤ 1.5×)")
        peak = result["meta"]["peaks"].get("gpu", {})
        if peak.get("fp32_gflops") and peak.get("bandwidth_gbs"):
            roof = attainable_gflops(best["intensity"], peak["fp32_gflops"], peak["bandwidth_gbs"])
            text += (f"; {best['gflops']:,.0f} GFLOP/s, {100 * best['gflops'] / roof:.0f}% of its roof "
                     f"({bound_by(best['intensity'], peak['fp32_gflops'], peak['bandwidth_gbs'])}-bound at "
                     f"{best['intensity']:.0f} FLOP/byte)")
        lines.append(text)
    return lines


def markdown_report(result) -> str:
    meta, rows, steps = result["meta"], result["rows"], result["steps"]
    lines = [f"# tinyseg kernel benchmark: {meta['config']} ({'quick' if meta['quick'] else 'full'})", ""]
    lines.append(f"- date: {meta['date']}; CPU: {meta['cpu']} ({meta['threads']} threads); "
                 f"Python {meta['python']}, NumPy {meta['numpy']}, PyTorch {meta['torch'] or 'not installed'}")
    if meta.get("gpu"):
        lines.append(f"- GPU: {meta['gpu']}")
    if meta.get("emulated"):
        lines.append("- GPU kernels ran in the **CUDA emulation** on the CPU: the times are not GPU speeds")
    if meta.get("interrupted"):
        lines.append("- **interrupted**: the tables hold what was measured before")
    for where, p in meta["peaks"].items():
        if p["fp32_gflops"]:
            lines.append(f"- {where} roofs: {p['fp32_gflops']:,.0f} GFLOP/s FP32, "
                         f"{p['bandwidth_gbs'] or float('nan'):,.0f} GB/s ({p['source']})")
    lines.append("- timers: " + ", ".join(f"{k}: {v}" for k, v in meta["timers"].items())
                 + "; each result checked against the CPU reference kernel first (WRONG: disagrees, not timed; "
                   "ERROR: raised)")
    lines.append("")
    headline = targets(result)
    if headline:
        lines += ["## Against the GPU issue's targets", ""] + [f"- {line}" for line in headline] + [""]
    if steps:
        lines += ["## Training step (forward, backward, Adam)", "",
                  "| kernels | where | ms (min–max) | conv GFLOP/s | × CPU | ÷ PyTorch cuDNN | check |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for s in steps:
            check = s.get("status", "")
            if "error" in s:
                check += f" ({s['error']:.1e})"
            if s.get("status") == "ok":
                speedup = f"{s['speedup_vs_cpu']:.1f}" if "speedup_vs_cpu" in s else ""
                vs_cudnn = f"{s['vs_torch_cudnn']:.2f}" if "vs_torch_cudnn" in s else ""
                lines.append(f"| {s['kernel']} ({s['kernels']}) | {s['where']} | {s['ms']:.1f} "
                             f"({s['spread_ms'][0]:.1f}–{s['spread_ms'][1]:.1f}) | {s['gflops']:.1f} | "
                             f"{speedup} | {vs_cudnn} | {check} |")
            else:
                lines.append(f"| {s['kernel']} ({s['kernels']}) | {s['where']} | | | | | {check} "
                             f"{s.get('message', '')} |")
        lines.append("")
    summary = kernel_summary(rows)
    lines += ["## Per kernel: all of a training step's calls of each op", "",
              "(ops marked * are not in the step: one call per shape)", "",
              "| op | kernel | where | ms per step | GFLOP/s | GB/s | FLOP/B | all shapes ok |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for g in sorted(summary, key=lambda g: (g["op"], g["where"], g["ms"] if g["complete"] else math.inf)):
        op = g["op"] + ("" if g.get("in_step") else " *")
        if g["ms"] > 0:
            lines.append(f"| {op} | {g['kernel']} | {g['where']} | {g['ms']:.2f} | {g.get('gflops', 0):.1f} | "
                         f"{g.get('gbs', 0):.1f} | {g.get('intensity', 0):.2f} | {'yes' if g['complete'] else 'no'} |")
        else:
            lines.append(f"| {op} | {g['kernel']} | {g['where']} | | | | | no |")
    lines.append("")
    lines += ["## Per op and shape: median ms of each kernel (best: GFLOP/s, % of the roof, bound)", ""]
    for op in dict.fromkeys(r["op"] for r in rows):
        op_rows = [r for r in rows if r["op"] == op]
        kernels = list(dict.fromkeys((r["kernel"], r["where"]) for r in op_rows))
        head = "| primitive | shape | × | " + " | ".join(f"{k} ({w})" for k, w in kernels) + " | best |"
        lines += [f"### {op}", "", head, "|" + " --- |" * (head.count("|") - 1)]
        for key in dict.fromkeys((r["primitive"], r["shape"]) for r in op_rows):
            same = [r for r in op_rows if (r["primitive"], r["shape"]) == key]
            by_kernel = {(r["kernel"], r["where"]): r for r in same}
            ok = [r for r in same if r.get("status") == "ok"]
            best = min(ok, key=lambda r: r["ms"]) if ok else None
            best_text = ""
            if best:
                best_text = f"{best['kernel']}: {best.get('gflops', 0):.0f} GFLOP/s, {best['gbs']:.0f} GB/s"
                if "pct_of_roof" in best:
                    best_text += f", {best['pct_of_roof']:.0f}% of roof ({best['bound']})"
                if "speedup_vs_cpu" in best:
                    best_text += f", ×{best['speedup_vs_cpu']:.1f} CPU"
            lines.append(f"| {key[0]} | {key[1]} | {same[0]['count']} | "
                         + " | ".join(_cell(by_kernel.get(k)) for k in kernels) + f" | {best_text} |")
        lines.append("")
    return "\n".join(lines)


def roofline_points(rows) -> list[dict]:
    """One point per kernel and op primitive: FLOPs and bytes of all its shapes over their time."""
    groups = {}
    for r in rows:
        if r.get("status") != "ok" or not r.get("flops"):
            continue
        g = groups.setdefault((r["kernel"], r["where"], r["op"], r["primitive"]),
                              {"kernel": r["kernel"], "where": r["where"], "op": r["op"],
                               "primitive": r["primitive"], "flops": 0.0, "bytes": 0.0, "seconds": 0.0})
        weight = max(r["count"], 1)
        g["flops"] += weight * r["flops"]
        g["bytes"] += weight * r["bytes"]
        g["seconds"] += weight * r["ms"] / 1000
    points = []
    for g in groups.values():
        g["intensity"] = arithmetic_intensity(g["flops"], g["bytes"])
        g["gflops"] = g["flops"] / g["seconds"] / 1e9
        points.append(g)
    return points


def write_reports(result, out_dir, chart=True):
    from .viz import plot_roofline
    os.makedirs(out_dir, exist_ok=True)
    # Each file written whole, then renamed: a run stopped while writing leaves the previous one.
    for name, text in (("kernels.json", json.dumps(result, indent=1, default=_json_default)),
                       ("kernels.md", markdown_report(result) + "\n")):
        partial = os.path.join(out_dir, f".{name}.partial")
        with open(partial, "w") as f:
            f.write(text)
        os.replace(partial, os.path.join(out_dir, name))
    if not chart:
        return
    peaks = {k: Peaks(**v) for k, v in result["meta"]["peaks"].items()}
    title = f"tinyseg kernels, {result['meta']['config']}" + (f" on {result['meta']['gpu']}" if result["meta"]["gpu"]
                                                               else " on the CPU")
    plot_roofline(roofline_points(result["rows"]), peaks, os.path.join(out_dir, "roofline.png"), title=title)


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return str(value)
