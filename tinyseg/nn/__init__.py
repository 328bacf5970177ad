"""Layers and models: Module, Parameter and the layers built on tinyseg.functional.

    import tinyseg.nn as nn
    block = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
"""
from . import init
from .module import Buffer, IncompatibleKeys, Module, Parameter
from .layers import (AvgPool2d, BatchNorm2d, Conv2d, ConvTranspose2d, Dropout, Identity, InstanceNorm2d, LeakyReLU,
                     Linear, MaxPool2d, ReLU, Sequential, Sigmoid, Tanh, Upsample)

__all__ = ["init", "Module", "Parameter", "Buffer", "IncompatibleKeys", "Conv2d", "ConvTranspose2d", "Linear",
           "MaxPool2d", "AvgPool2d", "Upsample", "BatchNorm2d", "InstanceNorm2d", "Dropout", "ReLU", "LeakyReLU", "Sigmoid",
           "Tanh", "Identity", "Sequential"]
