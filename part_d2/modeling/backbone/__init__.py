"""Backbones of part_d2; importing registers ``D2SwinTransformer`` in ``BACKBONE_REGISTRY``.

detectron2's ResNet (``build_resnet_backbone``) needs no wrapper: its stem already takes
``len(MODEL.PIXEL_MEAN)`` input channels.
"""
from .input_channels import INIT_MODES, widen_input_weight
from .swin import D2SwinTransformer

__all__ = ["D2SwinTransformer", "INIT_MODES", "widen_input_weight"]
