"""Launch code of kernels/loss.cu: BCE with logits and the soft Dice loss, forward and backward.

Sums are deterministic: per-block partial sums (a fixed tree in shared memory), then
``sum_rows`` (one block per row of partials, in a fixed order). The numbers of blocks
and threads depend only on the size (blocks capped at PARTIAL_BLOCKS; reduction blocks
of 256 threads, or the smallest power of two covering a small input), so a shape is
always summed in the same order. Elementwise kernels: one thread per element (BCE) or per pixel (Dice),
THREADS per block, grid-stride, capped at MAX_BLOCKS. The same code launches on CuPy
arrays (GPU) and on NumPy arrays inside ``tinyseg.backend.cuda_emulation()``.

BCE's weight and pos_weight (any shape broadcasting to the logits') are read per
element: when one is smaller than the logits it is first expanded to their shape (one
extra pass over that many elements; the loss itself then reads it once).
"""
from __future__ import annotations

import numpy as np

from .. import cuda

THREADS = 256            # at most kernels/loss.cu's TINYSEG_REDUCE_THREADS (its shared-memory trees)
MAX_BLOCKS = 4096
PARTIAL_BLOCKS = 1024    # at most this many partial sums per reduced quantity


def _grid(n):
    return min(cuda.blocks_for(n, THREADS), MAX_BLOCKS)


def reduce_threads(n):
    """Threads of a reduction block over n values: 256, or the smallest power of two >= n."""
    return min(THREADS, 1 << max(0, int(n) - 1).bit_length())


def _partial_grid(n):
    """(blocks, threads) of the partial-sum kernels for n values."""
    threads = reduce_threads(n)
    return min(cuda.blocks_for(n, threads), PARTIAL_BLOCKS), threads


def _flat(xp, a, like):
    """``a`` as a flat C-contiguous array of ``like``'s dtype and size (expanded if it broadcasts)."""
    if a is None:
        return xp.zeros(1, dtype=like.dtype), np.int32(0)     # not read: a placeholder pointer
    if a.shape != like.shape:
        a = xp.broadcast_to(a, like.shape)
    return xp.ascontiguousarray(a, dtype=like.dtype).reshape(-1), np.int32(1)


def sum_rows(partials, divisor, xp):
    """(rows,) array: each row of ``partials`` (rows, B) summed in a fixed order, divided by ``divisor``."""
    rows, length = partials.shape
    out = xp.empty(rows, dtype=partials.dtype)
    cuda.launch("loss.cu", "sum_rows", partials.dtype, rows, reduce_threads(length),
                (partials, np.int64(length), partials.dtype.type(divisor), out))
    return out


def bce_with_logits_forward(z, t, w, pw, xp):
    """The mean BCE as a 0-d array of z's dtype (on z's device: no copy to the host)."""
    n = z.size
    z_flat, t_flat = xp.ascontiguousarray(z).reshape(-1), xp.ascontiguousarray(t, dtype=z.dtype).reshape(-1)
    (w_flat, has_w), (pw_flat, has_pw) = _flat(xp, w, z), _flat(xp, pw, z)
    blocks, threads = _partial_grid(n)
    partials = xp.empty((1, blocks), dtype=z.dtype)
    cuda.launch("loss.cu", "bce_with_logits_partial_sums", z.dtype, blocks, threads,
                (z_flat, t_flat, w_flat, pw_flat, has_w, has_pw, np.int64(n), partials))
    return sum_rows(partials, n, xp).reshape(())


def bce_with_logits_backward(g, z, t, w, pw, needs_dz, needs_dt, xp):
    """(dz, dt), each None unless asked for."""
    n = z.size
    z_flat, t_flat = xp.ascontiguousarray(z).reshape(-1), xp.ascontiguousarray(t, dtype=z.dtype).reshape(-1)
    (w_flat, has_w), (pw_flat, has_pw) = _flat(xp, w, z), _flat(xp, pw, z)
    g = xp.ascontiguousarray(xp.asarray(g, dtype=z.dtype).reshape(1))
    dz = xp.empty(n if needs_dz else 1, dtype=z.dtype)
    dt = xp.empty(n if needs_dt else 1, dtype=z.dtype)
    cuda.launch("loss.cu", "bce_with_logits_backward", z.dtype, _grid(n), THREADS,
                (g, z_flat, t_flat, w_flat, pw_flat, has_w, has_pw, np.int32(bool(needs_dz)),
                 np.int32(bool(needs_dt)), np.int64(n), dz, dt))
    return (dz.reshape(z.shape) if needs_dz else None), (dt.reshape(z.shape) if needs_dt else None)


def _dice_geometry(z):
    batch, classes = z.shape[0], z.shape[1]
    return batch, classes, int(np.prod(z.shape[2:], dtype=np.int64))


def dice_forward(z, t, smooth, xp):
    """(loss, state): loss a 0-d array; state what dice_backward needs.

    ``t``: the 0/1 mask of z's shape (one channel) or the integer class map (N, ...).
    """
    z = xp.ascontiguousarray(z)
    batch, classes, pixels = _dice_geometry(z)
    labels = xp.ascontiguousarray(t.reshape((batch,) + tuple(z.shape[2:])), dtype=np.int64)
    p = xp.empty_like(z)
    cuda.launch("loss.cu", "dice_probabilities", z.dtype, _grid(batch * pixels), THREADS,
                (z, p, np.int64(batch), np.int64(classes), np.int64(pixels)))
    blocks, threads = _partial_grid(batch * pixels)
    partials = xp.empty((3 * classes, blocks), dtype=z.dtype)
    cuda.launch("loss.cu", "dice_partial_sums", z.dtype, (blocks, classes), threads,
                (p, labels, np.int64(batch), np.int64(classes), np.int64(pixels), partials))
    intersection, predicted, true = sum_rows(partials, 1, xp).reshape(3, classes)
    smooth = z.dtype.type(smooth)
    denominator = predicted + true + smooth
    dice = (2 * intersection + smooth) / denominator
    return 1 - dice.mean(), (z, p, labels, dice, denominator)


def dice_backward(g, state, xp):
    z, p, labels, dice, denominator = state
    batch, classes, pixels = _dice_geometry(z)
    g = xp.ascontiguousarray(xp.asarray(g, dtype=z.dtype).reshape(1))
    dz = xp.empty_like(z)
    cuda.launch("loss.cu", "dice_backward", z.dtype, _grid(batch * pixels), THREADS,
                (g, z, p, labels, xp.ascontiguousarray(dice), xp.ascontiguousarray(denominator), np.int64(batch),
                 np.int64(classes), np.int64(pixels), dz))
    return dz
