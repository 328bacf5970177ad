"""Module, Parameter and Buffer: the containers that layers and models are built from.

A Module holds three kinds of state, each registered automatically when it is
assigned as an attribute (``self.weight = Parameter(...)``), in insertion order:

    Parameter   a Tensor the optimizer trains (requires_grad=True)
    Buffer      a Tensor that is state but not trained (BatchNorm's running statistics)
    Module      a sub-layer, whose own state is reached under a dotted name
                ("encoder.0.conv1.weight"), as in PyTorch

``state_dict()`` gathers parameters and buffers by those names as NumPy copies, and
``load_state_dict()`` puts them back, checking names and shapes first. See
docs/math/layers_and_optimizers.md, section "Modules and state".
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .. import backend
from ..tensor import Tensor


class Parameter(Tensor):
    """A trainable Tensor: requires_grad=True, float32 unless the data says otherwise."""

    def __init__(self, data, requires_grad: bool = True, dtype=None):
        if isinstance(data, Tensor):
            data = data.data
        if dtype is None and not hasattr(data, "dtype"):
            dtype = np.float32
        super().__init__(data, requires_grad=requires_grad, dtype=dtype)

    def __repr__(self):
        return f"Parameter(shape={tuple(self.shape)}, dtype={self.dtype}, device={self.device!r})"


class Buffer(Tensor):
    """A Tensor that belongs to a Module's state but is not trained (e.g. running statistics)."""

    def __init__(self, data, dtype=None):
        super().__init__(data, requires_grad=False, dtype=dtype)

    def __repr__(self):
        return f"Buffer(shape={tuple(self.shape)}, dtype={self.dtype}, device={self.device!r})"


class IncompatibleKeys(NamedTuple):
    """What ``load_state_dict(strict=False)`` skipped."""
    missing_keys: list
    unexpected_keys: list


class Module:
    """Base class of every layer and model: subclasses set attributes in ``__init__``
    (after ``super().__init__()``) and define ``forward``; ``module(x)`` calls ``forward(x)``."""

    def __init__(self):
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_buffers", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "training", True)

    # ----- registration: attribute assignment sorts values into the three registries

    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}: call super().__init__() before assigning "
                                 f"attributes (assigning {name!r})")
        registries = (self._parameters, self._buffers, self._modules)
        if isinstance(value, Parameter):
            target = self._parameters
        elif isinstance(value, Buffer):
            target = self._buffers
        elif isinstance(value, Module):
            target = self._modules
        elif value is None and any(name in r for r in registries):
            # ``self.bias = None`` keeps the slot (as PyTorch); None entries are skipped.
            target = next(r for r in registries if name in r)
        else:
            target = None
        for registry in registries:
            if registry is not target:
                registry.pop(name, None)
        if target is None:
            object.__setattr__(self, name, value)
        else:
            self.__dict__.pop(name, None)
            target[name] = value

    def __getattr__(self, name):
        # Called only when normal lookup fails, i.e. for registered state.
        for registry in ("_parameters", "_buffers", "_modules"):
            entries = self.__dict__.get(registry)
            if entries is not None and name in entries:
                return entries[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name):
        for registry in (self._parameters, self._buffers, self._modules):
            if name in registry:
                del registry[name]
                return
        object.__delattr__(self, name)

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"register_parameter: {name!r} expected a Parameter or None, got {type(param).__name__}")
        self._parameters[name] = param

    def register_buffer(self, name: str, value) -> None:
        """Register ``value`` (an array, Tensor or None) as a buffer: saved, moved, never trained."""
        self._buffers[name] = None if value is None or isinstance(value, Buffer) else Buffer(value)

    def register_module(self, name: str, module: Module | None) -> None:
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"register_module: {name!r} expected a Module or None, got {type(module).__name__}")
        self._modules[name] = module

    # ----- discovery (lists, not generators, so they can be reused)

    def named_modules(self, prefix: str = "") -> list[tuple[str, "Module"]]:
        """(dotted name, module) for this module ("" ) and every descendant, depth first, each once."""
        found, seen, stack = [], set(), [(prefix, self)]
        while stack:
            name, module = stack.pop()
            if id(module) in seen:
                continue
            seen.add(id(module))
            found.append((name, module))
            children = [(f"{name}.{child_name}" if name else child_name, child)
                        for child_name, child in module._modules.items() if child is not None]
            stack.extend(reversed(children))
        return found

    def modules(self) -> list["Module"]:
        return [module for _, module in self.named_modules()]

    def named_children(self) -> list[tuple[str, "Module"]]:
        return [(name, child) for name, child in self._modules.items() if child is not None]

    def children(self) -> list["Module"]:
        return [child for _, child in self.named_children()]

    def _named_state(self, registry: str, recurse: bool) -> list[tuple[str, Tensor]]:
        modules = self.named_modules() if recurse else [("", self)]
        found, seen = [], set()
        for module_name, module in modules:
            for name, value in getattr(module, registry).items():
                if value is None or id(value) in seen:    # a shared tensor is listed once
                    continue
                seen.add(id(value))
                found.append((f"{module_name}.{name}" if module_name else name, value))
        return found

    def named_parameters(self, recurse: bool = True) -> list[tuple[str, Parameter]]:
        """(dotted name, Parameter) pairs, e.g. ("encoder.0.conv1.weight", ...), in registration order."""
        return self._named_state("_parameters", recurse)

    def parameters(self, recurse: bool = True) -> list[Parameter]:
        return [p for _, p in self.named_parameters(recurse)]

    def named_buffers(self, recurse: bool = True) -> list[tuple[str, Buffer]]:
        return self._named_state("_buffers", recurse)

    def buffers(self, recurse: bool = True) -> list[Buffer]:
        return [b for _, b in self.named_buffers(recurse)]

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.size for p in self.parameters() if p.requires_grad or not trainable_only)

    # ----- modes and gradients

    def train(self, mode: bool = True) -> "Module":
        """Set training mode (``mode=True``) or evaluation mode on this module and all descendants."""
        if not isinstance(mode, bool):
            raise TypeError(f"train: argument 'mode' expected a bool, got {mode!r}")
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def zero_grad(self) -> None:
        """Forget the gradients of every parameter (sets ``.grad`` to None)."""
        for p in self.parameters():
            p.grad = None

    def requires_grad_(self, flag: bool = True) -> "Module":
        for p in self.parameters():
            p.requires_grad_(flag)
        return self

    # ----- state

    def _state_tensors(self) -> dict[str, Tensor]:
        """Every parameter and buffer by dotted name: module by module, parameters before
        buffers (PyTorch's order); a tensor shared by two modules appears under both names."""
        tensors = {}
        for module_name, module in self.named_modules():
            prefix = f"{module_name}." if module_name else ""
            for registry in (module._parameters, module._buffers):
                for name, value in registry.items():
                    if value is not None:
                        tensors[prefix + name] = value
        return tensors

    def state_dict(self) -> dict[str, np.ndarray]:
        """Parameters and buffers by dotted name, as NumPy copies (on the CPU)."""
        return {name: np.array(backend.to_device(value.data, "cpu"), copy=True)
                for name, value in self._state_tensors().items()}

    def load_state_dict(self, state: dict, strict: bool = True) -> IncompatibleKeys:
        """Copy ``state`` (name -> array or Tensor) into the parameters and buffers, in place.

        Values are cast to each tensor's dtype and moved to its device. Every problem is
        reported at once: missing and unexpected names (unless ``strict=False``, which
        skips them and returns them) and shape mismatches (always an error).
        """
        if not isinstance(state, dict):
            raise TypeError(f"load_state_dict: expected a dict of name -> array, got {type(state).__name__}")
        own = self._state_tensors()
        missing = [name for name in own if name not in state]
        unexpected = [name for name in state if name not in own]
        problems = []
        if strict:
            problems += [f"missing key {name!r} (in the model, not in the checkpoint)" for name in missing]
            problems += [f"unexpected key {name!r} (in the checkpoint, not in the model)" for name in unexpected]
        arrays = {}
        for name, target in own.items():
            if name not in state:
                continue
            value = state[name]
            value = value.data if isinstance(value, Tensor) else value
            if not hasattr(value, "shape"):
                value = np.asarray(value)
            if value.dtype == object:
                raise TypeError(f"load_state_dict: {name!r} expected a numeric array, got an object array")
            if tuple(value.shape) != tuple(target.shape):
                problems.append(f"shape mismatch for {name!r}: checkpoint {tuple(value.shape)}, "
                                f"model {tuple(target.shape)}")
            arrays[name] = value
        if problems:
            raise ValueError("load_state_dict: " + "; ".join(problems))
        for name, value in arrays.items():
            target = own[name]
            xp = backend.get_array_module(target.data)
            target.data[...] = xp.asarray(backend.to_device(value, target.device), dtype=target.dtype)
        return IncompatibleKeys(missing, unexpected)

    # ----- device and dtype

    def to(self, device: str) -> "Module":
        """Move every parameter and buffer (and gradient) to ``device`` ("cpu" or "cuda"), in place."""
        if device not in ("cpu", "cuda"):
            raise ValueError(f"to: device expected 'cpu' or 'cuda', got {device!r}")
        for tensor in self.parameters() + self.buffers():
            tensor.data = backend.to_device(tensor.data, device)
            if tensor.grad is not None:
                grad = tensor.grad.data if isinstance(tensor.grad, Tensor) else tensor.grad
                tensor.grad = backend.to_device(grad, device)
        return self

    def cpu(self) -> "Module":
        return self.to("cpu")

    def cuda(self) -> "Module":
        return self.to("cuda")

    def astype(self, dtype) -> "Module":
        """Convert the floating-point parameters and buffers (and gradients) to ``dtype``, in place.

        Integer buffers (BatchNorm's batch counter) keep their dtype. ``double()`` is
        the float64 model that whole-layer gradient checks need.
        """
        dtype = np.dtype(dtype)
        if not np.issubdtype(dtype, np.floating):
            raise TypeError(f"astype: expected a floating-point dtype, got {dtype}")
        for tensor in self.parameters() + self.buffers():
            if np.issubdtype(tensor.dtype, np.floating):
                tensor.data = tensor.data.astype(dtype)
                if tensor.grad is not None:
                    grad = tensor.grad.data if isinstance(tensor.grad, Tensor) else tensor.grad
                    tensor.grad = grad.astype(dtype)
        return self

    def double(self) -> "Module":
        return self.astype(np.float64)

    def float(self) -> "Module":
        return self.astype(np.float32)

    # ----- calling and printing

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def extra_repr(self) -> str:
        """The layer's configuration, shown inside the parentheses of its repr."""
        return ""

    def __repr__(self):
        children = [f"({name}): " + repr(child).replace("\n", "\n  ") for name, child in self.named_children()]
        extra = self.extra_repr()
        if not children:
            return f"{type(self).__name__}({extra})"
        lines = ([extra] if extra else []) + children
        return f"{type(self).__name__}(\n  " + "\n  ".join(lines) + "\n)"
