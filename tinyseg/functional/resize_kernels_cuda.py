"""Launch code of kernels/upsample.cu: nearest and bilinear upsampling, forward and backward.

One thread per element of each kernel's output (y in the forwards, dx in the backwards:
the backwards are gathers, one writer per element, deterministic), blocks of THREADS
threads in a grid-stride loop capped at MAX_BLOCKS blocks. Bilinear takes the gather
tables of resize._gather_table (the non-zeros of A_h, A_w, or of their transposes): a
few KB, copied to a GPU once per shape and kept (a host-to-device copy per call would
stall the stream), fresh copies in the emulation (whose guard bands write arguments back). The same code launches on CuPy
arrays (GPU) and on NumPy arrays inside ``tinyseg.backend.cuda_emulation()``.
"""
from __future__ import annotations

import numpy as np

from .. import cuda

THREADS = 256
MAX_BLOCKS = 4096


def _grid(n):
    return min(cuda.blocks_for(n, THREADS), MAX_BLOCKS)


def nearest_forward(x, scale, xp):
    x = xp.ascontiguousarray(x)
    N, C, H, W = x.shape
    sh, sw = scale
    y = xp.empty((N, C, H * sh, W * sw), dtype=x.dtype)
    cuda.launch("upsample.cu", "upsample_nearest_forward", x.dtype, _grid(y.size), THREADS,
                (x, y, np.int64(N * C), np.int64(H), np.int64(W), np.int64(sh), np.int64(sw)))
    return y


def nearest_backward(grad, scale, xp):
    grad = xp.ascontiguousarray(grad)
    N, C, Hs, Ws = grad.shape
    sh, sw = scale
    H, W = Hs // sh, Ws // sw
    dx = xp.empty((N, C, H, W), dtype=grad.dtype)
    cuda.launch("upsample.cu", "upsample_nearest_backward", grad.dtype, _grid(dx.size), THREADS,
                (grad, dx, np.int64(N * C), np.int64(H), np.int64(W), np.int64(sh), np.int64(sw)))
    return dx


_DEVICE_TABLES: dict = {}
_DEVICE_TABLES_MAX = 64


def _gpu_device_id(xp):
    """The current CuPy device's id, or None when ``xp`` is not CuPy."""
    device = getattr(getattr(xp, "cuda", None), "Device", None)
    return None if xp is np or device is None else device().id


def _tables(xp, H, W, scale, align_corners, dtype, transposed):
    """(row sources, row weights, K, column sources, column weights, L) on the arrays' device."""
    device = _gpu_device_id(xp)
    key = (H, W, tuple(scale), bool(align_corners), np.dtype(dtype).str, transposed, device)
    if device is not None and key in _DEVICE_TABLES:
        return _DEVICE_TABLES[key]
    tables = _build_tables(xp, H, W, scale, align_corners, dtype, transposed)
    if device is not None:
        if len(_DEVICE_TABLES) >= _DEVICE_TABLES_MAX:
            _DEVICE_TABLES.clear()
        _DEVICE_TABLES[key] = tables
    return tables


def _build_tables(xp, H, W, scale, align_corners, dtype, transposed):
    from .resize import _gather_table

    row_sources, row_weights = _gather_table(H, scale[0], align_corners, np.dtype(dtype), transposed)
    column_sources, column_weights = _gather_table(W, scale[1], align_corners, np.dtype(dtype), transposed)
    # Fresh C-contiguous copies: the cached tables are read-only and live on the host.
    as_device = lambda a, kind: xp.array(np.ascontiguousarray(a, dtype=kind))
    return (as_device(row_sources, np.int64), as_device(row_weights, dtype), np.int64(row_sources.shape[1]),
            as_device(column_sources, np.int64), as_device(column_weights, dtype), np.int64(column_sources.shape[1]))


def bilinear_forward(x, scale, align_corners, xp):
    x = xp.ascontiguousarray(x)
    N, C, H, W = x.shape
    sh, sw = scale
    y = xp.empty((N, C, H * sh, W * sw), dtype=x.dtype)
    tables = _tables(xp, H, W, scale, align_corners, x.dtype, False)
    cuda.launch("upsample.cu", "upsample_bilinear_forward", x.dtype, _grid(y.size), THREADS,
                (x, *tables, y, np.int64(N * C), np.int64(H), np.int64(W), np.int64(H * sh), np.int64(W * sw)))
    return y


def bilinear_backward(grad, scale, align_corners, xp):
    grad = xp.ascontiguousarray(grad)
    N, C, Hs, Ws = grad.shape
    H, W = Hs // scale[0], Ws // scale[1]
    dx = xp.empty((N, C, H, W), dtype=grad.dtype)
    tables = _tables(xp, H, W, scale, align_corners, grad.dtype, True)
    cuda.launch("upsample.cu", "upsample_bilinear_backward", grad.dtype, _grid(dx.size), THREADS,
                (grad, *tables, dx, np.int64(N * C), np.int64(H), np.int64(W), np.int64(Hs), np.int64(Ws)))
    return dx
