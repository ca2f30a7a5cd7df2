"""Widening a pretrained 3-channel input convolution (ResNet stem, Swin patch embedding) to the
4 channels of object-aware input (RGB + object mask)."""
import torch

INIT_MODES = ("zero", "mean", "random")


def widen_input_weight(weight: torch.Tensor, in_channels: int, init: str, random_weight: torch.Tensor = None):
    """Weight of a conv with ``in_channels`` inputs built from a pretrained one with fewer.

    Args:
        weight: (O, C, kh, kw) pretrained weight, C < in_channels.
        init: ``"zero"``: pretrained channels kept, extra channels 0 (the widened conv computes the
            pretrained function at init); ``"mean"``: extra channels = mean of the pretrained ones
            over the channel axis; ``"random"``: the model's own initialisation for the whole conv
            (the pretrained weight is dropped).
        random_weight: (O, in_channels, kh, kw), the model's current weight; needed for "random".
    Returns:
        (O, in_channels, kh, kw).
    """
    if init not in INIT_MODES:
        raise ValueError(f"INPUT.OBJECT_MASK.INIT must be one of {INIT_MODES}, got {init!r}")
    extra = in_channels - weight.shape[1]
    if weight.dim() != 4 or extra <= 0:
        raise ValueError(f"cannot widen a weight of shape {tuple(weight.shape)} to {in_channels} input channels")
    if init == "random":
        if random_weight is None or random_weight.shape[1] != in_channels:
            raise ValueError("init='random' needs the model's own weight with the target channel count")
        return random_weight.detach().clone()
    if init == "zero":
        fill = weight.new_zeros((weight.shape[0], extra) + tuple(weight.shape[2:]))
    else:
        fill = weight.mean(dim=1, keepdim=True).expand(-1, extra, -1, -1)
    return torch.cat([weight, fill], dim=1)
