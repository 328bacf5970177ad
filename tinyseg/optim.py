"""Optimizers (SGD, Adam, AdamW) and learning-rate schedules (StepLR, CosineAnnealingLR).

    optimizer = ts.optim.Adam(model.parameters(), lr=1e-3)
    loss.backward();  optimizer.step();  optimizer.zero_grad()

Each ``step`` updates ``param.data`` in place with PyTorch's update rule (same values to
rounding), on the parameter's own device, outside the autograd graph. Gradients are
read, never written: other code may still hold them. The update equations and why
Adam's bias correction is needed are in docs/math/layers_and_optimizers.md, sections
"SGD", "Adam and AdamW" and "Learning-rate schedules".

Speed: the updates run with in-place ufuncs (``out=``) and one scratch array per
(device, dtype), reused for every parameter, so a step on a 31M-parameter U-Net
allocates nothing after the first. Adam/AdamW's update is also a fused compiled loop
(one pass over p, g, m, v instead of ~10), selected as the op "adam" with
``backend.use_kernel("adam", name)``: "numpy", "numba", "cupy", "cuda" (kernels/adam.cu)
or "auto" (the default: "cuda" on the GPU, "numba" on the CPU).
"""
from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import numpy as np

from . import backend
from .tensor import Tensor

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "LRScheduler", "StepLR", "CosineAnnealingLR"]


def _check_number(owner: str, name: str, value, minimum=0.0, below=None) -> float:
    """``value`` as a float in [minimum, below) (``below=None``: no upper bound)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise TypeError(f"{owner}: argument '{name}' expected a finite real number, got {value!r}")
    if value < minimum or (below is not None and value >= below):
        upper = f" and < {below}" if below is not None else ""
        raise ValueError(f"{owner}: argument '{name}' expected a value >= {minimum}{upper}, got {value}")
    return float(value)


def _grad_array(param):
    grad = param.grad
    return grad.data if isinstance(grad, Tensor) else grad


class Optimizer:
    """Base class: holds parameter groups and per-parameter state; subclasses define ``_update``.

    ``params`` is an iterable of Parameters, or of dicts ``{"params": [...], "lr": ...}``
    (parameter groups, each with its own hyperparameters; missing ones take the
    optimizer's defaults).
    """

    def __init__(self, params, defaults: dict):
        self.defaults = dict(defaults)
        if isinstance(params, Tensor):
            raise TypeError(f"{type(self).__name__}: params expected an iterable of Parameters or of dicts, "
                            f"got a single Tensor (wrap it in a list)")
        groups = list(params)
        if not groups:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        self.param_groups: list[dict] = []
        self.state: dict[int, dict] = {}        # id(param) -> that parameter's state
        self._scratch: dict[tuple, object] = {}
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, group: dict) -> None:
        name = type(self).__name__
        if not isinstance(group, dict) or "params" not in group:
            raise TypeError(f"{name}: a parameter group expected a dict with a 'params' entry, got {group!r}")
        params = group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError(f"{name}: expected Parameters (Tensors), got {type(p).__name__}")
            if not np.issubdtype(p.dtype, np.floating):
                raise TypeError(f"{name}: can only optimize floating-point tensors, got dtype {p.dtype}")
            if id(p) in seen:
                raise ValueError(f"{name}: a parameter appears more than once (shape {tuple(p.shape)}); "
                                 f"each parameter must be in exactly one group")
            seen.add(id(p))
        full = {**self.defaults, **group, "params": params}
        self._check_hyperparameters(full)
        self.param_groups.append(full)

    def _check_hyperparameters(self, group: dict) -> None:
        _check_number(type(self).__name__, "lr", group["lr"])

    def zero_grad(self) -> None:
        """Set every parameter's ``.grad`` to None (the next backward starts from nothing)."""
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None

    def step(self) -> None:
        """Update every parameter that has a gradient; parameters with ``grad is None`` are skipped."""
        for group in self.param_groups:
            for p in group["params"]:
                grad = _grad_array(p)
                if grad is None:
                    continue
                backend.get_array_module(p.data, grad)   # a TypeError if they sit on different devices
                if grad.shape != p.shape:
                    raise ValueError(f"{type(self).__name__}.step: gradient of shape {tuple(grad.shape)} for a "
                                     f"parameter of shape {tuple(p.shape)}")
                if grad.dtype != p.dtype:
                    grad = grad.astype(p.dtype)
                state = self.state.setdefault(id(p), {})
                self._follow_parameter(p, state)
                self._update(p.data, grad, group, state)

    def _update(self, param, grad, group: dict, state: dict) -> None:
        raise NotImplementedError

    @staticmethod
    def _follow_parameter(p, state: dict) -> None:
        """Move the state arrays to the parameter's device if the model moved (``model.to``)
        after the optimizer was created."""
        device = p.device
        for key, value in state.items():
            if hasattr(value, "shape") and backend.device_of(value) != device:
                state[key] = backend.to_device(value, device)

    def _scratch_like(self, array):
        """A work array of ``array``'s shape, dtype and device, shared by all parameters."""
        key = (backend.device_of(array), array.dtype.str)
        buffer = self._scratch.get(key)
        if buffer is None or buffer.size < array.size:
            xp = backend.get_array_module(array)
            buffer = xp.empty(array.size, dtype=array.dtype)
            self._scratch[key] = buffer
        return buffer[:array.size].reshape(array.shape)

    # ----- checkpoints

    def _all_params(self) -> list:
        return [p for group in self.param_groups for p in group["params"]]

    def state_dict(self) -> dict:
        """{"state": {"<index>": {name: NumPy array or number}}, "param_groups": [...]}.

        Parameters are named by their position across the groups (as PyTorch, but with
        string keys, so the dict goes through ``ts.save`` unchanged). Arrays are copies.
        """
        state = {}
        for index, p in enumerate(self._all_params()):
            entry = self.state.get(id(p))
            if entry:
                state[str(index)] = {key: (np.array(backend.to_device(value, "cpu"), copy=True)
                                           if hasattr(value, "shape") else value)
                                     for key, value in entry.items()}
        groups, start = [], 0
        for group in self.param_groups:
            count = len(group["params"])
            groups.append({**{k: v for k, v in group.items() if k != "params"},
                           "params": list(range(start, start + count))})
            start += count
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore hyperparameters and per-parameter state saved by ``state_dict`` (also after
        ``ts.save``/``ts.load``); arrays go to each parameter's device and dtype."""
        name = type(self).__name__
        if not isinstance(state_dict, dict) or "state" not in state_dict or "param_groups" not in state_dict:
            raise ValueError(f"{name}.load_state_dict: expected a dict with 'state' and 'param_groups'")
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"{name}.load_state_dict: the checkpoint has {len(saved_groups)} parameter groups, "
                             f"this optimizer {len(self.param_groups)}")
        for i, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(f"{name}.load_state_dict: group {i} has {len(saved['params'])} parameters in the "
                                 f"checkpoint, {len(group['params'])} in this optimizer")
        params = self._all_params()
        new_state = {}
        for key, entry in state_dict["state"].items():
            index = int(key)
            if not 0 <= index < len(params):
                raise ValueError(f"{name}.load_state_dict: state for parameter {index}, but there are "
                                 f"{len(params)} parameters")
            p = params[index]
            restored = {}
            for field, value in entry.items():
                value = value.data if isinstance(value, Tensor) else value
                if hasattr(value, "shape") and tuple(value.shape) == tuple(p.shape):
                    value = backend.to_device(value, p.device).astype(p.dtype, copy=True)
                elif hasattr(value, "shape") and value.ndim == 0:     # a number saved as a 0-d array
                    value = value.item()
                elif hasattr(value, "shape"):
                    raise ValueError(f"{name}.load_state_dict: {field!r} of parameter {index} has shape "
                                     f"{tuple(value.shape)}, the parameter {tuple(p.shape)}")
                restored[field] = value
            new_state[id(p)] = restored
        for saved, group in zip(saved_groups, self.param_groups):
            for key, value in saved.items():
                if key == "params":
                    continue
                # JSON stores tuples as lists: give back the type the group had (betas).
                group[key] = tuple(value) if isinstance(group.get(key), tuple) else value
        self.state = new_state


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, Nesterov momentum and L2 weight decay.

    PyTorch's rule, per parameter p with gradient g:
        g ← g + weight_decay · p
        b ← g (first step),  b ← momentum · b + (1 − dampening) · g (later steps)
        g ← g + momentum · b (nesterov)  or  g ← b (plain momentum)
        p ← p − lr · g
    """

    def __init__(self, params, lr, momentum=0.0, nesterov=False, weight_decay=0.0, dampening=0.0):
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                                      dampening=dampening))

    def _check_hyperparameters(self, group):
        super()._check_hyperparameters(group)
        for key in ("momentum", "weight_decay", "dampening"):
            _check_number("SGD", key, group[key])
        if not isinstance(group["nesterov"], bool):
            raise TypeError(f"SGD: argument 'nesterov' expected a bool, got {group['nesterov']!r}")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("SGD: nesterov=True needs momentum > 0 and dampening = 0")

    def _update(self, param, grad, group, state):
        xp = backend.get_array_module(param)
        lr, momentum, weight_decay = group["lr"], group["momentum"], group["weight_decay"]
        scratch = self._scratch_like(param)
        if weight_decay != 0:
            xp.multiply(param, weight_decay, out=scratch)
            scratch += grad
            grad = scratch                      # g + wd·p, in the scratch array
        if momentum != 0:
            buffer = state.get("momentum_buffer")
            if buffer is None:
                buffer = state["momentum_buffer"] = grad.copy()
            else:
                buffer *= momentum
                if group["dampening"] == 0:
                    buffer += grad
                else:
                    xp.multiply(grad, 1 - group["dampening"], out=scratch)
                    buffer += scratch
            if group["nesterov"]:
                # p − lr·(g + m·b), as two in-place subtractions
                xp.multiply(grad, lr, out=scratch)
                param -= scratch
                xp.multiply(buffer, lr * momentum, out=scratch)
                param -= scratch
                return
            grad = buffer
        xp.multiply(grad, lr, out=scratch)
        param -= scratch


class AdamHyperparameters(NamedTuple):
    """What one Adam step of one parameter needs (t = step, counted from 1)."""
    lr: float
    beta1: float
    beta2: float
    eps: float
    weight_decay: float
    decoupled_weight_decay: bool
    step: int


class NumpyAdamKernel:
    """The Adam update as in-place ufuncs (``out=``) over whole arrays, on NumPy or CuPy:
    about ten passes over parameter-sized arrays, with one shared scratch array."""

    name = "numpy"

    @staticmethod
    def update(param, grad, m, v, scratch_like_param, hyper: AdamHyperparameters, xp):
        lr, beta1, beta2, eps, weight_decay, step = (hyper.lr, hyper.beta1, hyper.beta2, hyper.eps,
                                                     hyper.weight_decay, hyper.step)
        scratch = scratch_like_param()
        if weight_decay != 0 and hyper.decoupled_weight_decay:
            param *= 1 - lr * weight_decay
        elif weight_decay != 0:
            xp.multiply(param, weight_decay, out=scratch)
            scratch += grad
            grad = scratch
        # m ← β1·m + (1 − β1)·g, written as g + β1·(m − g) to need no temporary
        m -= grad
        m *= beta1
        m += grad
        # v ← β2·v + (1 − β2)·g²
        xp.multiply(grad, grad, out=scratch)
        scratch *= 1 - beta2
        v *= beta2
        v += scratch
        # p ← p − step_size · m / (√v / √(1 − β2^t) + eps)
        step_size = lr / (1 - beta1 ** step)
        xp.sqrt(v, out=scratch)
        scratch /= math.sqrt(1 - beta2 ** step)
        scratch += eps
        xp.divide(m, scratch, out=scratch)
        scratch *= step_size
        param -= scratch


class NumbaAdamKernel:
    """The same update in one compiled pass (optim_kernels_numba): p, g, m, v read once,
    p, m, v written once, in place. Per element the NumPy kernel's operations in its order
    and dtype; the scalars (1 − lr·wd, 1 − β2, lr / (1 − β1^t), √(1 − β2^t)) are computed
    here in double precision, as the NumPy kernel does, then cast to the array dtype, as
    NumPy casts a Python float meeting an array. A serial loop below
    NUMBA_ADAM_PARALLEL_MIN_ELEMENTS, parallel chunks from there.

    Falls back to NumpyAdamKernel for CuPy arrays, dtypes other than float32/float64, and
    param, m or v not C-contiguous (they must be updated in place, and a flat view of a
    non-contiguous array would be a copy). A non-contiguous grad is copied (it is only read).
    """

    name = "numba"

    @staticmethod
    def update(param, grad, m, v, scratch_like_param, hyper: AdamHyperparameters, xp):
        dtype = param.dtype
        if (xp is not np or dtype not in (np.float32, np.float64) or not (m.dtype == v.dtype == dtype)
                or not (param.flags.c_contiguous and m.flags.c_contiguous and v.flags.c_contiguous)):
            NumpyAdamKernel.update(param, grad, m, v, scratch_like_param, hyper, xp)
            return
        from . import optim_kernels_numba as compiled

        lr, beta1, beta2, weight_decay, step = hyper.lr, hyper.beta1, hyper.beta2, hyper.weight_decay, hyper.step
        scalar = dtype.type
        loop = (compiled.adam_update if param.size >= NUMBA_ADAM_PARALLEL_MIN_ELEMENTS
                else compiled.adam_update_serial)
        # reshape(-1) of a C-contiguous array is a view: the loop writes into param, m, v.
        loop(param.reshape(-1), np.ascontiguousarray(grad).reshape(-1), m.reshape(-1), v.reshape(-1),
             weight_decay != 0 and not hyper.decoupled_weight_decay, scalar(weight_decay),
             weight_decay != 0 and hyper.decoupled_weight_decay, scalar(1 - lr * weight_decay),
             scalar(beta1), scalar(1 - beta2), scalar(beta2), scalar(math.sqrt(1 - beta2 ** step)),
             scalar(hyper.eps), scalar(lr / (1 - beta1 ** step)))


# Measured (2 cores, float32, one update, median of 25 calls after warm-up, ms):
#   elements                     16     144    2304   589824 (256·256·9)   2359296 (512·512·9)   9437184 (1024·1024·9)
#   numpy                        0.017  0.017  0.025  1.63                 11.8                  48.1
#   numba                        0.015  0.013  0.014  0.35                 2.5                   8.0
# The fused pass is 4-6x faster on the U-Net's large conv weights (one pass instead of ~10)
# and no slower on tiny ones, so "auto" uses "numba" at every size. The update is
# memory-bound: the parallel loop gains only on the largest weights (6.4-9.6 ms vs 9.7-9.8 ms
# serial at 9.4M elements, nothing at 2.4M), hence parallel from 2**22 elements.
NUMBA_ADAM_PARALLEL_MIN_ELEMENTS = 2 ** 22
AUTO_ADAM_NUMBA_MIN_ELEMENTS = 0


class CupyAdamKernel(NumpyAdamKernel):
    """The NumPy kernel's in-place ufuncs run by CuPy on the GPU (about ten passes)."""

    name = "cupy"


class CudaAdamKernel:
    """Hand-written CUDA C (kernels/adam.cu): one thread per element, p, g, m, v read once and
    p, m, v written once, in place; the Numba kernel's operations and scalars.

    Runs on CuPy arrays, or on NumPy arrays inside ``backend.cuda_emulation()``. Falls back
    to NumpyAdamKernel (run by the arrays' module) when param, m or v is not C-contiguous
    or the dtype is not float32/float64.
    """

    name = "cuda"

    @staticmethod
    def update(param, grad, m, v, scratch_like_param, hyper: AdamHyperparameters, xp):
        dtype = param.dtype
        if (dtype not in (np.float32, np.float64) or not (m.dtype == v.dtype == dtype)
                or not (param.flags.c_contiguous and m.flags.c_contiguous and v.flags.c_contiguous)):
            NumpyAdamKernel.update(param, grad, m, v, scratch_like_param, hyper, xp)
            return
        from . import optim_kernels_cuda as gpu
        gpu.adam_update(param, grad, m, v, hyper, xp)


class AutoAdamKernel:
    """GPU (CuPy arrays): "cuda". CPU: numba for parameters of at least
    AUTO_ADAM_NUMBA_MIN_ELEMENTS elements, numpy below."""

    name = "auto"

    @staticmethod
    def update(param, grad, m, v, scratch_like_param, hyper: AdamHyperparameters, xp):
        if xp is not np:
            CudaAdamKernel.update(param, grad, m, v, scratch_like_param, hyper, xp)
            return
        large = param.size >= AUTO_ADAM_NUMBA_MIN_ELEMENTS
        (NumbaAdamKernel if large else NumpyAdamKernel).update(param, grad, m, v, scratch_like_param, hyper, xp)


ADAM_KERNELS = {kernel.name: kernel for kernel in (NumpyAdamKernel, NumbaAdamKernel, CupyAdamKernel, CudaAdamKernel,
                                                   AutoAdamKernel)}
DEFAULT_ADAM_KERNEL = "auto"


def _selected_adam_kernel():
    name = backend.kernel_for("adam", DEFAULT_ADAM_KERNEL)
    if name not in ADAM_KERNELS:
        available = ", ".join(repr(k) for k in sorted(ADAM_KERNELS))
        raise ValueError(f"adam: unknown kernel {name!r}; available kernels: {available}")
    return ADAM_KERNELS[name]


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015) with L2 weight decay added to the gradient, as torch.optim.Adam.

    Per parameter, at step t (β1, β2 = betas):
        g ← g + weight_decay · p
        m ← β1 · m + (1 − β1) · g          (first moment)
        v ← β2 · v + (1 − β2) · g²         (second moment)
        p ← p − lr / (1 − β1^t) · m / (√v / √(1 − β2^t) + eps)

    Computed in place by the kernel ``backend.kernel_for("adam", ...)`` names (ADAM_KERNELS).
    """

    decoupled_weight_decay = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    def _check_hyperparameters(self, group):
        name = type(self).__name__
        super()._check_hyperparameters(group)
        betas = group["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"{name}: argument 'betas' expected a pair (beta1, beta2), got {betas!r}")
        group["betas"] = (_check_number(name, "betas[0]", betas[0], 0.0, 1.0),
                          _check_number(name, "betas[1]", betas[1], 0.0, 1.0))
        _check_number(name, "eps", group["eps"])
        _check_number(name, "weight_decay", group["weight_decay"])

    def _update(self, param, grad, group, state):
        xp = backend.get_array_module(param)
        if not state:
            state["step"] = 0
            state["exp_avg"] = xp.zeros_like(param)
            state["exp_avg_sq"] = xp.zeros_like(param)
        state["step"] += 1
        beta1, beta2 = group["betas"]
        hyper = AdamHyperparameters(group["lr"], beta1, beta2, group["eps"], group["weight_decay"],
                                    self.decoupled_weight_decay, state["step"])
        _selected_adam_kernel().update(param, grad, state["exp_avg"], state["exp_avg_sq"],
                                       lambda: self._scratch_like(param), hyper, xp)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019), as torch.optim.AdamW:
    p ← p · (1 − lr · weight_decay) before the Adam step, which then sees the plain gradient."""

    decoupled_weight_decay = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


# ----- learning-rate schedules

class LRScheduler:
    """Sets each group's ``lr`` from its initial value and the epoch count (a closed form).

    Call ``step()`` once per epoch, after the optimizer steps of that epoch, as in
    PyTorch. Constructing a scheduler applies the epoch-0 learning rate.
    """

    def __init__(self, optimizer: Optimizer):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(self).__name__}: expected a tinyseg Optimizer, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = 0
        self._apply()

    def lr_at(self, base_lr: float, epoch: int) -> float:
        raise NotImplementedError

    def _apply(self) -> None:
        self._last_lr = [self.lr_at(base, self.last_epoch) for base in self.base_lrs]
        for group, lr in zip(self.optimizer.param_groups, self._last_lr):
            group["lr"] = lr

    def step(self) -> None:
        self.last_epoch += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        return list(self._last_lr)

    def state_dict(self) -> dict:
        return {key: (list(value) if isinstance(value, list) else value)
                for key, value in vars(self).items() if key not in ("optimizer", "_last_lr")}

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, list(value) if key == "base_lrs" else value)
        self.last_epoch = int(self.last_epoch)
        self._apply()


def _check_int(owner: str, name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{owner}: argument '{name}' expected an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{owner}: argument '{name}' expected a value >= {minimum}, got {value}")
    return int(value)


class StepLR(LRScheduler):
    """lr(epoch) = base_lr · gamma^⌊epoch / step_size⌋."""

    def __init__(self, optimizer, step_size, gamma=0.1):
        self.step_size = _check_int("StepLR", "step_size", step_size, 1)
        self.gamma = _check_number("StepLR", "gamma", gamma)
        super().__init__(optimizer)

    def lr_at(self, base_lr, epoch):
        return base_lr * self.gamma ** (epoch // self.step_size)


class CosineAnnealingLR(LRScheduler):
    """Cosine annealing from base_lr to eta_min over T_max epochs, with optional linear warmup.

    Without warmup (as torch.optim.lr_scheduler.CosineAnnealingLR):
        lr(e) = eta_min + (base_lr − eta_min) · (1 + cos(π e / T_max)) / 2
    With W = warmup_epochs > 0, the first W epochs ramp up linearly and the cosine covers
    the remaining T_max − W epochs (PyTorch's SequentialLR of LinearLR(start_factor=1/(W+1),
    total_iters=W) and CosineAnnealingLR(T_max − W)):
        lr(e) = base_lr · (e + 1) / (W + 1)                                      for e < W
        lr(e) = eta_min + (base_lr − eta_min) · (1 + cos(π (e − W) / (T_max − W))) / 2   otherwise
    """

    def __init__(self, optimizer, T_max, eta_min=0.0, warmup_epochs=0):
        self.T_max = _check_int("CosineAnnealingLR", "T_max", T_max, 1)
        self.eta_min = _check_number("CosineAnnealingLR", "eta_min", eta_min)
        self.warmup_epochs = _check_int("CosineAnnealingLR", "warmup_epochs", warmup_epochs, 0)
        if self.warmup_epochs >= self.T_max:
            raise ValueError(f"CosineAnnealingLR: warmup_epochs ({warmup_epochs}) must be smaller than "
                             f"T_max ({T_max})")
        super().__init__(optimizer)

    def lr_at(self, base_lr, epoch):
        warmup = self.warmup_epochs
        if epoch < warmup:
            return base_lr * (epoch + 1) / (warmup + 1)
        progress = (epoch - warmup) / (self.T_max - warmup)
        return self.eta_min + (base_lr - self.eta_min) * (1 + math.cos(math.pi * progress)) / 2


class PolyLR(LRScheduler):
    """Polynomial decay from base_lr to 0 over T_max epochs (nnU-Net's schedule, power 0.9),
    with optional linear warm-up.

    Without warm-up (as torch.optim.lr_scheduler.PolynomialLR(total_iters=T_max, power)):
        lr(e) = base_lr · (1 − min(e, T_max) / T_max)^power
    With W = warmup_epochs > 0, the first W epochs ramp up linearly and the decay covers the
    remaining T_max − W epochs (PyTorch's SequentialLR of LinearLR(start_factor=1/(W+1),
    total_iters=W) and PolynomialLR(total_iters=T_max − W, power)):
        lr(e) = base_lr · (e + 1) / (W + 1)                                  for e < W
        lr(e) = base_lr · (1 − min(e − W, T_max − W) / (T_max − W))^power     otherwise
    The last epoch of a T_max-epoch run (e = T_max − 1) still has a small positive rate.
    """

    def __init__(self, optimizer, T_max, power=0.9, warmup_epochs=0):
        self.T_max = _check_int("PolyLR", "T_max", T_max, 1)
        self.power = _check_number("PolyLR", "power", power)
        self.warmup_epochs = _check_int("PolyLR", "warmup_epochs", warmup_epochs, 0)
        if self.warmup_epochs >= self.T_max:
            raise ValueError(f"PolyLR: warmup_epochs ({warmup_epochs}) must be smaller than T_max ({T_max})")
        super().__init__(optimizer)

    def lr_at(self, base_lr, epoch):
        warmup = self.warmup_epochs
        if epoch < warmup:
            return base_lr * (epoch + 1) / (warmup + 1)
        span = self.T_max - warmup
        return base_lr * (1 - min(epoch - warmup, span) / span) ** self.power
