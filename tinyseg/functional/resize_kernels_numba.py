"""The compiled loop of bilinear upsampling (Numba, CPU), forward and backward.

Source indices and weights, per axis (here H; W alike), as PyTorch's
``F.interpolate(x, scale_factor=s, mode="bilinear")``. Output row i reads

    align_corners=False: src = max((i + 0.5)/s − 0.5, 0)           (half-pixel centres, clamped at 0)
    align_corners=True:  src = i · (H − 1)/(H' − 1)                (0 when H' = 1)
    i0 = ⌊src⌋,  i1 = min(i0 + 1, H − 1),  λ = src − i0
    weights: 1 − λ on input row i0, λ on input row i1

that is, row i of the interpolation matrix A_h (H' × H) has these two non-zeros (one,
of weight 1, where i0 = i1 at the last row). With A_w likewise, per plane p = n·C + c:

    forward:  y[p] = A_h · x[p] · A_wᵀ,
              y[p,i,j] = Σ_{k,l} A_h[i,k] · A_w[j,l] · x[p,k,l]      (the 4 neighbours)
    backward: the adjoint, dx[p] = A_hᵀ · dy[p] · A_w: each dy[p,i,j] goes back to its
              4 sources with the same weights,
              dx[p,k,l] = Σ_{i,j} A_h[i,k] · A_w[j,l] · dy[p,i,j]

Both are the one loop below, ``rows_then_columns``: out[p] = R · images[p] · Cᵀ for two
small matrices given by their non-zeros (R = A_h, C = A_w forward; R = A_hᵀ, C = A_wᵀ
backward). The backward is thus a gather per input pixel, not a scatter: every output
element has exactly one writer, with no atomics, and the result does not depend on the
thread count. The tables come from resize._gather_table, the same non-zeros (in the
same dtype) as the NumPy kernel's, so the two agree to rounding. Derivation:
docs/math/pooling_and_resizing.md, section 4.

Imported lazily, on the first call that selects the "numba" kernel. The loop is
``@njit(parallel=True, cache=True)``; inputs must be C-contiguous (callers use
``np.ascontiguousarray``); float32 and float64 each get their own compiled version, and
outputs (allocated by the caller, with NumPy, as for elementwise_kernels_numba's ReLU)
have the input's dtype. The threading layer is chosen
by ``threads.select_threading_layer`` (tinyseg/threads.py).
"""
from __future__ import annotations


import numpy as np
from numba import njit, prange

from .. import threads

threads.select_threading_layer()
threads.configure()

# Output rows per parallel iteration: each iteration allocates one scratch row, and
# enough rows share it that the allocation does not show.
ROWS_PER_CHUNK = 16


@njit(parallel=True, cache=True)
def rows_then_columns(images, row_sources, row_weights, column_sources, column_weights, out):
    """out[p] = R · images[p] · Cᵀ for images (P, H, W) and out (P, H', W').

    R (H' × H) is given by its non-zeros: row i is Σ_k row_weights[i, k] at columns
    row_sources[i, k], both (H', K). C (W' × W) likewise, but stored transposed, (L, W'):
    column_sources[l] and column_weights[l] are the l-th non-zeros of all rows, so each
    pass along an output row reads them contiguously. Rows with fewer non-zeros are
    padded with weight 0 on a column they use.

    Per output row (p, i): first the blend of the K input rows it reads,
        blended[b] = Σ_k row_weights[i, k] · images[p, row_sources[i, k], b],
    then the gather along the row, one pass per l,
        out[p, i, j] = Σ_l column_weights[l, j] · blended[column_sources[l, j]].
    Parallel over chunks of ROWS_PER_CHUNK output rows; each row has one writer.
    """
    P, H, W = images.shape
    rows_out, K = row_sources.shape
    L, columns_out = column_sources.shape
    total_rows = P * rows_out
    for chunk in prange((total_rows + ROWS_PER_CHUNK - 1) // ROWS_PER_CHUNK):
        blended = np.empty(W, dtype=images.dtype)
        for pi in range(chunk * ROWS_PER_CHUNK, min(total_rows, (chunk + 1) * ROWS_PER_CHUNK)):
            p = pi // rows_out
            i = pi - p * rows_out
            # Each first term assigns (not 0 + term), so the sums are the NumPy kernel's.
            source = images[p, row_sources[i, 0]]
            weight = row_weights[i, 0]
            for b in range(W):
                blended[b] = source[b] * weight
            for k in range(1, K):
                source = images[p, row_sources[i, k]]
                weight = row_weights[i, k]
                for b in range(W):
                    blended[b] += source[b] * weight
            row = out[p, i]
            sources, weights = column_sources[0], column_weights[0]
            for j in range(columns_out):
                row[j] = blended[sources[j]] * weights[j]
            for l in range(1, L):
                sources, weights = column_sources[l], column_weights[l]
                for j in range(columns_out):
                    row[j] += blended[sources[j]] * weights[j]
