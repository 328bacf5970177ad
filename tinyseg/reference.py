"""Naive reference implementations: each operation written as its definition.

These functions are the ground truth that tinyseg's fast engine is tested
against, and they are meant to be read by students. They are slow on purpose:
every output element is computed by explicit Python loops over the terms of
the sum that defines it, so each function can be checked against its equation
line by line.

Conventions shared by every function:

* NumPy only; inputs are converted to float64 and results are float64.
* Layout NCHW: ``x`` has shape (N, C, H, W) = (batch, channels, height, width).
* Argument meaning, output shapes and values match PyTorch's
  ``torch.nn.functional`` counterparts; the test suite checks this.
* ``stride``, ``padding``, ``dilation`` and ``kernel_size`` accept an int (the
  same value for height and width) or a pair (height, width).
* Inputs are never modified.

Notation in the docstrings: s = stride, p = padding, d = dilation,
k = kernel size, always per spatial dimension; ⌊·⌋ is floor.
"""
from __future__ import annotations

import math

import numpy as np


def _pair(value):
    """Return ``value`` as a (height, width) tuple: an int ``v`` becomes (v, v)."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"expected an int or a pair, got {value!r}")
        return tuple(value)
    return (value, value)


def _f64(a):
    """``a`` as a float64 NumPy array (no copy when it already is one)."""
    return np.asarray(a, dtype=np.float64)


def _check_pool_padding(kernel, padding):
    # PyTorch refuses a pad larger than half the window: such windows could lie
    # entirely in the padding, where max-pool has no element to return.
    for k, p in zip(kernel, padding):
        if p < 0 or p > k // 2:
            raise ValueError(
                f"padding {padding} must be between 0 and half the kernel size {kernel}"
            )


# ----------------------------------------------------------------------------
# Convolutions
# ----------------------------------------------------------------------------


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1):
    """2-D cross-correlation (what deep learning calls convolution), as PyTorch.

    Equation, with x taken as 0 outside the image (zero padding)::

        y[n,o,i,j] = b[o] + Σ_c Σ_u Σ_v W[o,c,u,v] · x[n,c, s·i + d·u − p_top, s·j + d·v − p_left]

    Shapes: x (N, C, H, W), weight (O, C, kH, kW), bias (O,) or None
    -> y (N, O, H', W') with, per spatial dimension,

        H' = ⌊(H + p_top + p_bottom − d·(k − 1) − 1) / s⌋ + 1

    ``padding`` is an int or pair (the same amount before and after), or
    "valid" (no padding), or "same" (stride 1 only): the output keeps the input
    size; the total padding d·(k − 1) per dimension is split with total//2 at
    the top/left and the rest at the bottom/right, as PyTorch does.
    """
    x, weight = _f64(x), _f64(weight)
    N, C, H, W = x.shape
    O, C_w, kH, kW = weight.shape
    if C_w != C:
        raise ValueError(f"weight expects {C_w} input channels, x has {C}")
    sh, sw = _pair(stride)
    dh, dw = _pair(dilation)

    if padding == "valid":
        pad_top = pad_bottom = pad_left = pad_right = 0
    elif padding == "same":
        if (sh, sw) != (1, 1):
            raise ValueError("padding='same' is only defined for stride 1 (as in PyTorch)")
        total_h, total_w = dh * (kH - 1), dw * (kW - 1)
        pad_top, pad_left = total_h // 2, total_w // 2
        pad_bottom, pad_right = total_h - pad_top, total_w - pad_left
    elif isinstance(padding, str):
        raise ValueError(f"padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
    else:
        ph, pw = _pair(padding)
        pad_top = pad_bottom = ph
        pad_left = pad_right = pw

    H_out = (H + pad_top + pad_bottom - dh * (kH - 1) - 1) // sh + 1
    W_out = (W + pad_left + pad_right - dw * (kW - 1) - 1) // sw + 1
    if H_out < 1 or W_out < 1:
        raise ValueError("the (dilated) kernel is larger than the padded input")

    y = np.zeros((N, O, H_out, W_out))
    for n in range(N):
        for o in range(O):
            for i in range(H_out):
                for j in range(W_out):
                    total = 0.0
                    for c in range(C):
                        for u in range(kH):
                            for v in range(kW):
                                r = sh * i + dh * u - pad_top
                                q = sw * j + dw * v - pad_left
                                # Taps that land in the zero padding add nothing.
                                if 0 <= r < H and 0 <= q < W:
                                    total += weight[o, c, u, v] * x[n, c, r, q]
                    y[n, o, i, j] = total if bias is None else total + bias[o]
    return y


def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0, dilation=1):
    """Transposed convolution, written as a scatter, as PyTorch.

    Every input pixel spreads a weighted copy of the kernel into the output::

        for every n, c, i, j and every o, u, v:
            y[n,o, s·i + d·u − p, s·j + d·v − p] += x[n,c,i,j] · W[c,o,u,v]
        (only where that position lies inside the output), then y[n,o] += b[o].

    This is the adjoint (transpose) of conv2d with the same weight, stride,
    padding and dilation: <conv2d(x, W), y> = <x, conv_transpose2d(y, W)>.

    Shapes: x (N, Cin, H, W), weight (Cin, Cout, kH, kW) (note: input channels
    first, unlike conv2d), bias (Cout,) or None -> y (N, Cout, H', W') with

        H' = (H − 1)·s − 2p + d·(k − 1) + output_padding + 1

    ``output_padding`` only lengthens the output at the bottom/right, to pick
    one of the several input sizes a strided conv2d maps to the same size;
    PyTorch requires it to be smaller than the stride or the dilation.
    """
    x, weight = _f64(x), _f64(weight)
    N, Cin, H, W = x.shape
    Cin_w, Cout, kH, kW = weight.shape
    if Cin_w != Cin:
        raise ValueError(f"weight expects {Cin_w} input channels, x has {Cin}")
    sh, sw = _pair(stride)
    ph, pw = _pair(padding)
    oph, opw = _pair(output_padding)
    dh, dw = _pair(dilation)
    for op, s, d in ((oph, sh, dh), (opw, sw, dw)):
        if not (op < s or op < d):
            raise ValueError("output_padding must be smaller than either stride or dilation")

    H_out = (H - 1) * sh - 2 * ph + dh * (kH - 1) + oph + 1
    W_out = (W - 1) * sw - 2 * pw + dw * (kW - 1) + opw + 1
    if H_out < 1 or W_out < 1:
        raise ValueError("padding removes the whole output")

    y = np.zeros((N, Cout, H_out, W_out))
    for n in range(N):
        for c in range(Cin):
            for i in range(H):
                for j in range(W):
                    for o in range(Cout):
                        for u in range(kH):
                            for v in range(kW):
                                r = sh * i + dh * u - ph
                                q = sw * j + dw * v - pw
                                # Contributions that fall in the cropped-away
                                # padding border are dropped.
                                if 0 <= r < H_out and 0 <= q < W_out:
                                    y[n, o, r, q] += x[n, c, i, j] * weight[c, o, u, v]
    if bias is not None:
        y += _f64(bias).reshape(1, Cout, 1, 1)
    return y


# ----------------------------------------------------------------------------
# Pooling, resampling, cropping
# ----------------------------------------------------------------------------


def max_pool2d(x, kernel_size, stride=None, padding=0):
    """Max pooling, as PyTorch (no dilation, no ceil_mode).

    Equation, with x taken as −∞ outside the image (so padding never wins)::

        y[n,c,i,j] = max_{0≤u<kH, 0≤v<kW} x[n,c, s·i + u − p, s·j + v − p]

    Shapes: (N, C, H, W) -> (N, C, H', W') with H' = ⌊(H + 2p − k) / s⌋ + 1.
    ``stride`` defaults to ``kernel_size``; ``padding`` must be at most k // 2.
    A NaN in a window makes the result NaN, as in PyTorch.
    """
    x = _f64(x)
    N, C, H, W = x.shape
    kh, kw = _pair(kernel_size)
    sh, sw = _pair(kernel_size if stride is None else stride)
    ph, pw = _pair(padding)
    _check_pool_padding((kh, kw), (ph, pw))
    H_out = (H + 2 * ph - kh) // sh + 1
    W_out = (W + 2 * pw - kw) // sw + 1

    y = np.empty((N, C, H_out, W_out))
    for n in range(N):
        for c in range(C):
            for i in range(H_out):
                for j in range(W_out):
                    best = -np.inf
                    for u in range(kh):
                        for v in range(kw):
                            r, q = sh * i + u - ph, sw * j + v - pw
                            if 0 <= r < H and 0 <= q < W:
                                value = x[n, c, r, q]
                                if value > best or np.isnan(value):
                                    best = value
                    y[n, c, i, j] = best
    return y


def avg_pool2d(x, kernel_size, stride=None, padding=0):
    """Average pooling, as PyTorch with count_include_pad=True (its default).

    Equation, with x taken as 0 outside the image; the padded zeros count in
    the divisor, which is therefore always kH·kW::

        y[n,c,i,j] = 1/(kH·kW) · Σ_{0≤u<kH} Σ_{0≤v<kW} x[n,c, s·i + u − p, s·j + v − p]

    Shapes: (N, C, H, W) -> (N, C, H', W') with H' = ⌊(H + 2p − k) / s⌋ + 1.
    ``stride`` defaults to ``kernel_size``; ``padding`` must be at most k // 2.
    """
    x = _f64(x)
    N, C, H, W = x.shape
    kh, kw = _pair(kernel_size)
    sh, sw = _pair(kernel_size if stride is None else stride)
    ph, pw = _pair(padding)
    _check_pool_padding((kh, kw), (ph, pw))
    H_out = (H + 2 * ph - kh) // sh + 1
    W_out = (W + 2 * pw - kw) // sw + 1

    y = np.empty((N, C, H_out, W_out))
    for n in range(N):
        for c in range(C):
            for i in range(H_out):
                for j in range(W_out):
                    total = 0.0
                    for u in range(kh):
                        for v in range(kw):
                            r, q = sh * i + u - ph, sw * j + v - pw
                            if 0 <= r < H and 0 <= q < W:
                                total += x[n, c, r, q]
                    y[n, c, i, j] = total / (kh * kw)
    return y


def upsample_nearest(x, scale_factor):
    """Nearest-neighbour upsampling by integer factors, as PyTorch mode='nearest'.

    Equation (each input pixel becomes an sH × sW block)::

        y[n,c,i,j] = x[n,c, ⌊i / sH⌋, ⌊j / sW⌋]

    Shapes: (N, C, H, W) -> (N, C, sH·H, sW·W); ``scale_factor`` is a positive
    int or a pair of positive ints (sH, sW).
    """
    x = _f64(x)
    N, C, H, W = x.shape
    sh, sw = _pair(scale_factor)
    for s in (sh, sw):
        if int(s) != s or s < 1:
            raise ValueError(f"scale factors must be positive integers, got {scale_factor!r}")
    sh, sw = int(sh), int(sw)

    y = np.empty((N, C, sh * H, sw * W))
    for n in range(N):
        for c in range(C):
            for i in range(sh * H):
                for j in range(sw * W):
                    y[n, c, i, j] = x[n, c, i // sh, j // sw]
    return y


def _linear_source(dst, in_size, out_size, scale, align_corners):
    """Where output index ``dst`` samples the input along one axis, for bilinear.

    Returns (i0, i1, λ): the value is (1 − λ)·x[i0] + λ·x[i1].
    """
    if align_corners:
        # The corner pixel centres of input and output coincide.
        ratio = (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
        src = dst * ratio
    else:
        # Pixel centres sit at index + 0.5; PyTorch uses 1/scale_factor as the
        # ratio when a scale factor is given (not in_size/out_size).
        src = (dst + 0.5) * (1.0 / scale) - 0.5
        src = max(src, 0.0)  # left of the first centre: repeat the edge pixel
    i0 = math.floor(src)
    i1 = min(i0 + 1, in_size - 1)  # right of the last centre: repeat the edge pixel
    return i0, i1, src - i0


def upsample_bilinear(x, scale_factor, align_corners=False):
    """Bilinear resampling by a scale factor, as PyTorch mode='bilinear'.

    Output size per dimension: H' = ⌊H · scale⌋ (floats allowed, also < 1).
    For each output row i the source coordinate is

        align_corners=True:  src = i · (H − 1)/(H' − 1)   (0 when H' = 1)
        align_corners=False: src = max((i + 0.5)/scale − 0.5, 0)

    then i0 = ⌊src⌋, i1 = min(i0 + 1, H − 1), α = src − i0; likewise j0, j1, β
    for columns. The output is the bilinear blend of the 4 neighbours::

        y[n,c,i,j] = (1−α)(1−β)·x[i0,j0] + (1−α)β·x[i0,j1] + α(1−β)·x[i1,j0] + αβ·x[i1,j1]

    Shapes: (N, C, H, W) -> (N, C, ⌊H·sH⌋, ⌊W·sW⌋); ``scale_factor`` is a
    positive number or a pair (sH, sW).
    """
    x = _f64(x)
    N, C, H, W = x.shape
    sh, sw = (float(s) for s in _pair(scale_factor))
    if sh <= 0 or sw <= 0:
        raise ValueError(f"scale factors must be positive, got {scale_factor!r}")
    H_out, W_out = math.floor(H * sh), math.floor(W * sw)
    if H_out < 1 or W_out < 1:
        raise ValueError("the scale factor leaves an empty output")

    y = np.empty((N, C, H_out, W_out))
    for i in range(H_out):
        i0, i1, alpha = _linear_source(i, H, H_out, sh, align_corners)
        for j in range(W_out):
            j0, j1, beta = _linear_source(j, W, W_out, sw, align_corners)
            for n in range(N):
                for c in range(C):
                    y[n, c, i, j] = (
                        (1 - alpha) * (1 - beta) * x[n, c, i0, j0]
                        + (1 - alpha) * beta * x[n, c, i0, j1]
                        + alpha * (1 - beta) * x[n, c, i1, j0]
                        + alpha * beta * x[n, c, i1, j1]
                    )
    return y


def center_crop(x, size):
    """The central (H, W) window of x, as used for U-Net skip connections.

    Equation, with offsets top = ⌊(H_in − H)/2⌋ and left = ⌊(W_in − W)/2⌋
    (for an odd difference the extra row/column is dropped at the bottom/right)::

        y[n,c,i,j] = x[n,c, top + i, left + j]

    Shapes: (N, C, H_in, W_in) -> (N, C, H, W); ``size`` is an int or (H, W),
    each at most the input size. Returns a new array, not a view.
    """
    x = _f64(x)
    N, C, H_in, W_in = x.shape
    H, W = _pair(size)
    if not (0 < H <= H_in and 0 < W <= W_in):
        raise ValueError(f"cannot crop {(H_in, W_in)} to {(H, W)}")
    top, left = (H_in - H) // 2, (W_in - W) // 2

    y = np.empty((N, C, H, W))
    for i in range(H):
        for j in range(W):
            y[:, :, i, j] = x[:, :, top + i, left + j]
    return y


# ----------------------------------------------------------------------------
# Normalisation and activations
# ----------------------------------------------------------------------------


def batch_norm(x, running_mean, running_var, weight, bias, training, momentum=0.1, eps=1e-5):
    """Batch normalisation over (N, H, W) per channel, as PyTorch.

    Training, per channel c over its m = N·H·W values::

        μ_c  = (1/m) Σ x[n,c,h,w]
        σ²_c = (1/m) Σ (x[n,c,h,w] − μ_c)²                  (biased: normalises the batch)
        y[n,c,h,w] = (x[n,c,h,w] − μ_c) / sqrt(σ²_c + eps) · γ_c + β_c
        new_running_mean_c = (1 − momentum)·running_mean_c + momentum·μ_c
        new_running_var_c  = (1 − momentum)·running_var_c  + momentum·σ²_c·m/(m − 1)  (unbiased)

    Evaluation: the same y with running_mean/running_var in place of μ/σ²;
    the running statistics are returned unchanged.

    Shapes: x (N, C, H, W); running_mean, running_var, weight (γ), bias (β)
    all (C,). ``weight``/``bias`` None mean γ = 1 / β = 0. In training the
    running statistics may be None (not tracked); None is then returned for them.

    Returns (y, new_running_mean, new_running_var); the inputs are not modified
    (PyTorch updates the running buffers in place instead).
    """
    x = _f64(x)
    C = x.shape[1]
    gamma = np.ones(C) if weight is None else _f64(weight)
    beta = np.zeros(C) if bias is None else _f64(bias)
    new_mean = None if running_mean is None else np.array(running_mean, dtype=np.float64)
    new_var = None if running_var is None else np.array(running_var, dtype=np.float64)

    y = np.empty_like(x)
    if training:
        m = x.size // C
        if m < 2:
            raise ValueError("training batch norm needs more than 1 value per channel")
        for c in range(C):
            values = x[:, c]
            mean = values.sum() / m
            var = ((values - mean) ** 2).sum() / m
            y[:, c] = (values - mean) / np.sqrt(var + eps) * gamma[c] + beta[c]
            if new_mean is not None:
                new_mean[c] = (1 - momentum) * new_mean[c] + momentum * mean
            if new_var is not None:
                new_var[c] = (1 - momentum) * new_var[c] + momentum * var * m / (m - 1)
    else:
        if new_mean is None or new_var is None:
            raise ValueError("evaluation mode needs running_mean and running_var")
        for c in range(C):
            y[:, c] = (x[:, c] - new_mean[c]) / np.sqrt(new_var[c] + eps) * gamma[c] + beta[c]
    return y, new_mean, new_var


def instance_norm(x, weight=None, bias=None, eps=1e-5):
    """Instance normalisation: every image n and channel c over its own m = H·W pixels::

        μ_nc  = (1/m) Σ_h Σ_w x[n,c,h,w]
        σ²_nc = (1/m) Σ_h Σ_w (x[n,c,h,w] − μ_nc)²          (biased)
        y[n,c,h,w] = (x[n,c,h,w] − μ_nc) / sqrt(σ²_nc + eps) · γ_c + β_c

    Shapes: x (N, C, H, W); weight (γ), bias (β) (C,) or None (γ = 1, β = 0).
    No running statistics: training and evaluation compute the same thing.
    """
    x = _f64(x)
    N, C, H, W = x.shape
    gamma = np.ones(C) if weight is None else _f64(weight)
    beta = np.zeros(C) if bias is None else _f64(bias)
    m = H * W
    y = np.empty_like(x)
    for n in range(N):
        for c in range(C):
            total = 0.0
            for h in range(H):
                for w in range(W):
                    total += x[n, c, h, w]
            mean = total / m
            squares = 0.0
            for h in range(H):
                for w in range(W):
                    squares += (x[n, c, h, w] - mean) ** 2
            inv_std = 1.0 / np.sqrt(squares / m + eps)
            for h in range(H):
                for w in range(W):
                    y[n, c, h, w] = (x[n, c, h, w] - mean) * inv_std * gamma[c] + beta[c]
    return y


def softmax(x, axis=1):
    """softmax(x)_k = exp(x_k − M) / Σ_l exp(x_l − M) along ``axis``, M = max_l x_l.

    Subtracting the maximum does not change the result (it cancels between
    numerator and denominator) but keeps exp() from overflowing.
    Shape: unchanged.
    """
    x = _f64(x)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def log_softmax(x, axis=1):
    """log_softmax(x)_k = (x_k − M) − log Σ_l exp(x_l − M) along ``axis``, M = max_l x_l.

    Computed directly rather than as log(softmax(x)), which would give −∞ when
    a probability underflows to 0. Shape: unchanged.
    """
    x = _f64(x)
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def sigmoid(x):
    """σ(z) = 1 / (1 + exp(−z)), elementwise. Shape: unchanged.

    For z < 0 the equal form exp(z) / (1 + exp(z)) is used so that exp never
    overflows.
    """
    z = _f64(x)
    y = np.empty_like(z)
    positive = z >= 0
    y[positive] = 1.0 / (1.0 + np.exp(-z[positive]))
    e = np.exp(z[~positive])
    y[~positive] = e / (1.0 + e)
    return y


# ----------------------------------------------------------------------------
# Losses (all reduce to the mean, returned as a float64 scalar)
# ----------------------------------------------------------------------------


def binary_cross_entropy_with_logits(logits, target, weight=None, pos_weight=None):
    """Binary cross-entropy on logits z with targets t ∈ [0, 1], as PyTorch.

    Per element::

        ℓ = w · [ −pw · t · log σ(z) − (1 − t) · log(1 − σ(z)) ]
        loss = mean of ℓ over all elements

    with log σ(z) = −log(1 + e^(−z)) = −logaddexp(0, −z) and
    log(1 − σ(z)) = −logaddexp(0, z), exact even for |z| in the thousands.

    Shapes: logits and target of the same shape; ``weight`` (w) broadcasts
    against them; ``pos_weight`` (pw, the weight of positive targets)
    broadcasts against the logits, e.g. (C, 1, 1) for NCHW logits.
    """
    z, t = _f64(logits), _f64(target)
    if z.shape != t.shape:
        raise ValueError(f"target shape {t.shape} differs from logits shape {z.shape}")
    log_p = -np.logaddexp(0.0, -z)  # log σ(z)
    log_1mp = -np.logaddexp(0.0, z)  # log(1 − σ(z))
    pw = 1.0 if pos_weight is None else _f64(pos_weight)
    loss = -(pw * t * log_p + (1.0 - t) * log_1mp)
    if weight is not None:
        loss = loss * _f64(weight)
    return np.float64(loss.mean())


def cross_entropy(logits, target, weight=None, ignore_index=None):
    """Multi-class cross-entropy with class indices, as PyTorch reduction='mean'.

    For every element e = (n, h, w) whose target t_e is not ``ignore_index``::

        ℓ_e  = −w[t_e] · log_softmax(logits)[n, t_e, h, w]     (softmax over classes, axis 1)
        loss = Σ_e ℓ_e / Σ_e w[t_e]

    so with class weights the mean is weighted, and ignored elements count in
    neither sum. If nothing is left to average (0/0) the result is NaN, as in
    PyTorch.

    Shapes: logits (N, C, H, W) or (N, C); target integer (N, H, W) or (N,)
    with values in [0, C) or equal to ``ignore_index``; weight (C,) or None
    (all 1). ``ignore_index=None`` ignores nothing (PyTorch's default is −100).
    """
    logits = _f64(logits)
    target = np.asarray(target)
    if not np.issubdtype(target.dtype, np.integer):
        raise TypeError("target must hold integer class indices")
    N, C = logits.shape[:2]
    if target.shape != (N,) + logits.shape[2:]:
        raise ValueError(f"target shape {target.shape} does not fit logits {logits.shape}")
    w = np.ones(C) if weight is None else _f64(weight)
    log_p = log_softmax(logits, axis=1)

    loss_sum = 0.0
    weight_sum = 0.0
    for element in np.ndindex(target.shape):
        t = int(target[element])
        if ignore_index is not None and t == ignore_index:
            continue
        if not 0 <= t < C:
            raise IndexError(f"target {t} is out of range for {C} classes")
        n, position = element[0], element[1:]
        loss_sum += -w[t] * log_p[(n, t) + position]
        weight_sum += w[t]
    if weight_sum == 0:
        return np.float64(np.nan)
    return np.float64(loss_sum / weight_sum)


def dice_loss(logits, target, smooth=1.0):
    """Soft Dice loss, averaged over all classes (background included).

    Probabilities p: sigmoid for a single channel (the one class is
    "foreground"); softmax over axis 1 for C > 1 channels. Targets t: the 0/1
    mask for one channel; for C > 1 the one-hot encoding t_c = [target == c].
    Per class c, with sums over the batch and all pixels::

        D_c  = (2 · Σ p_c · t_c + smooth) / (Σ p_c + Σ t_c + smooth)
        loss = 1 − (1/C) Σ_c D_c

    Shapes: logits (N, C, H, W); target (N, 1, H, W) or (N, H, W) with values
    in {0, 1} when C = 1, integer (N, H, W) with values in [0, C) when C > 1.
    """
    logits = _f64(logits)
    target = np.asarray(target)
    N, C = logits.shape[:2]
    if C == 1:
        probabilities = [sigmoid(logits)[:, 0]]
        masks = [_f64(target).reshape((N,) + logits.shape[2:])]
    else:
        p = softmax(logits, axis=1)
        probabilities = [p[:, c] for c in range(C)]
        masks = [(target == c).astype(np.float64) for c in range(C)]

    dice = []
    for p_c, t_c in zip(probabilities, masks):
        intersection = (p_c * t_c).sum()
        dice.append((2.0 * intersection + smooth) / (p_c.sum() + t_c.sum() + smooth))
    return np.float64(1.0 - sum(dice) / len(dice))


def mse_loss(input, target):
    """Mean squared error: loss = (1/M) Σ (input − target)² over all M elements."""
    difference = _f64(input) - _f64(target)
    return np.float64((difference * difference).mean())


# ----------------------------------------------------------------------------
# U-Net weight map
# ----------------------------------------------------------------------------


def weighted_map_unet(mask, w0=10.0, sigma=5.0, class_weights=None):
    """Pixel weight map of the U-Net paper (Ronneberger et al. 2015, eq. 2).

    ``mask`` (H, W) holds integer labels: 0 is background, each positive
    integer is one object (instance). Every object must carry its own label
    for the border term to appear: a 0/1 mask is a single object (label
    touching objects first, e.g. with scipy.ndimage.label).

    Equation::

        w(x) = w_c(x) + w0 · exp(−(d1(x) + d2(x))² / (2σ²))   for background pixels x
        w(x) = w_c(x)                                          for object pixels

    d1(x), d2(x): Euclidean distance from the centre of pixel x to the nearest
    pixel centre of the nearest and of the second-nearest object. With fewer
    than two objects the border term is 0.

    w_c, the class-balancing term, has two classes, background (label 0) and
    foreground (any positive label). Default: w_c = 1 / (frequency of the
    pixel's class in this mask), scaled so that the larger of the two weights is
    1 (the rarer class gets 1, the commoner one freq_rare/freq_common). A class
    absent from the mask needs no weight. ``class_weights`` = (w_background,
    w_foreground) replaces this default.

    Shape: (H, W) -> (H, W) float64. Brute force: every background pixel
    measures its distance to every object pixel.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2 or not np.issubdtype(mask.dtype, np.integer):
        raise ValueError("mask must be a 2-D array of integer labels")
    H, W = mask.shape
    foreground = mask > 0

    if class_weights is None:
        frequency = (np.mean(~foreground), np.mean(foreground))
        inverse = [1.0 / f if f > 0 else 0.0 for f in frequency]
        w_background, w_foreground = (v / max(inverse) for v in inverse)
    else:
        w_background, w_foreground = (float(v) for v in class_weights)
    weights = np.where(foreground, w_foreground, w_background).astype(np.float64)

    labels = [label for label in np.unique(mask) if label > 0]
    if len(labels) < 2:
        return weights

    object_pixels = [np.argwhere(mask == label) for label in labels]
    for r in range(H):
        for q in range(W):
            if foreground[r, q]:
                continue
            distances = sorted(
                np.min(np.hypot(pixels[:, 0] - r, pixels[:, 1] - q)) for pixels in object_pixels
            )
            d1, d2 = distances[0], distances[1]
            weights[r, q] += w0 * math.exp(-((d1 + d2) ** 2) / (2.0 * sigma**2))
    return weights
