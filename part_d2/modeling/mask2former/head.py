"""The Mask2Former head: pixel decoder followed by the transformer decoder."""
from typing import Callable, Dict, Optional

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from torch import nn

from .pixel_decoder import PIXEL_DECODER_REGISTRY
from .transformer_decoder import TRANSFORMER_DECODER_REGISTRY


class MaskFormerHead(nn.Module):
    """``pixel_decoder`` and ``predictor`` (the transformer decoder), named as in the official
    checkpoints."""

    @configurable
    def __init__(self, *, pixel_decoder: nn.Module, predictor: nn.Module):
        super().__init__()
        self.pixel_decoder = pixel_decoder
        self.predictor = predictor

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        if cfg.MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE != "multi_scale_pixel_decoder":
            raise ValueError(
                "MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE must be 'multi_scale_pixel_decoder', got "
                f"{cfg.MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE!r}"
            )
        head = cfg.MODEL.SEM_SEG_HEAD
        return {
            "pixel_decoder": PIXEL_DECODER_REGISTRY.get(head.PIXEL_DECODER_NAME)(cfg, input_shape),
            "predictor": TRANSFORMER_DECODER_REGISTRY.get(cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME)(
                cfg, head.CONVS_DIM
            ),
        }

    def forward(self, features: Dict[str, torch.Tensor], condition: Optional[Callable] = None) -> Dict:
        """
        Args:
            features: backbone outputs by name.
            condition: optional ``(levels, mask_features) -> (levels, mask_features)`` applied
                between the pixel decoder and the transformer decoder (e.g. object conditioning).
        Returns:
            the predictor's outputs plus ``"mask_features"`` (N, mask_dim, H/4, W/4).
        """
        mask_features, _, levels = self.pixel_decoder.forward_features(features)
        if condition is not None:
            levels, mask_features = condition(levels, mask_features)
        outputs = self.predictor(levels, mask_features)
        outputs["mask_features"] = mask_features
        return outputs
