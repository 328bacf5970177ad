"""Batch normalisation on the CPU in compiled passes (Numba): statistics, apply, backward.

The NumPy kernel (norm.py) builds the result from whole-array expressions: the mean, the
centred copy, its square, the variance, the scaling and the shift each read or write
the activation once more (7 passes forward, 8 backward). Here, per channel, one pass
reads x for both sums and one writes y; backward, one pass reads g and x for both sums
and one writes dx. Sums are float64. One channel per parallel iteration, each summed by
one thread in an order fixed by the code ("reassoc" lets LLVM keep vector partial sums,
in an order fixed at compile time): the same bits for any thread count.

Arrays are (N, C, P) views of (N, C, ...) inputs, P the values per sample and channel.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .. import threads

threads.select_threading_layer()
threads.configure()


@njit(parallel=True, cache=True, fastmath={"reassoc", "contract"})
def channel_statistics(x, mean, var):
    """mean[c] = Σ x[:, c] / m, var[c] = Σ (x[:, c] − mean[c])² / m (biased), m = N·P; float64.

    One pass: the sums of d = x − K and d² for a shift K (the channel's first value, so
    that the squares stay small where the data have a large mean: var = E[d²] − E[d]²
    cancels little then), in float64.
    """
    N, C, P = x.shape
    m = N * P
    for c in prange(C):
        shift = np.float64(x[0, c, 0])
        s = 0.0
        s2 = 0.0
        for n in range(N):
            for k in range(P):
                d = np.float64(x[n, c, k]) - shift
                s += d
                s2 += d * d
        mean_d = s / m
        mean[c] = shift + mean_d
        var[c] = max(s2 / m - mean_d * mean_d, 0.0)


@njit(parallel=True, cache=True, fastmath={"contract"})
def scale_shift(x, mu, a, b, y):
    """y[n, c, k] = (x[n, c, k] − mu[c]) · a[c] + b[c] (in x's dtype): the normalisation and the affine map in one pass."""
    N, C, P = x.shape
    for t in prange(N * C):
        n = t // C
        c = t - n * C
        mc, ac, bc = mu[c], a[c], b[c]
        for k in range(P):
            y[n, c, k] = (x[n, c, k] - mc) * ac + bc


@njit(parallel=True, cache=True, fastmath={"reassoc", "contract"})
def gradient_sums(g, x, mean, sum_g, sum_g_centred):
    """sum_g[c] = Σ g[:, c], sum_g_centred[c] = Σ g[:, c]·(x[:, c] − mean[c]); float64."""
    N, C, P = g.shape
    for c in prange(C):
        mu = mean[c]
        s = 0.0
        sx = 0.0
        for n in range(N):
            for k in range(P):
                gv = np.float64(g[n, c, k])
                s += gv
                sx += gv * (np.float64(x[n, c, k]) - mu)
        sum_g[c] = s
        sum_g_centred[c] = sx


@njit(parallel=True, cache=True, fastmath={"contract"})
def affine_combination(g, x, mu, a, b, d, dx):
    """dx[n, c, k] = a[c]·g[n, c, k] + b[c]·(x[n, c, k] − mu[c]) + d[c] (the batch-norm input gradient, rearranged)."""
    N, C, P = g.shape
    for t in prange(N * C):
        n = t // C
        c = t - n * C
        mc, ac, bc, dc = mu[c], a[c], b[c], d[c]
        for k in range(P):
            dx[n, c, k] = ac * g[n, c, k] + bc * (x[n, c, k] - mc) + dc
