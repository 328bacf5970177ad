# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 6 · Kernels, CPU versus GPU
#
# **What you will learn**
# - how a GPU kernel splits work over a **grid of blocks of threads**, and how each of
#   tinyseg's hand-written CUDA kernels does it: convolution v1 (one thread per output),
#   v2 (shared-memory tiles), v3 (implicit GEMM with register blocking), im2col + GEMM,
#   max-pooling, and a grid-stride element-wise kernel (ReLU);
# - to read a kernel's **launch record** (kernel, grid, block, shared-memory bytes, threads);
# - how to *prove* a picture of "which thread computes which output" right: we run the
#   real `.cu` source with a number type that remembers which thread wrote it;
# - that the **Numba CUDA** kernels are the same algorithms as the CUDA C ones (same launch
#   shapes, same results);
# - what the CPU kernels cost on the U-Net's layers (measured here, live), and where the GPU
#   kernels sit on the **roofline** of an NVIDIA H200.
#
# No GPU is needed: without one, the CUDA C kernels run in tinyseg's host emulation
# (`ts.backend.cuda_emulation()`: the same `.cu` source compiled by g++, every block and
# thread of the launch run on the CPU), and the Numba CUDA kernels in Numba's CUDA
# simulator. The emulation shows *what* each thread does, exactly; it says nothing about
# speed. Speed needs a GPU (section 10).
#
# **Time:** about 30 minutes to read; the code runs in about 2 minutes on a 2-core CPU
# (the first run compiles each `.cu` file once with g++, a few seconds each; later runs
# find them in the cache).
#
# Code: `kernels/*.cu` (each file opens with its thread/block mapping, memory access,
# arithmetic intensity and roof), `tinyseg/functional/*_kernels_cuda.py` (the launch code:
# grid and block sizes), `tinyseg/functional/*_kernels_numba_cuda.py` (the Numba twins),
# `tinyseg/cuda/` (the launch path and the emulation).

# %%
import os

# Is there a GPU? CuPy with a CUDA device. Without one, Numba's CUDA kernels run in its
# simulator, which must be chosen before numba.cuda is first imported (tinyseg imports it
# only when a "numba_cuda" kernel runs).
try:
    import cupy
    GPU = cupy.cuda.runtime.getDeviceCount() > 0
except Exception:
    GPU = False
if not GPU:
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import contextlib
import json
import re
import tempfile
import time
from pathlib import Path

import tinyseg as ts          # before NumPy: tinyseg asks OpenBLAS to let idle threads sleep
import numpy as np
import matplotlib.pyplot as plt
from matplotlib import colormaps
from matplotlib.ticker import MaxNLocator
import tinyseg.functional as F
import tinyseg.cuda as tcuda
from tinyseg import bench, bench_gpu, reference, viz
from tinyseg.cuda.emulation import EmulatedModule
from tinyseg.functional import conv, pool, activation, conv_kernels_cuda

FAST = os.environ.get("TINYSEG_NOTEBOOK_FAST") == "1"   # small settings (the test suite sets it)
REPO = Path.cwd().resolve().parents[1] if Path.cwd().name == "notebooks" else Path.cwd()
plt.rcParams.update({"figure.dpi": 80, "savefig.dpi": 80})
np.set_printoptions(precision=4, suppress=True, linewidth=110)
rng = np.random.default_rng(0)
print(f"GPU (CuPy with a CUDA device): {'yes' if GPU else 'no'}; "
      f"Numba CUDA: {'the GPU' if not os.environ.get('NUMBA_ENABLE_CUDASIM') else 'the simulator'}; "
      f"CUDA C sources: {tcuda.kernels_dir().relative_to(REPO) if tcuda.kernels_dir().is_relative_to(REPO) else tcuda.kernels_dir()}")

# %% [markdown]
# ## 1. The CUDA execution model in one paragraph, and the launch record
#
# A kernel is one function run by many threads. A launch `kernel<<<grid, block,
# shared>>>(args)` starts `grid` **blocks** (up to 3-D) of `block` **threads** each (up to
# 1,024); every thread runs the same code and tells itself apart by `blockIdx` and
# `threadIdx`. Threads of one block run on one streaming multiprocessor, can share
# `shared` bytes of fast on-chip **shared memory** and wait for each other at
# `__syncthreads()`; blocks cannot talk to each other. Groups of 32 consecutive threads
# (**warps**) execute in lock-step: when the 32 threads of a warp read 32 consecutive
# words, the hardware serves them in one transaction (a **coalesced** access). The whole
# design of a kernel is *which thread computes which output*, and *where its operands
# come from*.
#
# Every launch made inside `ts.backend.cuda_emulation()` is recorded. A tiny example: ReLU
# of 1,000 numbers through the hand-written CUDA kernel (`use_kernel("relu", "cuda")`):

# %%
def launch_table(launches):
    """The launch records as a table: kernel, grid, block, dynamic shared bytes, threads, where."""
    rows = [f"{'kernel':<40} {'grid':<14} {'block':<13} {'shared B':>8} {'threads':>8}  where"]
    for launch in launches:
        rows.append(f"{launch.kernel:<40} {str(launch.grid):<14} {str(launch.block):<13} "
                    f"{launch.shared_mem:>8} {launch.threads:>8}  {launch.where}")
    return "\n".join(rows)


v = rng.standard_normal(1000).astype(np.float32)
with ts.backend.cuda_emulation() as emu, ts.backend.use_kernel("relu", "cuda"):
    out = F.relu(ts.Tensor(v))
print(launch_table(emu.launches))
print("max |emulated CUDA − NumPy| =", np.abs(out.numpy() - np.maximum(v, 0)).max())

# %% [markdown]
# 1,000 elements, 256 threads per block, so ⌈1000/256⌉ = 4 blocks: 1,024 threads, the last
# 24 of which find no element and do nothing. The launch code
# (`tinyseg/functional/activation_kernels_cuda.py`) chose that grid; the emulation ran the
# `.cu` source of `relu_forward` as 4 × 256 threads.
#
# ## 2. How we draw, and *verify*, who computes what
#
# A picture of "thread t of block b computes output element e" is easy to draw from the
# kernel's documented mapping — and easy to get wrong. So every picture below is checked
# against the kernel itself. The trick: the kernels are C++ templates over the number type
# `T` (float, double). We instantiate them once more with a type **`Traced`**: a float that
# also stores which block and thread last assigned it. Running a launch with `Traced`
# arrays through the same emulation (same grid, same block, same source) leaves, in each
# output element, the identity of the thread that wrote it — and the value, which must
# still be the right one.

# %%
TRACED_CPP = r'''
// A float that remembers which thread assigned it last (blockIdx and threadIdx, linearised).
struct Traced {
    float value;
    int block, thread;
    Traced() = default;
    Traced(double v) : value(float(v)) { stamp(); }
    Traced(const Traced& other) : value(other.value) { stamp(); }
    Traced& operator=(const Traced& other) { value = other.value; stamp(); return *this; }
    Traced& operator+=(const Traced& other) { value += other.value; stamp(); return *this; }
    void stamp() {
        block = int(blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z));
        thread = int(threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z));
    }
};
inline Traced operator+(const Traced& a, const Traced& b) { return Traced(a.value + b.value); }
inline Traced operator*(const Traced& a, const Traced& b) { return Traced(a.value * b.value); }
inline bool operator>(const Traced& a, const Traced& b) { return a.value > b.value; }
inline bool operator!=(const Traced& a, const Traced& b) { return a.value != b.value; }
'''
TRACED = np.dtype([("value", np.float32), ("block", np.int32), ("thread", np.int32)])   # the same layout
_traced_modules = {}


@contextlib.contextmanager
def captured_launches():
    """Inside: every tinyseg.cuda.launch(...) call is also kept (source, kernel, grid, block, args, shared)."""
    calls, original = [], tcuda.launch

    def keep(source_name, kernel, dtype, grid, block, args, shared_mem=0, index_dtype=None):
        calls.append(dict(source=source_name, kernel=kernel, dtype=np.dtype(dtype), grid=grid, block=block,
                          args=tuple(args), shared_mem=shared_mem, index_dtype=index_dtype))
        return original(source_name, kernel, dtype, grid, block, args, shared_mem, index_dtype=index_dtype)

    tcuda.launch = keep          # the launch code calls tinyseg.cuda.launch: this is its one entry point
    try:
        yield calls
    finally:
        tcuda.launch = original


def traced(value):
    """A Traced copy of a float array (or scalar), block and thread set to −1 (written by nobody yet)."""
    out = np.zeros(np.shape(value), TRACED)
    out["value"], out["block"], out["thread"] = value, -1, -1
    return out if np.ndim(value) else out[()]


def replay_traced(call):
    """Run one captured launch again, same grid/block/source, on Traced copies of its float arrays.
    Returns the Traced arrays that were written (the launch's outputs)."""
    name = tcuda.name_expression(call["kernel"], "Traced", call["index_dtype"])   # kernel<Traced>, or <Traced, Index>
    key = (call["source"], name)
    if key not in _traced_modules:           # g++ builds it once (cached on disk as every emulated kernel)
        path = Path(tempfile.mkdtemp()) / f"traced_{call['source']}"
        path.write_text(TRACED_CPP + (tcuda.kernels_dir() / call["source"]).read_text())   # the source, unchanged
        _traced_modules[key] = EmulatedModule(path, [name], include_dirs=[tcuda.kernels_dir()])
    float_kind = lambda a: isinstance(a, (np.ndarray, np.floating)) and np.asarray(a).dtype.kind == "f"
    args = [traced(a) if float_kind(a) else a for a in call["args"]]
    shared = call["shared_mem"] * TRACED.itemsize // call["dtype"].itemsize   # the same count of T
    kernel = _traced_modules[key].get_function(name)
    kernel(call["grid"], call["block"], args, shared_mem=shared)
    return [a for a in args if isinstance(a, np.ndarray) and a.dtype == TRACED and (a["block"] >= 0).any()]


def check_mapping(name, written, predicted_block, predicted_thread, expected_value):
    """Compare the writers recorded by the traced run with the picture's prediction, and the values."""
    same = (written["block"] == predicted_block) & (written["thread"] == predicted_thread)
    error = np.abs(written["value"] - expected_value).max()
    print(f"{name}: {same.sum():,} of {same.size:,} outputs written by the predicted (block, thread); "
          f"traced values: max |error| vs reference = {error:.1e}")
    assert same.all(), f"{name}: the picture disagrees with the kernel at {np.argwhere(~same)[:3].tolist()}"


def draw_owners(ax, block, thread, title, text=True, fontsize=5.5):
    """One cell per output element: the colour is its block, the number its thread (within the block).
    Cells with block −1 (no element there) stay white."""
    palette = colormaps["tab20"]
    blocks = sorted(b for b in set(block.ravel().tolist()) if b >= 0)
    colour = {b: palette((2 * i) % 20 if i < 10 else (2 * i + 1) % 20) for i, b in enumerate(blocks)}
    picture = np.array([[colour[b][:3] if b >= 0 else (1, 1, 1) for b in row] for row in block])
    ax.imshow(picture, interpolation="nearest", aspect="auto")
    if text:
        for (i, j), t in np.ndenumerate(thread):
            if block[i, j] >= 0:
                ax.text(j, i, str(t), ha="center", va="center", fontsize=fontsize)
    ax.set_title(title, fontsize=9)
    ax.tick_params(labelsize=6)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    return colour


def block_legend(ax, colour, label=lambda b: f"block {b}", **kwargs):
    from matplotlib.patches import Patch
    ax.legend(handles=[Patch(color=c, label=label(b)) for b, c in colour.items()], fontsize=7, **kwargs)


# %% [markdown]
# ## 3. The tiny convolution every kernel runs
#
# One image with 2 channels of 20×20 pixels, 10 output channels, 3×3 kernels, padding 1
# (the U-Net's convolution, in miniature). 20 is deliberately *not* a multiple of the tile
# sizes (16, 64), so the edge blocks show. The answer to compare against comes from the
# definition (`tinyseg/reference.py`, plain loops in float64) and from the CPU kernels
# (`"im2col"`: NumPy im2col + BLAS GEMM; `"numba-im2col"`: the compiled Numba CPU kernel).

# %%
N, C, H, W, O, K = 1, 2, 20, 20, 10, 3
x = rng.standard_normal((N, C, H, W)).astype(np.float32)
w = (rng.standard_normal((O, C, K, K)) / np.sqrt(C * K * K)).astype(np.float32)
y_reference = reference.conv2d(x, w, padding=1)                   # the definition, float64
cpu = {}
for name in ("im2col", "numba-im2col"):
    with ts.backend.use_kernel("conv2d", name):
        cpu[name] = F.conv2d(ts.Tensor(x), ts.Tensor(w), padding=1).numpy()
    print(f"CPU kernel {name!r:15}: max |y − reference| = {np.abs(cpu[name] - y_reference).max():.1e}")
results = {}          # kernel name -> output, for the comparison table at the end


def run_gpu_kernel(op_name, kernel_name, fn):
    """fn() with the kernel chosen, inside the emulation (or on the GPU), its launches captured."""
    with ts.backend.cuda_emulation() as emu, captured_launches() as calls, \
            ts.backend.use_kernel(op_name, kernel_name):
        out = fn()
    print(launch_table(emu.launches))
    return out, emu.launches, calls


def conv_tiny():
    return F.conv2d(ts.Tensor(x), ts.Tensor(w), padding=1).numpy()


def compare(name, y):
    results[name] = y
    print(f"{name}: max |y − reference| = {np.abs(y - y_reference).max():.1e}, "
          f"max |y − CPU im2col| = {np.abs(y - cpu['im2col']).max():.1e}")


# %% [markdown]
# ## 4. Convolution v1: one thread per output element
#
# `kernels/conv2d_v1_naive.cu`, `conv2d_v1_forward`: the output y (N, O, H', W') is
# flattened with j fastest, `e = ((n·O + o)·H' + i)·W' + j`, and thread
# `blockIdx.x · 256 + threadIdx.x` computes element e (in a grid-stride loop, which for a
# tiny input runs once). Each thread loops over c, u, v and reads both operands of each
# multiply-add from global memory.

# %%
y_v1, launches, calls = run_gpu_kernel("conv2d", "cuda_v1", conv_tiny)
compare("cuda_v1", y_v1)

# %% [markdown]
# 4,000 outputs need ⌈4000/256⌉ = 16 blocks. The picture: the documented mapping, computed
# from the launch record's block size, then checked against the traced run.

# %%
(launch,) = launches
threads_per_block = launch.block[0]
e = np.arange(y_v1.size).reshape(y_v1.shape)                      # flat index, j fastest
predicted_block, predicted_thread = e // threads_per_block, e % threads_per_block
(written,) = replay_traced(calls[0])
check_mapping("conv2d v1", written, predicted_block, predicted_thread, y_reference)

fig, axes = plt.subplots(1, 2, figsize=(13, 6.4))
for ax, o in zip(axes, (0, 1)):
    colour = draw_owners(ax, predicted_block[0, o], predicted_thread[0, o],
                         f"v1: output channel o = {o} (colour: block, number: threadIdx.x)")
    block_legend(ax, colour, loc="lower right")
fig.suptitle("conv2d v1: one thread per output, flat index j fastest — 256 consecutive outputs per block",
             fontsize=10)
fig.tight_layout()
plt.show()

# %% [markdown]
# Consecutive threads own consecutive pixels of a row: a warp (32 threads) writes 32
# neighbouring outputs (coalesced) and, for one tap (c, u, v), reads 32 neighbouring input
# pixels (coalesced). Blocks cut the image wherever 256 outputs end — block 1 starts in
# the middle of row 12 of channel 0. Nothing is shared: every input pixel is fetched by
# O·3·3 = 90 threads, every weight by all 400 threads of its channel. That is v1's
# weakness: 2 FLOP per 8 bytes loaded (0.25 FLOP/byte), bound by the caches' bandwidth.
#
# ## 5. Convolution v2: shared-memory tiles
#
# `kernels/conv2d_v2_tiled.cu`, `conv2d_v2_forward`: a block of 16×16 threads owns a 16×16
# tile of output pixels **for a group of 8 output channels**; `blockIdx = (j tile, i tile,
# n·groups + group)`. For each input channel the block first copies the 18×18 input patch
# its tile reads (the tile plus the 3×3 kernel's halo) and the group's 8·9 weights into
# shared memory, waits (`__syncthreads`), and then each thread reads its 9 window values
# from there, each feeding 8 multiply-adds (one per output channel of the group).

# %%
y_v2, launches, calls = run_gpu_kernel("conv2d", "cuda_v2", conv_tiny)
compare("cuda_v2", y_v2)
(launch,) = launches
TW, TH = launch.block[:2]
PH, PW = (TH - 1) + (K - 1) + 1, (TW - 1) + (K - 1) + 1
print(f"shared memory per block: ({PH}×{PW} patch + {conv_kernels_cuda.V2_GROUP}·{K}·{K} weights) × 4 bytes = "
      f"{(PH * PW + conv_kernels_cuda.V2_GROUP * K * K) * 4} bytes  (the record says {launch.shared_mem})")

# %%
gx, gy, gz = launch.grid
groups = -(-O // conv_kernels_cuda.V2_GROUP)
n_, o_, i_, j_ = np.meshgrid(range(N), range(O), range(H), range(W), indexing="ij")
bx, by, bz = j_ // TW, i_ // TH, n_ * groups + o_ // conv_kernels_cuda.V2_GROUP
predicted_block = bx + gx * (by + gy * bz)
predicted_thread = (i_ % TH) * TW + (j_ % TW)
(written,) = replay_traced(calls[0])
check_mapping("conv2d v2", written, predicted_block, predicted_thread, y_reference)

fig, axes = plt.subplots(1, 2, figsize=(13, 6.4))
for ax, o in zip(axes, (0, 8)):
    colour = draw_owners(ax, predicted_block[0, o], predicted_thread[0, o],
                         f"v2: output channel o = {o} (group {o // conv_kernels_cuda.V2_GROUP}); number: "
                         f"ty·16 + tx")
    block_legend(ax, colour, label=lambda b: f"block {b} = ({b % gx}, {b // gx % gy}, {b // (gx * gy)})",
                 loc="lower right")
fig.suptitle("conv2d v2: a 16×16 block per 16×16 output tile and group of 8 channels "
             f"(grid {launch.grid}, block {launch.block})", fontsize=10)
fig.tight_layout()
plt.show()

# %% [markdown]
# The same thread (say thread 0 of block 0) computes pixel (0, 0) of channels 0–7: its 8
# accumulators stay in registers, and every value it reads from the shared patch feeds 8
# multiply-adds. Channel 8 belongs to the second group, so blockIdx.z = 1: other blocks.
# The edge blocks (right and bottom, 4 pixels wide) keep all 256 threads — they all help
# load the patch and reach every `__syncthreads()` — but only the threads inside the
# image write: here 3 of the 4 blocks of each group are mostly idle, the price of tiles
# on an image that is not a multiple of 16 (on a 256² U-Net layer, none is).
#
# ## 6. Convolution v3: implicit GEMM with register blocking
#
# `kernels/conv2d_v3_implicit_gemm.cu`: the convolution **is** a matrix product,
# Y (O × N·H'·W') = W (O × C·k·k) · cols (C·k·k × N·H'·W'), where cols is im2col's matrix —
# never stored: each block builds the 8-deep slices of it that it needs, on the fly, in
# shared memory. A block of 16×16 threads computes a 64×64 tile of Y; each thread a 4×4
# sub-tile held in 16 registers, its rows `m0 + ty + 16·r` and columns `n0 + tx + 16·c`
# (r, c = 0..3): interleaved by 16, so a half-warp reads 16 consecutive words of shared
# memory (no bank conflicts) and writes 16 consecutive outputs (coalesced). Per step a
# thread loads 4 + 4 values from shared memory and does 16 multiply-adds: 2 per load (v2:
# about 1, v1: 0.5 per *global* load).

# %%
y_v3, launches, calls = run_gpu_kernel("conv2d", "cuda_v3", conv_tiny)
compare("cuda_v3", y_v3)
(launch,) = launches
BM = BN = conv_kernels_cuda.V3_TILE
BK = conv_kernels_cuda.V3_BK
static_shared = (BK * (BM + 4) + BK * BN) * 4          # As[BK][BM + pad 4] and Bs[BK][BN], float32
print(f"GEMM: M = O = {O}, columns = N·H'·W' = {N * H * W}, K = C·k·k = {C * K * K}; "
      f"grid = (⌈{N * H * W}/{BN}⌉, ⌈{O}/{BM}⌉) = {launch.grid[:2]}")
print(f"shared memory: static __shared__ tiles, {static_shared} bytes per block "
      f"(the record counts only dynamic shared memory: {launch.shared_mem})")

# %%
gx = launch.grid[0]
column = (n_ * H + i_) * W + j_                  # the GEMM column of output (n, o, i, j); its row is o
predicted_block = column // BN + gx * (o_ // BM)
tx, ty = (column % BN) % 16, (o_ % BM) % 16
predicted_thread = ty * 16 + tx
(written,) = replay_traced(calls[0])
check_mapping("conv2d v3", written, predicted_block, predicted_thread, y_reference)

fig, axes = plt.subplots(2, 1, figsize=(13, 7.5), gridspec_kw={"height_ratios": [1, 1.6]})
tile_tx = tx[0].reshape(O, H * W)[:, :BN]            # the first column tile (block 0), rows o = 0..9
palette = colormaps["tab20"]
axes[0].imshow(palette(tile_tx % 20)[..., :3], interpolation="nearest", aspect="auto")
for (row, col), t in np.ndenumerate(tile_tx):
    axes[0].text(col, row, str(t), ha="center", va="center", fontsize=5.5)
axes[0].set_title("v3, the GEMM view of block 0: Y[o, column], columns 0–63; colour and number: threadIdx.x; "
                  "row o is threadIdx.y = o.\nThread (tx, ty) computes the 4 columns tx, tx+16, tx+32, tx+48 "
                  "of rows ty, ty+16, ty+32, ty+48 (only rows < 10 exist here)", fontsize=9)
axes[0].set_xlabel("GEMM column = (n·H' + i)·W' + j")
axes[0].set_ylabel("row = output channel o")
axes[0].tick_params(labelsize=6)
colour = draw_owners(axes[1], predicted_block[0, 0], predicted_thread[0, 0],
                     "the same mapping in image space, output channel 0: a block owns 64 consecutive pixels "
                     "(of all 10 channels)", fontsize=5)
block_legend(axes[1], colour, loc="upper left", bbox_to_anchor=(1.0, 1.0))
fig.tight_layout()
plt.show()

# %% [markdown]
# With only 10 output channels, rows 10–63 of each 64-row tile are empty: threads with
# ty ≥ 10 compute nothing that is kept. On the U-Net's 64-to-1024-channel layers the tiles
# are full; here the tiny problem makes the waste visible.
#
# ## 7. im2col + GEMM, max-pooling, and a grid-stride loop
#
# **im2col + GEMM** (`kernels/im2col.cu`, kernel name `"cuda_im2col"`): one thread per
# element of the cols matrix (C·k·k × H'·W' per sample), then one matrix product. On a GPU
# the product is cuBLAS's (through CuPy); in the emulation it is NumPy's. The thread
# mapping is v1's, on a matrix 9 times the size of the input.

# %%
y_im2col, launches, calls = run_gpu_kernel("conv2d", "cuda_im2col", conv_tiny)
compare("cuda_im2col", y_im2col)
(written,) = replay_traced(calls[0])
cols_shape = (C * K * K, H * W)
e = np.arange(np.prod(cols_shape)).reshape(cols_shape)
predicted_block, predicted_thread = e // launches[0].block[0], e % launches[0].block[0]
written = written.reshape(cols_shape)
x_padded = np.pad(x[0], ((0, 0), (1, 1), (1, 1)))
cols_expected = np.stack([x_padded[c, u:u + H, v:v + W].ravel()
                          for c in range(C) for u in range(K) for v in range(K)])
check_mapping("im2col", written, predicted_block, predicted_thread, cols_expected)

fig, ax = plt.subplots(figsize=(13, 2.6))
colour = draw_owners(ax, predicted_block, predicted_thread, f"im2col: the cols matrix {cols_shape} coloured by "
                     f"block ({launches[0].grid[0]} blocks of 256 threads, one element each)", text=False)
ax.set_xlabel("column = output pixel i·W' + j")
ax.set_ylabel("row = (c, u, v)")
fig.tight_layout()
plt.show()
print(f"the GEMM: W ({O} × {C * K * K}) · cols ({C * K * K} × {H * W}) — cuBLAS on a GPU, NumPy here "
      f"(no launch record: it is not a tinyseg kernel)")

# %% [markdown]
# **Max-pooling** (`kernels/pool.cu`, `max_pool2d_forward<float, unsigned char>`): one thread
# per output element, flat index j fastest, 256-thread blocks; each thread scans its 2×2
# window and also stores which of the 4 positions won (a `uint8`, the kernel's second
# template parameter, for the backward pass). We pool the v1 convolution's output,
# (1, 10, 20, 20) → (1, 10, 10, 10).

# %%
pool_input = y_reference.astype(np.float32)
pool_reference = reference.max_pool2d(pool_input, 2)


def pool_tiny():
    return F.max_pool2d(ts.Tensor(pool_input), 2).numpy()


pooled, launches, calls = run_gpu_kernel("max_pool2d", "cuda", pool_tiny)
pool_cpu = {}
for name in ("numpy", "numba"):
    with ts.backend.use_kernel("max_pool2d", name):
        pool_cpu[name] = pool_tiny()
print(f"cuda max-pool: max |y − reference| = {np.abs(pooled - pool_reference).max():.1e}, "
      f"max |y − CPU numpy| = {np.abs(pooled - pool_cpu['numpy']).max():.1e}, "
      f"max |y − CPU numba| = {np.abs(pooled - pool_cpu['numba']).max():.1e}")
(written,) = replay_traced(calls[0])
e = np.arange(pooled.size).reshape(pooled.shape)
predicted_block, predicted_thread = e // launches[0].block[0], e % launches[0].block[0]
check_mapping("max_pool2d", written, predicted_block, predicted_thread, pool_reference)

fig, axes = plt.subplots(1, 3, figsize=(13, 4.4))
for ax, o in zip(axes, (0, 2, 5)):
    colour = draw_owners(ax, predicted_block[0, o], predicted_thread[0, o], f"max-pool, channel {o}", fontsize=6)
    block_legend(ax, colour, loc="lower right")
fig.suptitle(f"max_pool2d: one thread per output, {launches[0].grid[0]} blocks of 256 "
             "(thread k reads the 2×2 window at rows 2i, 2i+1 and columns 2j, 2j+1)", fontsize=10)
fig.tight_layout()
plt.show()

# %% [markdown]
# **A grid-stride loop** (`kernels/activation.cu`, `relu_forward`): the launch code caps the
# grid at 4,096 blocks of 256 threads (about a million threads, enough to fill any GPU), and
# each thread runs `for (k = blockIdx.x·blockDim.x + threadIdx.x; k < n; k += gridDim.x·blockDim.x)`.
# Tensors larger than the grid are covered in several sweeps. To see the sweeps on a tiny
# array, we launch the same kernel through the same launch path by hand with a small grid:
# 2 blocks of 32 threads over 150 elements.

# %%
n = 150
a = rng.standard_normal(n).astype(np.float32)
b = np.empty_like(a)
with ts.backend.cuda_emulation() as emu, captured_launches() as calls:
    tcuda.launch("activation.cu", "relu_forward", np.float32, 2, 32, (a, b, np.int64(n)))
print(launch_table(emu.launches))
print("max |y − max(x, 0)| =", np.abs(b - np.maximum(a, 0)).max())
(written,) = replay_traced(calls[0])
stride = 2 * 32                                   # gridDim.x · blockDim.x
k = np.arange(n)
predicted_block, predicted_thread = (k % stride) // 32, k % 32
check_mapping("relu grid-stride", written, predicted_block, predicted_thread, np.maximum(a, 0))

sweeps = -(-n // stride)
block_map = np.full(sweeps * stride, -1)
thread_map = np.full(sweeps * stride, -1)
block_map[:n], thread_map[:n] = predicted_block, predicted_thread
fig, ax = plt.subplots(figsize=(13, 2.2))
colour = draw_owners(ax, block_map.reshape(sweeps, stride), thread_map.reshape(sweeps, stride),
                     "relu_forward, grid 2 × block 32 over 150 elements: row r = the r-th sweep of the loop "
                     "(element k = r·64 + column); white: past the end", fontsize=5.5)
block_legend(ax, colour, loc="upper left", bbox_to_anchor=(1.0, 1.0))
ax.set_yticks(range(sweeps))
ax.set_ylabel("sweep")
fig.tight_layout()
plt.show()

# %% [markdown]
# In every sweep a warp still touches 32 consecutive elements (coalesced), and the same
# thread comes back 64 elements later. The kernel does one comparison per 8 bytes moved:
# it can only be as fast as memory.
#
# ## 8. The Numba CUDA twins, side by side
#
# `tinyseg/functional/conv_kernels_numba_cuda.py` writes v1 and v2 again in Python with
# `@numba.cuda.jit` (kernel names `"numba_cuda_v1"` and `"numba_cuda"`), and
# `pool_kernels_numba_cuda.py` the max-pool. Same inputs, same launch shapes, same results:

# %%
pairs = {"v1": ("cuda_v1", "numba_cuda_v1"), "v2": ("cuda_v2", "numba_cuda")}
for version, (c_name, numba_name) in pairs.items():
    with ts.backend.cuda_emulation() as emu_c, ts.backend.use_kernel("conv2d", c_name):
        y_c = conv_tiny()
    start = time.perf_counter()
    with ts.backend.cuda_emulation() as emu_numba, ts.backend.use_kernel("conv2d", numba_name):
        y_numba = conv_tiny()
    seconds = time.perf_counter() - start
    results[numba_name] = y_numba
    print(f"--- {version}: CUDA C ({c_name!r}) and Numba CUDA ({numba_name!r}, {seconds:.1f} s)")
    print(launch_table(emu_c.launches + emu_numba.launches))
    print(f"max |Numba − CUDA C| = {np.abs(y_numba - y_c).max():.1e}, "
          f"max |Numba − reference| = {np.abs(y_numba - y_reference).max():.1e}\n")

with ts.backend.cuda_emulation() as emu_numba, ts.backend.use_kernel("max_pool2d", "numba_cuda"):
    pooled_numba = pool_tiny()
print("--- max-pool: Numba CUDA")
print(launch_table(emu_numba.launches))
print(f"max |Numba − CUDA C| = {np.abs(pooled_numba - pooled).max():.1e}, "
      f"max |Numba − reference| = {np.abs(pooled_numba - pool_reference).max():.1e}")

# %% [markdown]
# The two v1 kernels, one above the other: the C++ computes the flat index and the
# pointers by hand; Numba indexes the 4-D arrays and `cuda.grid(1)` / `cuda.gridsize(1)`
# are the grid-stride loop's start and step.

# %%
def cuda_c_function(source_name, function):
    """The text of one __global__ function of kernels/<source_name>, from its template line to its last brace."""
    text = (tcuda.kernels_dir() / source_name).read_text()
    start = text.rindex("template", 0, re.search(rf"void\s+{function}\s*\(", text).start())
    depth, end = 0, text.index("{", start)
    for end in range(end, len(text)):
        depth += {"{": 1, "}": -1}.get(text[end], 0)
        if depth == 0:
            break
    return text[start:end + 1]


def numba_function(module_file, function):
    """The text of one @cuda.jit function of tinyseg/functional/<module_file>, decorator to last line."""
    text = (Path(ts.__file__).parent / "functional" / module_file).read_text()
    match = re.search(rf"@cuda\.jit\ndef {function}\(.*?(?=\n\n)", text, re.S)
    return match.group(0)


print(cuda_c_function("conv2d_v1_naive.cu", "conv2d_v1_forward"))
print()
print(numba_function("conv_kernels_numba_cuda.py", "conv2d_v1_forward"))

# %% [markdown]
# In the simulator every thread is a Python thread: exact (and `print()` works inside a
# kernel) but slow, seconds for these 4,000 outputs where the g++-compiled emulation takes
# milliseconds. On a GPU both compile to machine code; timing them against each other is
# the benchmark's job.
#
# **Every kernel of this notebook against the reference**, on the same tiny convolution:

# %%
print(f"{'kernel':<16} {'where':<26} {'max |y − reference|':>20} {'max |y − CPU im2col|':>21}")
for name, y in {**{k: v for k, v in cpu.items()}, **results}.items():
    where = "CPU" if name in cpu else ("Numba CUDA simulator" if name.startswith("numba_cuda") and not GPU
                                      else "CUDA C emulation" if not GPU else "GPU")
    print(f"{name:<16} {where:<26} {np.abs(y - y_reference).max():>20.1e} {np.abs(y - cpu['im2col']).max():>21.1e}")

# %% [markdown]
# All agree to float32 rounding (~1e-7 relative): they add the same products in different
# orders.
#
# ## 9. What the CPU kernels cost on the U-Net's layers (measured now)
#
# The reference U-Net (base 64 channels, depth 4) on a 256×256 image, batch 1: a few of its
# convolution shapes (`tinyseg.bench.conv_layers`), the first 2×2 max-pool and a ReLU, each
# CPU kernel timed live on this machine (median of a few runs, after one warm-up).

# %%
def cpu_description():
    return f"{bench_gpu.cpu_model()}, {os.cpu_count()} logical CPUs"


def median_ms(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


base, size, repeats = (8, 64, 2) if FAST else (64, 256, 3)
cpu_roofs = bench_gpu.cpu_peaks()          # FP32 estimated from /proc/cpuinfo; bandwidth: a measured copy
layers = bench.conv_layers(base, 1, size)
chosen = [layers[0], layers[1], layers[5], layers[9]]           # enc0.conv1, enc0.conv2, enc2.conv2, bottleneck
print(f"CPU: {cpu_description()}; measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
      f"U-Net base {base}, batch 1, {size}², float32, median of {repeats}")
load = os.getloadavg()[0]
print(f"load average (1 min) as the timing starts: {load:.1f} on {os.cpu_count()} CPUs"
      + (" — other programs are competing for the cores: the times below are slower than on an idle machine"
         if load > os.cpu_count() else ""))
print(f"CPU roofs: {cpu_roofs.fp32_gflops:,.0f} GFLOP/s FP32 ({cpu_roofs.source.split(';')[0]}), "
      f"{cpu_roofs.bandwidth_gbs:.1f} GB/s (a NumPy copy, measured)\n")
print(f"{'layer (where in the U-Net)':<44} {'kernel':<13} {'ms':>8} {'GFLOP/s':>8} {'FLOP/B':>7} {'% of roof':>9}")


def percent_of_roof(gflops, intensity):
    return 100 * bench_gpu.fraction_of_roof(gflops, intensity, cpu_roofs.fp32_gflops, cpu_roofs.bandwidth_gbs)


cpu_points = []
for layer in chosen:
    Cin, Cout, S, k = layer["C"], layer["O"], layer["size"], layer["k"]
    xs = rng.standard_normal((1, Cin, S, S)).astype(np.float32)
    ws = (rng.standard_normal((Cout, Cin, k, k)) / np.sqrt(Cin * k * k)).astype(np.float32)
    geometry = conv._ConvGeometry.for_conv2d((S, S), (k, k), (1, 1), ((k // 2, k // 2),) * 2, (1, 1))
    flops = 2.0 * Cout * Cin * k * k * S * S
    nbytes = 4.0 * (Cin * S * S + Cout * Cin * k * k + Cout * S * S)        # each operand moved once
    for name in ("im2col", "numba-im2col", "winograd"):
        kernel = conv.CONV2D_KERNELS[name]
        ms = median_ms(lambda: kernel.forward(xs, ws, geometry), repeats)
        label = f"{Cin}→{Cout}, {S}² ({', '.join(layer['layers'][:2])})"
        print(f"{label:<44} {name:<13} {ms:>8.1f} {flops / ms / 1e6:>8.1f} {flops / nbytes:>7.1f} "
              f"{percent_of_roof(flops / ms / 1e6, flops / nbytes):>8.0f}%")
        cpu_points.append({"kernel": name, "op": "conv2d forward", "intensity": flops / nbytes,
                           "gflops": flops / ms / 1e6})

C0, S0 = base, size
xs = rng.standard_normal((1, C0, S0, S0)).astype(np.float32)
geometry = pool._WindowGeometry((1, C0, S0, S0), (2, 2), (2, 2), (0, 0))
pool_flops, pool_bytes = 3.0 * C0 * (S0 // 2) ** 2, 4.0 * C0 * S0 * S0 + 5.0 * C0 * (S0 // 2) ** 2
relu_flops, relu_bytes = 1.0 * C0 * S0 * S0, 8.0 * C0 * S0 * S0
for name in ("numpy", "numba"):
    kernel = pool.MAX_POOL2D_KERNELS[name]
    ms = median_ms(lambda: kernel.forward(np, xs, geometry, True), repeats)
    print(f"{f'max-pool 2×2, {C0} ch, {S0}²→{S0 // 2}²':<44} {name:<13} {ms:>8.2f} {pool_flops / ms / 1e6:>8.2f} "
          f"{pool_flops / pool_bytes:>7.2f} {percent_of_roof(pool_flops / ms / 1e6, pool_flops / pool_bytes):>8.0f}%"
          f"  ({pool_bytes / ms / 1e6:.1f} GB/s)")
    cpu_points.append({"kernel": name, "op": "max_pool2d forward", "intensity": pool_flops / pool_bytes,
                       "gflops": pool_flops / ms / 1e6})
for name in ("numpy", "numba"):
    kernel = activation.RELU_KERNELS[name]
    ms = median_ms(lambda: kernel.forward(xs, np), repeats)
    print(f"{f'ReLU, {C0} ch, {S0}²':<44} {name:<13} {ms:>8.2f} {relu_flops / ms / 1e6:>8.2f} "
          f"{relu_flops / relu_bytes:>7.2f} {percent_of_roof(relu_flops / ms / 1e6, relu_flops / relu_bytes):>8.0f}%"
          f"  ({relu_bytes / ms / 1e6:.1f} GB/s)")
    cpu_points.append({"kernel": name, "op": "relu forward", "intensity": relu_flops / relu_bytes,
                       "gflops": relu_flops / ms / 1e6})

# %% [markdown]
# "% of roof" is the measured speed over what the CPU's roofline allows at that
# intensity: min(FP32 peak, intensity × bandwidth). The convolutions (except the first,
# with one input channel) do tens to hundreds of FLOP per byte — every weight and pixel is
# reused many times — so their roof is the arithmetic peak; pooling and ReLU do almost no
# arithmetic per byte, so theirs is memory bandwidth. (The peak is an estimate from the
# clock and the vector width, the bandwidth a copy measured while other programs share
# the machine: read the percentages as rough; above 100 % means the data fit in the CPU's
# caches, which are faster than the main memory the copy measured.) The same split decides everything on a
# GPU, whose FP32 roof is a few hundred times this CPU's and its bandwidth several hundred times.
#
# ## 10. The GPU: measured tables when they exist, otherwise the roofline model
#
# `tinyseg bench --device cuda` (`tinyseg/bench_gpu.py`) times every kernel on a GPU and
# writes `kernels.md`, `kernels.json` and a roofline chart. This cell runs it live when a
# GPU is present; otherwise it looks for results stored in `docs/` by a run on a GPU.

# %%
def stored_gpu_results():
    """kernels.json files under docs/ written by a benchmark that ran on a real GPU (not the emulation)."""
    found = []
    for path in sorted(set((REPO / "docs").rglob("*.json"))):
        try:
            result = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        meta = result.get("meta", {}) if isinstance(result, dict) else {}
        if meta.get("gpu") and not meta.get("emulated") and "rows" in result:
            found.append((path, result))
    return found


def show_gpu_result(result, label):
    from IPython.display import Markdown, display
    meta = result["meta"]
    print(f"{label}: GPU {meta['gpu']}, CPU {meta['cpu']}, {meta['date']}, config {meta['config']}")
    display(Markdown(bench_gpu.markdown_report(result)))
    peaks = {k: bench_gpu.Peaks(**p) for k, p in meta["peaks"].items()}
    display(viz.plot_roofline(bench_gpu.roofline_points(result["rows"]), peaks,
                              title=f"measured: tinyseg kernels on {meta['gpu']}, {meta['date']}"))


gpu_results = []
if GPU:
    out_dir = tempfile.mkdtemp()
    # the U-Net's layers at base 64, batch 1, 128² (the full benchmark, batch 8 at 256², takes minutes)
    live = bench_gpu.run(device="cuda", quick=FAST, out_dir=out_dir, log=lambda line: None,
                         ops=["conv2d", "max_pool2d", "relu"], with_step=False,
                         config=None if FAST else bench_gpu.Config(base=64, batch=1, size=128))
    gpu_results = [("live run", live)]
else:
    gpu_results = [(str(path.relative_to(REPO)), result) for path, result in stored_gpu_results()]
for label, result in gpu_results:
    show_gpu_result(result, label)
if not gpu_results:
    print("No GPU here, and no GPU measurements are stored in docs/ yet: no GPU kernel of tinyseg has been "
          "timed.\nBelow is the roofline MODEL (what the roofs allow each kernel at the arithmetic intensity "
          "its header states), not a measurement.")

# %% [markdown]
# **The roofline model.** A kernel that does F floating-point operations per byte it moves
# can run at most at min(peak FLOP/s, F × memory bandwidth). Each `.cu` header states its
# arithmetic intensity; here it is recomputed from the tile sizes in the launch code, and
# the header's own sentence is quoted beside it. The H200's roofs come from
# `tinyseg.bench_gpu` (datasheet: 67 TFLOP/s FP32 without tensor cores, 4.8 TB/s HBM3e).
# The CPU's roofs are estimated from `/proc/cpuinfo` and a measured copy, and the CPU
# points are the measurements of section 9.

# %%
def header_sentence(source_name, pattern):
    """The first sentence of a kernel's header comments that matches ``pattern`` (whitespace joined)."""
    comments = " ".join(line.lstrip("/ ").strip() for line in
                        (tcuda.kernels_dir() / source_name).read_text().splitlines() if line.startswith("//"))
    match = re.search(pattern, comments)
    return match.group(0) if match else "(not found in the header)"


G, T = conv_kernels_cuda.V2_GROUP, 16
v2_patch = (T + K - 1) ** 2
model = [   # kernel, intensity (FLOP/byte float32), how it is computed, the header's sentence
    ("conv v1", 2 / (2 * 4), "2 FLOP per 2 loads of 4 bytes (cache level)",
     header_sentence("conv2d_v1_naive.cu", r"2 FLOP per 2 loads.*?at the cache level")),
    ("conv v2", 2 * T * T * G * K * K / ((v2_patch + G * K * K) * 4),
     f"per channel a block moves ({T + K - 1}² + {G}·9)·4 B for {T}²·{G}·9 FMAs",
     header_sentence("conv2d_v2_tiled.cu", r"\(396 values[^)]*\)")),
    ("conv v3", 2 * BM * BN * BK / ((BM + BN) * BK * 4), f"2·{BM}·{BN}·{BK} FLOP per (2·{BM}·{BK}) values × 4 B",
     header_sentence("conv2d_v3_implicit_gemm.cu", r"64 FLOP per value[^)]*\)")),
    ("im2col GEMM (64→64, 256²)", 2 * 64 * 576 * 65536 / (4 * (576 * 65536 + 64 * 576 + 64 * 65536)),
     "cuBLAS on the 576 × 65,536 cols matrix, each operand once",
     header_sentence("im2col.cu", r"Arithmetic intensity: 0 FLOP.*?bound by HBM bandwidth")),
    ("max-pool 2×2", 3 / (16 + 4 + 1), "3 comparisons per 16 B read + 5 B written",
     header_sentence("pool.cu", r"forward reads 16 B[^;]*;")),
    ("ReLU", 1 / 8, "1 comparison per 4 B read + 4 B written",
     header_sentence("activation.cu", r"1 comparison per 8 bytes moved.*?FLOP/byte")),
]
h200 = bench_gpu.peaks_for_name("NVIDIA H200")
ridge = bench_gpu.ridge_point(h200.fp32_gflops, h200.bandwidth_gbs)
print(f"H200 roofs: {h200.fp32_gflops:,.0f} GFLOP/s FP32, {h200.bandwidth_gbs:,.0f} GB/s ({h200.source}); "
      f"ridge {ridge:.1f} FLOP/B")
print(f"CPU roofs:  {cpu_roofs.fp32_gflops:,.0f} GFLOP/s FP32 (estimate), {cpu_roofs.bandwidth_gbs:,.1f} GB/s "
      f"(measured copy) — {cpu_roofs.name}\n")
print(f"{'kernel':<27} {'FLOP/B':>7} {'model bound':>12} {'at most GFLOP/s':>16}   computed from / the header says")
for name, intensity, how, quote in model:
    bound = bench_gpu.bound_by(intensity, h200.fp32_gflops, h200.bandwidth_gbs)
    best = bench_gpu.attainable_gflops(intensity, h200.fp32_gflops, h200.bandwidth_gbs)
    print(f"{name:<27} {intensity:>7.2f} {bound:>12} {best:>16,.0f}   {how}\n{'':<66}“{quote}”")

# %%
fig, ax = plt.subplots(figsize=(10, 7.5))
xs_roof = np.geomspace(0.03, 300, 300)
for peaks, style, label in ((h200, "-", "H200 roof (datasheet)"), (cpu_roofs, "--", "this CPU's roof (estimate)")):
    ax.plot(xs_roof, np.minimum(peaks.fp32_gflops, xs_roof * peaks.bandwidth_gbs), style, color="0.3", lw=1.5,
            label=f"{label}: {peaks.fp32_gflops:,.0f} GFLOP/s, {peaks.bandwidth_gbs:,.0f} GB/s")
palette = colormaps["tab10"]
for i, (name, intensity, _, _) in enumerate(model):
    best = bench_gpu.attainable_gflops(intensity, h200.fp32_gflops, h200.bandwidth_gbs)
    ax.scatter(intensity, best, s=70, marker="D", color=palette(i), zorder=3,
               label=f"MODEL {name}: ≤ {best:,.0f} GFLOP/s at {intensity:.2f} FLOP/B")
for point in cpu_points:
    ax.scatter(point["intensity"], point["gflops"], s=40, marker="o", facecolors="none",
               edgecolors="k", zorder=3)
ax.scatter([], [], s=40, marker="o", facecolors="none", edgecolors="k",
           label=f"MEASURED here: CPU kernels of section 9 ({len(cpu_points)} points)")
ax.axvline(ridge, color="0.6", ls=":", lw=1)
ax.annotate(f"H200 ridge {ridge:.1f} FLOP/B", (ridge, 30), fontsize=7, color="0.4", xytext=(4, 0),
            textcoords="offset points")
ax.set_xscale("log")
ax.set_yscale("log")
ax.set_xlabel("arithmetic intensity (FLOP per byte moved)")
ax.set_ylabel("GFLOP/s")
ax.set_title("Roofline: H200 roofs with each GPU kernel at its header's intensity — a MODEL, not a measurement\n"
             + ("(GPU measurements: the chart above); " if gpu_results else "(no GPU timings exist yet); ")
             + f"circles: CPU kernels measured here, {time.strftime('%Y-%m-%d')}", fontsize=9)
ax.grid(which="both", alpha=0.25)
ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)
fig.tight_layout()
plt.show()

# %% [markdown]
# How to read it. The diamonds are *ceilings*, not results: the most each kernel could
# reach on an H200 if nothing but its arithmetic intensity limited it.
# - ReLU and max-pool sit far left of the ridge: bandwidth-bound on any device; their
#   best is "move each byte once" (which is why tinyseg fuses the bias add into the ReLU).
# - v1's operands come from L1/L2 at 0.25 FLOP per byte: its ceiling is a small fraction
#   of the FP32 roof, and its header expects a few % of it.
# - v2 and v3 are right of the ridge: their tiles reuse each loaded value enough that
#   compute, not memory, is the limit. What they actually reach depends on things the
#   roofline does not see — shared-memory issue rate (v2), index arithmetic and barriers
#   (v3) — and only a GPU can tell.
# - The circles are this CPU's measured kernels: the convolutions well under the dashed
#   CPU roof (on a shared machine, see the load average of section 9), the memory-bound
#   ones near it — or above it when their data fit in the caches, which are faster than
#   the memory the roof was measured on. Every one is orders of magnitude under the H200's
#   ceilings; how close the GPU kernels come to theirs is what a GPU run will tell.
#
# When a GPU is lent, `benchmarks/gpu_bench.py` (or `tinyseg bench --device cuda`) measures
# all of this; stored in `docs/`, the results replace the model in section 10 the next time
# this notebook is built.
#
# ## Summary
# - A GPU kernel is a mapping from (block, thread) to work. v1: one output per thread;
#   v2: a tile of pixels × a group of channels per block, operands staged in shared memory;
#   v3: a 64×64 tile of the convolution-as-GEMM per block, 4×4 outputs per thread in
#   registers; im2col: one cols element per thread; pooling: one window per thread;
#   element-wise: a grid-stride loop.
# - The pictures above were checked element by element against the kernels, by running
#   their unchanged `.cu` source with a number type that records its writer.
# - The Numba CUDA kernels launch the same shapes and give the same numbers as the CUDA C.
# - Speed is a different question from correctness: the roofline tells which limit applies;
#   only a GPU measurement tells how close each kernel gets.
