"""The source article's network (../shared/seed/article.zh.md, §5 "源代码详细实现"), in tinyseg.

The article prints a Keras listing of a "U-Net" for 256×256×1 images. Re-expressed here
(σ = ReLU, ∗ = 3×3 'same' convolution, docs/math/convolution.md; N = nearest 2×
upsampling, N(x)[i,j] = x[⌊i/2⌋,⌊j/2⌋]; P = 2×2 max-pool; [a, b] = concatenation
along channels, a first, as Keras's ``Concatenate()([x, skip])``):

    conv_block(x, f)          B_f(x) = σ(W₂ ∗ σ(W₁ ∗ x + b₁) + b₂)
    upconv_block(x, skip, f)  B_f([N(x), skip])

    conv1 = B_64(x)      pool1 = P(conv1)          256² ->  64 ch @ 256², then 128²
    conv2 = B_128(pool1) pool2 = P(conv2)          128 ch @ 128², then 64²
    conv3 = B_256(pool2) pool3 = P(conv3)          256 ch @ 64²,  then 32²
    conv4 = B_512(pool3) pool4 = P(conv4)          512 ch @ 32²,  then 16²
    up5 = upconv_block(pool4, conv3, 256)          N(pool4) is 32², conv3 is 64²: fails
    conv5 = B_256(up5)
    up6 = upconv_block(conv5, conv2, 128)   conv6 = B_128(up6)
    up7 = upconv_block(conv6, conv1, 64)    conv7 = B_64(up7)
    output = sigmoid(W_h · conv7 + b_h)            (1×1 conv, 1 channel)

As printed (``as_written=True``) it cannot run at any input size: N(pool4) has H/8
rows and conv3 has H/4, so the first concatenation fails. The minimal repair (the
default) feeds conv4 instead of pool4 into up5: conv4 becomes the bottom of a
three-level U-Net, pool4 is dropped, and the output has the input's size (H must be a
multiple of 8). Two more departures from Ronneberger et al. (2015) are kept, because
they are the article's: there is no bottleneck block below the last pooling, and each
decoder level runs four 3×3 convolutions (two inside upconv_block, two in the
conv_block after it), not two. The paper-faithful network is
``UNet(base_channels=64, depth=4)``. The derivation, the parameter count and the
shapes are in docs/math/unet.md, section "The article's network".

The sigmoid is not a layer here: like ``UNet``, the model returns the logits
z = W_h · conv7 + b_h and the loss applies sigmoid and binary cross-entropy together
(``F.binary_cross_entropy_with_logits``), the same function computed without the
overflow of log(sigmoid(z)); ``predict_proba(z)`` = sigmoid(z) is the article's output.
"""
from __future__ import annotations

import numpy as np

from .. import functional as F
from .. import nn
from ..tensor import Tensor, no_grad


class SeedConvBlock(nn.Module):
    """The article's conv_block: B(x) = σ(W₂ ∗ σ(W₁ ∗ x + b₁) + b₂), two 3×3 'same' convs.

    (N, in_channels, H, W) -> (N, filters, H, W); 9·C_in·f + f + 9·f·f + f parameters.
    """

    def __init__(self, in_channels, filters):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, filters, 3, padding="same")
        self.conv2 = nn.Conv2d(filters, filters, 3, padding="same")

    def forward(self, x):
        return F.relu(self.conv2(F.relu(self.conv1(x))))


class SeedUpConvBlock(nn.Module):
    """The article's upconv_block: B([N(x), skip]), nearest 2× upsampling of x, then
    concatenation with the skip (x first), then a conv_block.

    x (N, C_x, h, w), skip (N, C_s, 2h, 2w) -> (N, filters, 2h, 2w). A skip of any other
    size cannot be concatenated: the ValueError names both shapes and the block.
    """

    def __init__(self, in_channels, skip_channels, filters, name):
        super().__init__()
        self.name = name
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.block = SeedConvBlock(in_channels + skip_channels, filters)

    def forward(self, x, skip):
        up = self.upsample(x)
        try:
            joined = F.concat([up, skip], axis=1)
        except ValueError as error:
            (_, _, h, w), (_, _, hs, ws) = up.shape, skip.shape
            raise ValueError(f"{self.name}: cannot concatenate the upsampled input, {h}×{w} "
                             f"(shape {tuple(up.shape)}), with its skip, {hs}×{ws} (shape {tuple(skip.shape)}); "
                             f"the skip must have the upsampled input's height and width ({error})") from error
        return self.block(joined)


class SeedUNet(nn.Module):
    """The article's U-Net (§5): (N, in_channels, H, W) -> logits (N, 1, H, W).

    in_channels    channels of the input (the article: 1)
    base_channels  filters of conv1; conv2..conv4 have 2, 4, 8 times as many (the article: 64)
    as_written     False: the minimal repair, up5 = upconv_block(conv4, conv3, ·) (H, W
                   multiples of 8); True: the listing as printed, up5 =
                   upconv_block(pool4, conv3, ·), whose forward raises a ValueError at
                   the first concatenation for every input size

    Both variants have the same parameters (a concatenation's channel count does not
    depend on the spatial size): 9,330,945 at base_channels=64 (docs/math/unet.md).
    """

    def __init__(self, in_channels=1, base_channels=64, as_written=False):
        super().__init__()
        for name, value in (("in_channels", in_channels), ("base_channels", base_channels)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"SeedUNet: {name} expected a positive integer, got {value!r}")
        if not isinstance(as_written, bool):
            raise TypeError(f"SeedUNet: as_written expected True or False, got {as_written!r}")
        f1, f2, f3, f4 = (base_channels * m for m in (1, 2, 4, 8))
        self.config = dict(in_channels=in_channels, base_channels=base_channels, as_written=as_written)
        self.in_channels, self.out_channels, self.as_written = in_channels, 1, as_written
        self.padding = "same"
        # The repaired net pools three times on the way to its bottom (conv4); the listing
        # pools a fourth time (pool4) and so asks for sides divisible by 16.
        self.depth = 4 if as_written else 3
        self.conv1 = SeedConvBlock(in_channels, f1)
        self.conv2 = SeedConvBlock(f1, f2)
        self.conv3 = SeedConvBlock(f2, f3)
        self.conv4 = SeedConvBlock(f3, f4)
        self.pool = nn.MaxPool2d(2)
        self.up5 = SeedUpConvBlock(f4, f3, f3, f"up5 = upconv_block({'pool4' if as_written else 'conv4'}, conv3, {f3})")
        self.conv5 = SeedConvBlock(f3, f3)
        self.up6 = SeedUpConvBlock(f3, f2, f2, f"up6 = upconv_block(conv5, conv2, {f2})")
        self.conv6 = SeedConvBlock(f2, f2)
        self.up7 = SeedUpConvBlock(f2, f1, f1, f"up7 = upconv_block(conv6, conv1, {f1})")
        self.conv7 = SeedConvBlock(f1, f1)
        self.head = nn.Conv2d(f1, 1, 1)

    def forward(self, x, trace=None):
        """Logits (N, 1, H, W). ``trace``, if a list, receives (layer name, output shape)
        pairs in the order they are computed (used by summary())."""
        record = trace.append if trace is not None else (lambda item: None)

        def step(name, value):
            record((name, tuple(value.shape)))
            return value

        conv1 = step("conv1", self.conv1(x))
        conv2 = step("conv2", self.conv2(step("pool1", self.pool(conv1))))
        conv3 = step("conv3", self.conv3(step("pool2", self.pool(conv2))))
        conv4 = step("conv4", self.conv4(step("pool3", self.pool(conv3))))
        if self.as_written:
            bottom = step("pool4", self.pool(conv4))
            try:
                up5 = self.up5(bottom, conv3)
            except ValueError as error:
                raise ValueError(f"SeedUNet(as_written=True), the article's §5 listing as printed: {error}. "
                                 f"pool4 has 1/16 of the input's side, so upsampled once it has 1/8, while conv3 "
                                 f"has 1/4: no input size passes. unet_seed() is the minimal repair "
                                 f"(up5 = upconv_block(conv4, conv3, 256)); docs/math/unet.md explains both") from error
        else:
            up5 = self.up5(conv4, conv3)
        step("up5", up5)
        conv5 = step("conv5", self.conv5(up5))
        conv6 = step("conv6", self.conv6(step("up6", self.up6(conv5, conv2))))
        conv7 = step("conv7", self.conv7(step("up7", self.up7(conv6, conv1))))
        return step("head", self.head(conv7))

    # ----- sizes (the interface tinyseg.inference and the Trainer expect of a model)
    def output_size(self, size: int) -> int | None:
        """Output side for an input side ``size`` (the same), or None if the network cannot take it."""
        if self.as_written:
            return None
        return size if size > 0 and size % 8 == 0 else None

    def check_input_size(self, height: int, width: int) -> None:
        if self.as_written:
            return          # forward() itself explains why no size passes
        bad = sorted({s for s in (height, width) if self.output_size(s) is None})
        if bad:
            hints = ", ".join(f"{s} -> try {[max(8, s - s % 8), s - s % 8 + 8]}" for s in bad)
            raise ValueError(f"SeedUNet: input size {height}×{width} cannot pass through this network; each side "
                             f"must be a multiple of 8 (three 2×2 poolings) ({hints})")

    # ----- inspection
    def summary(self, input_size=(1, 1, 256, 256)) -> str:
        """A table of layer, output shape and parameter count, like Keras's model.summary()."""
        self.check_input_size(*input_size[2:])
        trace = []
        was_training = self.training
        self.eval()
        try:
            with no_grad():
                self.forward(Tensor(np.zeros(input_size, dtype=np.float32)).to(self.device), trace=trace)
        finally:
            self.train(was_training)
        params = {name: module.num_parameters() for name, module in self.named_children()}
        lines = [f"{'layer':<10}{'output shape':<24}{'params':>12}", "-" * 46]
        for name, shape in trace:
            lines.append(f"{name:<10}{str(shape):<24}{params.get(name, 0):>12,}")
        lines += ["-" * 46, f"{'total':<34}{self.num_parameters():>12,}"]
        return "\n".join(lines)

    @property
    def device(self):
        return self.head.weight.device

    def predict_proba(self, logits: Tensor) -> Tensor:
        """The article's output layer: p = sigmoid(z) from the logits z."""
        return F.sigmoid(logits)

