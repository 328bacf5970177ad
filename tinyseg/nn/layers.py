"""Layers: Modules that own parameters (or a configuration) and call tinyseg.functional.

Each layer stores its weights as Parameters and its configuration as plain attributes;
``forward`` is one call to the op in tinyseg.functional, whose docstring gives the
equation. Arguments mean what they mean in PyTorch (same names, same weight layouts),
so a state_dict carries over by copying arrays.

Default initialisation (docs/math/layers_and_optimizers.md, "Initialisation"): weights
of Conv2d, ConvTranspose2d and Linear are Kaiming (He) normal with the ReLU gain,
std = √(2 / fan_in), fan_in computed as PyTorch does (``init.calculate_fan_in_and_fan_out``);
biases start at zero. This keeps the variance of activations constant through a stack
of ReLU layers (PyTorch's own default, Kaiming uniform with a = √5, divides it by 6 per
layer); it is the U-Net paper's choice and Keras's ``he_normal``.
"""
from __future__ import annotations

import numbers

import numpy as np

from .. import functional as F
from ..functional._checks import check_ndim, pair
from . import init
from .module import Buffer, Module, Parameter


def _positive_int(layer: str, name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{layer}: argument '{name}' expected a positive int, got {value!r}")
    if value < 1:
        raise ValueError(f"{layer}: argument '{name}' expected a positive int, got {value}")
    return int(value)


def _probability(layer: str, name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{layer}: argument '{name}' expected a real number in [0, 1], got {value!r}")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{layer}: argument '{name}' expected a value in [0, 1], got {value}")
    return float(value)


def _conv_padding(layer: str, padding):
    """An int, a pair, "valid" (no padding) or "same" (kept as a string for F.conv2d)."""
    if isinstance(padding, str):
        if padding not in ("same", "valid"):
            raise ValueError(f"{layer}: argument 'padding' expected an int, a pair of ints, 'same' or 'valid', "
                             f"got {padding!r}")
        return (0, 0) if padding == "valid" else padding
    return pair(layer, "padding", padding, minimum=0)


def _relu_kaiming_normal_(weight: Parameter) -> None:
    init.kaiming_normal_(weight, mode="fan_in", nonlinearity="relu")


# ----- convolutions

class Conv2d(Module):
    """2-D convolution: (N, Cin, H, W) -> (N, Cout, H', W'), weight (Cout, Cin, kH, kW), bias (Cout,).

    H' = ⌊(H + 2p − d·(k − 1) − 1) / s⌋ + 1; padding="same" keeps H (stride 1). See F.conv2d.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, bias=True):
        super().__init__()
        layer = "Conv2d"
        self.in_channels = _positive_int(layer, "in_channels", in_channels)
        self.out_channels = _positive_int(layer, "out_channels", out_channels)
        self.kernel_size = pair(layer, "kernel_size", kernel_size, minimum=1)
        self.stride = pair(layer, "stride", stride, minimum=1)
        self.padding = _conv_padding(layer, padding)
        self.dilation = pair(layer, "dilation", dilation, minimum=1)
        self.weight = Parameter(np.empty((self.out_channels, self.in_channels) + self.kernel_size, np.float32))
        self.bias = Parameter(np.empty(self.out_channels, np.float32)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _relu_kaiming_normal_(self.weight)
        if self.bias is not None:
            init.zeros_(self.bias)

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, stride=self.stride, padding=self.padding, dilation=self.dilation)

    def extra_repr(self):
        text = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            text += f", padding={self.padding!r}"
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        if self.bias is None:
            text += ", bias=False"
        return text


class ConvTranspose2d(Module):
    """Transposed convolution (the gradient of a conv w.r.t. its input), used to upsample.

    (N, Cin, H, W) -> (N, Cout, H'', W''), weight (Cin, Cout, kH, kW) as PyTorch, bias (Cout,),
    H'' = (H − 1)·s − 2p + d·(k − 1) + output_padding + 1. See F.conv_transpose2d.
    Kaiming init uses PyTorch's fan_in of this layout, Cout·kH·kW.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0,
                 bias=True, dilation=1):
        super().__init__()
        layer = "ConvTranspose2d"
        self.in_channels = _positive_int(layer, "in_channels", in_channels)
        self.out_channels = _positive_int(layer, "out_channels", out_channels)
        self.kernel_size = pair(layer, "kernel_size", kernel_size, minimum=1)
        self.stride = pair(layer, "stride", stride, minimum=1)
        self.padding = pair(layer, "padding", padding, minimum=0)
        self.output_padding = pair(layer, "output_padding", output_padding, minimum=0)
        self.dilation = pair(layer, "dilation", dilation, minimum=1)
        self.weight = Parameter(np.empty((self.in_channels, self.out_channels) + self.kernel_size, np.float32))
        self.bias = Parameter(np.empty(self.out_channels, np.float32)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _relu_kaiming_normal_(self.weight)
        if self.bias is not None:
            init.zeros_(self.bias)

    def forward(self, x):
        return F.conv_transpose2d(x, self.weight, self.bias, stride=self.stride, padding=self.padding,
                                  output_padding=self.output_padding, dilation=self.dilation)

    def extra_repr(self):
        text = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            text += f", padding={self.padding}"
        if self.output_padding != (0, 0):
            text += f", output_padding={self.output_padding}"
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        if self.bias is None:
            text += ", bias=False"
        return text


class Linear(Module):
    """y = x Wᵀ + b: (..., in_features) -> (..., out_features), weight (out, in) as PyTorch."""

    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        self.in_features = _positive_int("Linear", "in_features", in_features)
        self.out_features = _positive_int("Linear", "out_features", out_features)
        self.weight = Parameter(np.empty((self.out_features, self.in_features), np.float32))
        self.bias = Parameter(np.empty(self.out_features, np.float32)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _relu_kaiming_normal_(self.weight)
        if self.bias is not None:
            init.zeros_(self.bias)

    def forward(self, x):
        shape = tuple(x.shape)
        if len(shape) < 2 or shape[-1] != self.in_features:
            raise ValueError(f"Linear: argument 'x' expected shape (..., {self.in_features}) with at least "
                             f"2 dimensions, got {shape}")
        y = F.matmul(x, F.transpose(self.weight))
        return y if self.bias is None else y + self.bias

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


# ----- pooling and resizing

class _Pool2d(Module):
    """k×k pooling windows; the stride defaults to the kernel size (as PyTorch)."""

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        name = type(self).__name__
        self.kernel_size = pair(name, "kernel_size", kernel_size, minimum=1)
        self.stride = self.kernel_size if stride is None else pair(name, "stride", stride, minimum=1)
        self.padding = pair(name, "padding", padding, minimum=0)

    def forward(self, x):
        return self.pool(x, self.kernel_size, self.stride, self.padding)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class MaxPool2d(_Pool2d):
    """Max pooling over k×k windows (padding counts as −∞)."""

    pool = staticmethod(F.max_pool2d)


class AvgPool2d(_Pool2d):
    """Average pooling over k×k windows (padding zeros count in the divisor, as PyTorch's default)."""

    pool = staticmethod(F.avg_pool2d)


class Upsample(Module):
    """Upsample by an integer factor, "nearest" or "bilinear" (see F.upsample)."""

    def __init__(self, scale_factor=2, mode="nearest", align_corners=False):
        super().__init__()
        if mode not in ("nearest", "bilinear"):
            raise ValueError(f"Upsample: argument 'mode' expected 'nearest' or 'bilinear', got {mode!r}")
        if mode == "nearest" and align_corners:
            raise ValueError("Upsample: align_corners=True only applies to mode='bilinear'")
        self.scale_factor, self.mode, self.align_corners = scale_factor, mode, bool(align_corners)

    def forward(self, x):
        return F.upsample(x, self.scale_factor, self.mode, self.align_corners)

    def extra_repr(self):
        text = f"scale_factor={self.scale_factor}, mode={self.mode!r}"
        return text + (f", align_corners={self.align_corners}" if self.mode == "bilinear" else "")


# ----- normalisation and regularisation

class BatchNorm2d(Module):
    """Batch normalisation per channel of (N, C, H, W), with running statistics for evaluation.

    Parameters weight γ (ones) and bias β (zeros), shape (C,); buffers running_mean
    (zeros), running_var (ones) and num_batches_tracked (a counter). In training mode
    the batch statistics normalise and the running ones move towards them by
    ``momentum``; ``momentum=None`` makes them a plain average over all batches seen
    (factor 1/num_batches_tracked), as PyTorch. In evaluation mode the running
    statistics normalise. See F.batch_norm.
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True):
        super().__init__()
        self.num_features = _positive_int("BatchNorm2d", "num_features", num_features)
        if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not eps > 0:
            raise ValueError(f"BatchNorm2d: argument 'eps' expected a positive number, got {eps!r}")
        if momentum is not None:
            momentum = _probability("BatchNorm2d", "momentum", momentum)
        self.eps, self.momentum, self.affine = float(eps), momentum, bool(affine)
        channels = self.num_features
        self.weight = Parameter(np.ones(channels, np.float32)) if affine else None
        self.bias = Parameter(np.zeros(channels, np.float32)) if affine else None
        self.running_mean = Buffer(np.zeros(channels, np.float32))
        self.running_var = Buffer(np.ones(channels, np.float32))
        self.num_batches_tracked = Buffer(np.zeros((), np.int64))

    def reset_running_stats(self) -> None:
        init.zeros_(self.running_mean)
        init.ones_(self.running_var)
        self.num_batches_tracked.data[...] = 0

    def forward(self, x):
        check_ndim("BatchNorm2d", "x", x, 4, "(N, C, H, W)")
        if x.shape[1] != self.num_features:
            raise ValueError(f"BatchNorm2d: argument 'x' expected {self.num_features} channels (num_features), "
                             f"got shape {tuple(x.shape)}")
        momentum = self.momentum
        if self.training:
            self.num_batches_tracked.data += 1
            if momentum is None:
                momentum = 1.0 / int(self.num_batches_tracked.data)
        elif momentum is None:
            momentum = 0.0          # evaluation mode does not update the running statistics
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            training=self.training, momentum=momentum, eps=self.eps)

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}"


class InstanceNorm2d(Module):
    """Instance normalisation of (N, C, H, W): every image and channel over its own pixels.

    As PyTorch's InstanceNorm2d with track_running_stats=False: the statistics of the
    input itself normalise, in training and evaluation alike, so there are no buffers.
    ``affine`` (False by default, as PyTorch; nnU-Net and UNet(norm="instance") use True)
    adds the parameters weight γ (ones) and bias β (zeros), shape (C,). See F.instance_norm.
    """

    def __init__(self, num_features, eps=1e-5, affine=False):
        super().__init__()
        self.num_features = _positive_int("InstanceNorm2d", "num_features", num_features)
        if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not eps > 0:
            raise ValueError(f"InstanceNorm2d: argument 'eps' expected a positive number, got {eps!r}")
        self.eps, self.affine = float(eps), bool(affine)
        self.weight = Parameter(np.ones(self.num_features, np.float32)) if affine else None
        self.bias = Parameter(np.zeros(self.num_features, np.float32)) if affine else None

    def forward(self, x):
        check_ndim("InstanceNorm2d", "x", x, 4, "(N, C, H, W)")
        if x.shape[1] != self.num_features:
            raise ValueError(f"InstanceNorm2d: argument 'x' expected {self.num_features} channels (num_features), "
                             f"got shape {tuple(x.shape)}")
        return F.instance_norm(x, self.weight, self.bias, eps=self.eps)

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, affine={self.affine}"


class Dropout(Module):
    """Inverted dropout with probability p in training mode; the identity in evaluation mode."""

    def __init__(self, p=0.5):
        super().__init__()
        self.p = _probability("Dropout", "p", p)

    def forward(self, x):
        return F.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"


# ----- activations and containers

class ReLU(Module):
    def forward(self, x):
        return F.relu(x)


class LeakyReLU(Module):
    def __init__(self, negative_slope=0.01):
        super().__init__()
        if isinstance(negative_slope, bool) or not isinstance(negative_slope, numbers.Real):
            raise TypeError(f"LeakyReLU: argument 'negative_slope' expected a real number, got {negative_slope!r}")
        self.negative_slope = float(negative_slope)

    def forward(self, x):
        return F.leaky_relu(x, self.negative_slope)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"


class Sigmoid(Module):
    def forward(self, x):
        return F.sigmoid(x)


class Tanh(Module):
    def forward(self, x):
        return F.tanh(x)


class Identity(Module):
    """Returns its input unchanged (a placeholder where a layer is optional)."""

    def forward(self, x):
        return x


class Sequential(Module):
    """Calls its modules in order; indexable (``seq[0]``, ``seq[1:]``), iterable, with a length.

    The modules are registered under the names "0", "1", ..., so their parameters are
    named "0.weight", "1.bias", ... as in PyTorch.
    """

    def __init__(self, *modules):
        super().__init__()
        for index, module in enumerate(modules):
            if not isinstance(module, Module):
                raise TypeError(f"Sequential: argument {index} expected a Module, got {type(module).__name__}")
            self.register_module(str(index), module)

    def append(self, module: Module) -> "Sequential":
        if not isinstance(module, Module):
            raise TypeError(f"Sequential.append: expected a Module, got {type(module).__name__}")
        self.register_module(str(len(self)), module)
        return self

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(list(self._modules.values()))

    def __getitem__(self, index):
        modules = list(self._modules.values())
        if isinstance(index, slice):
            return Sequential(*modules[index])
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"Sequential: index expected an int or a slice, got {type(index).__name__}")
        if not -len(modules) <= index < len(modules):
            raise IndexError(f"Sequential: index {index} is out of range for {len(modules)} modules")
        return modules[index]

    def forward(self, x):
        for module in self._modules.values():
            x = module(x)
        return x
