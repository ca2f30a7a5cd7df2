"""Shared tiny fixtures of the PartDistillation offline-stage tests (random R18 backbone)."""
import time

import torch

GROUPING_OPTS = ["MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
                 "MODEL.RESNETS.OUT_FEATURES", "['res3','res4']", "MODEL.BACKBONE.FREEZE_AT", "0",
                 "PART_DISTILLATION.PIXEL_GROUPING.IMAGE_SIZE", "160",
                 "PART_DISTILLATION.PIXEL_GROUPING.KMEANS_N_INIT", "2",
                 "PART_DISTILLATION.PIXEL_GROUPING.METRIC", "l2"]


def tiny_grouper(extra_opts=(), delay: float = 0.0):
    """A PixelGrouper over a seeded random ResNet-18 (res3 + res4); ``delay`` s of sleep per image."""
    from detectron2.modeling import build_backbone

    from part_d2.engine.setup import load_config
    from part_d2.modeling.pixel_grouping import PixelGrouper

    cfg = load_config("", GROUPING_OPTS + list(extra_opts))
    torch.manual_seed(0)
    grouper = PixelGrouper(cfg, backbone=build_backbone(cfg))
    if delay <= 0:
        return grouper

    def slow(*args):
        time.sleep(delay)
        return grouper(*args)

    return slow


def mini_records(n: int):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    import part_d2  # noqa: F401

    name = "synthetic_parts_mini_val_objects"
    return DatasetCatalog.get(name)[:n], list(MetadataCatalog.get(name).object_classes)
