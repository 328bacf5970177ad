"""The ops: functions on Tensors, each a forward with its backward right below it.

One file per family: math (elementwise, reductions, reshaping), activation, conv,
pool, resize (upsample), shape (concat, crop, pad), norm (batch norm, instance norm, dropout), loss.
"""
from .math import (abs, add, clip, div, exp, log, matmul, max, maximum, mean, mul, neg,
                   pow, reshape, sqrt, sub, sum, transpose)
from .activation import bias_relu, leaky_relu, log_softmax, relu, sigmoid, softmax, tanh
from .conv import conv2d, conv2d_bias_relu, conv_transpose2d
from .pool import avg_pool2d, max_pool2d
from .resize import upsample
from .shape import center_crop, concat, pad
from .norm import batch_norm, dropout, instance_norm
from .loss import (binary_cross_entropy_with_logits, cross_entropy, dice_loss, mse_loss,
                   unet_weight_map)
