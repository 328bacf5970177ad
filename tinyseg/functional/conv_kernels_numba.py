"""The compiled loops of the convolution kernels (Numba, CPU): im2col, and Winograd's transforms.

Imported lazily, on the first convolution that needs it, so that ``import tinyseg`` does
not pay for importing Numba. Every function is ``@njit(parallel=True, cache=True)``:
``prange`` runs over independent channels and each output element has exactly one
writer (no races; results do not depend on the thread count).

Every function works on one *block* of the convolution (docs/math/convolution.md,
section 7): im2col on output rows [i0, i1) of samples [n0, n1); Winograd on tile rows
[g0, g1) counted over the whole batch (g = n·T_h + i). A block's work array is then a
bounded size however large the image, which keeps peak memory down.

Threads. Numba's pool (these loops) and tinyseg's GEMM threads (``threads.matmul``,
OpenBLAS single-threaded) take turns within one convolution: transform, GEMM,
transform. Both sleep when idle, so neither takes a core from the other; the threading
layer is chosen by ``threads.select_threading_layer`` (tinyseg/threads.py says why).
"""
from __future__ import annotations


import numpy as np
from numba import njit, prange

from .. import threads
from . import simd_numba as simd

threads.select_threading_layer()
threads.configure()      # both pools capped at the cores available (tinyseg/threads.py)


# ----- im2col with the zero padding fused in

@njit(parallel=True, cache=True)
def im2col(x, kernel_h, kernel_w, stride_h, stride_w, dilation_h, dilation_w, top, left, out_w,
           n0, n1, i0, i1, cols):
    """cols[n−n0, (c,u,v), (i−i0)·W' + j] = x[n, c, s_h·i + d_h·u − top, s_w·j + d_w·v − left], 0 outside x.

    For samples n0 <= n < n1 and output rows i0 <= i < i1, in one pass: no padded copy
    of x. cols is (n1 − n0, C·k_h·k_w, (i1 − i0)·W'). One (n, c) per parallel iteration,
    which writes the k_h·k_w rows of cols it owns.
    """
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    rows = i1 - i0
    for nc in prange((n1 - n0) * C):
        n = nc // C
        c = nc - n * C
        image = x[n0 + n, c]
        for u in range(kernel_h):
            for v in range(kernel_w):
                out = cols[n, (c * kernel_h + u) * kernel_w + v].reshape((rows, out_w))
                # The output columns j whose input column s_w·j + shift lies inside x: j_lo <= j < j_hi.
                shift = dilation_w * v - left
                j_lo = min(out_w, max(0, (stride_w - 1 - shift) // stride_w))
                j_hi = max(j_lo, min(out_w, (W - shift + stride_w - 1) // stride_w))
                for i in range(rows):
                    r = stride_h * (i0 + i) + dilation_h * u - top
                    line = out[i]
                    if r < 0 or r >= H:
                        line[:] = 0
                        continue
                    line[:j_lo] = 0
                    source = image[r]
                    if stride_w == 1:
                        line[j_lo:j_hi] = source[j_lo + shift:j_hi + shift]
                    else:
                        for j in range(j_lo, j_hi):
                            line[j] = source[stride_w * j + shift]
                    line[j_hi:] = 0


# ----- Winograd F(2×2, 3×3): the input and output transforms (docs/math/convolution.md, section 8)

@njit(parallel=True, cache=True)
def winograd_input_transform(x, top, left, tiles_h, tiles_w, g0, g1, V):
    """V[4a+b, c, (g−g0)·T_w + j] = (Bᵀ d B)[a, b] for the 4×4 tile d = x_pad[n, c, 2i:2i+4, 2j:2j+4].

    g = n·T_h + i runs over tile rows g0 <= g < g1 of the whole batch. x_pad is x shifted
    by (top, left) with zeros around (a negative amount crops), as far as the tiles reach.
    Bᵀ = [[1,0,−1,0], [0,1,1,0], [0,−1,1,0], [0,1,0,−1]] is applied to the tile's rows,
    then to its columns. x (N, C, H, W) -> V (16, C, (g1−g0)·T_w). One channel c per
    parallel iteration.
    """
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    width = 2 * tiles_w + 2
    q_lo = min(max(left, 0), width)
    q_hi = max(q_lo, min(W + left, width))
    for c in prange(C):
        rows = np.zeros((4, width), dtype=x.dtype)       # the tile row's 4 padded input rows
        mixed = np.empty((4, width), dtype=x.dtype)      # Bᵀ · rows
        for g in range(g0, g1):
            n = g // tiles_h
            i = g - n * tiles_h
            for a in range(4):
                r = 2 * i + a - top
                if 0 <= r < H:
                    rows[a, q_lo:q_hi] = x[n, c, r, q_lo - left:q_hi - left]
                else:
                    rows[a, q_lo:q_hi] = 0
            for q in range(width):
                mixed[0, q] = rows[0, q] - rows[2, q]
                mixed[1, q] = rows[1, q] + rows[2, q]
                mixed[2, q] = rows[2, q] - rows[1, q]
                mixed[3, q] = rows[1, q] - rows[3, q]
            first = (g - g0) * tiles_w
            for a in range(4):
                for j in range(tiles_w):
                    d0, d1 = mixed[a, 2 * j], mixed[a, 2 * j + 1]
                    d2, d3 = mixed[a, 2 * j + 2], mixed[a, 2 * j + 3]
                    V[4 * a + 0, c, first + j] = d0 - d2
                    V[4 * a + 1, c, first + j] = d1 + d2
                    V[4 * a + 2, c, first + j] = d2 - d1
                    V[4 * a + 3, c, first + j] = d1 - d3


@njit(parallel=True, cache=True)
def winograd_output_transform(M, tiles_h, tiles_w, g0, g1, y):
    """y[n, o, 2i:2i+2, 2j:2j+2] = Aᵀ m A for m[a, b] = M[4a+b, o, (g−g0)·T_w + j], cropped to y.

    g = n·T_h + i runs over tile rows g0 <= g < g1. Aᵀ = [[1,1,1,0], [0,1,−1,−1]]: the
    2×2 outputs of each tile. M (16, O, (g1−g0)·T_w) -> y (N, O, H', W'); an odd H' or
    W' drops the tiles' last row or column. One output channel o per parallel iteration.
    """
    O, out_h, out_w = y.shape[1], y.shape[2], y.shape[3]
    full = out_w // 2                 # tiles whose two output columns both lie inside y
    for o in prange(O):
        mixed = np.empty((2, 4, tiles_w), dtype=M.dtype)    # Aᵀ · m for each tile of the row
        for g in range(g0, g1):
            n = g // tiles_h
            i = g - n * tiles_h
            first = (g - g0) * tiles_w
            # Whole rows as slices, and no bounds test in the inner loops: LLVM vectorises
            # both (3.3× faster than element-wise indexing with the odd-width test inside,
            # measured on a 2-core Zen 4).
            for b in range(4):
                m0 = M[b, o, first:first + tiles_w]
                m1 = M[4 + b, o, first:first + tiles_w]
                m2 = M[8 + b, o, first:first + tiles_w]
                m3 = M[12 + b, o, first:first + tiles_w]
                top_row, bottom_row = mixed[0, b], mixed[1, b]
                for j in range(tiles_w):
                    top_row[j] = m0[j] + m1[j] + m2[j]
                    bottom_row[j] = m1[j] - m2[j] - m3[j]
            for a in range(2):
                r = 2 * i + a
                if r >= out_h:
                    break
                row = y[n, o, r]
                q0, q1, q2, q3 = mixed[a, 0], mixed[a, 1], mixed[a, 2], mixed[a, 3]
                for j in range(full):
                    row[2 * j] = q0[j] + q1[j] + q2[j]
                    row[2 * j + 1] = q1[j] - q2[j] - q3[j]
                if full < tiles_w:            # an odd W': the last tile's first column only
                    row[2 * full] = q0[full] + q1[full] + q2[full]


@njit(parallel=True, cache=True)
def winograd_output_transform_adjoint(dy, tiles_h, tiles_w, g0, g1, dM):
    """dM[4a+b, o, (g−g0)·T_w + j] = (A e Aᵀ)[a, b] for the 2×2 block e = dY[n, o, 2i:2i+2, 2j:2j+2].

    The adjoint of ``winograd_output_transform`` (used by the weight gradient): A = (Aᵀ)ᵀ =
    [[1, 0], [1, 1], [1, −1], [0, −1]], and outputs beyond dY (an odd H' or W') count as 0.
    g = n·T_h + i runs over tile rows g0 <= g < g1. dY (N, O, H', W') ->
    dM (16, O, (g1−g0)·T_w). One output channel o per parallel iteration.
    """
    O, out_h, out_w = dy.shape[1], dy.shape[2], dy.shape[3]
    width = 2 * tiles_w
    for o in prange(O):
        rows = np.zeros((2, width), dtype=dy.dtype)       # the tile row's 2 output rows, 0 beyond W'
        mixed = np.empty((4, width), dtype=dy.dtype)      # A · rows: (e0, e0 + e1, e0 − e1, −e1)
        for g in range(g0, g1):
            n = g // tiles_h
            i = g - n * tiles_h
            for a in range(2):
                r = 2 * i + a
                if r < out_h:
                    rows[a, :out_w] = dy[n, o, r, :]
                else:
                    rows[a, :out_w] = 0
            for q in range(width):
                mixed[0, q] = rows[0, q]
                mixed[1, q] = rows[0, q] + rows[1, q]
                mixed[2, q] = rows[0, q] - rows[1, q]
                mixed[3, q] = -rows[1, q]
            first = (g - g0) * tiles_w
            for a in range(4):          # (A · e) · Aᵀ: the same combination of each tile's two columns
                for j in range(tiles_w):
                    c0, c1 = mixed[a, 2 * j], mixed[a, 2 * j + 1]
                    dM[4 * a + 0, o, first + j] = c0
                    dM[4 * a + 1, o, first + j] = c0 + c1
                    dM[4 * a + 2, o, first + j] = c0 - c1
                    dM[4 * a + 3, o, first + j] = -c1


# ----- direct convolution: no im2col matrix, no GEMM; register-blocked with explicit vectors (simd_numba)

# The register block of ``direct_forward``: this many output channels, each a vector of
# ``simd.lanes`` pixels, accumulate in registers together: half the ISA's vector
# registers (16 with AVX-512's 32, 8 with AVX2's 16), the rest holding the input vector
# and the broadcast weights. Derived from the ISA, not measured on one machine; which
# kernel wins for a layer is measured (tinyseg/tuning.py).
DIRECT_CHANNEL_BLOCK = simd.REGISTERS // 2


def _direct_padded_input(x, top, left, out_h, out_w, dilation_h, dilation_w, kernel_h, kernel_w):
    """x with its zero padding for an (out_h, out_w) output, the output width rounded up to
    whole vectors (returned too) and zeros beyond; a negative top/left crops."""
    from .conv import _pad_into
    N, C, H, W = x.shape
    lanes = simd.lanes(x.itemsize)
    width = -(-out_w // lanes) * lanes
    rows, columns = out_h + dilation_h * (kernel_h - 1), width + dilation_w * (kernel_w - 1)
    x_pad = _pad_into(x, ((top, rows - H - top), (left, columns - W - left)),
                      np.empty((N, C, rows, columns), dtype=x.dtype))
    return x_pad, width


def direct_layout(x, weight, top, left, dilation_h, dilation_w, out_h, out_w):
    """The arrays ``direct_forward`` reads and writes, laid out so that every access is in bounds.

    * x_pad (N, C, H' + d_h·(k_h − 1), W'' + d_w·(k_w − 1)): x with its zero padding, the
      output width rounded up to whole vectors (W'' = ⌈W'/lanes⌉·lanes) and zeros beyond
      (a negative top/left crops: the flipped-kernel input gradient);
    * w_t (C, k_h, k_w, O''): the weights with the output channels last and contiguous,
      O'' = ⌈O/block⌉·block, zeros for the extra channels;
    * y_work (N, O'', H', W''): the output, or a larger work array to crop it from.
    """
    N, C = x.shape[:2]
    O, _, kernel_h, kernel_w = weight.shape
    x_pad, width = _direct_padded_input(x, top, left, out_h, out_w, dilation_h, dilation_w, kernel_h, kernel_w)
    channels = -(-O // DIRECT_CHANNEL_BLOCK) * DIRECT_CHANNEL_BLOCK
    w_t = np.zeros((C, kernel_h, kernel_w, channels), dtype=x.dtype)
    w_t[..., :O] = weight.transpose(1, 2, 3, 0)
    y_work = np.empty((N, channels, out_h, width), dtype=x.dtype)
    return x_pad, w_t, y_work


def direct_bias(bias, channels, dtype):
    """The bias as ``direct_forward`` reads it: ``channels`` values (the padded count), zeros past O."""
    padded = np.zeros(channels, dtype=dtype)
    if bias is not None:
        padded[:bias.shape[0]] = bias
    return padded


@njit(parallel=True, cache=True)
def direct_forward(x_pad, w_t, dilation_h, dilation_w, bias, relu, y):
    """y[n,o,i,j] = Σ_c Σ_u Σ_v w_t[c,u,v,o] · x_pad[n,c, i + d_h·u, j + d_w·v] + bias[o], stride 1 (``direct_layout``);
    with ``relu``, max(·, 0) (a conv layer's bias and ReLU fused into the stores).

    One parallel task per (sample n, output row i, block of DIRECT_CHANNEL_BLOCK output
    channels). Along the row, a vector of ``lanes`` pixels at a time (16 float32 with
    AVX-512): the block's accumulators, one vector per output channel, stay in
    registers through the whole reduction over c, u, v; each step loads one input
    vector x_pad[n, c, i + d_h·u, j0 + d_w·v : + lanes] and multiply-adds it into every
    accumulator with that channel's weight broadcast from memory. That is oneDNN's
    register blocking: 1 load and 1 broadcast per vector FMA, no stores until the end,
    where each accumulator is one vector store into y. Measured on a 2-core Zen 4
    (AVX-512), one 128² image: 16→16 channels 130–183 GFLOP/s, 32→16 140–210, against
    64 for the previous, auto-vectorised direct loop (docs/performance.md).
    The sum over (c, u, v) runs in that order, fused multiply-adds where the CPU has them.
    """
    N, C, rows, columns = x_pad.shape
    kernel_h, kernel_w, channels = w_t.shape[1], w_t.shape[2], w_t.shape[3]
    out_h, width = y.shape[2], y.shape[3]
    lanes = simd.VECTOR_BYTES // x_pad.itemsize
    blocks = channels // DIRECT_CHANNEL_BLOCK
    for task in prange(N * out_h * blocks):
        n = task // (out_h * blocks)
        i = (task // blocks) % out_h
        o0 = (task % blocks) * DIRECT_CHANNEL_BLOCK
        for j0 in range(0, width, lanes):
            acc = simd.zeros(x_pad, DIRECT_CHANNEL_BLOCK)
            for c in range(C):
                for u in range(kernel_h):
                    row = ((n * C + c) * rows + i + dilation_h * u) * columns + j0
                    weights = ((c * kernel_h + u) * kernel_w) * channels + o0
                    for v in range(kernel_w):
                        acc = simd.fma_broadcast(acc, simd.load(x_pad, row + dilation_w * v), w_t,
                                                 weights + v * channels)
            simd.store_rows_bias(y, ((n * channels + o0) * out_h + i) * width + j0, out_h * width, acc,
                                 bias, o0, relu)


# The register block of ``direct_weight_grad``: this many output channels × 3 kernel
# columns of running sums (vectors) in registers, a quarter of the ISA's vector registers
# per column-set (8 × 3 = 24 of AVX-512's 32; 4 × 3 = 12 of AVX2's 16).
WEIGHT_GRAD_CHANNEL_BLOCK = simd.REGISTERS // 4

# Pixels per partial sum of ``direct_weight_grad``: each task sums this many output pixels
# (whole rows of one sample) in vector registers, then adds its totals as float64 values.
WEIGHT_GRAD_CHUNK_PIXELS = 2048


def direct_weight_grad_layout(x, dy, top, left, dilation_h, dilation_w, kernel_h, kernel_w):
    """x_pad as ``direct_layout`` makes it, dY padded with zeros to (N, O'', H', W'') (zeros add
    nothing to the sums), the rows per chunk, and the (chunks, O'', C, k_h, k_w) float64 partial sums."""
    N, C = x.shape[:2]
    O, out_h, out_w = dy.shape[1:]
    x_pad, width = _direct_padded_input(x, top, left, out_h, out_w, dilation_h, dilation_w, kernel_h, kernel_w)
    channels = -(-O // WEIGHT_GRAD_CHANNEL_BLOCK) * WEIGHT_GRAD_CHANNEL_BLOCK
    if channels == O and width == out_w:
        dy_pad = np.ascontiguousarray(dy)
    else:
        dy_pad = np.zeros((N, channels, out_h, width), dtype=dy.dtype)
        dy_pad[:, :O, :, :out_w] = dy
    rows_per_chunk = max(1, min(out_h, WEIGHT_GRAD_CHUNK_PIXELS // width))
    chunks = N * (-(-out_h // rows_per_chunk))
    partial = np.empty((chunks, channels, C, kernel_h, kernel_w), dtype=np.float64)
    return x_pad, dy_pad, rows_per_chunk, partial


@njit(parallel=True, cache=True)
def direct_weight_grad(x_pad, dy_pad, dilation_h, dilation_w, rows_per_chunk, partial):
    """partial[k,o,c,u,v] = Σ_{(n,i) in chunk k} Σ_j dy_pad[n,o,i,j] · x_pad[n,c, i + d_h·u, j + d_w·v].

    dW = Σ_k partial[k] (``direct_weight_grad_layout`` lays the arrays out). One parallel
    task per (chunk of rows_per_chunk rows of one sample, input channel c, block of
    WEIGHT_GRAD_CHANNEL_BLOCK output channels): its partial sums have one writer. For each
    kernel row u, the running sums for the block's output channels × the 3 kernel columns
    (vectors of pixels) stay in registers over the chunk: per vector of pixels, 3 shifted
    input vectors and one dY vector per channel feed 3 multiply-adds each. The sums of a
    chunk's lanes go to float64 by halves; the chunks are added in order by the caller.
    The order is fixed by the shapes, not by the threads: the same result for any thread count.
    """
    N, C, rows, columns = x_pad.shape
    channels, out_h, width = dy_pad.shape[1], dy_pad.shape[2], dy_pad.shape[3]
    kernel_h, kernel_w = partial.shape[3], partial.shape[4]
    lanes = simd.VECTOR_BYTES // x_pad.itemsize
    bands = (out_h + rows_per_chunk - 1) // rows_per_chunk
    blocks = channels // WEIGHT_GRAD_CHANNEL_BLOCK
    plane = out_h * width
    taps = C * kernel_h * kernel_w                 # partial's stride from one output channel to the next
    for task in prange(N * bands * C * blocks):
        o0 = (task % blocks) * WEIGHT_GRAD_CHANNEL_BLOCK
        c = (task // blocks) % C
        chunk = task // (blocks * C)
        n = chunk // bands
        i0 = (chunk % bands) * rows_per_chunk
        i1 = min(out_h, i0 + rows_per_chunk)
        for u in range(kernel_h):
            sums = (((chunk * channels + o0) * C + c) * kernel_h + u) * kernel_w
            if kernel_w == 3:
                s0 = simd.zeros(x_pad, WEIGHT_GRAD_CHANNEL_BLOCK)
                s1 = simd.zeros(x_pad, WEIGHT_GRAD_CHANNEL_BLOCK)
                s2 = simd.zeros(x_pad, WEIGHT_GRAD_CHANNEL_BLOCK)
                for i in range(i0, i1):
                    x_row = ((n * C + c) * rows + i + dilation_h * u) * columns
                    dy_row = ((n * channels + o0) * out_h + i) * width
                    for j0 in range(0, width, lanes):
                        s0 = simd.fma_rows(s0, dy_pad, dy_row + j0, plane, simd.load(x_pad, x_row + j0))
                        s1 = simd.fma_rows(s1, dy_pad, dy_row + j0, plane, simd.load(x_pad, x_row + j0 + dilation_w))
                        s2 = simd.fma_rows(s2, dy_pad, dy_row + j0, plane,
                                           simd.load(x_pad, x_row + j0 + 2 * dilation_w))
                simd.store_lane_sums(partial, sums, taps, s0)
                simd.store_lane_sums(partial, sums + 1, taps, s1)
                simd.store_lane_sums(partial, sums + 2, taps, s2)
            else:
                for v in range(kernel_w):
                    s = simd.zeros(x_pad, WEIGHT_GRAD_CHANNEL_BLOCK)
                    for i in range(i0, i1):
                        x_row = ((n * C + c) * rows + i + dilation_h * u) * columns + dilation_w * v
                        dy_row = ((n * channels + o0) * out_h + i) * width
                        for j0 in range(0, width, lanes):
                            s = simd.fma_rows(s, dy_pad, dy_row + j0, plane, simd.load(x_pad, x_row + j0))
                    simd.store_lane_sums(partial, sums + v, taps, s)
