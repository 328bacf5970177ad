"""The compiled loop of the Adam/AdamW update (Numba, CPU): one fused pass per parameter.

Imported lazily, on the first step that selects the "numba" kernel, so that ``import
tinyseg`` does not pay for importing Numba. The NumPy kernel (optim.NumpyAdamKernel)
makes about ten passes over the parameter-sized arrays; this loop reads p, g, m, v once
and writes p, m, v once, in place. Each element is computed with the same operations in
the same order as the NumPy kernel, in the array's dtype (the scalars arrive already
cast to it), so the two agree to the last bit: without fast-math the compiler keeps
IEEE semantics (no fused multiply-add). ``error_model="numpy"`` makes a division by 0
give inf/NaN as in NumPy (eps = 0, v = 0) instead of raising, and lets the loop vectorise.

The arrays must be flat, C-contiguous and of one dtype (float32 or float64, each gets
its own compiled version). The parallel version splits them into chunks of CHUNK
elements, one chunk per ``prange`` iteration: every element has exactly one writer, so
results do not depend on the thread count. The serial version runs the same element
function in the calling thread, saving the parallel launch on small parameters.

The threading layer is chosen by ``threads.select_threading_layer`` (tinyseg/threads.py).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import threads

threads.select_threading_layer()

CHUNK = 16384


@njit(cache=True, inline="always", error_model="numpy")
def _adam_elements(param, grad, m, v, l2_decay, weight_decay, decoupled_decay, decay_factor,
                beta1, one_minus_beta2, beta2, bias_correction2_sqrt, eps, step_size):
    for k in range(param.size):
        p = param[k]
        g = grad[k]
        if decoupled_decay:
            p = p * decay_factor                      # p ← p · (1 − lr · wd)
        elif l2_decay:
            g = p * weight_decay + g                  # g ← g + wd · p
        mk = (m[k] - g) * beta1 + g                   # m ← β1·m + (1 − β1)·g, as g + β1·(m − g)
        vk = v[k] * beta2 + (g * g) * one_minus_beta2  # v ← β2·v + (1 − β2)·g²
        denominator = np.sqrt(vk) / bias_correction2_sqrt + eps
        m[k] = mk
        v[k] = vk
        param[k] = p - (mk / denominator) * step_size


@njit(parallel=True, cache=True, error_model="numpy")
def adam_update(param, grad, m, v, l2_decay, weight_decay, decoupled_decay, decay_factor,
                beta1, one_minus_beta2, beta2, bias_correction2_sqrt, eps, step_size):
    """One Adam step on flat arrays, in place on param, m and v (grad is only read):

        g ← g + wd·p  (l2_decay)   or   p ← p · decay_factor  (decoupled_decay)
        m ← β1·m + (1 − β1)·g,   v ← β2·v + (1 − β2)·g²
        p ← p − step_size · m / (√v / bias_correction2_sqrt + eps)

    with step_size = lr / (1 − β1^t), bias_correction2_sqrt = √(1 − β2^t), given.
    """
    n = param.size
    for chunk in prange((n + CHUNK - 1) // CHUNK):
        start, stop = chunk * CHUNK, min(n, (chunk + 1) * CHUNK)
        _adam_elements(param[start:stop], grad[start:stop], m[start:stop], v[start:stop], l2_decay, weight_decay,
                       decoupled_decay, decay_factor, beta1, one_minus_beta2, beta2, bias_correction2_sqrt, eps,
                       step_size)


@njit(cache=True, error_model="numpy")
def adam_update_serial(param, grad, m, v, l2_decay, weight_decay, decoupled_decay, decay_factor,
                       beta1, one_minus_beta2, beta2, bias_correction2_sqrt, eps, step_size):
    """adam_update in one loop in the calling thread."""
    _adam_elements(param, grad, m, v, l2_decay, weight_decay, decoupled_decay, decay_factor,
                   beta1, one_minus_beta2, beta2, bias_correction2_sqrt, eps, step_size)
