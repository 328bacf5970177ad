"""The compiled loops of binary cross-entropy with logits (Numba, CPU): forward and backward,
each one pass over the logits and targets.

Imported lazily, on the first call that selects the "numba" kernel, so that ``import
tinyseg`` does not pay for importing Numba. Per element they compute the NumPy kernel's
expressions (loss.NumpyBCEWithLogitsKernel) in its order and in the array's dtype (the
constants arrive already cast to it), so they agree with it to rounding; exp and log1p
come from the C library rather than NumPy's own, which may differ in the last bit.

Work is split into chunks of CHUNK elements, one chunk per ``prange`` iteration. The
forward's sum is race-free and does not depend on the thread count: each chunk adds its
losses in order (in float64) into its own slot of a per-chunk array, and the partial sums
are then added in chunk order. In the backward every element has exactly one writer.
Each loop also has a serial version, for arrays too small to pay back the parallel launch.

Inputs must be flat, C-contiguous and of one dtype (float32 or float64, each gets its own
compiled version). ``error_model="numpy"``: a division gives inf/NaN as in NumPy rather
than raising. The threading layer is chosen by
``threads.select_threading_layer`` (tinyseg/threads.py).
"""
from __future__ import annotations


import numpy as np
from numba import njit, prange

from .. import threads

threads.select_threading_layer()
threads.configure()

CHUNK = 16384


@njit(cache=True, inline="always", error_model="numpy")
def _bce_sum(z, t, one):
    """Σ_k t_k · softplus(−z_k) + (1 − t_k) · softplus(z_k), each term in z's dtype, summed in float64."""
    zero = one - one
    total = 0.0
    for k in range(z.size):
        zk = z[k]
        tk = t[k]
        log1p_term = np.log1p(np.exp(-np.abs(zk)))
        softplus_z = max(zk, zero) + log1p_term
        softplus_neg_z = max(-zk, zero) + log1p_term
        total += tk * softplus_neg_z + (one - tk) * softplus_z
    return total


@njit(cache=True, inline="always", error_model="numpy")
def _bce_logits_gradient(z, t, dz, one, coefficient):
    """dz_k = ((1 − t_k)·σ(z_k) − t_k·σ(−z_k)) · coefficient, σ(±z) from e = exp(−|z|)."""
    for k in range(z.size):
        zk = z[k]
        tk = t[k]
        e = np.exp(-np.abs(zk))
        one_plus_e = one + e
        if zk >= 0:
            sigma, sigma_neg = one / one_plus_e, e / one_plus_e
        else:
            sigma, sigma_neg = e / one_plus_e, one / one_plus_e
        dz[k] = ((one - tk) * sigma - tk * sigma_neg) * coefficient


@njit(parallel=True, cache=True, error_model="numpy")
def bce_with_logits_sum(z, t, one):
    """Σ over the flat arrays of t · softplus(−z) + (1 − t) · softplus(z), as a float64.

    softplus(±z) = max(±z, 0) + log1p(exp(−|z|)): finite for any finite z. The sum equals
    Σ max(z, 0) − z·t + log1p(exp(−|z|)). ``one`` is 1 in the arrays' dtype.
    """
    n = z.size
    chunks = (n + CHUNK - 1) // CHUNK
    partial_sums = np.empty(chunks, dtype=np.float64)
    for chunk in prange(chunks):
        start, stop = chunk * CHUNK, min(n, (chunk + 1) * CHUNK)
        partial_sums[chunk] = _bce_sum(z[start:stop], t[start:stop], one)
    return _in_order_sum(partial_sums)


@njit(cache=True, error_model="numpy")
def bce_with_logits_sum_serial(z, t, one):
    """bce_with_logits_sum in the calling thread, with the same chunks: the same result, bit for bit."""
    n = z.size
    chunks = (n + CHUNK - 1) // CHUNK
    partial_sums = np.empty(chunks, dtype=np.float64)
    for chunk in range(chunks):
        start, stop = chunk * CHUNK, min(n, (chunk + 1) * CHUNK)
        partial_sums[chunk] = _bce_sum(z[start:stop], t[start:stop], one)
    return _in_order_sum(partial_sums)


@njit(cache=True, inline="always", error_model="numpy")
def _in_order_sum(values):
    total = 0.0
    for k in range(values.size):
        total += values[k]
    return total


@njit(parallel=True, cache=True, error_model="numpy")
def bce_with_logits_backward(z, t, one, coefficient):
    """dz = ((1 − t)·σ(z) − t·σ(−z)) · coefficient on flat arrays (= (σ(z) − t) · coefficient,
    written so that no 1 − σ cancels), coefficient = g / n in the arrays' dtype."""
    n = z.size
    dz = np.empty_like(z)
    for chunk in prange((n + CHUNK - 1) // CHUNK):
        start, stop = chunk * CHUNK, min(n, (chunk + 1) * CHUNK)
        _bce_logits_gradient(z[start:stop], t[start:stop], dz[start:stop], one, coefficient)
    return dz


@njit(cache=True, error_model="numpy")
def bce_with_logits_backward_serial(z, t, one, coefficient):
    """bce_with_logits_backward in one loop in the calling thread."""
    dz = np.empty_like(z)
    _bce_logits_gradient(z, t, dz, one, coefficient)
    return dz
