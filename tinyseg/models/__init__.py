"""Models built from tinyseg.nn layers."""
from .seed import SeedUNet
from .unet import UNet, unet_seed


def from_checkpoint(path):
    """(model, checkpoint) from a training checkpoint: the U-Net (or unet_seed's network) rebuilt from its stored
    configuration, with the stored weights loaded, in eval mode. Weights holding NaN or
    Inf are refused (ValueError naming the first such tensor)."""
    from ..serialization import load, require_finite
    state = load(path)
    if "model" not in state or "model_config" not in state:
        raise ValueError(f"{path}: not a tinyseg training checkpoint (expected 'model' and 'model_config' entries, "
                         f"found {sorted(state)})")
    require_finite(state["model"], path)
    config = state["model_config"]
    # The article's network (SeedUNet) is the one whose configuration says as_written.
    model = SeedUNet(**config) if "as_written" in config else UNet(**config)
    model.load_state_dict(state["model"])
    model.eval()
    return model, state


__all__ = ["UNet", "SeedUNet", "unet_seed", "from_checkpoint"]
