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


# ----- direct convolution for thin layers (few channels): no im2col matrix, no GEMM

# Output channels computed together: one input row, loaded once, feeds this many accumulators.
# fastmath "contract" only lets LLVM fuse each multiply and add into one FMA instruction
# (one rounding instead of two); no reassociation, so the order of the sums is as written.
DIRECT_BLOCK = 8


@njit(parallel=True, cache=True, fastmath={"contract"})
def direct_forward(x, w, top, left, dilation_h, dilation_w, y):
    """y[n,o,i,j] = Σ_c Σ_u Σ_v w[o,c,u,v] · x[n,c, i + d_h·u − top, j + d_w·v − left] (0 outside x), stride 1.

    One parallel task per (sample, output row, block of DIRECT_BLOCK output channels):
    register blocking over output channels and pixels. For each input channel and kernel
    row, the padded input row is copied once into ``row``; for each kernel column the
    loop over the output row (j, innermost, contiguous: LLVM vectorises it to the
    machine's width, AVX2 or AVX-512) multiplies one loaded input value into 8
    accumulator rows with 8 weights held in registers. A negative top/left crops (the
    flipped-kernel input gradient). x (N, C, H, W), w (O, C, k_h, k_w) -> y (N, O, H', W').
    """
    N, C, H, W = x.shape
    O, kernel_h, kernel_w = w.shape[0], w.shape[2], w.shape[3]
    out_h, out_w = y.shape[2], y.shape[3]
    width = out_w + dilation_w * (kernel_w - 1)
    blocks = (O + DIRECT_BLOCK - 1) // DIRECT_BLOCK
    for task in prange(N * out_h * blocks):
        n = task // (out_h * blocks)
        i = (task // blocks) % out_h
        o0 = (task % blocks) * DIRECT_BLOCK
        count = min(DIRECT_BLOCK, O - o0)
        acc = np.zeros((DIRECT_BLOCK, out_w), dtype=y.dtype)
        row = np.empty(width, dtype=x.dtype)
        a0, a1, a2, a3 = acc[0], acc[1], acc[2], acc[3]
        a4, a5, a6, a7 = acc[4], acc[5], acc[6], acc[7]
        q_lo = min(max(left, 0), width)              # row[q] = x[.., q − left] for q_lo <= q < q_hi, else 0
        q_hi = max(q_lo, min(W + left, width))
        row[:q_lo] = 0
        row[q_hi:] = 0
        for c in range(C):
            for u in range(kernel_h):
                r = i + dilation_h * u - top
                if r < 0 or r >= H:
                    continue
                row[q_lo:q_hi] = x[n, c, r, q_lo - left:q_hi - left]
                if count == DIRECT_BLOCK and kernel_w == 3:
                    # The three kernel columns at once: 3 loads and 24 multiply-adds per
                    # load/store of the 8 accumulators (the loop's limit is the stores).
                    l0 = row[0:out_w]
                    l1 = row[dilation_w:dilation_w + out_w]
                    l2 = row[2 * dilation_w:2 * dilation_w + out_w]
                    w00, w01, w02 = w[o0, c, u, 0], w[o0, c, u, 1], w[o0, c, u, 2]
                    w10, w11, w12 = w[o0 + 1, c, u, 0], w[o0 + 1, c, u, 1], w[o0 + 1, c, u, 2]
                    w20, w21, w22 = w[o0 + 2, c, u, 0], w[o0 + 2, c, u, 1], w[o0 + 2, c, u, 2]
                    w30, w31, w32 = w[o0 + 3, c, u, 0], w[o0 + 3, c, u, 1], w[o0 + 3, c, u, 2]
                    w40, w41, w42 = w[o0 + 4, c, u, 0], w[o0 + 4, c, u, 1], w[o0 + 4, c, u, 2]
                    w50, w51, w52 = w[o0 + 5, c, u, 0], w[o0 + 5, c, u, 1], w[o0 + 5, c, u, 2]
                    w60, w61, w62 = w[o0 + 6, c, u, 0], w[o0 + 6, c, u, 1], w[o0 + 6, c, u, 2]
                    w70, w71, w72 = w[o0 + 7, c, u, 0], w[o0 + 7, c, u, 1], w[o0 + 7, c, u, 2]
                    for j in range(out_w):
                        v0, v1, v2 = l0[j], l1[j], l2[j]
                        a0[j] += w00 * v0 + w01 * v1 + w02 * v2
                        a1[j] += w10 * v0 + w11 * v1 + w12 * v2
                        a2[j] += w20 * v0 + w21 * v1 + w22 * v2
                        a3[j] += w30 * v0 + w31 * v1 + w32 * v2
                        a4[j] += w40 * v0 + w41 * v1 + w42 * v2
                        a5[j] += w50 * v0 + w51 * v1 + w52 * v2
                        a6[j] += w60 * v0 + w61 * v1 + w62 * v2
                        a7[j] += w70 * v0 + w71 * v1 + w72 * v2
                    continue
                for v in range(kernel_w):
                    line = row[dilation_w * v:dilation_w * v + out_w]
                    if count == DIRECT_BLOCK:
                        w0, w1, w2, w3 = w[o0, c, u, v], w[o0 + 1, c, u, v], w[o0 + 2, c, u, v], w[o0 + 3, c, u, v]
                        w4, w5, w6, w7 = w[o0 + 4, c, u, v], w[o0 + 5, c, u, v], w[o0 + 6, c, u, v], w[o0 + 7, c, u, v]
                        for j in range(out_w):
                            value = line[j]
                            a0[j] += w0 * value
                            a1[j] += w1 * value
                            a2[j] += w2 * value
                            a3[j] += w3 * value
                            a4[j] += w4 * value
                            a5[j] += w5 * value
                            a6[j] += w6 * value
                            a7[j] += w7 * value
                    else:
                        for b in range(count):
                            weight = w[o0 + b, c, u, v]
                            accumulator = acc[b]
                            for j in range(out_w):
                                accumulator[j] += weight * line[j]
        for b in range(count):
            y[n, o0 + b, i, :] = acc[b]


@njit(parallel=True, cache=True, fastmath={"contract", "reassoc"})
def direct_weight_grad(x, dy, top, left, dilation_h, dilation_w, dw):
    """dw[o,c,u,v] = Σ_n Σ_i Σ_j dy[n,o,i,j] · x[n,c, i + d_h·u − top, j + d_w·v − left] (0 outside x), stride 1.

    One parallel task per (input channel c, kernel row u): its dw[:, c, u, :] has one
    writer. For each output row, the dot products of dY's row with the k_w shifted
    input rows are vectorised reductions ("reassoc" lets LLVM keep vector partial sums
    in registers, no stores); for 3-wide kernels 4 output channels go together (12 sums
    from 7 loads per element; measured on a 2-core Zen 4, (4, 16→16, 128²): 33 → 63
    GFLOP/s, (4, 32→16, 128²): 31 → 75). Each row's sums are added into float64 totals
    in row order. The order is fixed by the code, not by the
    threads: the same result for any thread count.
    x (N, C, H, W), dy (N, O, H', W') -> dw (O, C, k_h, k_w).
    """
    N, C, H, W = x.shape
    O, out_h, out_w = dy.shape[1], dy.shape[2], dy.shape[3]
    kernel_h, kernel_w = dw.shape[2], dw.shape[3]
    width = out_w + dilation_w * (kernel_w - 1)
    for task in prange(C * kernel_h):
        c = task // kernel_h
        u = task - c * kernel_h
        totals = np.zeros((O, kernel_w), dtype=np.float64)
        row = np.empty(width, dtype=x.dtype)
        q_lo = min(max(left, 0), width)
        q_hi = max(q_lo, min(W + left, width))
        row[:q_lo] = 0
        row[q_hi:] = 0
        for n in range(N):
            for i in range(out_h):
                r = i + dilation_h * u - top
                if r < 0 or r >= H:
                    continue
                row[q_lo:q_hi] = x[n, c, r, q_lo - left:q_hi - left]
                o = 0
                if kernel_w == 3:
                    # 4 output channels × the 3 kernel columns at once: 12 running sums
                    # (vector registers) fed by 3 + 4 loads per element instead of 24.
                    l0 = row[0:out_w]
                    l1 = row[dilation_w:dilation_w + out_w]
                    l2 = row[2 * dilation_w:2 * dilation_w + out_w]
                    while o + 4 <= O:
                        g0, g1, g2, g3 = dy[n, o, i], dy[n, o + 1, i], dy[n, o + 2, i], dy[n, o + 3, i]
                        a0, a1, a2 = l0[0], l1[0], l2[0]
                        s00, s01, s02 = g0[0] * a0, g0[0] * a1, g0[0] * a2
                        s10, s11, s12 = g1[0] * a0, g1[0] * a1, g1[0] * a2
                        s20, s21, s22 = g2[0] * a0, g2[0] * a1, g2[0] * a2
                        s30, s31, s32 = g3[0] * a0, g3[0] * a1, g3[0] * a2
                        for j in range(1, out_w):
                            a0, a1, a2 = l0[j], l1[j], l2[j]
                            b = g0[j]
                            s00 += b * a0
                            s01 += b * a1
                            s02 += b * a2
                            b = g1[j]
                            s10 += b * a0
                            s11 += b * a1
                            s12 += b * a2
                            b = g2[j]
                            s20 += b * a0
                            s21 += b * a1
                            s22 += b * a2
                            b = g3[j]
                            s30 += b * a0
                            s31 += b * a1
                            s32 += b * a2
                        totals[o, 0] += s00
                        totals[o, 1] += s01
                        totals[o, 2] += s02
                        totals[o + 1, 0] += s10
                        totals[o + 1, 1] += s11
                        totals[o + 1, 2] += s12
                        totals[o + 2, 0] += s20
                        totals[o + 2, 1] += s21
                        totals[o + 2, 2] += s22
                        totals[o + 3, 0] += s30
                        totals[o + 3, 1] += s31
                        totals[o + 3, 2] += s32
                        o += 4
                for o in range(o, O):             # other kernel widths, and the last O mod 4 channels
                    gradient = dy[n, o, i]
                    for v in range(kernel_w):
                        line = row[dilation_w * v:dilation_w * v + out_w]
                        partial = gradient[0] * line[0]
                        for j in range(1, out_w):
                            partial += gradient[j] * line[j]
                        totals[o, v] += partial
        for o in range(O):
            for v in range(kernel_w):
                dw[o, c, u, v] = totals[o, v]
