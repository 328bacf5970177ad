"""Weight initialisation schemes, filling a Tensor's array in place (as torch.nn.init).

Every draw comes from ``tinyseg.random.generator()`` on the CPU, in float64, and is then
cast to the tensor's dtype and copied to its device, so ``ts.manual_seed(s)`` gives the
same model on every device and in both precisions. The variance arguments behind
Kaiming (He) and Xavier (Glorot) initialisation are in docs/math/layers_and_optimizers.md,
section "Initialisation".
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from .. import backend
from .. import random as ts_random
from ..tensor import Tensor

_GAINS = {"linear": 1.0, "identity": 1.0, "conv2d": 1.0, "conv_transpose2d": 1.0, "sigmoid": 1.0,
          "tanh": 5.0 / 3.0, "relu": math.sqrt(2.0), "selu": 3.0 / 4.0}


def _check_tensor(fn: str, tensor) -> None:
    if not isinstance(tensor, Tensor):
        raise TypeError(f"{fn}: argument 'tensor' expected a Tensor or Parameter, got {type(tensor).__name__}")
    if not np.issubdtype(tensor.dtype, np.floating):
        raise TypeError(f"{fn}: argument 'tensor' expected a floating-point tensor, got dtype {tensor.dtype}")


def _fill(tensor: Tensor, values: np.ndarray) -> Tensor:
    """Write CPU float64 ``values`` into ``tensor`` in its dtype, on its device."""
    xp = backend.get_array_module(tensor.data)
    tensor.data[...] = xp.asarray(values.astype(tensor.dtype, copy=False))
    return tensor


def calculate_gain(nonlinearity: str, param=None) -> float:
    """The factor g that keeps activations' variance through ``nonlinearity`` (as PyTorch).

    relu: √2 (half of a zero-mean input is zeroed, halving E[y²]); leaky_relu with
    slope a: √(2 / (1 + a²)); tanh: 5/3; linear, conv, sigmoid: 1; selu: 3/4.
    """
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else param
        if isinstance(slope, bool) or not isinstance(slope, numbers.Real):
            raise TypeError(f"calculate_gain: leaky_relu slope expected a real number, got {param!r}")
        return math.sqrt(2.0 / (1.0 + slope ** 2))
    if nonlinearity not in _GAINS:
        raise ValueError(f"calculate_gain: unknown nonlinearity {nonlinearity!r}, expected one of "
                         f"{sorted(_GAINS) + ['leaky_relu']}")
    return _GAINS[nonlinearity]


def calculate_fan_in_and_fan_out(tensor) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight, as PyTorch computes them.

    Linear weight (out, in): fan_in = in, fan_out = out. Conv weight (Cout, Cin, kH, kW):
    fan_in = Cin·kH·kW, fan_out = Cout·kH·kW. A ConvTranspose2d weight is stored
    (Cin, Cout, kH, kW), so the same rule gives fan_in = Cout·kH·kW, fan_out = Cin·kH·kW.
    """
    shape = tuple(tensor.shape)
    if len(shape) < 2:
        raise ValueError(f"calculate_fan_in_and_fan_out: expected a tensor with at least 2 dimensions, "
                         f"got shape {shape}")
    receptive_field = math.prod(shape[2:])
    return shape[1] * receptive_field, shape[0] * receptive_field


def _fan(tensor, mode: str) -> int:
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"kaiming init: argument 'mode' expected 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = calculate_fan_in_and_fan_out(tensor)
    return fan_in if mode == "fan_in" else fan_out


def kaiming_normal_(tensor, a=0.0, mode="fan_in", nonlinearity="leaky_relu") -> Tensor:
    """Fill with N(0, std²), std = gain / √fan (He et al. 2015); ``a`` is the leaky_relu slope.

    With the defaults (a = 0) the gain is √2, i.e. std = √(2 / fan_in): the choice for
    ReLU networks, which keeps the variance of activations constant from layer to layer.
    """
    _check_tensor("kaiming_normal_", tensor)
    std = calculate_gain(nonlinearity, a) / math.sqrt(_fan(tensor, mode))
    return _fill(tensor, ts_random.generator().normal(0.0, std, size=tensor.shape))


def kaiming_uniform_(tensor, a=0.0, mode="fan_in", nonlinearity="leaky_relu") -> Tensor:
    """Fill with U(−b, b), b = gain · √(3 / fan): the same variance as ``kaiming_normal_``."""
    _check_tensor("kaiming_uniform_", tensor)
    bound = calculate_gain(nonlinearity, a) * math.sqrt(3.0 / _fan(tensor, mode))
    return _fill(tensor, ts_random.generator().uniform(-bound, bound, size=tensor.shape))


def xavier_uniform_(tensor, gain=1.0) -> Tensor:
    """Fill with U(−b, b), b = gain · √(6 / (fan_in + fan_out)) (Glorot & Bengio 2010)."""
    _check_tensor("xavier_uniform_", tensor)
    fan_in, fan_out = calculate_fan_in_and_fan_out(tensor)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return _fill(tensor, ts_random.generator().uniform(-bound, bound, size=tensor.shape))


def xavier_normal_(tensor, gain=1.0) -> Tensor:
    """Fill with N(0, std²), std = gain · √(2 / (fan_in + fan_out))."""
    _check_tensor("xavier_normal_", tensor)
    fan_in, fan_out = calculate_fan_in_and_fan_out(tensor)
    std = gain * math.sqrt(2.0 / (fan_in + fan_out))
    return _fill(tensor, ts_random.generator().normal(0.0, std, size=tensor.shape))


def normal_(tensor, mean=0.0, std=1.0) -> Tensor:
    _check_tensor("normal_", tensor)
    if std < 0:
        raise ValueError(f"normal_: argument 'std' expected a value >= 0, got {std}")
    return _fill(tensor, ts_random.generator().normal(mean, std, size=tensor.shape))


def uniform_(tensor, a=0.0, b=1.0) -> Tensor:
    _check_tensor("uniform_", tensor)
    if a > b:
        raise ValueError(f"uniform_: expected a <= b, got a={a}, b={b}")
    return _fill(tensor, ts_random.generator().uniform(a, b, size=tensor.shape))


def constant_(tensor, value) -> Tensor:
    _check_tensor("constant_", tensor)
    tensor.data[...] = value
    return tensor


def zeros_(tensor) -> Tensor:
    return constant_(tensor, 0)


def ones_(tensor) -> Tensor:
    return constant_(tensor, 1)
