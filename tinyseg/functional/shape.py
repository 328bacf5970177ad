"""Shape ops for U-Net skip connections and tiling: concat, center_crop, pad.

Each is a forward with its backward right below it. None of them computes anything:
they move values, so each backward moves the gradient back to where the value came
from. Concat splits the gradient by slices; a crop puts it back into a zero canvas;
padding drops the border's gradient (constant mode) or adds it onto the pixels the
border was copied from (reflect, replicate). Derivations:
docs/math/pooling_and_resizing.md, sections 5 (concat), 6 (center crop), 7 (pad).
"""
from __future__ import annotations

import numbers

import numpy as np

from ..tensor import Function
from ._checks import array_of, check_float, check_ndim, check_same_dtype, pair

PAD_MODES = ("constant", "reflect", "replicate")


# ----- concat: y = [x_1, x_2, ...] along one axis

class ConcatFn(Function):
    def __init__(self, axis):
        self.axis = axis

    def forward(self, *arrays):
        sizes = [a.shape[self.axis] for a in arrays]
        self.bounds = np.cumsum([0] + sizes).tolist()
        return self.xp.concatenate(arrays, axis=self.axis)

    def backward(self, grad):
        # Input k occupies positions bounds[k] .. bounds[k+1]-1 along the axis: its
        # gradient is that slice of grad (a view, nothing is copied).
        leading = (slice(None),) * self.axis
        return tuple(grad[leading + (slice(start, stop),)] if wanted else None
                     for start, stop, wanted in zip(self.bounds, self.bounds[1:], self.needs_grad))


# ----- center crop: y[n,c,i,j] = x[n,c, top + i, left + j]

class CenterCropFn(Function):
    def __init__(self, size):
        self.size = size

    def forward(self, x):
        self.input_shape = x.shape
        H, W = self.size
        self.top = (x.shape[2] - H) // 2      # an odd surplus leaves the extra row at the bottom
        self.left = (x.shape[3] - W) // 2
        return x[:, :, self.top:self.top + H, self.left:self.left + W]

    def backward(self, grad):
        # Cropped-away pixels did not reach the output: their gradient is zero.
        H, W = self.size
        grad_input = self.xp.zeros(self.input_shape, dtype=grad.dtype)
        grad_input[:, :, self.top:self.top + H, self.left:self.left + W] = grad
        return grad_input


# ----- pad: the last two axes grow by (top, bottom) rows and (left, right) columns

def _slice_along(axis, start, stop):
    return (Ellipsis, slice(start, stop)) + (slice(None),) * (-1 - axis)


def _fold_border(xp, grad, axis, before, after, mode):
    """The gradient of reflect/replicate padding along one axis (-2 for rows, -1 for columns).

    Each padded position copied one source position, so its gradient is added onto
    that source. With n = the unpadded size:
        reflect:   padded position −m  (1 <= m <= before) copied source m,
                   padded position n−1+m (1 <= m <= after) copied source n−1−m;
        replicate: every position before copied source 0, every position after source n−1.
    """
    n = grad.shape[axis] - before - after
    interior = grad[_slice_along(axis, before, before + n)]
    if before == 0 and after == 0:
        return interior
    folded = interior.copy()
    border_before = grad[_slice_along(axis, 0, before)]
    border_after = grad[_slice_along(axis, before + n, before + n + after)]
    if mode == "reflect":
        # border_before runs m = before … 1 and border_after m = 1 … after: flip both
        # so they line up with ascending source positions.
        folded[_slice_along(axis, 1, before + 1)] += xp.flip(border_before, axis=axis)
        folded[_slice_along(axis, n - 1 - after, n - 1)] += xp.flip(border_after, axis=axis)
    else:
        if before:
            folded[_slice_along(axis, 0, 1)] += border_before.sum(axis=axis, keepdims=True)
        if after:
            folded[_slice_along(axis, n - 1, n)] += border_after.sum(axis=axis, keepdims=True)
    return folded


class PadFn(Function):
    def __init__(self, pads, mode, value):
        self.pads, self.mode, self.value = pads, mode, value    # pads = (left, right, top, bottom)

    def forward(self, x):
        left, right, top, bottom = self.pads
        widths = [(0, 0)] * (x.ndim - 2) + [(top, bottom), (left, right)]
        if self.mode == "constant":
            return self.xp.pad(x, widths, mode="constant", constant_values=self.value)
        # NumPy's 'reflect' mirrors without repeating the edge, like PyTorch's; 'edge' is replicate.
        return self.xp.pad(x, widths, mode="reflect" if self.mode == "reflect" else "edge")

    def backward(self, grad):
        left, right, top, bottom = self.pads
        if self.mode == "constant":
            # The border holds the constant, which does not depend on x.
            H, W = grad.shape[-2] - top - bottom, grad.shape[-1] - left - right
            return grad[..., top:top + H, left:left + W]
        grad = _fold_border(self.xp, grad, -1, left, right, self.mode)
        return _fold_border(self.xp, grad, -2, top, bottom, self.mode)


# ----- the public functions

def concat(tensors, axis=1):
    """Concatenate tensors along ``axis``: shapes must match on every other axis.

    y = [x_1, x_2, ...] along axis, (…, a_k, …) for each k -> (…, Σ_k a_k, …).
    Backward: input k gets the slice of the gradient at its own positions.
    Derivation: docs/math/pooling_and_resizing.md, section 5.
    """
    if not isinstance(tensors, (list, tuple)) or len(tensors) == 0:
        raise TypeError(f"concat: argument 'tensors' expected a non-empty list or tuple of tensors, "
                        f"got {tensors!r}")
    shapes = [tuple(array_of(t).shape) for t in tensors]
    for k, t in enumerate(tensors):
        check_float("concat", f"tensors[{k}]", t)
    check_same_dtype("concat", **{f"tensors[{k}]": t for k, t in enumerate(tensors)})
    ndim = len(shapes[0])
    if any(len(shape) != ndim for shape in shapes):
        raise ValueError(f"concat: argument 'tensors' expected tensors with the same number of dimensions, "
                         f"got shapes {shapes}")
    if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool) or not -ndim <= axis < ndim:
        raise ValueError(f"concat: argument 'axis' expected an int in [{-ndim}, {ndim}), got {axis!r}")
    axis = int(axis) % ndim
    others = [shape[:axis] + shape[axis + 1:] for shape in shapes]
    if any(other != others[0] for other in others):
        # Name the offending axes too: in a U-Net the mismatch is the skip's (H, W), and
        # "(32, 32) against (64, 64)" says so faster than two full shapes do.
        k = next(k for k, other in enumerate(others) if other != others[0])
        axes = tuple(a for a in range(ndim) if a != axis and shapes[k][a] != shapes[0][a])
        sizes = [tuple(shapes[j][a] for a in axes) for j in (0, k)]
        raise ValueError(f"concat: argument 'tensors' expected shapes that match except along axis {axis}, "
                         f"got shapes {shapes}: on axes {axes}, tensors[0] has {sizes[0]} and tensors[{k}] "
                         f"has {sizes[1]}")
    return ConcatFn(axis)(*tensors)


def center_crop(x, size):
    """The central (H, W) window: y[n,c,i,j] = x[n,c, top + i, left + j].

    top = ⌊(H_in − H)/2⌋, left = ⌊(W_in − W)/2⌋ (an odd surplus is dropped at the
    bottom/right). (N, C, H_in, W_in) -> (N, C, H, W); ``size`` is an int or (H, W).
    Backward: the gradient goes back into the window, zeros elsewhere.
    Derivation: docs/math/pooling_and_resizing.md, section 6.
    """
    check_ndim("center_crop", "x", x, 4, "(N, C, H, W)")
    check_float("center_crop", "x", x)
    size = pair("center_crop", "size", size, minimum=1)
    input_size = tuple(array_of(x).shape[2:])
    if size[0] > input_size[0] or size[1] > input_size[1]:
        raise ValueError(f"center_crop: argument 'size' {size} is larger than the input's (H, W) {input_size}")
    return CenterCropFn(size)(x)


def _pad_widths(pad) -> tuple[int, int, int, int]:
    if isinstance(pad, (int, np.integer)) and not isinstance(pad, bool):
        pad = (pad,) * 4
    if (not isinstance(pad, (tuple, list)) or len(pad) != 4
            or not all(isinstance(p, (int, np.integer)) and not isinstance(p, bool) for p in pad)):
        raise TypeError(f"pad: argument 'pad' expected an int or (left, right, top, bottom) ints, got {pad!r}")
    if min(pad) < 0:
        raise ValueError(f"pad: argument 'pad' expected non-negative amounts (cropping is center_crop's job), "
                         f"got {tuple(pad)}")
    return tuple(int(p) for p in pad)


def pad(x, pad, mode="constant", value=0.0):
    """Pad the last two axes (H, W): (…, H, W) -> (…, H + top + bottom, W + left + right).

    ``pad`` is an int (every side) or (left, right, top, bottom), as torch.nn.functional.pad.
    Modes: "constant" (the border is ``value``), "reflect" (mirror without repeating the
    edge: ... x[2] x[1] | x[0] x[1] x[2] ...; each pad must be smaller than its axis) and
    "replicate" (repeat the edge pixel). Backward: constant drops the border's gradient;
    reflect/replicate add it onto the source pixels each border pixel copied.
    Derivation: docs/math/pooling_and_resizing.md, section 7.
    """
    shape = tuple(array_of(x).shape)
    if len(shape) < 2:
        raise ValueError(f"pad: argument 'x' expected a tensor with at least 2 dimensions (..., H, W), "
                         f"got shape {shape}")
    check_float("pad", "x", x)
    pads = _pad_widths(pad)
    if mode not in PAD_MODES:
        raise ValueError(f"pad: argument 'mode' expected one of {PAD_MODES}, got {mode!r}")
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"pad: argument 'value' expected a real number, got {value!r}")
    if mode != "constant" and value != 0:
        raise ValueError(f"pad: argument 'value' is only used by mode='constant', got value={value!r} "
                         f"with mode={mode!r}")
    H, W = shape[-2:]
    left, right, top, bottom = pads
    if mode == "reflect" and (max(left, right) >= W or max(top, bottom) >= H):
        raise ValueError(f"pad: argument 'pad' {pads} with mode='reflect' must be smaller than the input's "
                         f"(H, W) {(H, W)} on each side (a mirror cannot reach past the far edge)")
    if mode == "replicate" and min(H, W) == 0 and max(pads) > 0:
        raise ValueError(f"pad: mode='replicate' needs a non-empty input to copy from, got shape {shape}")
    return PadFn(pads, mode, value)(x)
