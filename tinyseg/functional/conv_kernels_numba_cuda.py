"""conv2d's three primitives as Numba CUDA kernels: the Python twins of kernels/conv2d_v*.cu.

    forward       y[n,o,i,j]  = Σ_{c,u,v} W[o,c,u,v] · x[n,c, s_h·i+d_h·u−p_top, s_w·j+d_w·v−p_left]
    input grad    dx[n,c,h,w] = Σ_{o,u,v} W[o,c,u,v] · dy[n,o,i,j]
                                over the windows with (h+p_top−d_h·u, w+p_left−d_w·v) = (s_h·i, s_w·j)
    weight grad   dW[o,c,u,v] = Σ_{n,i,j} dy[n,o,i,j] · x[n,c, s_h·i+d_h·u−p_top, s_w·j+d_w·v−p_left]

(x is 0 outside the image; docs/math/convolution.md derives the two gradients.) Shapes
and geometry come from ``conv._ConvGeometry``: x (N, C, H, W), W (O, C, k_h, k_w), y
(N, O, H', W') with the output size given explicitly (conv_transpose2d asks for fewer
windows than fit), top/left padding only (the output size implies the rest).

Two versions of each primitive, the same algorithms as the CUDA C kernels, so the two
can be read side by side ("numba_cuda_v1" and "numba_cuda", the twins of "cuda_v1" and
"cuda_v2"):

* v1, kernels/conv2d_v1_naive.cu: one thread per element of y, of dx, of dW, straight
  from the definitions; every multiply-add reads both operands from global memory (the
  caches). The input gradient is a gather (each dx element finds the windows that read
  it), so no thread ever adds into another's element.
* v2, kernels/conv2d_v2_tiled.cu: the forward and the input gradient give a block a
  16×16 tile of pixels for a group of 8 channels; per channel summed over, the block
  stages the patch its tile reads (x with its halo, or dy) and the group's weights in
  shared memory, and every value read from there feeds 8 multiply-adds. The weight
  gradient gives each dW[o, c] a block whose threads split the N·H'·W' positions and
  add their partial sums by a fixed tree in shared memory.

Every output element has one writer that sums its terms in a fixed order: no atomics,
the same bits on every run.

The kernels take their types from their arguments: ``x.dtype.type(0)`` is T(0) and
``cuda.shared.array(0, dtype=x.dtype)`` is ``extern __shared__ T[]``, so Numba compiles
one version per dtype (float32, float64) as the C++ templates do. Each launch goes
through ``tinyseg.cuda.numba_cuda.launch`` (recorded in ``cuda_emulation().launches``).
Run them on CuPy arrays on a GPU, or on NumPy arrays in Numba's CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1``). This module is imported only when a "numba_cuda" kernel
runs, and imports numba.cuda then.

How the work maps to threads, printed from the launch records (a 3→4-channel 3×3
convolution of a (2, 3, 20, 20) batch, forward and backward, in the simulator)::

    with ts.backend.cuda_emulation() as emu, ts.backend.use_kernel("conv2d", "numba_cuda"):
        F.conv2d(x, w, padding=1).backward(np.ones((2, 4, 20, 20), np.float32))
    for launch in emu.launches:
        print(launch.kernel, launch.grid, launch.block, launch.shared_mem, launch.threads)

    conv2d_v2_forward[float32] (2, 2, 2) (16, 16, 1) 1584 2048
    conv2d_v2_input_grad[float32] (2, 2, 2) (16, 16, 1) 1584 2048
    conv2d_v2_weight_grad[float32] (3, 4, 1) (32, 1, 1) 1152 384

(2×2 tiles of 16×16 pixels × 2 samples × 1 group of 8 channels; 1,584 bytes = an 18×18
patch and 8·3·3 weights in float32; one block per (c, o) for dW, 32 threads wide in the
simulator, 256 on a GPU.)
"""
from __future__ import annotations

import numpy as np

from .. import backend
from ..cuda import blocks_for
from ..cuda.numba_cuda import check_arrays, launch, numba_cuda, simulated

cuda = numba_cuda()

THREADS = 256          # threads per block of the 1-D kernels (8 warps), as the CUDA C; whole warps
                       # only for problems smaller than one block (_flat_launch)
MAX_BLOCKS = 4096      # grid cap of the 1-D kernels: larger problems loop (grid-stride)
TILES = (16, 8, 4)     # v2: the sides of the square tiles of pixels, one per thread (see v2_tile)
GROUP = 8              # v2: output channels per block, as V2_GROUP in kernels/conv2d_v2_tiled.cu
SHARED_MEMORY_LIMIT = 48 * 1024    # bytes of shared memory a block may ask for without opting in
MAX_GRID_Z = 65535     # the most blocks a grid may have along y or z
TAPS = 9               # v2 weight gradient: taps accumulated in registers per pass (V2_TAPS in the CUDA C)
REDUCE_THREADS = 256   # v2 weight gradient: threads per block on a GPU (V2_REDUCE_THREADS in the CUDA C)
SIMULATOR_REDUCE_THREADS = 32      # ... and in Numba's simulator (see reduce_threads)


# ---------------------------------------------------------------------------------------
# Forward v1 (kernels/conv2d_v1_naive.cu, conv2d_v1_forward).
#
# Thread/block mapping: one thread per y[n,o,i,j], flat index e with j fastest, blocks of
# 256 threads in a grid-stride loop (the grid capped at MAX_BLOCKS blocks).
#
# Memory access: a warp covers 32 consecutive j of one output row: its y writes are
# coalesced; its x reads for one tap (c,u,v) are 32 pixels of one input row at stride s_w
# (coalesced for stride 1); W[o,c,u,v] is one address for the whole warp (a broadcast).
# Each x element is re-read by O·k_h·k_w threads and each W element by N·H'·W' threads,
# all through L1/L2, nothing kept on chip.
#
# Arithmetic intensity: 2 FLOP per 2 loads (8 bytes in float32): 0.25 FLOP/byte at the
# cache level, so bound by L1/L2 load throughput, a few % of the FP32 roof.
@cuda.jit
def conv2d_v1_forward(x, weight, y, sh, sw, ph, pw, dh, dw):
    N, C, H, W = x.shape
    O, _, kh, kw = weight.shape
    Ho, Wo = y.shape[2], y.shape[3]
    total = N * O * Ho * Wo
    for e in range(cuda.grid(1), total, cuda.gridsize(1)):
        j = e % Wo
        i = (e // Wo) % Ho
        o = (e // (Wo * Ho)) % O
        n = e // (Wo * Ho * O)
        acc = x.dtype.type(0)
        for c in range(C):
            for u in range(kh):
                h = sh * i + dh * u - ph
                if h < 0 or h >= H:
                    continue
                for v in range(kw):
                    w = sw * j + dw * v - pw
                    if w < 0 or w >= W:
                        continue
                    acc += weight[o, c, u, v] * x[n, c, h, w]
        y[n, o, i, j] = acc


# ---------------------------------------------------------------------------------------
# Forward v2 (kernels/conv2d_v2_tiled.cu, conv2d_v2_forward): shared-memory tiles of the
# input and the weights, GROUP output channels per block.
#
# Thread/block mapping: a block of TW×TH threads (16×16; 8×8 or 4×4 for small outputs or
# when the patch below would not fit in SHARED_MEMORY_LIMIT; see v2_tile) computes the
# output tile i ∈ [i0, i0+TH), j ∈ [j0, j0+TW) for the output channels [g0, g0+GROUP) of
# sample n:
# blockIdx = (j tile, i tile, n·groups + group). Thread (tx, ty) owns pixel (i0+ty, j0+tx)
# and GROUP accumulators in registers (``cuda.local.array``). Threads past the edge of
# the output (sizes that are not multiples of the tile) still load and reach every
# syncthreads(): they only skip the final write.
#
# Memory access: per input channel c, the block copies into shared memory
#   * the input patch its windows read, the tile plus its halo: PH×PW with
#     PH = (TH−1)·s_h + d_h·(k_h−1) + 1 (18×18 for 16×16 and 3×3), zeros where the patch
#     lies in the padding (so the padding costs nothing after the load); thread t copies
#     elements t, t+TW·TH, …: consecutive threads read consecutive pixels of a row, so
#     the global loads coalesce;
#   * the group's weights W[g0:g0+GROUP, c], GROUP·k_h·k_w values (zeros past O);
# then, after syncthreads(), each thread reads each of its k_h·k_w window values once
# from the patch and does GROUP multiply-adds with it. The second syncthreads() keeps the
# next channel's copy from overwriting a patch still being read. A warp is two rows of
# 16 threads: at stride 1 each half reads 16 consecutive words (distinct banks); weight
# reads are one address per warp (a broadcast).
#
# Arithmetic intensity: from global memory a block reads PH·PW + GROUP·k_h·k_w values
# per channel for TH·TW·GROUP·k_h·k_w multiply-adds: for 16×16 and 3×3 in float32,
# (18·18 + 72)·4 = 1,584 bytes for 18,432 multiply-adds, ~23 FLOP/byte (v1: 0.25 at the
# cache level), right of the H200's ridge (~14 FLOP/byte). So no longer bound by HBM or
# L2 but by issuing shared-memory loads: 1 patch load per GROUP multiply-adds, plus
# GROUP weight loads (broadcasts) — about one shared load per multiply-add. v3's
# register blocking (several outputs per thread) is the next step.
#
# Each output sums its terms in v1's order (c, then u, then v), so v1 and v2 agree to the
# last bit wherever the compiler fuses neither or both into FMAs.
@cuda.jit
def conv2d_v2_forward(x, weight, y, sh, sw, ph, pw, dh, dw):
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    O, kh, kw = weight.shape[0], weight.shape[2], weight.shape[3]
    Ho, Wo = y.shape[2], y.shape[3]
    TW, TH = cuda.blockDim.x, cuda.blockDim.y
    PH = (TH - 1) * sh + (kh - 1) * dh + 1
    PW = (TW - 1) * sw + (kw - 1) * dw + 1
    taps = kh * kw
    shared = cuda.shared.array(0, dtype=x.dtype)           # extern __shared__ T shared[]
    patch = shared[:PH * PW]                                 # [PH][PW]
    weights = shared[PH * PW:PH * PW + GROUP * taps]         # [GROUP][k_h·k_w]

    groups = (O + GROUP - 1) // GROUP
    n, g0 = cuda.blockIdx.z // groups, (cuda.blockIdx.z % groups) * GROUP
    i0, j0 = cuda.blockIdx.y * TH, cuda.blockIdx.x * TW
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    tid, threads = ty * TW + tx, TW * TH
    top, left = i0 * sh - ph, j0 * sw - pw                   # the patch's first input row and column
    zero = x.dtype.type(0)

    acc = cuda.local.array(GROUP, dtype=x.dtype)
    for g in range(GROUP):
        acc[g] = zero
    for c in range(C):
        for e in range(tid, PH * PW, threads):
            h, w = top + e // PW, left + e % PW
            patch[e] = x[n, c, h, w] if 0 <= h < H and 0 <= w < W else zero
        for e in range(tid, GROUP * taps, threads):
            o, tap = g0 + e // taps, e % taps
            weights[e] = weight[o, c, tap // kw, tap % kw] if o < O else zero
        cuda.syncthreads()
        for u in range(kh):
            for v in range(kw):
                value = patch[(ty * sh + u * dh) * PW + tx * sw + v * dw]
                for g in range(GROUP):
                    acc[g] += weights[g * taps + u * kw + v] * value
        cuda.syncthreads()
    i, j = i0 + ty, j0 + tx
    if i < Ho and j < Wo:
        for g in range(GROUP):
            if g0 + g < O:
                y[n, g0 + g, i, j] = acc[g]


# ---------------------------------------------------------------------------------------
# Input gradient v1 (kernels/conv2d_v1_naive.cu, conv2d_v1_input_grad): a gather.
#
# Thread/block mapping: one thread per dx[n,c,h,w], w fastest, 256-thread blocks,
# grid-stride. For each tap (u, v) the thread finds the one window that read x[n,c,h,w]
# through it: the row h + p_top − d_h·u must be a non-negative multiple of s_h, s_h·i,
# with i < H' (columns likewise); then it adds W[o,c,u,v]·dy[n,o,i,j] for every o.
# A scatter (a thread per dy element adding into dx) would need atomics, whose order
# changes the float rounding from run to run. Any padding, stride, dilation and the
# explicit output size work, which is what conv_transpose2d's forward needs.
#
# Memory access: dx writes coalesced; dy reads follow w at step 1/s_w (coalesced, shared
# by lanes when s_w > 1); W[o,c,u,v] is a warp-wide broadcast. With stride > 1, lanes
# whose tap does not divide skip it: the warp diverges by the parity of w.
#
# Arithmetic intensity: as the v1 forward, ~0.25 FLOP/byte at the cache level.
@cuda.jit
def conv2d_v1_input_grad(dy, weight, dx, sh, sw, ph, pw, dh, dw):
    N, C, H, W = dx.shape
    O, kh, kw = weight.shape[0], weight.shape[2], weight.shape[3]
    Ho, Wo = dy.shape[2], dy.shape[3]
    total = N * C * H * W
    for e in range(cuda.grid(1), total, cuda.gridsize(1)):
        w = e % W
        h = (e // W) % H
        c = (e // (W * H)) % C
        n = e // (W * H * C)
        acc = dx.dtype.type(0)
        for u in range(kh):
            row = h + ph - dh * u
            if row < 0 or row % sh != 0 or row // sh >= Ho:
                continue
            i = row // sh
            for v in range(kw):
                column = w + pw - dw * v
                if column < 0 or column % sw != 0 or column // sw >= Wo:
                    continue
                j = column // sw
                for o in range(O):
                    acc += weight[o, c, u, v] * dy[n, o, i, j]
        dx[n, c, h, w] = acc


# ---------------------------------------------------------------------------------------
# Input gradient v2 (kernels/conv2d_v2_tiled.cu, conv2d_v2_input_grad): the tiled gather.
#
# Thread/block mapping: a block of TW×TH threads (tile as the forward's, from dx's size)
# owns the dx tile h ∈ [h0, h0+TH), w ∈ [w0, w0+TW) of the input channels
# [c0, c0+GROUP) of sample n: blockIdx = (w tile, h tile, n·groups + group); thread
# (tx, ty) owns pixel (h0+ty, w0+tx) and GROUP accumulators.
#
# Which dy does the tile read? Pixel h receives dy row i through tap u when
# h + p_top − d_h·u = s_h·i. Over the tile and all taps, i runs from
# i_lo = ⌈(h0 + p_top − d_h·(k_h−1)) / s_h⌉ to ⌊(h0 + TH − 1 + p_top) / s_h⌋: at most
# PH = (TH − 1 + d_h·(k_h−1)) // s_h + 1 rows (likewise columns). Per output channel o
# the block stages that dy patch (zeros outside dy) and W[o, c0:c0+GROUP] in shared
# memory; then each thread walks its taps, and a tap whose offset is a multiple of the
# stride reads patch[i − i_lo][j − j_lo] once for GROUP multiply-adds.
#
# Memory access: patch loads coalesce along j; at stride 1 a half-warp reads 16
# consecutive words, at stride 2 neighbouring threads share a word (a broadcast);
# weight reads are warp-wide broadcasts. With stride > 1 a fraction 1 − 1/(s_h·s_w) of
# the (pixel, tap) pairs is skipped, divergent by parity within a warp.
#
# Arithmetic intensity: as the v2 forward (~23 FLOP/byte from global memory for 3×3 at
# stride 1), bound by issuing shared-memory loads.
@cuda.jit
def conv2d_v2_input_grad(dy, weight, dx, sh, sw, ph, pw, dh, dw):
    C, H, W = dx.shape[1], dx.shape[2], dx.shape[3]
    O, kh, kw = weight.shape[0], weight.shape[2], weight.shape[3]
    Ho, Wo = dy.shape[2], dy.shape[3]
    TW, TH = cuda.blockDim.x, cuda.blockDim.y
    PH = (TH - 1 + dh * (kh - 1)) // sh + 1
    PW = (TW - 1 + dw * (kw - 1)) // sw + 1
    taps = kh * kw
    shared = cuda.shared.array(0, dtype=dy.dtype)
    patch = shared[:PH * PW]                                 # [PH][PW] of dy
    weights = shared[PH * PW:PH * PW + GROUP * taps]         # [GROUP][k_h·k_w]

    groups = (C + GROUP - 1) // GROUP
    n, c0 = cuda.blockIdx.z // groups, (cuda.blockIdx.z % groups) * GROUP
    h0, w0 = cuda.blockIdx.y * TH, cuda.blockIdx.x * TW
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    tid, threads = ty * TW + tx, TW * TH
    # (// is floor division, also for negative numerators: i_lo = ⌈(h0 + p_top − d_h·(k_h−1)) / s_h⌉)
    i_lo = (h0 + ph - dh * (kh - 1) + sh - 1) // sh
    j_lo = (w0 + pw - dw * (kw - 1) + sw - 1) // sw
    h, w = h0 + ty, w0 + tx
    zero = dy.dtype.type(0)

    acc = cuda.local.array(GROUP, dtype=dy.dtype)
    for g in range(GROUP):
        acc[g] = zero
    for o in range(O):
        for e in range(tid, PH * PW, threads):
            i, j = i_lo + e // PW, j_lo + e % PW
            patch[e] = dy[n, o, i, j] if 0 <= i < Ho and 0 <= j < Wo else zero
        for e in range(tid, GROUP * taps, threads):
            c, tap = c0 + e // taps, e % taps
            weights[e] = weight[o, c, tap // kw, tap % kw] if c < C else zero
        cuda.syncthreads()
        for u in range(kh):
            row = h + ph - dh * u
            i = row // sh
            if i * sh != row:                        # no window reads h through tap u
                continue
            for v in range(kw):
                column = w + pw - dw * v
                j = column // sw
                if j * sw != column:
                    continue
                value = patch[(i - i_lo) * PW + (j - j_lo)]
                for g in range(GROUP):
                    acc[g] += weights[g * taps + u * kw + v] * value
        cuda.syncthreads()
    if h < H and w < W:
        for g in range(GROUP):
            if c0 + g < C:
                dx[n, c0 + g, h, w] = acc[g]


# ---------------------------------------------------------------------------------------
# Weight gradient v1 (kernels/conv2d_v1_naive.cu, conv2d_v1_weight_grad): a gather.
#
# Thread/block mapping: one thread per dW[o,c,u,v] (v fastest), 256-thread blocks,
# grid-stride; each thread sums N·H'·W' products in a serial loop over (n, i, j).
# Only O·C·k_h·k_w threads (576 for U-Net's first 1→64 layer), each with a long serial
# chain: the naive kernel at its worst, kept because it is exact and deterministic.
#
# Memory access: the lanes of a warp differ in (u, v), then c: for one (n, i, j) they
# read x at the nearby addresses of one window and other channels (scattered, not
# coalesced) and the same dy element (a broadcast).
#
# Arithmetic intensity: ~0.25 FLOP/byte at the cache level, with low occupancy on top;
# well under 1 % of the FP32 roof on large images.
@cuda.jit
def conv2d_v1_weight_grad(x, dy, dweight, sh, sw, ph, pw, dh, dw):
    N, C, H, W = x.shape
    O, kh, kw = dweight.shape[0], dweight.shape[2], dweight.shape[3]
    Ho, Wo = dy.shape[2], dy.shape[3]
    total = O * C * kh * kw
    for e in range(cuda.grid(1), total, cuda.gridsize(1)):
        v = e % kw
        u = (e // kw) % kh
        c = (e // (kw * kh)) % C
        o = e // (kw * kh * C)
        acc = x.dtype.type(0)
        for n in range(N):
            for i in range(Ho):
                h = sh * i + dh * u - ph
                if h < 0 or h >= H:
                    continue
                for j in range(Wo):
                    w = sw * j + dw * v - pw
                    if w < 0 or w >= W:
                        continue
                    acc += dy[n, o, i, j] * x[n, c, h, w]
        dweight[o, c, u, v] = acc


# ---------------------------------------------------------------------------------------
# Weight gradient v2 (kernels/conv2d_v2_tiled.cu, conv2d_v2_weight_grad): one block per
# (o, c) and a reduction in shared memory.
#
# Thread/block mapping: blockIdx = (c, o), a power-of-two number of threads in x (256 on
# a GPU, as the CUDA C; see REDUCE_THREADS). Thread t takes the positions p = t, t+T, …
# of the N·H'·W' output positions, p = (n·H' + i)·W' + j, and for TAPS taps at a time
# accumulates dy[n,o,i,j] · x[n,c, s_h·i+d_h·u−p_top, s_w·j+d_w·v−p_left] in registers (a
# 3×3 kernel in one pass over the data). Then the block adds its T partials per tap by a
# tree in shared memory (partial[k][t] += partial[k][t + s] for s = T/2, …, 1), always in
# the same order: deterministic, no atomics, and O·C blocks instead of v1's O·C·k_h·k_w
# threads with long serial loops.
#
# Memory access: consecutive threads take consecutive positions: dy reads coalesce, x
# reads coalesce at stride 1 (the taps re-read the same lines from L1). Shared memory:
# TAPS × T partials (18 KB in float64 for T = 256), read in the tree with consecutive
# threads on consecutive words (no bank conflicts).
#
# Arithmetic intensity: 2 FLOP per x load (dy loaded once per TAPS taps) from L1/L2,
# ~0.5 FLOP/byte in float32 at the cache level: bound by L1/L2 load throughput.
@cuda.jit
def conv2d_v2_weight_grad(x, dy, dweight, sh, sw, ph, pw, dh, dw):
    N, C, H, W = x.shape
    O, kh, kw = dweight.shape[0], dweight.shape[2], dweight.shape[3]
    Ho, Wo = dy.shape[2], dy.shape[3]
    c, o, t = cuda.blockIdx.x, cuda.blockIdx.y, cuda.threadIdx.x
    threads = cuda.blockDim.x
    taps = kh * kw
    positions = N * Ho * Wo
    partial = cuda.shared.array(0, dtype=x.dtype)          # [TAPS][threads]
    acc = cuda.local.array(TAPS, dtype=x.dtype)
    for first in range(0, taps, TAPS):
        for k in range(TAPS):
            acc[k] = x.dtype.type(0)
        for p in range(t, positions, threads):
            j = p % Wo
            i = (p // Wo) % Ho
            n = p // (Wo * Ho)
            grad = dy[n, o, i, j]
            for k in range(TAPS):
                if first + k >= taps:
                    break
                u, v = (first + k) // kw, (first + k) % kw
                h, w = sh * i + dh * u - ph, sw * j + dw * v - pw
                if 0 <= h < H and 0 <= w < W:
                    acc[k] += grad * x[n, c, h, w]
        for k in range(TAPS):
            partial[k * threads + t] = acc[k]
        cuda.syncthreads()
        stride = threads // 2
        while stride > 0:
            if t < stride:
                for k in range(TAPS):
                    partial[k * threads + t] += partial[k * threads + t + stride]
            cuda.syncthreads()
            stride //= 2
        if t < TAPS and first + t < taps:
            dweight[o, c, (first + t) // kw, (first + t) % kw] = partial[t * threads]
        cuda.syncthreads()                           # partial is rewritten by the next pass


# ----- launch code: grid and block sizes, output arrays

def _geometry_arguments(geometry):
    (sh, sw), (dh, dw) = geometry.stride, geometry.dilation
    (top, _), (left, _) = geometry.padding
    return sh, sw, top, left, dh, dw


def _flat_launch(total):
    """(grid, block) of a 1-D kernel over ``total`` elements: THREADS-thread blocks, at most
    MAX_BLOCKS of them; a problem smaller than one block gets just the warps it needs."""
    threads = min(THREADS, 32 * blocks_for(total, 32))
    return min(blocks_for(total, threads), MAX_BLOCKS), threads


def _name(kernel, dtype):
    return f"{kernel}[{np.dtype(dtype).name}]"


def v2_shared_memory_bytes(tile, weight_shape, geometry, itemsize, primitive="forward"):
    """Bytes of shared memory of a tile×tile block of the v2 forward or input gradient: the
    patch it stages (of x for the forward, of dy for the input gradient), then GROUP·k_h·k_w weights."""
    (kh, kw), (sh, sw), (dh, dw) = weight_shape[2:], geometry.stride, geometry.dilation
    if primitive == "forward":
        patch = ((tile - 1) * sh + dh * (kh - 1) + 1) * ((tile - 1) * sw + dw * (kw - 1) + 1)
    else:
        patch = ((tile - 1 + dh * (kh - 1)) // sh + 1) * ((tile - 1 + dw * (kw - 1)) // sw + 1)
    return (patch + GROUP * kh * kw) * itemsize


def v2_tile(size, weight_shape, geometry, itemsize, primitive="forward"):
    """The square tile of the v2 forward (``size`` = y's H', W') or input gradient (dx's H, W),
    as the CUDA C launcher picks it; None: use v1.

    16, or 8 for images of at most 8×8 (a 16×16 block would leave three quarters of its
    threads idle), or 4 for images of at most 4×4; a smaller one where the tile's patch
    would exceed SHARED_MEMORY_LIMIT; None where even a 4×4 tile's would (a huge stride
    or dilation: the CUDA C launcher refuses those, here v1 runs them).
    """
    for tile in TILES:
        if tile > TILES[-1] and max(size) <= tile // 2:
            continue
        if v2_shared_memory_bytes(tile, weight_shape, geometry, itemsize, primitive) <= SHARED_MEMORY_LIMIT:
            return tile
    return None


def _launch_tiled(name, kernel, a, weight, out, channels, tile, shared_mem, geometry):
    """Launch a v2 tiled kernel over ``out`` (N, channels, H, W): one block per (tile, sample,
    group of GROUP channels); samples split across launches where the blocks exceed gridDim.z."""
    N, H, W = out.shape[0], out.shape[2], out.shape[3]
    groups = blocks_for(channels, GROUP)
    samples_per_launch = MAX_GRID_Z // groups
    for n0 in range(0, N, samples_per_launch):
        n1 = min(N, n0 + samples_per_launch)
        launch(name, kernel, (blocks_for(W, tile), blocks_for(H, tile), (n1 - n0) * groups), (tile, tile),
               (a[n0:n1], weight, out[n0:n1]) + _geometry_arguments(geometry), shared_mem)


def forward(x, weight, geometry, version="v2"):
    """y = conv2d(x, W): (N, C, H, W), (O, C, k_h, k_w) -> (N, O, H', W'), by the v1 or v2 kernel."""
    xp = backend.get_array_module(x, weight)
    x, weight = xp.ascontiguousarray(x), xp.ascontiguousarray(weight)
    check_arrays("conv2d", x, weight)
    (N, O), (Ho, Wo) = (x.shape[0], weight.shape[0]), geometry.output_size
    y = xp.empty((N, O, Ho, Wo), dtype=x.dtype)
    tile = v2_tile(geometry.output_size, weight.shape, geometry, x.itemsize)
    if version == "v1" or tile is None or blocks_for(O, GROUP) > MAX_GRID_Z:
        launch(_name("conv2d_v1_forward", x.dtype), conv2d_v1_forward, *_flat_launch(y.size),
               (x, weight, y) + _geometry_arguments(geometry))
    else:
        _launch_tiled(_name("conv2d_v2_forward", x.dtype), conv2d_v2_forward, x, weight, y, O, tile,
                      v2_shared_memory_bytes(tile, weight.shape, geometry, x.itemsize), geometry)
    return y


def input_grad(grad, weight, geometry, version="v2"):
    """dX of y = conv2d(x, W), given dY (N, O, H', W') and W (O, C, k_h, k_w): -> (N, C, H, W)."""
    xp = backend.get_array_module(grad, weight)
    grad, weight = xp.ascontiguousarray(grad), xp.ascontiguousarray(weight)
    check_arrays("conv2d", grad, weight)
    C = weight.shape[1]
    dx = xp.empty((grad.shape[0], C) + tuple(geometry.input_size), dtype=grad.dtype)
    tile = v2_tile(geometry.input_size, weight.shape, geometry, grad.itemsize, "input_grad")
    if version == "v1" or tile is None or blocks_for(C, GROUP) > MAX_GRID_Z:
        launch(_name("conv2d_v1_input_grad", grad.dtype), conv2d_v1_input_grad, *_flat_launch(dx.size),
               (grad, weight, dx) + _geometry_arguments(geometry))
    else:
        _launch_tiled(_name("conv2d_v2_input_grad", grad.dtype), conv2d_v2_input_grad, grad, weight, dx, C, tile,
                      v2_shared_memory_bytes(tile, weight.shape, geometry, grad.itemsize, "input_grad"), geometry)
    return dx


def weight_grad(x, grad, geometry, version="v2"):
    """dW[o,c,u,v] = Σ_{n,i,j} dY[n,o,i,j] · x_pad[n,c, s·i+d·u, s·j+d·v]: -> (O, C, k_h, k_w)."""
    xp = backend.get_array_module(x, grad)
    x, grad = xp.ascontiguousarray(x), xp.ascontiguousarray(grad)
    check_arrays("conv2d", x, grad)
    O, C = grad.shape[1], x.shape[1]
    dweight = xp.empty((O, C) + tuple(geometry.kernel), dtype=x.dtype)
    args = (x, grad, dweight) + _geometry_arguments(geometry)
    if version == "v1" or O > MAX_GRID_Z:
        launch(_name("conv2d_v1_weight_grad", x.dtype), conv2d_v1_weight_grad, *_flat_launch(dweight.size), args)
    else:
        threads = reduce_threads()
        launch(_name("conv2d_v2_weight_grad", x.dtype), conv2d_v2_weight_grad, (C, O), threads, args,
               TAPS * threads * x.itemsize)
    return dweight


def reduce_threads():
    """Threads per block of the v2 weight gradient: REDUCE_THREADS on a GPU; in Numba's simulator,
    where every thread is a Python thread and each syncthreads() a barrier among them,
    SIMULATOR_REDUCE_THREADS (any power of two gives the same sums up to rounding: only the
    shape of the fixed reduction tree changes)."""
    return SIMULATOR_REDUCE_THREADS if simulated() else REDUCE_THREADS
