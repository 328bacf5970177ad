"""The autograd core: Tensor, Function, backward and no_grad.

A Tensor wraps a NumPy or CuPy array. Every op is a ``Function`` with ``forward`` on
raw arrays and ``backward`` right below it (see ``tinyseg/functional``). Calling a
Function records it as the creator of its output, so the graph is built as the code
runs (define-by-run). ``Tensor.backward`` then walks that graph once, from the output
back to the leaves, in an order where every node comes before the nodes it was computed
from (a topological order, found with an explicit stack: no recursion limit), and
applies the chain rule:

    dL/dx  =  Σ over every use of x   (dL/dy · dy/dx)

The sum is why a tensor used twice (``a + a``) gets both contributions. Gradients of
leaves (tensors created by the user with ``requires_grad=True``) are accumulated into
``.grad``; the graph and the buffers saved for backward are released as it goes.
"""
from __future__ import annotations

import contextlib
import numbers

import numpy as np

from . import backend

_grad_enabled = True


@contextlib.contextmanager
def no_grad():
    """Inside this block ops build no graph (inference, optimizer steps)."""
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, False
    try:
        yield
    finally:
        _grad_enabled = previous


def is_grad_enabled() -> bool:
    return _grad_enabled


def _is_float(dtype) -> bool:
    return np.issubdtype(dtype, np.floating)


class Tensor:
    """An n-d array with an optional gradient. Layout for images: NCHW."""

    # Makes ``ndarray + Tensor`` call Tensor.__radd__ instead of broadcasting elementwise.
    __array_priority__ = 1000

    def __init__(self, data, requires_grad: bool = False, dtype=None):
        if isinstance(data, Tensor):
            data = data.data
        if isinstance(data, np.generic):      # NumPy scalars (from full reductions) keep their dtype
            data = np.asarray(data)
        elif not hasattr(data, "shape"):
            # Python numbers and lists: floats become float32, the parameter default.
            data = np.asarray(data)
            if dtype is None and data.dtype == np.float64:
                dtype = np.float32
        if dtype is not None:
            xp = backend.get_array_module(data)
            data = xp.asarray(data, dtype=dtype)
        if requires_grad and not _is_float(data.dtype):
            raise TypeError(f"Tensor: only floating-point tensors can require gradients, got dtype {data.dtype}")
        self.data = data
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self._creator: Function | None = None   # the Function whose output this is
        self._graph_released = False

    # ----- array-like properties
    shape = property(lambda self: self.data.shape)
    dtype = property(lambda self: self.data.dtype)
    ndim = property(lambda self: self.data.ndim)
    size = property(lambda self: self.data.size)
    device = property(lambda self: backend.device_of(self.data))
    is_leaf = property(lambda self: self._creator is None)

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({self.data!r}{grad})"

    def numpy(self) -> np.ndarray:
        """The values as a NumPy array (copied from the GPU when needed)."""
        return backend.to_device(self.data, "cpu")

    def item(self):
        return self.data.item()

    def to(self, device: str) -> "Tensor":
        """This tensor on ``device``: itself when already there, else a detached copy."""
        moved = backend.to_device(self.data, device)
        if moved is self.data:
            return self
        return Tensor(moved, requires_grad=self.requires_grad)

    def detach(self) -> "Tensor":
        """The same values, cut from the graph (shares memory)."""
        return Tensor(self.data)

    def requires_grad_(self, flag: bool = True) -> "Tensor":
        if flag and not _is_float(self.dtype):
            raise TypeError(f"Tensor: only floating-point tensors can require gradients, got dtype {self.dtype}")
        self.requires_grad = flag
        return self

    def zero_grad(self):
        self.grad = None

    # ----- backpropagation
    def backward(self, grad=None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) · grad into the ``.grad`` of every leaf.

        ``grad`` is the upstream gradient (same shape as self); it may be omitted for a
        single-element output (it is then 1). Unless ``retain_graph``, the graph is
        released during the walk, so its saved buffers are freed as soon as possible.
        """
        if not self.requires_grad:
            raise RuntimeError("backward: this tensor does not require grad (no input had requires_grad=True, "
                               "or it was computed under no_grad())")
        if self._graph_released:
            raise RuntimeError("backward: the graph behind this tensor was already released by an earlier "
                               "backward(); pass retain_graph=True to the first call to backpropagate twice")
        xp = backend.get_array_module(self.data)
        if grad is None:
            if self.size != 1:
                raise RuntimeError(f"backward: grad can be omitted only for a single-element output, "
                                   f"this one has shape {self.shape}")
            grad = xp.ones_like(self.data)
        else:
            grad = grad.data if isinstance(grad, Tensor) else grad
            backend.get_array_module(self.data, grad)
            grad = xp.asarray(grad, dtype=self.dtype)
            if grad.shape != self.shape:
                raise ValueError(f"backward: grad must have the output's shape {self.shape}, got {grad.shape}")

        grads = {id(self): grad}
        # Walk the nodes by popping them off the order: once a node's backward has run and
        # its Function is released, nothing here refers to it any more, so an intermediate
        # activation is freed as soon as the last node that needed it is done (measured on
        # the B64 U-Net: peak memory 1293 -> 1108 MB), not at the end of the walk.
        pending = _topological_order(self)
        pending.reverse()
        while pending:
            node = pending.pop()
            g = grads.pop(id(node), None)
            fn = node._creator
            if fn is None:   # a leaf: keep its gradient
                if g is not None:
                    node.grad = g if node.grad is None else node.grad + g
                continue
            if g is None:
                continue
            input_grads = fn.backward(g)
            if not isinstance(input_grads, tuple):
                input_grads = (input_grads,)
            for inp, g_in in zip(fn.inputs, input_grads):
                if g_in is None or not inp.requires_grad:
                    continue
                if g_in.shape != inp.shape:
                    raise RuntimeError(f"{type(fn).__name__}.backward returned a gradient of shape {g_in.shape} "
                                       f"for an input of shape {inp.shape}")
                if g_in.dtype != inp.dtype:
                    g_in = g_in.astype(inp.dtype)
                key = id(inp)
                grads[key] = g_in if key not in grads else grads[key] + g_in
            if not retain_graph:
                node._creator = None
                node._graph_released = True

    # Operators (+, *, @, slicing, sum, ...) are attached in tinyseg/functional/math.py,
    # next to the Functions that compute them, so that this file stays about backprop.


def _topological_order(root: Tensor) -> list[Tensor]:
    """Nodes reachable from ``root`` through tensors that require grad, each before its inputs.

    An iterative depth-first search: a node is emitted after all of its inputs (post-order);
    reversing that list puts every node before the nodes it was computed from.
    """
    post_order, visited = [], set()
    stack = [(root, False)]
    while stack:
        node, inputs_done = stack.pop()
        if inputs_done:
            post_order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        if node._creator is not None:
            for inp in node._creator.inputs:
                if inp.requires_grad and id(inp) not in visited:
                    stack.append((inp, False))
    post_order.reverse()
    return post_order


class Function:
    """One op in the graph. Subclasses define ``forward(*arrays)`` and ``backward(grad)``.

    Configuration (stride, axis, ...) goes to ``__init__``; tensors go to ``__call__``.
    ``forward`` works on raw arrays and saves on ``self`` what backward needs;
    ``backward`` returns one gradient per input (None where an input needs none).
    ``self.needs_grad[i]`` tells backward whether input i wants a gradient, so it can
    skip work (a conv's bias, a loss's target).
    """

    inputs: tuple[Tensor, ...] = ()
    needs_grad: tuple[bool, ...] = ()

    def __call__(self, *inputs) -> Tensor:
        tensors = tuple(x if isinstance(x, Tensor) else Tensor(x) for x in inputs)
        self.xp = backend.get_array_module(*(t.data for t in tensors))
        self.needs_grad = tuple(t.requires_grad for t in tensors)
        record = _grad_enabled and any(self.needs_grad)
        out = Tensor(self.forward(*(t.data for t in tensors)))
        if record:
            out.requires_grad = True
            out._creator = self
            self.inputs = tensors
        return out

    def forward(self, *arrays):
        raise NotImplementedError

    def backward(self, grad):
        raise NotImplementedError


def as_tensor(x, like: Tensor | None = None) -> Tensor:
    """``x`` as a Tensor; Python numbers take ``like``'s dtype and device (no silent upcast)."""
    if isinstance(x, Tensor):
        return x
    if like is not None and isinstance(x, numbers.Number):
        xp = backend.get_array_module(like.data)
        return Tensor(xp.asarray(x, dtype=like.dtype))
    return Tensor(x)
