# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Exercises · write the ops yourself, and let tinyseg check them
#
# **What you will do**: write the forward and backward passes of a convolution, a max
# pooling and the two segmentation losses on plain NumPy arrays, and check each with
# `tinyseg.exercises.check`. The checker runs your function on a battery of cases (batch
# > 1, stride > 1, padding, 1×1 and non-square kernels, non-square images, float64 and
# float32) against tinyseg's own answer. When something is wrong it says which case,
# which element (index, expected, got), and, if your numbers are exactly what a common
# mistake produces, which mistake: a flipped kernel, padding subtracted from the pixels
# (the source article's §4.2 formula), channels summed too early, an ignored stride, a
# bias gradient not summed over the batch, …
#
# **Time:** 1–3 hours, depending on how many you do. Each check runs in well under a
# second.
#
# Fill in a function where it says `raise NotImplementedError`, then re-run its cell.
# The solution is the engine itself: `tinyseg/functional/conv.py`, `pool.py` and
# `loss.py`, with the derivations in `docs/math/`. Notebook 2 (`02_convolution.py`)
# derives the convolution's gradients.

# %%
import tinyseg as ts          # before NumPy: tinyseg asks OpenBLAS to let idle threads sleep
import numpy as np
import tinyseg.functional as F
from tinyseg.exercises import EXERCISES, ExerciseError, check, describe


def try_check(name, fn):
    """Run the checker and print its verdict (a failed check prints instead of stopping the notebook)."""
    try:
        check(name, fn)
        print(f"{name}: passed every case")
    except ExerciseError as error:
        print(error)


print("exercises:", ", ".join(EXERCISES))

# %% [markdown]
# ## A solved example: the engine passes its own checker
#
# Each exercise has a signature on NumPy arrays. `describe(name)` prints it with its
# equation and shapes:

# %%
print(describe("conv2d_forward"))

# %% [markdown]
# tinyseg's `F.conv2d` works on Tensors; wrapped to take and return NumPy arrays it is a
# complete solution:

# %%
def engine_conv2d_forward(x, w, b, stride, padding):
    return F.conv2d(x, w, b, stride=stride, padding=padding).data


try_check("conv2d_forward", engine_conv2d_forward)

# %% [markdown]
# And this is what a wrong answer looks like: the same convolution with the kernel turned
# by 180° (a *true* convolution, as in signal processing, instead of the cross-correlation
# deep learning calls convolution):

# %%
def flipped_conv2d_forward(x, w, b, stride, padding):
    return F.conv2d(x, w[:, :, ::-1, ::-1].copy(), b, stride=stride, padding=padding).data


try_check("conv2d_forward", flipped_conv2d_forward)

# %% [markdown]
# ## 1. Convolution, forward
#
# $y[n,o,i,j] = b[o] + \sum_c \sum_u \sum_v w[o,c,u,v]\cdot x_{pad}[n,c,\,s i+u,\,s j+v]$,
# with $x_{pad}$ the input surrounded by $p$ rows and columns of zeros, and
# $H' = \lfloor (H + 2p - k_H)/s \rfloor + 1$. Keep the input's dtype
# (`np.zeros(..., dtype=x.dtype)`).

# %%
def conv2d_forward(x, w, b, stride, padding):
    """x (N, C, H, W), w (O, C, kH, kW), b (O,), stride and padding ints -> y (N, O, H', W')."""
    raise NotImplementedError("write the convolution here")


try_check("conv2d_forward", conv2d_forward)

# %% [markdown]
# ## 2. Convolution, backward
#
# Given $dy = \partial L/\partial y$, return $(dx, dw, db)$ shaped like $(x, w, b)$.
# Every product $w[o,c,u,v]\cdot x_{pad}[n,c,si+u,sj+v]$ in the forward sum sends
# $dy[n,o,i,j]$ times the other factor back to each factor; $b[o]$ was added to every
# output of channel $o$, in every sample.

# %%
def conv2d_backward(x, w, b, stride, padding, dy):
    """-> (dx (N, C, H, W), dw (O, C, kH, kW), db (O,))."""
    raise NotImplementedError("write the three gradients here")


try_check("conv2d_backward", conv2d_backward)

# %% [markdown]
# ## 3. Max pooling, forward and backward
#
# $y[n,c,i,j] = \max_{0\le u,v<k} x[n,c,\,s i+u,\,s j+v]$, no padding. In the backward
# pass each $dy[n,c,i,j]$ goes to the window's maximum; on ties, to the **first** maximum
# in row-major order (as PyTorch and tinyseg). Windows overlap when the stride is smaller
# than the kernel.

# %%
def max_pool2d_forward(x, kernel_size, stride):
    """x (N, C, H, W) -> y (N, C, (H - k)//s + 1, (W - k)//s + 1)."""
    raise NotImplementedError("write max pooling here")


def max_pool2d_backward(x, kernel_size, stride, dy):
    """dy shaped like y -> dx shaped like x."""
    raise NotImplementedError("route each dy to its window's maximum here")


try_check("max_pool2d_forward", max_pool2d_forward)
try_check("max_pool2d_backward", max_pool2d_backward)

# %% [markdown]
# ## 4. Binary cross-entropy on logits
#
# $\text{loss} = \frac1M \sum -[t\log\sigma(z) + (1-t)\log(1-\sigma(z))]$ over all
# $M$ elements. Written like that it overflows for large $|z|$; find the stable form.
# The backward returns $\partial\,\text{loss}/\partial z$.

# %%
def bce_with_logits_forward(z, t):
    """z, t of one shape -> a number."""
    raise NotImplementedError


def bce_with_logits_backward(z, t):
    """-> dz shaped like z."""
    raise NotImplementedError


try_check("bce_with_logits_forward", bce_with_logits_forward)
try_check("bce_with_logits_backward", bce_with_logits_backward)

# %% [markdown]
# ## 5. Soft Dice loss
#
# $p = \sigma(z)$, $\text{loss} = 1 - \dfrac{2\sum p\,t + \text{smooth}}{\sum p + \sum t + \text{smooth}}$,
# sums over every element (the whole batch). The backward returns
# $\partial\,\text{loss}/\partial z$: do not stop the chain rule at $p$.

# %%
def dice_forward(z, t, smooth):
    """z, t of one shape, t in {0, 1} -> a number."""
    raise NotImplementedError


def dice_backward(z, t, smooth):
    """-> dz shaped like z."""
    raise NotImplementedError


try_check("dice_forward", dice_forward)
try_check("dice_backward", dice_backward)
