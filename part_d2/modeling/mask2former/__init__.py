"""Mask2Former for part_d2; importing registers ``PartMask2Former`` and
``PartDistillationMask2Former`` and ``SelfSupervisedPartMask2Former`` in ``META_ARCH_REGISTRY`` and
the pixel/transformer decoders in their part_d2 registries."""
from .criterion import SetCriterion
from .head import MaskFormerHead
from .inference import instance_inference
from .matcher import HungarianMatcher
from .meta_arch import PartMask2Former, build_criterion
from .part_classifier import PartDistillationMask2Former
from .pixel_decoder import PIXEL_DECODER_REGISTRY, MSDeformAttnPixelDecoder
from .self_supervised import SelfSupervisedPartMask2Former
from .transformer_decoder import TRANSFORMER_DECODER_REGISTRY, MultiScaleMaskedTransformerDecoder

__all__ = [
    "HungarianMatcher",
    "MSDeformAttnPixelDecoder",
    "MaskFormerHead",
    "MultiScaleMaskedTransformerDecoder",
    "PIXEL_DECODER_REGISTRY",
    "PartDistillationMask2Former",
    "PartMask2Former",
    "SelfSupervisedPartMask2Former",
    "SetCriterion",
    "TRANSFORMER_DECODER_REGISTRY",
    "build_criterion",
    "instance_inference",
]
