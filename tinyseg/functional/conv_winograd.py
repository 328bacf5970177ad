"""Winograd F(2×2, 3×3) (Lavin & Gray 2016): a stride-1 3×3 convolution in 2.25× fewer multiplications.

Each 2×2 block of outputs of one (input, output) channel pair needs a 4×4 tile d of the
padded input. Direct: 2·2·9 = 36 multiplications. Winograd:

    Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A          (⊙: elementwise, 16 multiplications)

and over channels the 16 elementwise products become 16 matrix products,
M[ξ] = U[ξ] · V[ξ] with U[ξ] (O, C) the transformed kernels and V[ξ] (C, tiles) the
transformed input tiles: a GEMM of 16·O·C·(H'·W'/4) multiply-adds instead of im2col's
9·O·C·H'·W'. The transforms are additions (and halvings in G): the input and output ones
run as compiled loops (``conv_kernels_numba``), the kernel one as a small GEMM.
The derivation of B, G, A and the accuracy: docs/math/convolution.md, section 8.

Tiles start every 2 pixels and overlap by 2; an odd output size is computed as the next
even size and cropped (the extra row/column of tiles reads zero padding).
"""
from __future__ import annotations

import numpy as np

from .. import threads

# G (4×3): the kernel transform. Row ξ of G ⊗ G (16×9) maps the 9 taps g[u, v] to
# U[ξ = 4a + b] = Σ_{u,v} G[a, u] · G[b, v] · g[u, v] = (G g Gᵀ)[a, b].
G = np.array([[1.0, 0.0, 0.0],
              [0.5, 0.5, 0.5],
              [0.5, -0.5, 0.5],
              [0.0, 0.0, 1.0]])
KERNEL_TRANSFORM = np.kron(G, G)


def applies(geometry) -> bool:
    """F(2×2, 3×3) computes 3×3 convolutions with stride 1 and dilation 1 (any padding)."""
    return geometry.kernel == (3, 3) and geometry.stride == (1, 1) and geometry.dilation == (1, 1)


def transformed_kernel(weight):
    """U[ξ, o, c] = (G W[o, c] Gᵀ)[ξ]: (O, C, 3, 3) -> (16, O, C), in the weight's dtype.

    G's entries are 0, ±½ and 1, so in float32 each U is a sum of at most 9 exactly
    scaled taps: one small GEMM, (16, 9) · (9, O·C).
    """
    O, C = weight.shape[:2]
    taps = weight.reshape(O * C, 9)
    return threads.matmul(KERNEL_TRANSFORM.astype(weight.dtype), taps.T).reshape(16, O, C)


def _tile_row_blocks(N, tiles_h, tiles_w, channels, itemsize, block_bytes):
    """Ranges [g0, g1) of tile rows (over the whole batch) whose 16·channels work values fit in block_bytes."""
    per_block = max(1, block_bytes // (16 * channels * tiles_w * itemsize))
    for g0 in range(0, N * tiles_h, per_block):
        yield g0, min(N * tiles_h, g0 + per_block)


def conv2d(x, weight, geometry, scratch, block_bytes):
    """y = conv2d(x, W) for a 3×3, stride-1, dilation-1 geometry: (N, C, H, W) -> (N, O, H', W').

    Runs over blocks of tile rows (a tile row: 2 output rows of one sample) so that the
    work arrays V (16, C, tiles) and M (16, O, tiles), 4× the block's input and output,
    take at most ``block_bytes``; ``scratch(shape)`` lends them. NumPy arrays only (the
    transforms are compiled loops).
    """
    from . import conv_kernels_numba as compiled

    x = np.ascontiguousarray(x)
    N, C = x.shape[:2]
    O = weight.shape[0]
    out_h, out_w = geometry.output_size
    tiles_h, tiles_w = (out_h + 1) // 2, (out_w + 1) // 2
    U = transformed_kernel(weight)
    (top, _), (left, _) = geometry.padding
    y = np.empty((N, O, out_h, out_w), dtype=x.dtype)
    for g0, g1 in _tile_row_blocks(N, tiles_h, tiles_w, C + O, x.itemsize, block_bytes):
        tiles = (g1 - g0) * tiles_w
        work = scratch((16 * (C + O) * tiles,))
        V = work[:16 * C * tiles].reshape(16, C, tiles)
        M = work[16 * C * tiles:].reshape(16, O, tiles)
        compiled.winograd_input_transform(x, top, left, tiles_h, tiles_w, g0, g1, V)
        threads.matmul(U, V, out=M)
        compiled.winograd_output_transform(M, tiles_h, tiles_w, g0, g1, y)
    return y


def weight_grad(x, grad, geometry, scratch, block_bytes):
    """dW of y = conv2d(x, W) for a 3×3, stride-1, dilation-1 geometry: -> (O, C, 3, 3).

    The forward is linear in U (M[ξ] = U[ξ]·V[ξ], then y = the output transform of M), so
    by the chain rule, with the adjoints of the two transforms:

        dM[ξ] = (A · dY_tile · Aᵀ)[ξ]        dU[ξ] = Σ_tiles dM[ξ] · V[ξ]ᵀ  (O, C)
        dW[o, c] = Gᵀ · dU[o, c] · G         (the adjoint of U = G W Gᵀ)

    16 GEMMs of 16·O·C·(H'·W'/4) multiply-adds against im2col's 9·O·C·H'·W'.
    docs/math/convolution.md, section 8.
    """
    from . import conv_kernels_numba as compiled

    x, grad = np.ascontiguousarray(x), np.ascontiguousarray(grad)
    N, C = x.shape[:2]
    O = grad.shape[1]
    out_h, out_w = geometry.output_size
    tiles_h, tiles_w = (out_h + 1) // 2, (out_w + 1) // 2
    (top, _), (left, _) = geometry.padding
    dU = np.zeros((16, O, C), dtype=x.dtype)
    for g0, g1 in _tile_row_blocks(N, tiles_h, tiles_w, C + O, x.itemsize, block_bytes):
        tiles = (g1 - g0) * tiles_w
        work = scratch((16 * (C + O) * tiles,))
        V = work[:16 * C * tiles].reshape(16, C, tiles)
        dM = work[16 * C * tiles:].reshape(16, O, tiles)
        compiled.winograd_input_transform(x, top, left, tiles_h, tiles_w, g0, g1, V)
        compiled.winograd_output_transform_adjoint(grad, tiles_h, tiles_w, g0, g1, dM)
        dU += threads.matmul(dM, V.transpose(0, 2, 1))
    dW = threads.matmul(KERNEL_TRANSFORM.T.astype(x.dtype), dU.reshape(16, O * C))     # (9, O·C)
    return np.ascontiguousarray(dW.reshape(3, 3, O, C).transpose(2, 3, 0, 1))
