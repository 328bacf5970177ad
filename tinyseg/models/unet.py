"""U-Net (Ronneberger, Fischer & Brox, MICCAI 2015), built only from tinyseg.nn layers.

    level 0   x ─[block: 3×3 conv, ReLU, 3×3 conv, ReLU]──────────────skip₀────────┐
    level 1       └─ 2×2 max-pool ─[block ×2 channels]───────────skip₁──────┐       │
     ...                  └─ ...  ─[bottleneck: 2^depth × base channels]     │       │
                                    └─ up ×2, halve channels ─ concat(skip, ·) ─ block ─ ... ─ 1×1 conv → logits

Each conv computes y = ReLU(W ∗ x + b) (docs/math/convolution.md); "up" is either the
paper's 2×2 up-convolution (a transposed conv with stride 2) or an upsample followed
by a conv that halves the channels. With ``padding="valid"`` every 3×3 conv shrinks the
map by 2 pixels, exactly as in the paper (a 572² tile gives a 388² output), and each
skip is centre-cropped to the decoder's size before concatenation; with
``padding="same"`` sizes are kept and the input must be divisible by 2^depth.

The model returns logits: the sigmoid (1 output channel) or softmax (K channels) is
applied by the loss and by ``predict_proba``, which is numerically safer than a
sigmoid layer followed by a log in the loss.
"""
from __future__ import annotations

import numpy as np

from .. import functional as F
from .. import nn
from ..tensor import Tensor, no_grad
from .seed import SeedUNet


def _norm_layer(norm, channels):
    """The layer after each conv: BatchNorm2d, InstanceNorm2d with γ and β (as nnU-Net), or nothing."""
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    return nn.Identity()


def _conv_relu(conv, norm, x):
    """relu(norm(conv(x))); without a norm, the convolution, its bias and the ReLU run as one op
    (``F.conv2d_bias_relu``: the same values; on the CPU's "direct" kernel the bias and
    ReLU are applied as the outputs are stored, elsewhere one fused pass after the conv)."""
    if isinstance(norm, nn.Identity) and conv.bias is not None:
        return F.conv2d_bias_relu(x, conv.weight, conv.bias, stride=conv.stride, padding=conv.padding,
                                  dilation=conv.dilation)
    return F.relu(norm(conv(x)))


class ConvBlock(nn.Module):
    """Two 3×3 convolutions, each followed by [batch or instance norm] and ReLU ("plain"), or the same
    with an identity shortcut around them ("residual", He et al. 2016)."""

    def __init__(self, in_channels, out_channels, padding, norm=None, residual=False):
        super().__init__()
        pad = 1 if padding == "same" else 0
        self.residual = residual
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=pad, bias=norm is None)
        self.norm1 = _norm_layer(norm, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=pad, bias=norm is None)
        self.norm2 = _norm_layer(norm, out_channels)
        if residual:
            self.shortcut = (nn.Conv2d(in_channels, out_channels, 1, bias=False)
                             if in_channels != out_channels else nn.Identity())

    def forward(self, x):
        y = _conv_relu(self.conv1, self.norm1, x)
        if not self.residual:
            return _conv_relu(self.conv2, self.norm2, y)
        y = self.norm2(self.conv2(y))
        if self.residual:
            shortcut = self.shortcut(x)
            if shortcut.shape[2:] != y.shape[2:]:        # valid padding shrank y
                shortcut = F.center_crop(shortcut, y.shape[2:])
            y = y + shortcut
        return F.relu(y)


class Up(nn.Module):
    """×2 upsampling that halves the channels: the paper's 2×2 up-convolution, or an
    upsample (nearest / bilinear) followed by a conv (the Keras U-Net's UpSampling2D + Conv2D)."""

    def __init__(self, in_channels, out_channels, mode, kernel_size=3, padding="same"):
        super().__init__()
        self.mode = mode
        if mode == "transpose":
            self.conv = nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2)
        else:
            self.upsample = nn.Upsample(scale_factor=2, mode=mode)
            # A valid-padding U-Net must see no zero padding anywhere (that is what makes
            # overlap-tile prediction exact), so there the conv after the upsample is 1×1.
            self.conv = nn.Conv2d(in_channels, out_channels, kernel_size if padding == "same" else 1,
                                  padding="same")

    def forward(self, x):
        if self.mode == "transpose":
            return self.conv(x)
        return _conv_relu(self.conv, nn.Identity(), self.upsample(x))


class UNet(nn.Module):
    """U-Net for 2-D segmentation: (N, in_channels, H, W) -> logits (N, out_channels, H', W').

    in_channels   > 1 for multi-modal input (e.g. CT + PET, or RGB)
    out_channels  1 for a binary task (sigmoid), K for K classes (softmax)
    base_channels channels of the first level; level i has base·2^i, the bottleneck base·2^depth
    depth         number of 2×2 max-pool steps
    padding       "same" keeps sizes; "valid" is the paper's unpadded convs (572 -> 388); with
                  upsample "nearest" the conv after each upsample is then 1×1, so that no zero
                  padding is seen anywhere ("bilinear" still clamps at map edges, so only
                  "transpose" and "nearest" valid nets make overlap-tile prediction exact)
    upsample      "transpose" (the paper's up-conv), "nearest" or "bilinear" (+ conv)
    norm          None, "batch" (BatchNorm2d after every conv) or "instance" (InstanceNorm2d with
                  weight and bias after every conv: nnU-Net's choice; independent of the batch)
    block         "plain" (VGG-style) or "residual" (ResNet-style)
    dropout       dropout probability at the end of the contracting path (the paper's choice)
    """

    def __init__(self, in_channels=1, out_channels=1, base_channels=64, depth=4, padding="same",
                 upsample="nearest", norm=None, block="plain", dropout=0.0, up_kernel_size=3):
        super().__init__()
        _check_choice("padding", padding, ("same", "valid"))
        _check_choice("upsample", upsample, ("nearest", "bilinear", "transpose"))
        _check_choice("norm", norm, (None, "batch", "instance"))
        _check_choice("block", block, ("plain", "residual"))
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels),
                            ("base_channels", base_channels), ("depth", depth)):
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"UNet: {name} expected a positive integer, got {value!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"UNet: dropout expected a probability in [0, 1), got {dropout!r}")
        self.config = dict(in_channels=in_channels, out_channels=out_channels, base_channels=base_channels,
                           depth=depth, padding=padding, upsample=upsample, norm=norm, block=block,
                           dropout=dropout, up_kernel_size=up_kernel_size)
        self.in_channels, self.out_channels, self.depth, self.padding = in_channels, out_channels, depth, padding

        channels = [base_channels * 2 ** level for level in range(depth + 1)]
        residual = block == "residual"
        self.encoder = nn.Sequential(*[
            ConvBlock(in_channels if level == 0 else channels[level - 1], channels[level], padding, norm, residual)
            for level in range(depth + 1)])
        self.pool = nn.MaxPool2d(2)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.ups = nn.Sequential(*[Up(channels[level + 1], channels[level], upsample, up_kernel_size, padding)
                                   for level in reversed(range(depth))])
        self.decoder = nn.Sequential(*[ConvBlock(2 * channels[level], channels[level], padding, norm, residual)
                                       for level in reversed(range(depth))])
        self.head = nn.Conv2d(channels[0], out_channels, 1)

    def forward(self, x, trace=None):
        """``trace``, if a list, receives (layer name, output shape) pairs (used by summary())."""
        record = trace.append if trace is not None else (lambda item: None)
        skips = []
        for level, block in enumerate(self.encoder):
            if level > 0:
                x = self.pool(x)
                record((f"pool{level}", x.shape))
            x = block(x)
            if level >= self.depth - 1:      # the paper drops out at the end of the contracting path
                x = self.dropout(x)
            record((f"encoder.{level}", x.shape))
            skips.append(x)
        skips.pop()                          # the bottleneck output is not a skip
        for i, (up, block) in enumerate(zip(self.ups, self.decoder)):
            x = up(x)
            record((f"ups.{i}", x.shape))
            skip = skips.pop()
            if skip.shape[2:] != x.shape[2:]:
                skip = F.center_crop(skip, x.shape[2:])
            x = block(F.concat([skip, x], axis=1))
            record((f"decoder.{i}", x.shape))
        x = self.head(x)
        record(("head", x.shape))
        return x

    # ----- sizes
    def output_size(self, size: int) -> int | None:
        """Output side length for an input side ``size``, or None if the network cannot take it."""
        if self.padding == "same":
            return size if size % 2 ** self.depth == 0 and size > 0 else None
        s = size
        for _ in range(self.depth):          # down: two valid 3×3 convs, then pool (must divide evenly)
            s -= 4
            if s <= 0 or s % 2:
                return None
            s //= 2
        s -= 4                               # bottleneck
        for _ in range(self.depth):
            s = 2 * s - 4
        return s if s > 0 else None

    def valid_sizes_near(self, size: int, count: int = 2) -> list[int]:
        """The input sizes closest to ``size`` that the network can take."""
        below = [s for s in range(size, 0, -1) if self.output_size(s)][:count]
        above = [s for s in range(size + 1, size + 64 * 2 ** self.depth) if self.output_size(s)][:count]
        return sorted(below + above)

    def check_input_size(self, height: int, width: int) -> None:
        bad = [s for s in (height, width) if self.output_size(s) is None]
        if bad:
            hints = ", ".join(f"{s} -> try {self.valid_sizes_near(s)}" for s in sorted(set(bad)))
            rule = (f"a multiple of 2^depth = {2 ** self.depth}" if self.padding == "same"
                    else "a size whose valid convolutions and poolings divide evenly")
            raise ValueError(f"UNet: input size {height}×{width} cannot pass through this network; each side must "
                             f"be {rule} ({hints})")

    # ----- inspection
    def summary(self, input_size=(1, 1, 256, 256)) -> str:
        """A table of layer, output shape and parameter count, like Keras's model.summary()."""
        trace = []
        was_training = self.training
        self.eval()
        with no_grad():
            x = Tensor(np.zeros(input_size, dtype=np.float32))
            self.check_input_size(*input_size[2:])
            self.forward(x.to(self.device), trace=trace)
        self.train(was_training)
        params = {name: sum(p.size for p in module.parameters()) for name, module in self._summary_modules()}
        lines = [f"{'layer':<14}{'output shape':<24}{'params':>12}", "-" * 50]
        for name, shape in trace:
            lines.append(f"{name:<14}{str(tuple(shape)):<24}{params.get(name, 0):>12,}")
        lines += ["-" * 50, f"{'total':<38}{self.num_parameters():>12,}"]
        return "\n".join(lines)

    def _summary_modules(self):
        for i, block in enumerate(self.encoder):
            yield f"encoder.{i}", block
        for i, (up, block) in enumerate(zip(self.ups, self.decoder)):
            yield f"ups.{i}", up
            yield f"decoder.{i}", block
        yield "head", self.head

    @property
    def device(self):
        return self.head.weight.device

    def predict_proba(self, logits: Tensor) -> Tensor:
        """Probabilities from logits: sigmoid for one output channel, softmax over channels otherwise."""
        return F.sigmoid(logits) if self.out_channels == 1 else F.softmax(logits, axis=1)


def unet_seed(as_written=False, in_channels=1, base_channels=64) -> SeedUNet:
    """The source article's network (§5 of ../shared/seed/article.zh.md), in tinyseg.

    ``unet_seed()`` is the minimal repair of the listing (up5 = upconv_block(conv4,
    conv3, 256): a three-level U-Net whose bottom is conv4, 9,330,945 parameters);
    ``unet_seed(as_written=True)`` is the listing as printed, whose forward pass fails at
    the first concatenation (pool4 upsampled to 32×32 against conv3's 64×64 on a 256²
    input). ``base_channels`` < 64 gives the same wiring, narrower, for quick runs.
    The model returns logits; ``predict_proba`` applies the article's sigmoid. See
    SeedUNet in models/seed.py and docs/math/unet.md, "The article's network".
    """
    return SeedUNet(in_channels=in_channels, base_channels=base_channels, as_written=as_written)


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"UNet: {name} expected one of {', '.join(map(repr, choices))}, got {value!r}")
