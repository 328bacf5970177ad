"""Models built from tinyseg.nn layers."""
from .unet import UNet, unet_seed

__all__ = ["UNet", "unet_seed"]
