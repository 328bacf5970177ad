"""Losses: binary cross-entropy from logits, cross-entropy, soft Dice, mean squared error,
and the U-Net paper's pixel weight map.

Every loss reduces to a mean and returns a 0-d Tensor in the dtype of its logits/input.
Targets, weights and running statistics may be arrays or Tensors; targets that do not
require grad are cast to the logits' dtype. The equations and the derivations of the
backwards are in docs/math/activations_norm_losses.md, section "Losses".
"""
from __future__ import annotations

import numbers

import numpy as np

from .. import backend
from ..tensor import Function, Tensor
from ._checks import array_of, check_float
from .activation import log_softmax_along, sigmoid_derivative, stable_sigmoid


def _channel_shape(ndim):
    """Shape that broadcasts a (C,) vector along axis 1 of an ``ndim``-D array."""
    return (1, -1) + (1,) * (ndim - 2)


def _sigmoid_pair(z, xp):
    """(σ(z), σ(−z)), both computed without cancellation: σ(−z) is not taken as 1 − σ(z)."""
    e = xp.exp(-xp.abs(z))
    one_plus_e = 1 + e
    non_negative = z >= 0
    return xp.where(non_negative, 1, e) / one_plus_e, xp.where(non_negative, e, 1) / one_plus_e


def _softplus_pair(z, xp):
    """(softplus(z), softplus(−z)) = (−log(1 − σ(z)), −log σ(z)), exact and finite for any z.

    softplus(±z) = max(±z, 0) + log1p(exp(−|z|)): exp() never sees a positive argument.
    """
    log1p_term = xp.log1p(xp.exp(-xp.abs(z)))
    return xp.maximum(z, 0) + log1p_term, xp.maximum(-z, 0) + log1p_term


class NumpyBCEWithLogitsKernel:
    """Whole-array expressions on NumPy or CuPy (a few passes and temporaries each way).

    forward: Σ w · [pw · t · softplus(−z) + (1 − t) · softplus(z)] / n;
    backward: (dz, dt) as in BinaryCrossEntropyWithLogits, each only where asked for.
    """

    name = "numpy"

    @staticmethod
    def forward(z, t, w, pw, xp):
        softplus_z, softplus_neg_z = _softplus_pair(z, xp)
        positive_term = t * softplus_neg_z if pw is None else (pw * t) * softplus_neg_z
        per_element = positive_term + (1 - t) * softplus_z
        if w is not None:
            per_element *= w
        return per_element.sum() / z.dtype.type(z.size)

    @staticmethod
    def backward(g, z, t, w, pw, needs_dz, needs_dt, xp):
        coefficient = g / z.dtype.type(z.size)
        if w is not None:
            coefficient = coefficient * w
        dz = dt = None
        if needs_dz:
            sigma, sigma_neg = _sigmoid_pair(z, xp)
            weighted_t = t if pw is None else pw * t
            dz = ((1 - t) * sigma - weighted_t * sigma_neg) * coefficient
        if needs_dt:
            softplus_z, softplus_neg_z = _softplus_pair(z, xp)
            pw_softplus_neg = softplus_neg_z if pw is None else pw * softplus_neg_z
            dt = (pw_softplus_neg - softplus_z) * coefficient
        return dz, dt


class NumbaBCEWithLogitsKernel:
    """The same expressions in one compiled pass each way (loss_kernels_numba), without the
    temporaries: the forward a parallel sum (per-chunk partial sums, then their sum, so the
    result does not depend on the thread count), the backward
    dz = ((1 − t)·σ(z) − t·σ(−z)) · g/n (= (σ(z) − t)·g/n without cancellation). A serial
    loop below NUMBA_BCE_PARALLEL_MIN_ELEMENTS, parallel chunks from there.

    Only the unweighted loss (weight=None, pos_weight=None) on NumPy float32/float64
    arrays: with a weight or pos_weight, on CuPy arrays or other dtypes it uses the NumPy
    kernel, and so does the target's gradient (rarely asked for).
    """

    name = "numba"

    @staticmethod
    def _compiled_applies(z, t, w, pw, xp):
        return (xp is np and w is None and pw is None and z.dtype in (np.float32, np.float64)
                and t.dtype == z.dtype)

    @staticmethod
    def forward(z, t, w, pw, xp):
        if not NumbaBCEWithLogitsKernel._compiled_applies(z, t, w, pw, xp):
            return NumpyBCEWithLogitsKernel.forward(z, t, w, pw, xp)
        from . import loss_kernels_numba as compiled

        scalar = z.dtype.type
        loop = (compiled.bce_with_logits_sum if z.size >= NUMBA_BCE_PARALLEL_MIN_ELEMENTS
                else compiled.bce_with_logits_sum_serial)
        total = loop(np.ascontiguousarray(z).reshape(-1), np.ascontiguousarray(t).reshape(-1), scalar(1))
        return scalar(total) / scalar(z.size)

    @staticmethod
    def backward(g, z, t, w, pw, needs_dz, needs_dt, xp):
        if not NumbaBCEWithLogitsKernel._compiled_applies(z, t, w, pw, xp):
            return NumpyBCEWithLogitsKernel.backward(g, z, t, w, pw, needs_dz, needs_dt, xp)
        from . import loss_kernels_numba as compiled

        dz = dt = None
        if needs_dz:
            scalar = z.dtype.type
            coefficient = scalar(g / scalar(z.size))
            loop = (compiled.bce_with_logits_backward if z.size >= NUMBA_BCE_PARALLEL_MIN_ELEMENTS
                    else compiled.bce_with_logits_backward_serial)
            dz = loop(np.ascontiguousarray(z).reshape(-1), np.ascontiguousarray(t).reshape(-1), scalar(1),
                      coefficient).reshape(z.shape)
        if needs_dt:
            _, dt = NumpyBCEWithLogitsKernel.backward(g, z, t, w, pw, False, True, xp)
        return dz, dt


# Measured (2 cores, float32, median ms of 25 calls after warm-up; forward / backward):
#   logits               elements    numpy           numba
#   (1, 1, 256, 256)     65536       0.77 / 0.71     1.15 / 0.23     (serial loops)
#   (4, 1, 128, 128)     65536       0.79 / 0.74     1.12 / 0.23
#   (2, 1, 256, 256)     131072      1.54 / 1.51     2.24 / 0.46
#   (1, 2**20)           1048576     19.9 / 20.7     9.9 / 2.0       (parallel loops)
#   (64, 1, 512, 512)    16777216    285 / 295       156 / 60
# (numpy: its best runs; the same calls took up to 1.7x longer when its temporaries were
# freshly mapped.) The forward is bound by log1p, which NumPy computes faster than the C
# library's log1pf that the compiled loop calls: the loop wins only once it runs on both
# cores, from 2**20 elements, which is also where the parallel launch pays back. The
# backward (exp and divisions, fused, no temporaries) is 3-10x faster at every size. (Below
# ~2**11 elements the compiled forward is a few µs faster too: not worth a second threshold.)
NUMBA_BCE_PARALLEL_MIN_ELEMENTS = 2 ** 20
AUTO_BCE_FORWARD_NUMBA_MIN_ELEMENTS = 2 ** 20
AUTO_BCE_BACKWARD_NUMBA_MIN_ELEMENTS = 0


class CupyBCEWithLogitsKernel(NumpyBCEWithLogitsKernel):
    """The NumPy kernel's whole-array expressions run by CuPy on the GPU."""

    name = "cupy"


class CudaBCEWithLogitsKernel:
    """Hand-written CUDA C (kernels/loss.cu): the forward one pass of per-block partial sums
    then a fixed-order final sum (deterministic, no atomics), the backward one pass writing
    dz and/or dt. Every case of the CPU kernels: weight and pos_weight (any shape that
    broadcasts to the logits; a smaller one is expanded first), the target's gradient.

    Runs on CuPy arrays, or on NumPy arrays inside ``backend.cuda_emulation()``.
    """

    name = "cuda"

    @staticmethod
    def forward(z, t, w, pw, xp):
        from . import loss_kernels_cuda as gpu
        return gpu.bce_with_logits_forward(z, t, w, pw, xp)

    @staticmethod
    def backward(g, z, t, w, pw, needs_dz, needs_dt, xp):
        from . import loss_kernels_cuda as gpu
        return gpu.bce_with_logits_backward(g, z, t, w, pw, needs_dz, needs_dt, xp)


class AutoBCEWithLogitsKernel:
    """GPU (CuPy arrays): "cuda". CPU: numba for the forward of logits of at least
    AUTO_BCE_FORWARD_NUMBA_MIN_ELEMENTS elements and for the backward from
    AUTO_BCE_BACKWARD_NUMBA_MIN_ELEMENTS; numpy below."""

    name = "auto"

    @staticmethod
    def forward(z, t, w, pw, xp):
        if xp is not np:
            return CudaBCEWithLogitsKernel.forward(z, t, w, pw, xp)
        large = z.size >= AUTO_BCE_FORWARD_NUMBA_MIN_ELEMENTS
        return (NumbaBCEWithLogitsKernel if large else NumpyBCEWithLogitsKernel).forward(z, t, w, pw, xp)

    @staticmethod
    def backward(g, z, t, w, pw, needs_dz, needs_dt, xp):
        if xp is not np:
            return CudaBCEWithLogitsKernel.backward(g, z, t, w, pw, needs_dz, needs_dt, xp)
        large = z.size >= AUTO_BCE_BACKWARD_NUMBA_MIN_ELEMENTS
        kernel = NumbaBCEWithLogitsKernel if large else NumpyBCEWithLogitsKernel
        return kernel.backward(g, z, t, w, pw, needs_dz, needs_dt, xp)


BCE_WITH_LOGITS_KERNELS = {kernel.name: kernel for kernel in
                           (NumpyBCEWithLogitsKernel, NumbaBCEWithLogitsKernel, CupyBCEWithLogitsKernel,
                            CudaBCEWithLogitsKernel, AutoBCEWithLogitsKernel)}
DEFAULT_BCE_WITH_LOGITS_KERNEL = "auto"


def _selected_bce_with_logits_kernel():
    name = backend.kernel_for("bce_with_logits", DEFAULT_BCE_WITH_LOGITS_KERNEL)
    if name not in BCE_WITH_LOGITS_KERNELS:
        available = ", ".join(repr(k) for k in sorted(BCE_WITH_LOGITS_KERNELS))
        raise ValueError(f"bce_with_logits: unknown kernel {name!r}; available kernels: {available}")
    return BCE_WITH_LOGITS_KERNELS[name]


class BinaryCrossEntropyWithLogits(Function):
    """loss = (1/n) Σ w · [pw · t · softplus(−z) + (1 − t) · softplus(z)].

    Inputs: logits z, target t, then w if ``has_weight``, then pw if ``has_pos_weight``.
    Backward (w and pw get no gradient):
        dL/dz = g · w · ((1 − t)·σ(z) − pw·t·σ(−z)) / n
        dL/dt = g · w · (pw·softplus(−z) − softplus(z)) / n
    Computed by the kernel ``backend.kernel_for("bce_with_logits", ...)`` names.
    """

    def __init__(self, has_weight, has_pos_weight):
        self.has_weight, self.has_pos_weight = has_weight, has_pos_weight
        self.kernel = _selected_bce_with_logits_kernel()

    def forward(self, z, t, *extras):
        self.w = extras[0] if self.has_weight else None
        self.pw = extras[-1] if self.has_pos_weight else None
        self.z, self.t = z, t
        return self.kernel.forward(z, t, self.w, self.pw, self.xp)

    def backward(self, g):
        dz, dt = self.kernel.backward(g, self.z, self.t, self.w, self.pw, self.needs_grad[0], self.needs_grad[1],
                                      self.xp)
        return (dz, dt) + (None,) * (self.has_weight + self.has_pos_weight)


class CrossEntropy(Function):
    """loss = −Σ_e w_e · log_softmax(z)[n, t_e, …] / Σ_e w_e over the non-ignored elements e.

    Inputs: logits z (N, C, …), integer target t (N, …), then the weight if ``weight_kind``
    is "class" (w_e = weight[t_e]) or "element" (w_e = weight[e], a per-pixel map).
    Backward: dL/dz[n, c, …] = g · (softmax(z)[n, c, …] − [c = t_e]) · w_e / Σ_e w_e.
    """

    def __init__(self, ignore_index, weight_kind):
        self.ignore_index, self.weight_kind = ignore_index, weight_kind

    def forward(self, z, t, *weight):
        xp = self.xp
        valid = None if self.ignore_index is None else t != self.ignore_index
        self.safe_t = t if valid is None else xp.where(valid, t, 0)   # any class index will do where ignored
        self.log_p = log_softmax_along(z, 1, xp)
        picked = xp.take_along_axis(self.log_p, xp.expand_dims(self.safe_t, 1), axis=1)[:, 0]

        if self.weight_kind == "class":
            w_e = weight[0][self.safe_t]
        elif self.weight_kind == "element":
            w_e = weight[0]
        else:
            w_e = xp.ones(t.shape, dtype=z.dtype)
        if valid is not None:
            w_e = w_e * valid
        total = w_e.sum()
        # Nothing left to average (all ignored, or zero weights): NaN as in PyTorch,
        # without a 0/0 warning; backward then gives zero gradients.
        self.safe_total = xp.where(total == 0, 1, total)
        self.w_e = w_e
        loss = -(w_e * picked).sum() / self.safe_total
        return xp.where(total == 0, xp.nan, loss).astype(z.dtype)

    def backward(self, g):
        xp, log_p = self.xp, self.log_p
        classes = xp.arange(log_p.shape[1]).reshape(_channel_shape(log_p.ndim))
        dz = xp.exp(log_p)
        dz -= classes == xp.expand_dims(self.safe_t, 1)
        dz *= xp.expand_dims(self.w_e * (g / self.safe_total), 1)
        return (dz, None) + (None,) * (self.weight_kind is not None)


class NumpyDiceKernel:
    """Whole-array expressions on NumPy or CuPy: p, the one-hot target, three sums over
    (batch, pixels) per class; backward through σ or softmax.

    ``forward(z, t, smooth, xp)`` returns (loss, state); ``backward(g, state, xp)`` returns dz.
    """

    name = "numpy"

    @staticmethod
    def forward(z, t, smooth, xp):
        classes = z.shape[1]
        axes = (0,) + tuple(range(2, z.ndim))
        e = None
        if classes == 1:
            p, e = stable_sigmoid(z, xp)
            one_hot = t
        else:
            p = xp.exp(log_softmax_along(z, 1, xp))
            labels = xp.arange(classes).reshape(_channel_shape(z.ndim))
            one_hot = labels == xp.expand_dims(t, 1)
        intersection = (p * one_hot).sum(axis=axes, keepdims=True)
        predicted = p.sum(axis=axes, keepdims=True)
        true = one_hot.sum(axis=axes, keepdims=True, dtype=z.dtype)
        smooth = z.dtype.type(smooth)
        denominator = predicted + true + smooth
        dice = (2 * intersection + smooth) / denominator
        return 1 - dice.mean(), (p, e, one_hot, dice, denominator)

    @staticmethod
    def backward(g, state, xp):
        p, e, one_hot, dice, denominator = state
        classes = p.shape[1]
        dl_dp = (2 * one_hot - dice) * (-g / (classes * denominator))
        if classes == 1:
            return sigmoid_derivative(e) * dl_dp
        return p * (dl_dp - (dl_dp * p).sum(axis=1, keepdims=True))


class CupyDiceKernel(NumpyDiceKernel):
    """The NumPy kernel's expressions run by CuPy on the GPU."""

    name = "cupy"


class CudaDiceKernel:
    """Hand-written CUDA C (kernels/loss.cu): p in one pass (σ or softmax per pixel), the 3·C
    sums as per-block partial sums then a fixed-order final sum (deterministic), the
    backward one pass per pixel through σ or softmax.

    Runs on CuPy arrays, or on NumPy arrays inside ``backend.cuda_emulation()``.
    """

    name = "cuda"

    @staticmethod
    def forward(z, t, smooth, xp):
        from . import loss_kernels_cuda as gpu
        return gpu.dice_forward(z, t, smooth, xp)

    @staticmethod
    def backward(g, state, xp):
        from . import loss_kernels_cuda as gpu
        return gpu.dice_backward(g, state, xp)


class AutoDiceKernel:
    """GPU (CuPy arrays): "cuda". CPU: "numpy" (the only CPU kernel)."""

    name = "auto"

    @staticmethod
    def forward(z, t, smooth, xp):
        return (NumpyDiceKernel if xp is np else CudaDiceKernel).forward(z, t, smooth, xp)

    @staticmethod
    def backward(g, state, xp):
        return (NumpyDiceKernel if xp is np else CudaDiceKernel).backward(g, state, xp)


DICE_LOSS_KERNELS = {kernel.name: kernel for kernel in (NumpyDiceKernel, CupyDiceKernel, CudaDiceKernel,
                                                        AutoDiceKernel)}
DEFAULT_DICE_LOSS_KERNEL = "auto"


def _selected_dice_kernel():
    name = backend.kernel_for("dice_loss", DEFAULT_DICE_LOSS_KERNEL)
    if name not in DICE_LOSS_KERNELS:
        available = ", ".join(repr(k) for k in sorted(DICE_LOSS_KERNELS))
        raise ValueError(f"dice_loss: unknown kernel {name!r}; available kernels: {available}")
    return DICE_LOSS_KERNELS[name]


class DiceLoss(Function):
    """loss = 1 − (1/C) Σ_c D_c,  D_c = (2 I_c + s) / (P_c + T_c + s),
    I_c = Σ p_c t_c, P_c = Σ p_c, T_c = Σ t_c (sums over the batch and every pixel).

    p = σ(z) for one channel (t the 0/1 mask, same shape as z), softmax over axis 1 for
    C > 1 (t an integer class map (N, …), one-hot inside). Backward:
        dL/dp_c = −g · (2 t_c − D_c) / (C · (P_c + T_c + s))
    then through σ (dz = dL/dp · σ'(z)) or softmax (dz = p ⊙ (q − Σ_c p_c q_c), q = dL/dp).
    Computed by the kernel ``backend.kernel_for("dice_loss", ...)`` names (DICE_LOSS_KERNELS).
    """

    def __init__(self, smooth):
        self.smooth = smooth
        self.kernel = _selected_dice_kernel()

    def forward(self, z, t):
        loss, self.state = self.kernel.forward(z, t, self.smooth, self.xp)
        return loss

    def backward(self, g):
        return self.kernel.backward(g, self.state, self.xp), None


class MSELoss(Function):
    """loss = (1/n) Σ (x − t)²;  dL/dx = g · 2 (x − t) / n,  dL/dt = −dL/dx."""

    def forward(self, x, t):
        self.difference = x - t
        return (self.difference * self.difference).sum() / x.dtype.type(x.size)

    def backward(self, g):
        dx = self.difference * (2 * g / self.difference.dtype.type(self.difference.size))
        return (dx if self.needs_grad[0] else None), (-dx if self.needs_grad[1] else None)


# ----- validation helpers

def _check_real_dtype(op, name, array):
    if array.dtype.kind not in "biuf":
        raise TypeError(f"{op}: argument '{name}' expected a real numeric array (bool, int or float), "
                        f"got dtype {array.dtype}")


def _as_float_operand(op, name, value, like):
    """``value`` ready to enter a loss with float array ``like``: a Tensor that requires grad
    must already share like's dtype; anything else (Tensor, array, number) is cast to it,
    staying on its own device (Function.__call__ refuses a device mix)."""
    if isinstance(value, Tensor) and value.requires_grad:
        if value.dtype != like.dtype:
            raise TypeError(f"{op}: argument '{name}' requires grad, so it must have the logits' dtype "
                            f"{like.dtype}, got {value.dtype}")
        return value
    array = array_of(value)
    if not hasattr(array, "shape"):
        if not isinstance(array, numbers.Real):
            raise TypeError(f"{op}: argument '{name}' expected an array, a Tensor or a number, "
                            f"got {type(value).__name__}")
        return backend.get_array_module(like).asarray(array, dtype=like.dtype)
    _check_real_dtype(op, name, array)
    return backend.get_array_module(array).asarray(array, dtype=like.dtype)


def _check_broadcasts_to(op, name, shape, target_shape):
    """``shape`` must broadcast against ``target_shape`` without enlarging it."""
    try:
        result = np.broadcast_shapes(tuple(shape), tuple(target_shape))
    except ValueError:
        result = None
    if result != tuple(target_shape):
        raise ValueError(f"{op}: argument '{name}' of shape {tuple(shape)} does not broadcast to the logits' "
                         f"shape {tuple(target_shape)}")


def _integer_target(op, target):
    array = array_of(target)
    if not hasattr(array, "shape"):
        raise TypeError(f"{op}: argument 'target' expected an integer array or Tensor, got {type(target).__name__}")
    if array.dtype.kind not in "iu":
        raise TypeError(f"{op}: argument 'target' expected an integer class map, got dtype {array.dtype}")
    return array


def _check_class_range(op, t, classes, ignore_index=None):
    """Every value of ``t`` (other than ignore_index) must be a class index in [0, classes)."""
    xp = backend.get_array_module(t)
    bad = (t < 0) | (t >= classes)
    if ignore_index is not None:
        bad &= t != ignore_index
    if bool(bad.any()):
        bad_values = [int(v) for v in backend.to_device(xp.unique(t[bad]), "cpu")[:10]]
        ignored = "" if ignore_index is None else f" (ignore_index={ignore_index})"
        raise ValueError(f"{op}: argument 'target' holds values outside the class range [0, {classes}){ignored}: "
                         f"{bad_values}")


def _check_real_number(op, name, value, minimum, strict=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{op}: argument '{name}' expected a real number, got {value!r}")
    if value < minimum or (strict and value == minimum):
        relation = ">" if strict else ">="
        raise ValueError(f"{op}: argument '{name}' expected a value {relation} {minimum}, got {value}")
    return float(value)


# ----- the public losses

def binary_cross_entropy_with_logits(logits, target, weight=None, pos_weight=None):
    """Binary cross-entropy computed from logits z, as PyTorch (docs: "Binary cross-entropy").

        loss = mean over elements of  w · [ −pw · t · log σ(z) − (1 − t) · log(1 − σ(z)) ]

    with −log σ(z) = softplus(−z) and −log(1 − σ(z)) = softplus(z), both computed as
    max(±z, 0) + log1p(exp(−|z|)): exact and finite for any |z| (1e4 included), and so
    is the gradient. Shapes: logits any shape; target the same shape, values in [0, 1];
    weight (w) and pos_weight (pw, the weight of the positive term) broadcast to the
    logits' shape, e.g. pos_weight (C, 1, 1) for NCHW. The target gets a gradient when it
    requires one; weight and pos_weight do not. Kernels (op "bce_with_logits"): "numpy",
    "numba", "cupy", "cuda", "auto" (the default), see BCE_WITH_LOGITS_KERNELS.
    """
    op = "binary_cross_entropy_with_logits"
    check_float(op, "logits", logits)
    z = array_of(logits)
    target_array = array_of(target)
    if not hasattr(target_array, "shape"):
        raise TypeError(f"{op}: argument 'target' expected an array or Tensor, got {type(target).__name__}")
    if tuple(target_array.shape) != tuple(z.shape):
        raise ValueError(f"{op}: argument 'target' expected the shape of 'logits' {tuple(z.shape)}, "
                         f"got {tuple(target_array.shape)}")
    target = _as_float_operand(op, "target", target, z)
    t = array_of(target)
    if bool(((t < 0) | (t > 1)).any()):
        raise ValueError(f"{op}: argument 'target' expected values in [0, 1], got values from "
                         f"{float(t.min())} to {float(t.max())}")

    extras = []
    for name, value in (("weight", weight), ("pos_weight", pos_weight)):
        if value is None:
            continue
        value = _as_float_operand(op, name, value, z)
        _check_broadcasts_to(op, name, array_of(value).shape, z.shape)
        extras.append(value)
    fn = BinaryCrossEntropyWithLogits(weight is not None, pos_weight is not None)
    return fn(logits, target, *extras)


def cross_entropy(logits, target, weight=None, ignore_index=None):
    """Cross-entropy with integer class targets, as PyTorch reduction='mean' (docs: "Cross-entropy").

        loss = Σ_e w_e · (−log_softmax(logits)[n, t_e, h, w]) / Σ_e w_e

    over the elements e = (n, h, w) whose target is not ``ignore_index``.
    Shapes: logits (N, C, H, W) or (N, C) (any (N, C, ...)); target integer (N, H, W) or
    (N,), values in [0, C) or ignore_index. ``weight``: class weights (C,) (w_e =
    weight[t_e], so the mean divides by the summed weights of the targets, as PyTorch),
    or a per-element map of the target's shape, e.g. from ``unet_weight_map`` (w_e =
    weight[e], the same normalisation). For 2-D logits with N = C a (C,) weight means
    class weights. All ignored (or zero total weight): NaN, as PyTorch.
    """
    op = "cross_entropy"
    check_float(op, "logits", logits)
    z = array_of(logits)
    if z.ndim < 2:
        raise ValueError(f"{op}: argument 'logits' expected a tensor (N, C, H, W) or (N, C), got shape {z.shape}")
    t = _integer_target(op, target)
    expected = (z.shape[0],) + tuple(z.shape[2:])
    if tuple(t.shape) != expected:
        raise ValueError(f"{op}: argument 'target' expected shape {expected} for logits of shape "
                         f"{tuple(z.shape)}, got {tuple(t.shape)}")
    if ignore_index is not None and (isinstance(ignore_index, bool) or not isinstance(ignore_index, numbers.Integral)):
        raise TypeError(f"{op}: argument 'ignore_index' expected an int or None, got {ignore_index!r}")
    classes = z.shape[1]
    _check_class_range(op, t, classes, ignore_index)

    weight_kind, extras = None, []
    if weight is not None:
        weight = _as_float_operand(op, "weight", weight, z)
        weight_shape = tuple(array_of(weight).shape)
        if weight_shape == (classes,):
            weight_kind = "class"
        elif weight_shape == expected:
            weight_kind = "element"
        else:
            raise ValueError(f"{op}: argument 'weight' expected class weights of shape ({classes},) or a "
                             f"per-element map of the target's shape {expected}, got {weight_shape}")
        extras.append(weight)
    fn = CrossEntropy(None if ignore_index is None else int(ignore_index), weight_kind)
    return fn(logits, t, *extras)


def dice_loss(logits, target, smooth=1.0):
    """Soft Dice loss over all classes, background included (docs: "Dice loss").

        D_c  = (2 Σ p_c · t_c + smooth) / (Σ p_c + Σ t_c + smooth)   (sums over batch and pixels)
        loss = 1 − (1/C) Σ_c D_c

    One channel: p = σ(logits), target (N, 1, H, W) or (N, H, W) with values in {0, 1}.
    C channels: p = softmax(logits, axis=1), target an integer class map (N, H, W) with
    values in [0, C), one-hot encoded inside. logits (N, C, H, W) (any (N, C, ...)).
    Kernels (op "dice_loss"): "numpy", "cupy", "cuda", "auto" (the default), see DICE_LOSS_KERNELS.
    """
    op = "dice_loss"
    check_float(op, "logits", logits)
    z = array_of(logits)
    if z.ndim < 2:
        raise ValueError(f"{op}: argument 'logits' expected a tensor (N, C, H, W), got shape {z.shape}")
    smooth = _check_real_number(op, "smooth", smooth, 0.0)
    classes = z.shape[1]
    t = array_of(target)
    if not hasattr(t, "shape"):
        raise TypeError(f"{op}: argument 'target' expected an array or Tensor, got {type(target).__name__}")
    spatial = (z.shape[0],) + tuple(z.shape[2:])
    if classes == 1:
        if tuple(t.shape) not in (tuple(z.shape), spatial):
            raise ValueError(f"{op}: argument 'target' expected shape {tuple(z.shape)} or {spatial} for "
                             f"logits of shape {tuple(z.shape)}, got {tuple(t.shape)}")
        _check_real_dtype(op, "target", t)
        if bool(((t != 0) & (t != 1)).any()):
            raise ValueError(f"{op}: argument 'target' expected a binary mask with values in {{0, 1}} for "
                             f"one-channel logits")
        t = backend.get_array_module(t).asarray(t, dtype=z.dtype).reshape(z.shape)
    else:
        t = _integer_target(op, t)
        if tuple(t.shape) != spatial:
            raise ValueError(f"{op}: argument 'target' expected an integer class map of shape {spatial} for "
                             f"logits of shape {tuple(z.shape)}, got {tuple(t.shape)}")
        _check_class_range(op, t, classes)
    return DiceLoss(smooth)(logits, t)


def mse_loss(input, target):
    """Mean squared error: loss = (1/n) Σ (input − target)², input and target of one shape.

    The target gets a gradient when it requires one (docs: "Mean squared error").
    """
    op = "mse_loss"
    check_float(op, "input", input)
    x = array_of(input)
    t = array_of(target)
    if not hasattr(t, "shape"):
        raise TypeError(f"{op}: argument 'target' expected an array or Tensor, got {type(target).__name__}")
    if tuple(t.shape) != tuple(x.shape):
        raise ValueError(f"{op}: argument 'target' expected the shape of 'input' {tuple(x.shape)}, "
                         f"got {tuple(t.shape)}")
    return MSELoss()(input, _as_float_operand(op, "target", target, x))


# ----- the U-Net weight map (Ronneberger et al. 2015, eq. 2)

def _connected_components(foreground):
    """Label the 4-connected components of a 2-D bool mask: 1..K, 0 for background.

    Components are numbered in the raster order of their first pixel (as
    scipy.ndimage.label). Vectorised union-find over the pixel grid: every pixel starts
    as its own root; each round, every edge between two foreground 4-neighbours whose
    roots differ hooks the larger root under the smaller one, then pointer jumping
    (parent = parent[parent]) flattens the trees. Hooks always point to a smaller
    index, so no cycle can form, and a component's final root is its first pixel.
    """
    height, width = foreground.shape
    parent = np.arange(height * width)
    index = parent.reshape(height, width)
    joined_right = foreground[:, :-1] & foreground[:, 1:]
    joined_down = foreground[:-1, :] & foreground[1:, :]
    edge_a = np.concatenate([index[:, :-1][joined_right], index[:-1, :][joined_down]])
    edge_b = np.concatenate([index[:, 1:][joined_right], index[1:, :][joined_down]])
    while True:
        while True:
            grandparent = parent[parent]
            if np.array_equal(grandparent, parent):
                break
            parent = grandparent
        root_a, root_b = parent[edge_a], parent[edge_b]
        unresolved = root_a != root_b
        if not unresolved.any():
            break
        # Several edges may hook the same root in one round; whichever write lands is
        # a valid (smaller) root, and the edges that lost are retried next round.
        parent[np.maximum(root_a, root_b)[unresolved]] = np.minimum(root_a, root_b)[unresolved]
        edge_a, edge_b = edge_a[unresolved], edge_b[unresolved]
    labels = np.zeros(height * width, dtype=np.int64)
    pixels = np.flatnonzero(foreground)
    _, component = np.unique(parent[pixels], return_inverse=True)
    labels[pixels] = component.reshape(-1) + 1
    return labels.reshape(height, width)


def _object_boundaries(labels):
    """{label: (rows, cols)} of each object's pixels that have a 4-neighbour (in the
    image) carrying another label.

    Only these can be an object's nearest pixel to a pixel x outside it: from any other
    object pixel, one step towards x lands on a pixel of the same object that is
    strictly closer to x. Found for all objects in one pass over the image.
    """
    differs = np.zeros(labels.shape, dtype=bool)
    vertical = labels[1:, :] != labels[:-1, :]
    horizontal = labels[:, 1:] != labels[:, :-1]
    differs[1:, :] |= vertical
    differs[:-1, :] |= vertical
    differs[:, 1:] |= horizontal
    differs[:, :-1] |= horizontal
    rows, cols = np.nonzero(differs & (labels > 0))
    owner = labels[rows, cols]
    order = np.argsort(owner, kind="stable")
    object_labels, starts = np.unique(owner[order], return_index=True)
    return {label: (r, c) for label, r, c in zip(object_labels, np.split(rows[order], starts[1:]),
                                                 np.split(cols[order], starts[1:]))}


def _distance_to_object(rows, cols, object_rows, object_cols, image_shape, chunk_elements=1 << 22):
    """Euclidean distance from each pixel (rows[i], cols[i]) to the nearest object pixel.

    Brute force over (pixel, object pixel) pairs: d² = Δrow² + Δcol², with Δrow² and
    Δcol² looked up in small (H, M) and (W, M) tables of squared offsets (int32, exact)
    rather than recomputed per pair. Pixels go in chunks so that one chunk's pair matrix
    holds at most ``chunk_elements`` entries.
    """
    height, width = image_shape
    row_offset_squared = ((np.arange(height)[:, None] - object_rows[None, :]) ** 2).astype(np.int32)
    col_offset_squared = ((np.arange(width)[:, None] - object_cols[None, :]) ** 2).astype(np.int32)
    nearest_squared = np.empty(rows.size, dtype=np.int32)
    chunk = max(1, chunk_elements // max(object_rows.size, 1))
    for start in range(0, rows.size, chunk):
        stop = start + chunk
        pair_squared = row_offset_squared[rows[start:stop]]
        pair_squared += col_offset_squared[cols[start:stop]]
        nearest_squared[start:stop] = pair_squared.min(axis=1)
    return np.sqrt(nearest_squared.astype(np.float64))


def _weight_map_2d(mask, w0, sigma, class_weights):
    foreground = mask > 0
    if class_weights is None:
        # A class absent from the image needs no weight (0 instead of 1/0).
        inverse = [1.0 / f if f > 0 else 0.0 for f in (np.mean(~foreground), np.mean(foreground))]
        w_background, w_foreground = (v / max(inverse) for v in inverse)
    else:
        w_background, w_foreground = class_weights
    weights = np.where(foreground, w_foreground, w_background).astype(np.float64)

    object_labels = np.unique(mask[foreground])
    if object_labels.size <= 1:        # binary mask: its objects are the connected components
        mask = _connected_components(foreground)
        object_labels = np.arange(1, mask.max(initial=0) + 1)
    if object_labels.size < 2:
        return weights

    rows, cols = np.nonzero(~foreground)
    # d1 <= d2: the two smallest distances seen so far, updated object by object, so
    # memory stays O(background pixels) however many objects there are.
    d1 = np.full(rows.size, np.inf)
    d2 = np.full(rows.size, np.inf)
    for object_rows, object_cols in _object_boundaries(mask).values():
        distance = _distance_to_object(rows, cols, object_rows, object_cols, mask.shape)
        d2 = np.minimum(d2, np.maximum(d1, distance))
        d1 = np.minimum(d1, distance)
    d1_plus_d2 = d1 + d2
    weights[rows, cols] += w0 * np.exp(-(d1_plus_d2 * d1_plus_d2) / (2.0 * sigma * sigma))
    return weights


def unet_weight_map(mask, w0=10.0, sigma=5.0, class_weights=None):
    """The U-Net paper's pixel weight map (Ronneberger et al. 2015, eq. 2) (docs: "U-Net weight map").

        w(x) = w_c(x) + w0 · exp(−(d1(x) + d2(x))² / (2σ²))   for background pixels x
        w(x) = w_c(x)                                          for object pixels

    d1, d2: Euclidean distances from pixel x to the nearest pixel of the nearest and of
    the second-nearest object (0 border term with fewer than two objects). Objects: the
    positive labels of the mask when it holds several; a binary mask (bool, 0/1, 0/255:
    one positive value) is split into its 4-connected components. w_c balances the two
    classes (background 0, foreground > 0) by inverse frequency in each image, scaled so
    that the larger weight is 1; ``class_weights`` = (w_background, w_foreground)
    replaces it. Matches tinyseg.reference.weighted_map_unet on labelled masks.

    mask: integer or bool (H, W), (N, H, W) or (N, 1, H, W), each image handled on its
    own; returns a float64 NumPy array of the mask's shape (no gradient), ready to pass
    as ``weight=`` to binary_cross_entropy_with_logits (same shape as its target) or
    cross_entropy (target shape (N, H, W)). Cost per image: O(B · Σ_k ∂_k) for B
    background pixels and ∂_k boundary pixels of object k.
    """
    op = "unet_weight_map"
    array = array_of(mask)
    if not hasattr(array, "shape"):
        raise TypeError(f"{op}: argument 'mask' expected an integer array or Tensor, got {type(mask).__name__}")
    array = backend.to_device(array, "cpu")
    if array.dtype.kind not in "biu":
        raise TypeError(f"{op}: argument 'mask' expected an integer or bool label mask, got dtype {array.dtype}")
    shape = array.shape
    if not (array.ndim in (2, 3) or (array.ndim == 4 and shape[1] == 1)):
        raise ValueError(f"{op}: argument 'mask' expected shape (H, W), (N, H, W) or (N, 1, H, W), got {shape}")
    if array.dtype.kind == "i" and array.size and array.min() < 0:
        raise ValueError(f"{op}: argument 'mask' expected non-negative labels, got minimum {array.min()}")
    w0 = _check_real_number(op, "w0", w0, 0.0)
    sigma = _check_real_number(op, "sigma", sigma, 0.0, strict=True)
    if class_weights is not None:
        if not isinstance(class_weights, (tuple, list)) or len(class_weights) != 2:
            raise TypeError(f"{op}: argument 'class_weights' expected a pair (w_background, w_foreground), "
                            f"got {class_weights!r}")
        class_weights = tuple(_check_real_number(op, "class_weights", v, 0.0) for v in class_weights)

    images = array.reshape((-1,) + shape[-2:])
    maps = np.stack([_weight_map_2d(image, w0, sigma, class_weights) for image in images])
    return maps.reshape(shape)
