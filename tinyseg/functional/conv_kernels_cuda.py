"""Launch code of the hand-written CUDA convolutions (kernels/conv2d_v*.cu, kernels/im2col.cu).

Each class below is a conv2d kernel in the sense of ``conv.py``: the three primitives
``forward(x, W, geometry)``, ``input_grad(dY, W, geometry)`` and
``weight_grad(x, dY, geometry)`` over a ``_ConvGeometry``, so conv2d *and*
conv_transpose2d run through them exactly as through the CPU kernels. They are
registered in ``conv.CONV2D_KERNELS``:

==============  ======================================================================
"cuda_v1"       kernels/conv2d_v1_naive.cu: one thread per output element
"cuda_v2"       kernels/conv2d_v2_tiled.cu: shared-memory tiles, block reductions
"cuda_v3"       kernels/conv2d_v3_implicit_gemm.cu: implicit GEMM, register blocking
"cuda"          the best hand-written version (v3, see ``CudaConvKernel``)
"cuda_im2col"   kernels/im2col.cu + cuBLAS (``xp.matmul``), col2im as a gather
"cupy"          conv.py's NumPy-expression im2col path run by CuPy (in conv.py)
==============  ======================================================================

They run on CuPy arrays (the GPU), or on NumPy arrays inside
``tinyseg.backend.cuda_emulation()`` (the same .cu source through the host emulation).
Every output element has one writer and every sum a fixed order: results are the same
bits on every run.

On CuPy arrays, conv2d's "auto" kernel uses ``MeasuredChoice``: the first time it meets
a (primitive, shapes, geometry, dtype) it times every candidate on the GPU in use and
keeps the fastest for the rest of the process (like ``torch.backends.cudnn.benchmark``).
"""
from __future__ import annotations

import math

import numpy as np

from .. import backend, cuda

THREADS = 256            # threads per block of the one-thread-per-element kernels
MAX_BLOCKS = 4096        # grid cap of their grid-stride loops (fills any current GPU many times)
MAX_GRID_Z = 65535       # CUDA's limit on gridDim.y and gridDim.z
SHARED_LIMIT = 48 * 1024  # dynamic shared memory a block may take without an opt-in

V2_GROUP = 8             # kernels/conv2d_v2_tiled.cu: V2_GROUP
V3_TILE = 64             # kernels/conv2d_v3_implicit_gemm.cu: V3_BM = V3_BN
V3_BK = 8                # ... V3_BK
V3_BLOCK = (16, 16)

# v3's weight gradient splits its long K = N·Ho·Wo sum over blockIdx.z until the grid has
# about SPLIT_K_TARGET_BLOCKS blocks (two per SM of a 132-SM H200), each split summing at
# least SPLIT_K_MIN_DEPTH products per dW element.
SPLIT_K_TARGET_BLOCKS = 264
SPLIT_K_MIN_DEPTH = 512


def _grid(count):
    return min(cuda.blocks_for(count, THREADS), MAX_BLOCKS)


def _geometry_args(N, C, H, W, O, geometry, with_out_channels=True):
    """The kernels' size arguments, as ``int`` (np.int32): N, C, H, W, [O,] Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw."""
    (Ho, Wo), (kh, kw), (sh, sw), (dh, dw) = geometry.output_size, geometry.kernel, geometry.stride, geometry.dilation
    (top, _), (left, _) = geometry.padding
    sizes = (N, C, H, W) + ((O,) if with_out_channels else ()) + (Ho, Wo, kh, kw, sh, sw, top, left, dh, dw)
    for size in sizes:
        if abs(size) >= 2**31:
            raise ValueError(f"conv2d (CUDA): size {size} does not fit the kernels' int arguments")
    return tuple(np.int32(s) for s in sizes)


def _operands(*arrays):
    xp = backend.get_array_module(*arrays)
    return xp, [xp.ascontiguousarray(a) for a in arrays]


def _sample_chunks(N, blocks_per_sample):
    """Ranges of samples whose blocks fit in gridDim.z (one launch per range)."""
    per_launch = max(1, MAX_GRID_Z // blocks_per_sample)
    if blocks_per_sample > MAX_GRID_Z:
        raise ValueError(f"conv2d (CUDA v2): {blocks_per_sample} channel groups per sample exceed gridDim.z")
    for n0 in range(0, N, per_launch):
        yield n0, min(N, n0 + per_launch)


class ConvV1Kernel:
    """v1: one thread per output element of each primitive (kernels/conv2d_v1_naive.cu)."""

    name = "cuda_v1"
    device = "cuda"
    source = "conv2d_v1_naive.cu"

    @classmethod
    def forward(cls, x, weight, geometry):
        xp, (x, weight) = _operands(x, weight)
        (N, C, H, W), O = x.shape, weight.shape[0]
        y = xp.empty((N, O, *geometry.output_size), dtype=x.dtype)
        cuda.launch(cls.source, "conv2d_v1_forward", x.dtype, _grid(y.size), THREADS,
                    (x, weight, y, *_geometry_args(N, C, H, W, O, geometry)))
        return y

    @classmethod
    def input_grad(cls, grad, weight, geometry):
        xp, (grad, weight) = _operands(grad, weight)
        (N, O), C, (H, W) = grad.shape[:2], weight.shape[1], geometry.input_size
        dx = xp.empty((N, C, H, W), dtype=grad.dtype)
        cuda.launch(cls.source, "conv2d_v1_input_grad", grad.dtype, _grid(dx.size), THREADS,
                    (grad, weight, dx, *_geometry_args(N, C, H, W, O, geometry)))
        return dx

    @classmethod
    def weight_grad(cls, x, grad, geometry):
        xp, (x, grad) = _operands(x, grad)
        (N, C, H, W), O = x.shape, grad.shape[1]
        dw = xp.empty((O, C, *geometry.kernel), dtype=x.dtype)
        cuda.launch(cls.source, "conv2d_v1_weight_grad", x.dtype, _grid(dw.size), THREADS,
                    (x, grad, dw, *_geometry_args(N, C, H, W, O, geometry)))
        return dw


class ConvV2Kernel:
    """v2: shared-memory tiles of input and weights; block reductions for dW (kernels/conv2d_v2_tiled.cu)."""

    name = "cuda_v2"
    device = "cuda"
    source = "conv2d_v2_tiled.cu"

    @staticmethod
    def tile(height, width, shared_bytes):
        """The square tile (block of tile×tile threads): 16, or 8 for small images or when 16's
        shared memory (``shared_bytes(tile)``) would exceed SHARED_LIMIT."""
        for tile in (16, 8, 4):
            if tile > 4 and max(height, width) <= tile // 2:
                continue
            if shared_bytes(tile) <= SHARED_LIMIT:
                return tile
        raise ValueError(f"conv2d (CUDA v2): the staged patch needs {shared_bytes(4)} bytes of shared memory "
                         f"even with 4×4 tiles; use 'cuda_v3' for this geometry")

    @classmethod
    def forward(cls, x, weight, geometry):
        xp, (x, weight) = _operands(x, weight)
        (N, C, H, W), O = x.shape, weight.shape[0]
        (Ho, Wo), (kh, kw), (sh, sw), (dh, dw) = geometry.output_size, geometry.kernel, geometry.stride, geometry.dilation

        def shared_bytes(tile):
            patch = ((tile - 1) * sh + (kh - 1) * dh + 1) * ((tile - 1) * sw + (kw - 1) * dw + 1)
            return (patch + V2_GROUP * kh * kw) * x.itemsize

        tile = cls.tile(Ho, Wo, shared_bytes)
        groups = -(-O // V2_GROUP)
        y = xp.empty((N, O, Ho, Wo), dtype=x.dtype)
        for n0, n1 in _sample_chunks(N, groups):
            grid = (-(-Wo // tile), -(-Ho // tile), (n1 - n0) * groups)
            cuda.launch(cls.source, "conv2d_v2_forward", x.dtype, grid, (tile, tile),
                        (x[n0:n1], weight, y[n0:n1], *_geometry_args(n1 - n0, C, H, W, O, geometry)),
                        shared_mem=shared_bytes(tile))
        return y

    @classmethod
    def input_grad(cls, grad, weight, geometry):
        xp, (grad, weight) = _operands(grad, weight)
        (N, O), C, (H, W) = grad.shape[:2], weight.shape[1], geometry.input_size
        (kh, kw), (sh, sw), (dh, dw) = geometry.kernel, geometry.stride, geometry.dilation

        def shared_bytes(tile):
            patch = ((tile - 1 + dh * (kh - 1)) // sh + 1) * ((tile - 1 + dw * (kw - 1)) // sw + 1)
            return (patch + V2_GROUP * kh * kw) * grad.itemsize

        tile = cls.tile(H, W, shared_bytes)
        groups = -(-C // V2_GROUP)
        dx = xp.empty((N, C, H, W), dtype=grad.dtype)
        for n0, n1 in _sample_chunks(N, groups):
            grid = (-(-W // tile), -(-H // tile), (n1 - n0) * groups)
            cuda.launch(cls.source, "conv2d_v2_input_grad", grad.dtype, grid, (tile, tile),
                        (grad[n0:n1], weight, dx[n0:n1], *_geometry_args(n1 - n0, C, H, W, O, geometry)),
                        shared_mem=shared_bytes(tile))
        return dx

    @classmethod
    def weight_grad(cls, x, grad, geometry):
        xp, (x, grad) = _operands(x, grad)
        (N, C, H, W), O = x.shape, grad.shape[1]
        if O > MAX_GRID_Z:
            raise ValueError(f"conv2d (CUDA v2): {O} output channels exceed gridDim.y")
        dw = xp.empty((O, C, *geometry.kernel), dtype=x.dtype)
        cuda.launch(cls.source, "conv2d_v2_weight_grad", x.dtype, (C, O), THREADS,
                    (x, grad, dw, *_geometry_args(N, C, H, W, O, geometry)))
        return dw


class ConvV3Kernel:
    """v3: implicit GEMM with 64×64 block tiles and 4×4 register tiles (kernels/conv2d_v3_implicit_gemm.cu)."""

    name = "cuda_v3"
    device = "cuda"
    source = "conv2d_v3_implicit_gemm.cu"

    @staticmethod
    def _grid(columns, rows, splits=1):
        if -(-rows // V3_TILE) > MAX_GRID_Z:
            raise ValueError(f"conv2d (CUDA v3): {rows} GEMM rows exceed gridDim.y")
        return (max(1, -(-columns // V3_TILE)), max(1, -(-rows // V3_TILE)), splits)

    @classmethod
    def forward(cls, x, weight, geometry):
        xp, (x, weight) = _operands(x, weight)
        (N, C, H, W), O = x.shape, weight.shape[0]
        (Ho, Wo) = geometry.output_size
        y = xp.empty((N, O, Ho, Wo), dtype=x.dtype)
        cuda.launch(cls.source, "conv2d_v3_forward", x.dtype, cls._grid(N * Ho * Wo, O), V3_BLOCK,
                    (x, weight, y, *_geometry_args(N, C, H, W, O, geometry)))
        return y

    @classmethod
    def input_grad(cls, grad, weight, geometry):
        xp, (grad, weight) = _operands(grad, weight)
        (N, O), C, (H, W) = grad.shape[:2], weight.shape[1], geometry.input_size
        dx = xp.empty((N, C, H, W), dtype=grad.dtype)
        cuda.launch(cls.source, "conv2d_v3_input_grad", grad.dtype, cls._grid(N * H * W, C), V3_BLOCK,
                    (grad, weight, dx, *_geometry_args(N, C, H, W, O, geometry)))
        return dx

    @staticmethod
    def splits(out_channels, columns, depth):
        """(number of K splits, depth per split) of the weight gradient's GEMM: enough blocks
        to fill the GPU, each split at least SPLIT_K_MIN_DEPTH deep (a multiple of V3_BK)."""
        if depth == 0:
            return 1, V3_BK
        tiles = -(-out_channels // V3_TILE) * -(-columns // V3_TILE)
        wanted = max(1, min(-(-SPLIT_K_TARGET_BLOCKS // tiles), depth // SPLIT_K_MIN_DEPTH, MAX_GRID_Z))
        per_split = -(-depth // wanted)
        per_split = -(-per_split // V3_BK) * V3_BK
        return -(-depth // per_split), per_split

    @classmethod
    def weight_grad(cls, x, grad, geometry):
        xp, (x, grad) = _operands(x, grad)
        (N, C, H, W), O = x.shape, grad.shape[1]
        (Ho, Wo), (kh, kw) = geometry.output_size, geometry.kernel
        columns = C * kh * kw
        splits, per_split = cls.splits(O, columns, N * Ho * Wo)
        dw = xp.empty((O, C, kh, kw), dtype=x.dtype)
        partial = dw if splits == 1 else xp.empty((splits, O, C, kh, kw), dtype=x.dtype)
        cuda.launch(cls.source, "conv2d_v3_weight_grad", x.dtype, cls._grid(columns, O, splits), V3_BLOCK,
                    (x, grad, partial, *_geometry_args(N, C, H, W, O, geometry), np.int64(per_split)))
        if splits > 1:
            cuda.launch(cls.source, "conv2d_v3_sum_splits", x.dtype, _grid(dw.size), THREADS,
                        (partial, dw, np.int64(dw.size), np.int32(splits)))
        return dw


class CudaConvKernel(ConvV3Kernel):
    """"cuda": the best hand-written version.

    v3 is the expected best (register blocking: ~2 FMAs per shared-memory load against
    v2's ~1 and v1's global loads; split-K fills the GPU for the weight gradient). It has
    not been timed on a GPU yet: ``tinyseg bench --device cuda`` times every version per
    U-Net layer shape and primitive, side by side, and whichever wins there over the
    layers of the benchmark network is the one this name should point to.
    """

    name = "cuda"


class Im2colCudaKernel:
    """im2col in CUDA C, the GEMMs by cuBLAS (``xp.matmul``), col2im as a deterministic gather (kernels/im2col.cu).

    The cols matrix (N, C·k_h·k_w, H'·W') is built in full (memory is not the constraint
    on the GPU); y[n] = W · cols[n] and dW = Σ_n dY[n] · cols[n]ᵀ are batched GEMMs;
    dX = col2im(Wᵀ · dY[n]).
    """

    name = "cuda_im2col"
    device = "cuda"
    source = "im2col.cu"

    @classmethod
    def columns(cls, xp, x, geometry):
        N, C, H, W = x.shape
        (Ho, Wo), (kh, kw) = geometry.output_size, geometry.kernel
        cols = xp.empty((N, C * kh * kw, Ho * Wo), dtype=x.dtype)
        cuda.launch(cls.source, "im2col", x.dtype, _grid(cols.size), THREADS,
                    (x, cols, *_geometry_args(N, C, H, W, None, geometry, with_out_channels=False)))
        return cols

    @classmethod
    def forward(cls, x, weight, geometry):
        xp, (x, weight) = _operands(x, weight)
        N, O = x.shape[0], weight.shape[0]
        y = xp.matmul(weight.reshape(O, weight[0].size), cls.columns(xp, x, geometry))
        return y.reshape(N, O, *geometry.output_size)

    @classmethod
    def weight_grad(cls, x, grad, geometry):
        xp, (x, grad) = _operands(x, grad)
        (N, O), C = grad.shape[:2], x.shape[1]
        cols = cls.columns(xp, x, geometry)
        per_sample = xp.matmul(grad.reshape(N, O, math.prod(geometry.output_size)), cols.transpose(0, 2, 1))
        return per_sample.sum(axis=0).reshape(O, C, *geometry.kernel)

    @classmethod
    def input_grad(cls, grad, weight, geometry):
        xp, (grad, weight) = _operands(grad, weight)
        (N, O), C, (H, W) = grad.shape[:2], weight.shape[1], geometry.input_size
        dcols = xp.ascontiguousarray(xp.matmul(weight.reshape(O, weight[0].size).T,
                                               grad.reshape(N, O, math.prod(geometry.output_size))))
        dx = xp.empty((N, C, H, W), dtype=grad.dtype)
        cuda.launch(cls.source, "col2im_gather", grad.dtype, _grid(dx.size), THREADS,
                    (dcols, dx, *_geometry_args(N, C, H, W, None, geometry, with_out_channels=False)))
        return dx


CUDA_CONV2D_KERNELS = (ConvV1Kernel, ConvV2Kernel, ConvV3Kernel, CudaConvKernel, Im2colCudaKernel)


# ----- "auto" on the GPU: the fastest measured, per primitive, shape and dtype

# v1 is never a candidate: it teaches, and its weight gradient alone can take seconds
# on a large layer (one thread per dW element), which "auto" would pay on first use.
GPU_AUTO_CANDIDATES = ("cuda_v3", "cuda_v2", "cuda_im2col", "cupy")


def cuda_event_timer(name, run, repeats=2):
    """Seconds one ``run()`` takes on the GPU: a warm-up (compiles the kernel, fills the
    caches), then the fastest of ``repeats`` runs between two CUDA events."""
    cp = backend.cupy_module()
    run()
    start, stop = cp.cuda.Event(), cp.cuda.Event()
    best = math.inf
    for _ in range(repeats):
        start.record()
        run()
        stop.record()
        stop.synchronize()
        best = min(best, cp.cuda.get_elapsed_time(start, stop) / 1e3)
    return best


class MeasuredChoice:
    """The GPU's "auto": per (primitive, shapes, geometry, dtype, device), the candidate measured fastest.

    On first use of a key every candidate kernel runs the primitive under ``timer(name, run)``
    (CUDA events by default; a test injects its own); the winner is kept in ``winners`` and
    every later call with that key runs it directly — measuring once per layer shape, as
    ``torch.backends.cudnn.benchmark`` does. ``timings`` keeps what was measured (inf for
    a candidate that refused the geometry with a ValueError).
    """

    def __init__(self, kernels, candidates=GPU_AUTO_CANDIDATES, timer=None):
        self.kernels, self.candidates = kernels, tuple(candidates)
        self.timer = timer
        self.winners: dict = {}
        self.timings: dict = {}

    @staticmethod
    def key(primitive, a, b, geometry):
        return (primitive, tuple(a.shape), tuple(b.shape), np.dtype(a.dtype).str, str(getattr(a, "device", "cpu")),
                geometry.input_size, geometry.output_size, geometry.kernel, geometry.stride, geometry.padding,
                geometry.dilation)

    def kernel_for(self, primitive, a, b, geometry):
        key = self.key(primitive, a, b, geometry)
        if key not in self.winners:
            timer = self.timer or cuda_event_timer
            times = {}
            for name in self.candidates:
                kernel = self.kernels[name]
                try:
                    times[name] = timer(name, lambda: getattr(kernel, primitive)(a, b, geometry))
                except ValueError:          # a geometry this kernel does not take (e.g. v2's patch too large)
                    times[name] = math.inf
            if all(t == math.inf for t in times.values()):
                raise ValueError(f"conv2d {primitive}: no GPU kernel among {', '.join(self.candidates)} "
                                 f"takes this convolution")
            self.timings[key] = times
            self.winners[key] = min(times, key=times.get)
        return self.kernels[self.winners[key]]

    def clear(self):
        self.winners.clear()
        self.timings.clear()

    def forward(self, x, weight, geometry):
        return self.kernel_for("forward", x, weight, geometry).forward(x, weight, geometry)

    def input_grad(self, grad, weight, geometry):
        return self.kernel_for("input_grad", grad, weight, geometry).input_grad(grad, weight, geometry)

    def weight_grad(self, x, grad, geometry):
        return self.kernel_for("weight_grad", x, grad, geometry).weight_grad(x, grad, geometry)
