"""Object conditioning of the part decoder, D^p(f^p, f^o) of the PartDistillation paper.

The released PartDistillation code does not condition its part decoder on the object; the paper
does. part_d2 offers two ways, both off by default:

- the object mask as a 4th input channel (``INPUT.OBJECT_MASK.ENABLED``, handled by the dataset
  mapper and the 4-channel stem), which conditions everything from the backbone on;
- ``PART_DISTILLATION.OBJECT_CONDITIONING "feature"`` (this module): a learned offset is
  added to every pixel-decoder level and to the mask features, one offset inside the object and
  another outside it, weighted by the fraction of each feature cell the object covers. The
  offsets start at zero, so a model initialised from an unconditioned checkpoint starts out
  unchanged, and the backbone and pixel decoder can stay frozen.
"""
from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import nn


def object_fraction(object_masks: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Fraction of each cell of a ``size`` grid covered by the object.

    Args:
        object_masks: (N, H, W) bool or float in [0, 1], at the padded input resolution.
        size: (h, w) of the feature map.
    Returns:
        (N, 1, h, w) float in [0, 1].
    """
    return F.adaptive_avg_pool2d(object_masks[:, None].float(), size)


class FeatureObjectConditioning(nn.Module):
    """Adds ``m * inside + (1 - m) * outside`` to each decoder level and to the mask features, with
    ``m`` the object fraction of each cell and zero-initialised learned offsets."""

    def __init__(self, level_channels: int, mask_dim: int, num_levels: int = 3):
        """
        Args:
            level_channels: channels of the pixel decoder's levels (``SEM_SEG_HEAD.CONVS_DIM``).
            mask_dim: channels of the mask features (``SEM_SEG_HEAD.MASK_DIM``).
            num_levels: number of decoder levels.
        """
        super().__init__()
        self.level_offsets = nn.Parameter(torch.zeros(num_levels, 2, level_channels))
        self.mask_offsets = nn.Parameter(torch.zeros(2, mask_dim))

    @staticmethod
    def _offset(x: torch.Tensor, fraction: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """x: (N, C, h, w); fraction: (N, 1, h, w); offsets: (2, C) = (inside, outside)."""
        inside = offsets[0][None, :, None, None]
        outside = offsets[1][None, :, None, None]
        return x + fraction * inside + (1 - fraction) * outside

    def forward(
        self, levels: List[torch.Tensor], mask_features: torch.Tensor, object_masks: torch.Tensor
    ) -> Tuple[List[torch.Tensor], torch.Tensor]:
        """
        Args:
            levels: the decoder levels, each (N, C, h_l, w_l).
            mask_features: (N, mask_dim, H/4, W/4).
            object_masks: (N, H, W) at the padded input resolution.
        Returns:
            the conditioned levels and mask features, same shapes.
        """
        if len(levels) != self.level_offsets.shape[0]:
            raise ValueError(f"expected {self.level_offsets.shape[0]} decoder levels, got {len(levels)}")
        levels = [
            self._offset(x, object_fraction(object_masks, x.shape[-2:]).to(x.dtype), self.level_offsets[i])
            for i, x in enumerate(levels)
        ]
        fraction = object_fraction(object_masks, mask_features.shape[-2:]).to(mask_features.dtype)
        return levels, self._offset(mask_features, fraction, self.mask_offsets)
