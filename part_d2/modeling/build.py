"""Building part_d2 models: the one way to get a model from a config, with or without its weights."""
import logging
from typing import Optional

import torch
from detectron2.modeling import build_model

from part_d2.checkpoint import PartCheckpointer
from part_d2.utils.errors import ConfigError

logger = logging.getLogger(__name__)


def build_part_model(cfg) -> torch.nn.Module:
    """detectron2's ``build_model``; ``TEST.POST_AWARE.ENABLED`` needs a meta-architecture whose
    post-processing does it (``post_aware``: PartRCNN, PartMask2Former and its subclasses)."""
    model = build_model(cfg)
    if cfg.TEST.POST_AWARE.ENABLED and getattr(model, "post_aware", None) is None:
        raise ConfigError(
            f"TEST.POST_AWARE.ENABLED: MODEL.META_ARCHITECTURE {cfg.MODEL.META_ARCHITECTURE} has no post-aware "
            "post-processing; use PartRCNN (for GeneralizedRCNN) or a part_d2 Mask2Former"
        )
    return model


def load_part_model(cfg, weights: Optional[str] = None) -> torch.nn.Module:
    """:func:`build_part_model` with ``weights`` (default ``MODEL.WEIGHTS``) loaded by
    :class:`PartCheckpointer` (a 3-channel input conv widened per ``INPUT.OBJECT_MASK.INIT``)."""
    model = build_part_model(cfg)
    PartCheckpointer.from_config(cfg, model).load(cfg.MODEL.WEIGHTS if weights is None else weights)
    return model
