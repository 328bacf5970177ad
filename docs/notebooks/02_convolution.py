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
# # 2 · Convolution, forward and backward
#
# **What you will learn**
# - the definition of a 2-D convolution layer: for every output position, a sum over the
#   input channels and a k×k window of the **zero-padded** image;
# - the output size for any stride, padding and dilation;
# - im2col: the whole convolution as **one matrix product** (with a picture of the matrix);
# - the two gradients: ∂L/∂W (im2col again) and ∂L/∂X, a **full convolution with the
#   flipped kernel** — checked numerically against tinyseg's backward;
# - the transposed convolution (the U-Net's up-convolution) as the adjoint of conv2d;
# - why the convolution formulas of the source article (§4.2) are wrong, shown by a small
#   numerical counterexample, one reason at a time.
#
# **Time:** about 25 minutes to read; the code runs in under 10 seconds on a 2-core CPU.
#
# Code: `tinyseg/functional/conv.py` (the fast kernels), `tinyseg/reference.py` (the
# definition as plain loops). Derivations: `docs/math/convolution.md`.

# %%
import os

import tinyseg as ts          # before NumPy: tinyseg asks OpenBLAS to let idle threads sleep
import numpy as np
import matplotlib.pyplot as plt
import tinyseg.functional as F

FAST = os.environ.get("TINYSEG_NOTEBOOK_FAST") == "1"   # small settings (the test suite sets it)
plt.rcParams.update({"figure.dpi": 80, "savefig.dpi": 80})
np.set_printoptions(precision=4, suppress=True, linewidth=110)
rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. The definition
#
# A convolution layer maps an input `x` of shape (N, C, H, W) with weights `W` of shape
# (O, C, k, k) and a bias `b` of shape (O,) to an output `y` of shape (N, O, H', W'):
#
# $$ y[n,o,i,j] \;=\; b[o] \;+\; \sum_{c=0}^{C-1}\;\sum_{u=0}^{k-1}\;\sum_{v=0}^{k-1}
#    W[o,c,u,v]\;\cdot\;x_{\text{pad}}[n,\,c,\; s\,i + d\,u,\; s\,j + d\,v] $$
#
# where $x_{\text{pad}}$ is the image with $p$ rows and columns of **zeros** added on every
# side, $s$ is the stride and $d$ the dilation. Three things to notice:
# 1. there is one output value per output *position* $(i, j)$ (and per output channel $o$);
# 2. each value looks at a $k\times k$ *window* of the padded image, placed by the stride;
# 3. every input channel $c$ has its own $k\times k$ slice of weights; the channels are
#    summed only *after* each has been multiplied by its own weights.
#
# (Deep learning calls this convolution; mathematically it is a cross-correlation: the
# kernel is not flipped. PyTorch, Keras and tinyseg all compute this.)
#
# Here it is, written as loops — nothing but the equation:

# %%
def conv2d_loops(x, w, b, stride=1, padding=0, dilation=1):
    """The definition, one output element at a time. x (N,C,H,W), w (O,C,k,k), b (O,)."""
    N, C, H, W = x.shape
    O, _, k, _ = w.shape
    s, p, d = stride, padding, dilation
    x_pad = np.zeros((N, C, H + 2 * p, W + 2 * p))
    x_pad[:, :, p:p + H, p:p + W] = x                      # zero padding
    H_out = (H + 2 * p - d * (k - 1) - 1) // s + 1
    W_out = (W + 2 * p - d * (k - 1) - 1) // s + 1
    y = np.zeros((N, O, H_out, W_out))
    for n in range(N):
        for o in range(O):
            for i in range(H_out):
                for j in range(W_out):
                    total = b[o]
                    for c in range(C):                     # every input channel ...
                        for u in range(k):                 # ... and every element of the window
                            for v in range(k):
                                total += w[o, c, u, v] * x_pad[n, c, s * i + d * u, s * j + d * v]
                    y[n, o, i, j] = total
    return y


x = rng.standard_normal((2, 3, 7, 6))
w = rng.standard_normal((4, 3, 3, 3))
b = rng.standard_normal(4)
for stride, padding, dilation in [(1, 0, 1), (1, 1, 1), (2, 1, 1), (1, 2, 2)]:
    mine = conv2d_loops(x, w, b, stride, padding, dilation)
    theirs = F.conv2d(ts.Tensor(x), ts.Tensor(w), ts.Tensor(b), stride=stride, padding=padding,
                      dilation=dilation).numpy()
    print(f"stride {stride}, padding {padding}, dilation {dilation}: output {mine.shape}, "
          f"max |loops − tinyseg| = {np.abs(mine - theirs).max():.1e}")

# %% [markdown]
# A picture of one output element: the image padded with zeros (grey border), the window
# that output position (i, j) = (1, 2) reads with stride 2 (red), and the window of its
# neighbour (1, 3) (blue). Each window is one term of the sum for *each* input channel.

# %%
H, W, k, p, s = 7, 7, 3, 1, 2
image = rng.integers(1, 10, size=(H, W)).astype(float)
padded = np.pad(image, p)
is_padding = np.pad(np.zeros_like(image, dtype=bool), p, constant_values=True)
fig, ax = plt.subplots(figsize=(4.2, 4.2))
ax.set_facecolor("0.85")                                   # the padding: grey cells holding 0
ax.imshow(np.where(is_padding, np.nan, padded), cmap="Blues", vmin=-3, vmax=14)
for (yy, xx), value in np.ndenumerate(padded):
    ax.text(xx, yy, f"{value:.0f}", ha="center", va="center", fontsize=8, color="0.45" if is_padding[yy, xx] else "k")
for (i, j), color in (((1, 2), "tab:red"), ((1, 3), "tab:blue")):
    ax.add_patch(plt.Rectangle((s * j - 0.5, s * i - 0.5), k, k, fill=False, lw=2.5, color=color))
ax.set_xticks([]); ax.set_yticks([])
ax.set_title(f"{H}×{W} image, padding {p}, 3×3 windows, stride {s}", fontsize=10)
plt.show()

# %% [markdown]
# ## 2. Output size
#
# Along each axis the window's extent is $d\,(k-1) + 1$; it can start at positions
# $0, s, 2s, \dots$ as long as it fits in the padded length $H + 2p$:
#
# $$ H' = \left\lfloor \frac{H + 2p - d\,(k-1) - 1}{s} \right\rfloor + 1 . $$
#
# The table checks the formula against the shape tinyseg's conv2d returns:

# %%
print(f"{'H':>4} {'k':>2} {'s':>2} {'p':>2} {'d':>2} | {'formula':>7} {'tinyseg':>7}")
for H, k, s, p, d in [(256, 3, 1, 1, 1), (256, 3, 1, 0, 1), (256, 2, 2, 0, 1), (7, 3, 2, 1, 1),
                      (8, 3, 2, 1, 1), (10, 3, 1, 2, 2), (572, 3, 1, 0, 1), (5, 1, 1, 0, 1)]:
    formula = (H + 2 * p - d * (k - 1) - 1) // s + 1
    got = F.conv2d(ts.Tensor(np.zeros((1, 1, H, 4), np.float32)), ts.Tensor(np.zeros((1, 1, k, 1), np.float32)),
                   stride=(s, 1), padding=(p, 0), dilation=(d, 1)).shape[2]
    print(f"{H:>4} {k:>2} {s:>2} {p:>2} {d:>2} | {formula:>7} {got:>7}")

# %% [markdown]
# "same" padding ($p = (k-1)/2$ for odd $k$, stride 1) keeps the size: the article's Keras
# listing and tinyseg's default U-Net use it. "valid" padding ($p = 0$) shrinks every 3×3
# convolution by 2 pixels: the original U-Net (572 → 570).
#
# ## 3. im2col: the convolution as one matrix product
#
# The loops above do $O \cdot H' W' \cdot C k^2$ multiply-adds one at a time. Rearranged,
# they are a single matrix product. Copy every window of the padded image into one
# *column* of a matrix (im2col, "image to columns"): row $(c, u, v)$ of column $(i, j)$
# holds $x_{\text{pad}}[c, s\,i + d\,u, s\,j + d\,v]$. The matrix is
# $(C k^2) \times (H' W')$; the weights, flattened, are $O \times (C k^2)$; and
#
# $$ Y = W_{\text{flat}} \cdot \text{cols} + b \qquad (O \times H'W') . $$

# %%
def im2col(x, k, stride=1, padding=0):
    """(C, H, W) image -> (C·k·k, H'·W') matrix whose column (i, j) is the window of output (i, j)."""
    C, H, W = x.shape
    x_pad = np.pad(x, ((0, 0), (padding, padding), (padding, padding)))
    H_out = (H + 2 * padding - k) // stride + 1
    W_out = (W + 2 * padding - k) // stride + 1
    cols = np.empty((C, k, k, H_out, W_out))
    for u in range(k):            # one strided slice per kernel element covers every window at once
        for v in range(k):
            cols[:, u, v] = x_pad[:, u:u + stride * H_out:stride, v:v + stride * W_out:stride]
    return cols.reshape(C * k * k, H_out * W_out), (H_out, W_out)


x_small = rng.integers(1, 10, size=(2, 4, 4)).astype(float)     # C = 2 channels of 4×4
w_small = rng.standard_normal((3, 2, 3, 3))                     # O = 3 output channels
cols, (H_out, W_out) = im2col(x_small, k=3, padding=1)
y_gemm = (w_small.reshape(3, -1) @ cols).reshape(3, H_out, W_out)
y_ref = F.conv2d(ts.Tensor(x_small[None]), ts.Tensor(w_small), padding=1).numpy()[0]
print(f"im2col matrix: {cols.shape} (C·k·k = 2·3·3 rows, H'·W' = 4·4 columns)")
print(f"max |W·cols − tinyseg conv2d| = {np.abs(y_gemm - y_ref).max():.1e}")

fig, axes = plt.subplots(1, 2, figsize=(10, 4.4), gridspec_kw={"width_ratios": [1, 2.2]})
axes[0].imshow(x_small[0], cmap="viridis", vmin=0, vmax=9)
for (yy, xx), value in np.ndenumerate(x_small[0]):
    axes[0].text(xx, yy, f"{value:.0f}", ha="center", va="center", color="w")
axes[0].set_title("channel 0 of x (4×4, padding 1)", fontsize=10)
axes[0].set_xticks([]); axes[0].set_yticks([])
axes[1].imshow(cols, cmap="viridis", vmin=0, vmax=9, aspect="auto")
for (yy, xx), value in np.ndenumerate(cols):
    axes[1].text(xx, yy, f"{value:.0f}", ha="center", va="center", color="w", fontsize=7)
axes[1].axhline(8.5, color="w", lw=2)
axes[1].set_yticks(range(18), [f"c{c} ({u},{v})" for c in range(2) for u in range(3) for v in range(3)],
                   fontsize=7)
axes[1].set_xticks(range(16), [f"{i},{j}" for i in range(4) for j in range(4)], fontsize=7, rotation=90)
axes[1].set_xlabel("output position (i, j)")
axes[1].set_title("im2col matrix: one column per window (the zeros are the padding)", fontsize=10)
fig.tight_layout()
plt.show()

# %% [markdown]
# Every pixel appears up to $k^2 = 9$ times, so the matrix is 9× the image: the price of
# handing all the work to one fast matrix product (BLAS on the CPU, cuBLAS on the GPU).
# tinyseg builds it in a reused buffer, block by block, and never keeps it for backward
# (`docs/math/convolution.md`, sections 2 and 5).
#
# ## 4. The gradients
#
# Let $L$ be a scalar loss and $\delta = \partial L / \partial y$ the upstream gradient
# (same shape as $y$). Each weight $W[o,c,u,v]$ multiplies one pixel in every window, so
#
# $$ \frac{\partial L}{\partial W[o,c,u,v]} = \sum_{n,i,j} \delta[n,o,i,j]\; x_{\text{pad}}[n,c,s\,i+d\,u,s\,j+d\,v]
#    \quad\Longleftrightarrow\quad \frac{\partial L}{\partial W_{\text{flat}}} = \delta \cdot \text{cols}^\top, $$
#
# $\partial L/\partial b[o] = \sum_{n,i,j} \delta[n,o,i,j]$ (summed over the batch too), and each
# input pixel collects the weights of every window it took part in:
#
# $$ \frac{\partial L}{\partial x[n,c,h,w]} = \sum_{o}\sum_{u,v}
#    \delta[n,o,i,j]\; W[o,c,u,v] \quad\text{over } (i,j) \text{ with } s\,i+d\,u-p = h,\; s\,j+d\,v-p = w . $$
#
# For stride 1 and dilation 1, substituting $i = h + p - u$ shows that this is again a
# convolution: of $\delta$, padded by $k-1-p$ on every side (a **full** convolution), with
# the kernel **flipped** in both spatial directions and its two channel axes swapped
# ($W'[c,o,u,v] = W[o,c,k-1-u,k-1-v]$). Let us check all three against tinyseg's backward,
# with a random upstream gradient:

# %%
x = ts.Tensor(rng.standard_normal((2, 3, 8, 9)), requires_grad=True)
w = ts.Tensor(rng.standard_normal((4, 3, 3, 3)), requires_grad=True)
b = ts.Tensor(rng.standard_normal(4), requires_grad=True)
y = F.conv2d(x, w, b, padding=1)
delta = rng.standard_normal(y.shape)
y.backward(delta)

k, p = 3, 1
# dL/dW: δ times the im2col matrix transposed, summed over the batch
dW = sum((delta[n].reshape(4, -1) @ im2col(x.data[n], k, padding=p)[0].T) for n in range(2)).reshape(w.shape)
# dL/db: δ summed over batch and positions
db = delta.sum(axis=(0, 2, 3))
# dL/dx: full convolution of δ with the flipped, channel-swapped kernel
w_flipped = w.data[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)          # (C, O, k, k)
dX = conv2d_loops(delta, w_flipped, np.zeros(3), padding=k - 1 - p)

print(f"dL/dW: max |im2col formula − tinyseg| = {np.abs(dW - w.grad).max():.1e}")
print(f"dL/db: max |sum of δ − tinyseg|       = {np.abs(db - b.grad).max():.1e}")
print(f"dL/dx: max |flipped-kernel full conv − tinyseg| = {np.abs(dX - x.grad).max():.1e}")

# %% [markdown]
# With stride 2, the same identity holds once $\delta$ is "dilated": put $s-1$ zeros
# between its elements (each output was computed $s$ pixels from the previous one), then
# pad and convolve with the flipped kernel. One subtlety: when $H + 2p - k$ is not a
# multiple of $s$, the windows stop $r = (H + 2p - k) \bmod s$ rows before the end of the
# padded input, so those $r$ rows must be added to the padding at the bottom (and
# likewise at the right). Several input sizes give the same output size (here widths 7
# and 8 both give 4 columns), which is why the backward of a strided convolution must be
# told the input size: the output alone does not determine it.

# %%
x2 = ts.Tensor(rng.standard_normal((1, 2, 9, 8)), requires_grad=True)
w2 = ts.Tensor(rng.standard_normal((3, 2, 3, 3)), requires_grad=True)
y2 = F.conv2d(x2, w2, stride=2, padding=1)
delta2 = rng.standard_normal(y2.shape)
y2.backward(delta2)

s, (H, W) = 2, x2.shape[2:]
dilated = np.zeros((1, 3, s * (y2.shape[2] - 1) + 1, s * (y2.shape[3] - 1) + 1))
dilated[:, :, ::s, ::s] = delta2
r_h, r_w = (H + 2 * p - k) % s, (W + 2 * p - k) % s             # rows/columns the windows never reached
padded_delta = np.pad(dilated, ((0, 0), (0, 0), (k - 1 - p, k - 1 - p + r_h), (k - 1 - p, k - 1 - p + r_w)))
dX2 = conv2d_loops(padded_delta, w2.data[:, :, ::-1, ::-1].transpose(1, 0, 2, 3), np.zeros(2))
print(f"stride 2: δ {delta2.shape[2:]} dilated to {dilated.shape[2:]}; leftover r = ({r_h}, {r_w}); "
      f"result {dX2.shape[2:]} = input {x2.shape[2:]}")
print(f"dL/dx: max |dilated flipped-kernel conv − tinyseg| = {np.abs(dX2 - x2.grad).max():.1e}")

# %% [markdown]
# And the whole backward, all elements of all three Jacobians, against finite
# differences (float64):

# %%
xs = [ts.Tensor(rng.standard_normal(shape), requires_grad=True) for shape in ((1, 2, 5, 6), (3, 2, 3, 3), (3,))]
for stride, padding in [(1, 1), (2, 1), (2, 0)]:
    print(f"gradcheck conv2d stride {stride} padding {padding}:",
          ts.gradcheck(lambda x, w, b: F.conv2d(x, w, b, stride=stride, padding=padding), xs))

# %% [markdown]
# ## 5. The transposed convolution
#
# The input gradient above is a linear map from the output space back to the input space:
# the **transpose** (adjoint) of the convolution. Used as a layer of its own it is the
# *transposed convolution* (`F.conv_transpose2d`, `ts.nn.ConvTranspose2d`): every input
# pixel stamps a weighted copy of the kernel into the output, $s$ pixels apart. With a 2×2
# kernel and stride 2 it doubles the size: the U-Net paper's "up-convolution".
#
# Being the adjoint means $\langle \text{conv2d}(x, W), y\rangle = \langle x, \text{conv\_transpose2d}(y, W)\rangle$
# for every $x$, $y$:

# %%
W_up = rng.standard_normal((3, 2, 2, 2))     # conv2d view: (O=3, C=2, 2, 2); transposed: (Cin=3, Cout=2, 2, 2)
x_in = rng.standard_normal((1, 2, 8, 8))
y_out = rng.standard_normal((1, 3, 4, 4))
lhs = np.sum(F.conv2d(ts.Tensor(x_in), ts.Tensor(W_up), stride=2).numpy() * y_out)
rhs = np.sum(x_in * F.conv_transpose2d(ts.Tensor(y_out), ts.Tensor(W_up), stride=2).numpy())
print(f"<conv2d(x), y> = {lhs:.10f}")
print(f"<x, conv_transpose2d(y)> = {rhs:.10f}")

one_pixel = np.zeros((1, 1, 3, 3))
one_pixel[0, 0, 1, 1] = 1.0
kernel = np.arange(1, 10, dtype=float).reshape(1, 1, 3, 3)
stamped = F.conv_transpose2d(ts.Tensor(one_pixel), ts.Tensor(kernel), stride=2).numpy()[0, 0]
two_by_two = F.conv_transpose2d(ts.Tensor(rng.standard_normal((1, 1, 4, 4))), ts.Tensor(np.ones((1, 1, 2, 2))),
                                stride=2).numpy()[0, 0]
fig, axes = plt.subplots(1, 3, figsize=(10, 3.3))
axes[0].imshow(one_pixel[0, 0], cmap="magma"); axes[0].set_title("input: one pixel (3×3)", fontsize=10)
axes[1].imshow(stamped, cmap="magma"); axes[1].set_title(f"3×3 kernel, stride 2 → {stamped.shape[0]}×{stamped.shape[1]}:\n"
                                                         "the kernel stamped at 2·(1,1)", fontsize=10)
axes[2].imshow(two_by_two, cmap="magma"); axes[2].set_title("2×2 kernel of ones, stride 2:\n4×4 → 8×8 (each pixel → a 2×2 block)",
                                                            fontsize=10)
for ax in axes:
    ax.set_xticks([]); ax.set_yticks([])
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 6. The article's formulas (§4.2), taken literally
#
# The source article derives "the convolution" in four steps (§4.2, quoted from the
# English summary in `../shared/seed/README.md`):
#
# 1. $\text{out} = X * K + b$
# 2. $\text{out} = (X_{ij} - p) * K_{ij} + b$
# 3. $\text{out} = (X_{ij} - p) \cdot \sum_{k=1}^{C} K_{ij,k} + b_i$
# 4. $\text{out} = \sum_{i=1}^{H}\sum_{j=1}^{W} (X_{ij} - p) \cdot \sum_{k=1}^{C} K_{ij,k} + b_i$
#
# Step 1 is the usual notation. Steps 2–4 are wrong. Below, step 4 is implemented exactly
# as printed. Two readings are forced on us and stated: $X_{ij}$ carries no channel index,
# so we give it a one-channel image; and $K_{ij,k}$ is indexed by the *image* position
# $(i, j)$, so outside its $k\times k$ support the kernel is read as 0. The bias index
# $i$ is the only free index left, so the result is one number per bias entry.

# %%
def article_conv_step4(X, K, b, p):
    """§4.2 step (4) as printed: out[i_b] = Σ_i Σ_j (X_ij − p) · Σ_k K_ij,k + b[i_b].

    X: (H, W) image (the formula gives pixels no channel index); K: (kH, kW, C) kernel,
    read as 0 where (i, j) lies outside it; b: (B,). Returns (B,): no output position.
    """
    H, W = X.shape
    out = np.zeros(len(b))
    for bias_index in range(len(b)):
        total = 0.0
        for i in range(H):
            for j in range(W):
                K_ij = K[i, j, :].sum() if i < K.shape[0] and j < K.shape[1] else 0.0   # Σ_k K_ij,k
                total += (X[i, j] - p) * K_ij
        out[bias_index] = total + b[bias_index]
    return out


def true_conv(X, K, b, p, stride=1):
    """The definition, for a (C, H, W) image and a (kH, kW, C) kernel with one output channel."""
    weight = K.transpose(2, 0, 1)[None]                       # -> (1, C, kH, kW)
    return F.conv2d(ts.Tensor(X[None]), ts.Tensor(weight), ts.Tensor(b), stride=stride, padding=p).numpy()[0, 0]


X = np.array([[1., 2., 0., 3.],
              [4., 1., 2., 1.],
              [0., 3., 1., 2.],
              [2., 1., 4., 0.]])
K = np.array([[1., 2., 0.],
              [0., 1., -1.],
              [2., 0., 1.]])[:, :, None]                      # a 3×3 kernel, one channel
b = np.array([0.5])

article = article_conv_step4(X, K, b, p=1)
truth = true_conv(X[None], K, b, p=1)
print("article §4.2 (4), padding 1:", article, f"  <- shape {article.shape}")
print("true convolution, padding 1:\n", truth, f"  <- shape {truth.shape}")
try:
    import torch
    torch_out = torch.nn.functional.conv2d(torch.tensor(X[None, None]), torch.tensor(K.transpose(2, 0, 1)[None]),
                                           torch.tensor(b), padding=1).numpy()[0, 0]
    print(f"PyTorch agrees with tinyseg: max |difference| = {np.abs(torch_out - truth).max():.1e}")
except ImportError:
    print("(PyTorch is not installed: the comparison with torch.nn.functional.conv2d is skipped)")
print(f"the only window the formula sees is the one of output (1, 1): true value {truth[1, 1]:+.2f}, "
      f"article {article[0]:+.2f}, off by p·ΣK = {1 * K.sum():.0f}")

# %% [markdown]
# The article's formula returns a single number where a convolution returns a 4×4 map;
# the one window it does see (the top-left 3×3 block of the image, which is the window of
# output (1, 1) once the image is padded) it gets wrong by $p\sum K$. Each error, isolated:
#
# **(a) Padding is subtracted from the pixels.** Padding means *adding* a border of zeros
# around the image; $(X_{ij} - p)$ instead lowers every pixel by $p$. Take a constant image
# of ones and a 3×3 kernel of ones with $p = 1$: the true convolution counts the real
# pixels under each window (4 at a corner, 6 on an edge, 9 inside), while the article's
# $(1 - 1)$ makes every term vanish.

# %%
ones_image, ones_kernel, zero_bias = np.ones((5, 5)), np.ones((3, 3, 1)), np.zeros(1)
print("true convolution of ones, padding 1:\n", true_conv(ones_image[None], ones_kernel, zero_bias, p=1))
print("article, padding 1:", article_conv_step4(ones_image, ones_kernel, zero_bias, p=1))

# %% [markdown]
# **(b) The kernel is summed over channels before it meets the image.** In step (3) the
# channels of $K$ are added up, $\sum_k K_{ij,k}$, and only that sum multiplies the pixel.
# So two kernels with the same channel sum are indistinguishable — e.g. one that looks
# only at channel 0 and one that looks only at channel 1. A true convolution multiplies
# each channel of the image by *its own* slice of the kernel and sums afterwards:

# %%
two_channels = np.stack([X, 10 * np.eye(4)])                   # channel 0: X, channel 1: something else
K_ch0 = np.concatenate([K, np.zeros_like(K)], axis=2)          # (3, 3, 2): weights on channel 0 only
K_ch1 = np.concatenate([np.zeros_like(K), K], axis=2)          # weights on channel 1 only
print("channel sums equal:", np.array_equal(K_ch0.sum(axis=2), K_ch1.sum(axis=2)))
print("article, kernel on channel 0:", article_conv_step4(X, K_ch0, b, p=0),
      "  kernel on channel 1:", article_conv_step4(X, K_ch1, b, p=0))
print("true convolution, kernel on channel 0:\n", true_conv(two_channels, K_ch0, b, p=0))
print("true convolution, kernel on channel 1:\n", true_conv(two_channels, K_ch1, b, p=0))

# %% [markdown]
# **(c) No output position, no window.** In step (4) the sums run over the whole image,
# $i = 1..H$, $j = 1..W$, and the same letters $i, j$ index the kernel, so nothing slides:
# the kernel meets the image once, at one place, and every other output position is
# lost. A convolution is *shift-equivariant* — move the content of the image and its
# output map moves with it. The article's number sees a bright dot near the top-left
# corner and misses the same dot anywhere else:

# %%
spot = np.zeros((6, 6)); spot[1, 1] = 1.0                      # a bright dot ...
moved = np.zeros((6, 6)); moved[3, 4] = 1.0                    # ... and the same dot elsewhere
for name, img in (("dot at (1,1)", spot), ("dot at (3,4)", moved)):
    t = true_conv(img[None], K, np.zeros(1), p=1)
    print(f"{name}: article {article_conv_step4(img, K, np.zeros(1), p=0)[0]:+.1f};  true map: "
          f"{np.count_nonzero(t)} non-zero outputs, centred at {tuple(int(v) for v in np.argwhere(t != 0).mean(axis=0).round())}")

# %% [markdown]
# **(d) No stride.** Nothing in the formula says how far the window moves between outputs,
# so it cannot describe a stride-2 convolution (the "downsampling" convolutions of many
# encoders), whose output has a quarter of the positions:

# %%
print("true convolution, stride 1:", true_conv(X[None], K, b, p=1, stride=1).shape,
      "  stride 2:", true_conv(X[None], K, b, p=1, stride=2).shape)
print("stride 2 output:\n", true_conv(X[None], K, b, p=1, stride=2))
print("article: there is no s in the formula; it returns", article_conv_step4(X, K, b, p=1), "whatever the stride")

# %% [markdown]
# **The correct formula**, for the record, is section 1's: for every output channel $o$
# and output position $(i, j)$, a sum over the input channels $c$ and the $k\times k$
# window at $(s\,i, s\,j)$ of the zero-padded image,
#
# $$ y[o,i,j] = b[o] + \sum_{c}\sum_{u,v} W[o,c,u,v]\; x_{\text{pad}}[c, s\,i + d\,u, s\,j + d\,v]. $$
#
# `conv2d_loops` above is that formula, and it agrees with tinyseg (and PyTorch) to
# rounding error.
#
# ## What to take away
# - A convolution layer: one output per position and output channel; a sum over input
#   channels and a window of the zero-padded image.
# - im2col turns it into one matrix product; ∂L/∂W uses the same matrix; ∂L/∂x is a full
#   convolution with the flipped, channel-swapped kernel (dilate δ first when the stride
#   is above 1); the transposed convolution is that same adjoint used as a layer.
#
# Next: **3 · The article's U-Net**, where these layers are assembled into the network of
# the article's Keras listing.
