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
# # 1 · Autograd from scratch
#
# **What you will learn**
# - how tinyseg records a computation as a graph while it runs (define-by-run);
# - how `backward()` walks that graph in a topological order and applies the chain rule,
#   one node at a time — first by hand, then by tinyseg, with the same numbers;
# - why a value used twice gets the *sum* of its gradients;
# - how to check any gradient against central finite differences, why the step size
#   matters, and what `ts.gradcheck` adds (full Jacobians, one-hot upstream gradients).
#
# **Time:** about 15 minutes to read; the code runs in a few seconds on a 2-core CPU.
#
# The code under the microscope is `tinyseg/tensor.py` (about 250 lines: `Tensor`,
# `Function`, `backward`, `_topological_order`) and the derivatives in
# `tinyseg/functional/math.py`. The derivations are in `docs/math/autograd.md`.

# %%
import os

import tinyseg as ts          # before NumPy: tinyseg asks OpenBLAS to let idle threads sleep
import numpy as np
import matplotlib.pyplot as plt
import tinyseg.functional as F
from tinyseg.tensor import _topological_order

FAST = os.environ.get("TINYSEG_NOTEBOOK_FAST") == "1"   # small settings (the test suite sets it)
plt.rcParams.update({"figure.dpi": 80, "savefig.dpi": 80})
np.set_printoptions(precision=6, suppress=True)

# %% [markdown]
# ## 1. A small graph, built as the code runs
#
# Take three numbers and compute
#
# $$ L = \tanh(a\,b + c)\cdot b . $$
#
# Every operation on a `Tensor` is a `Function` (here `Mul`, `Add`, `Tanh`, `Mul`). When
# one of its inputs requires a gradient, the output remembers the Function that made it
# (`_creator`), and the Function remembers its inputs. Nothing else is stored: the graph
# *is* these links. We use float64 so that finite differences later are accurate.

# %%
a = ts.Tensor(np.array(0.5), requires_grad=True)
b = ts.Tensor(np.array(-1.5), requires_grad=True)
c = ts.Tensor(np.array(2.0), requires_grad=True)

u = a * b            # u = a·b
v = u + c            # v = u + c
t = F.tanh(v)        # t = tanh(v)
L = t * b            # L = t·b      (b is used twice: in u and here)

names = {id(a): "a", id(b): "b", id(c): "c", id(u): "u", id(v): "v", id(t): "t", id(L): "L"}
for node in (a, b, c, u, v, t, L):
    creator = node._creator
    made_by = "a leaf (made by the user)" if creator is None else \
        f"made by {type(creator).__name__}({', '.join(names[id(i)] for i in creator.inputs)})"
    print(f"{names[id(node)]} = {node.item():+.6f}   {made_by}")

# %% [markdown]
# ## 2. The tape: a topological order
#
# `backward` must visit a node only after *every* node that used it has passed its
# gradient down — otherwise `b`, which feeds both `u` and `L`, would be finished with half
# its gradient. `_topological_order` finds such an order with an explicit stack (an
# iterative depth-first search: no recursion limit, so a graph a million nodes deep is
# fine).

# %%
order = _topological_order(L)
print("backward visits:", " -> ".join(names[id(n)] for n in order))

# %% [markdown]
# A picture of the same graph: an arrow points from an input to the node computed from
# it; the number in brackets is the node's step in the backward walk. Gradients flow
# against the arrows.

# %%
step = {id(n): k + 1 for k, n in enumerate(order)}
place = {"a": (0, 0), "c": (0, 1), "b": (0, 2), "u": (1, 0.5), "v": (2, 1), "t": (3, 1), "L": (4, 1.5)}
fig, ax = plt.subplots(figsize=(7, 2.6))
for node in order:
    x, y = place[names[id(node)]]
    kind = "leaf" if node._creator is None else type(node._creator).__name__
    ax.text(x, y, f"{names[id(node)]}  [{step[id(node)]}]\n{kind}", ha="center", va="center", fontsize=10,
            bbox=dict(boxstyle="round", fc="#dde8f7" if node._creator is None else "#f7e3c8"))
    if node._creator is not None:
        for inp in node._creator.inputs:
            xi, yi = place[names[id(inp)]]
            ax.annotate("", xy=(x - 0.3, y), xytext=(xi + 0.3, yi), arrowprops=dict(arrowstyle="->", color="0.4"))
ax.set_xlim(-0.5, 4.5)
ax.set_ylim(-0.5, 2.5)
ax.invert_yaxis()
ax.set_axis_off()
ax.set_title("L = tanh(a·b + c)·b  —  [k]: step k of the backward walk")
plt.show()

# %% [markdown]
# ## 3. Backward by hand, step by step
#
# The chain rule, applied in the tape's order, starting from $\partial L/\partial L = 1$.
# Each line uses only the local derivative of one Function — exactly what its `backward`
# method returns in `tinyseg/functional`:
#
# | node | local derivatives |
# | --- | --- |
# | $L = t\,b$ | $\partial L/\partial t = b$, $\;\partial L/\partial b = t$ |
# | $t = \tanh v$ | $\partial t/\partial v = 1 - t^2$ |
# | $v = u + c$ | $\partial v/\partial u = 1$, $\;\partial v/\partial c = 1$ |
# | $u = a\,b$ | $\partial u/\partial a = b$, $\;\partial u/\partial b = a$ |

# %%
A, B, C = a.item(), b.item(), c.item()
T = np.tanh(A * B + C)
grad = {"L": 1.0}
grad["t"] = grad["L"] * B                    # from L = t·b
grad["b"] = grad["L"] * T                    # first contribution to b (from L = t·b)
grad["v"] = grad["t"] * (1 - T ** 2)         # from t = tanh(v)
grad["u"] = grad["v"] * 1.0                  # from v = u + c
grad["c"] = grad["v"] * 1.0
grad["a"] = grad["u"] * B                    # from u = a·b
grad["b"] += grad["u"] * A                   # second contribution to b: the two uses add up
for name in ["t", "v", "u", "a", "b", "c"]:
    print(f"dL/d{name} = {grad[name]:+.10f}")

# %% [markdown]
# Now the same with tinyseg. `L.backward()` runs the loop of `Tensor.backward`: pop the
# next node of the order, call its Function's `backward` with the node's gradient, add each
# returned gradient to the gradient of the corresponding input. Leaves keep theirs in
# `.grad`.

# %%
L.backward()
for name, leaf in [("a", a), ("b", b), ("c", c)]:
    print(f"dL/d{name}: tinyseg {float(leaf.grad):+.10f}   by hand {grad[name]:+.10f}   "
          f"difference {abs(float(leaf.grad) - grad[name]):.1e}")

# %% [markdown]
# The graph has been released by that call (its saved buffers are freed as the walk goes,
# which is what keeps a U-Net's memory in check). A second `backward()` is refused with a
# clear message instead of silently adding the gradients a second time:

# %%
try:
    L.backward()
except RuntimeError as error:
    print("RuntimeError:", error)

# %% [markdown]
# ## 4. Using a value twice: the gradients add
#
# For $y = x \cdot x$ the `Mul` node sees the same tensor on both sides and returns a
# gradient for each; `backward` sums them, giving $2x$. Forgetting this sum is the classic
# bug of hand-written autograd engines.

# %%
x = ts.Tensor(np.array(3.0), requires_grad=True)
(x * x).backward()
print("d(x·x)/dx at x = 3:", float(x.grad), " (2x = 6)")

x = ts.Tensor(np.array(3.0), requires_grad=True)
y = x + x + x
y.backward()
print("d(x+x+x)/dx:", float(x.grad))

# %% [markdown]
# ## 5. Checking a gradient with finite differences
#
# The central difference
#
# $$ \frac{\partial L}{\partial a} \approx \frac{L(a+\varepsilon) - L(a-\varepsilon)}{2\varepsilon} $$
#
# has a truncation error of order $\varepsilon^2$ (the odd Taylor terms cancel) but a
# rounding error of order $\text{machine eps}/\varepsilon$, since two nearly equal numbers
# are subtracted. The total is smallest around $\varepsilon \approx 10^{-5}$ in float64 —
# and is useless in float32, whose machine epsilon is $10^{-7}$. That is why
# `ts.gradcheck` insists on float64.

# %%
def loss_of(a_value, dtype):
    a_ = ts.Tensor(np.array(a_value, dtype=dtype))
    b_ = ts.Tensor(np.array(B, dtype=dtype))
    c_ = ts.Tensor(np.array(C, dtype=dtype))
    return (F.tanh(a_ * b_ + c_) * b_).item()


exact = grad["a"]
epsilons = np.logspace(-12, -1, 12 if FAST else 45)
errors = {}
for dtype in (np.float64, np.float32):
    errors[dtype] = [abs((loss_of(A + e, dtype) - loss_of(A - e, dtype)) / (2 * e) - exact) for e in epsilons]

fig, ax = plt.subplots(figsize=(6, 3.4))
for dtype, style in ((np.float64, "o-"), (np.float32, "s-")):
    ax.loglog(epsilons, np.maximum(errors[dtype], 1e-17), style, ms=3, label=np.dtype(dtype).name)
ax.set_xlabel("step ε")
ax.set_ylabel("|central difference − backward|")
ax.set_title("finite differences: rounding (left) against truncation (right)")
ax.legend()
ax.grid(True, which="major", alpha=0.3)
plt.show()
best = int(np.argmin(errors[np.float64]))
print(f"float64: smallest error {errors[np.float64][best]:.1e} at ε = {epsilons[best]:.0e}")
best32 = int(np.argmin(errors[np.float32]))
print(f"float32: smallest error {errors[np.float32][best32]:.1e} at ε = {epsilons[best32]:.0e}")

# %% [markdown]
# ## 6. `ts.gradcheck`: whole Jacobians, not just a sum
#
# For an op with many inputs and outputs, checking $\partial\,\text{sum}(f)/\partial x$ is
# not enough: errors can cancel in the sum. `ts.gradcheck` builds the full Jacobian twice —
# numerically, one column per input element with central differences, and analytically,
# one row per output element by calling `backward` with a one-hot upstream gradient — and
# compares them element by element. It also re-runs backward to prove it deterministic and
# checks that a zero upstream gradient gives zero gradients.
#
# Here is a small convolution followed by a sigmoid, checked for the input, the weights
# and the bias at once:

# %%
rng = np.random.default_rng(0)
x = ts.Tensor(rng.standard_normal((1, 2, 5, 5)), requires_grad=True)
w = ts.Tensor(rng.standard_normal((3, 2, 3, 3)), requires_grad=True)
bias = ts.Tensor(rng.standard_normal(3), requires_grad=True)
print("conv2d + sigmoid:", ts.gradcheck(lambda x, w, b: F.sigmoid(F.conv2d(x, w, b, stride=2, padding=1)),
                                        [x, w, bias]))

# %% [markdown]
# ### Catching a wrong backward
#
# A `Function` is a forward on raw arrays with its backward right below it. Here is one
# with a planted mistake — the derivative of $x^3$ written as $3x$ instead of $3x^2$ —
# and what `gradcheck` says about it:

# %%
class WrongCube(ts.Function):
    def forward(self, x):
        self.x = x
        return x ** 3

    def backward(self, g):
        return g * 3 * self.x          # wrong: d(x³)/dx = 3x²


x = ts.Tensor(rng.standard_normal(4), requires_grad=True)
try:
    ts.gradcheck(lambda x: WrongCube()(x), [x])
except ts.GradcheckError as error:
    print("GradcheckError:", error)

# %% [markdown]
# ### Why a sum is not enough
#
# Batch normalisation subtracts the batch mean and divides by the standard deviation, so
# the *sum* of its output is always 0, whatever the input: the gradient of the sum is 0.
# A backward that returns zeros would pass a sum-only check. The one-hot rows of the full
# Jacobian see every output element separately:

# %%
x = ts.Tensor(rng.standard_normal((4, 2, 1, 1)), requires_grad=True)


def normalise(x):
    return F.batch_norm(x, None, None, None, None, training=True)


total = F.sum(normalise(x))
total.backward()
print(f"sum of batch_norm(x) = {total.item():+.1e};  its gradient: max |g| = {np.abs(x.grad).max():.1e}")
print("full Jacobian check of batch_norm:", ts.gradcheck(normalise, [x]))

# %% [markdown]
# ## 7. Deep graphs
#
# A recursive graph walk (micrograd's) overflows Python's stack past about a thousand
# nodes. tinyseg's order is found with an explicit stack, so a chain of many thousands of
# operations backpropagates fine:

# %%
depth = 2_000 if FAST else 20_000
x = ts.Tensor(np.array(1.0), requires_grad=True)
y = x
for _ in range(depth):
    y = y * 1.0001
y.backward()
print(f"chain of {depth} multiplications: dy/dx = {float(x.grad):.6f}  (1.0001^{depth} = {1.0001 ** depth:.6f})")

# %% [markdown]
# ## What to take away
# - The graph is only links from outputs to the `Function`s that made them; `backward`
#   orders it topologically and applies each Function's local derivative once.
# - Gradients of a value used several times add up.
# - Check gradients with central differences in float64, on the full Jacobian:
#   `ts.gradcheck` does that for every op in tinyseg (`tinyseg gradcheck` prints the table).
#
# Next: **2 · Convolution** — the op at the heart of the U-Net, and its two backwards.
