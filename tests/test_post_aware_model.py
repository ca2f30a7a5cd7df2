"""Post-aware filtering is a step of the meta-architectures' post-processing (``post_aware``), not a
hook: PartMask2Former and PartRCNN crop their predictions to the input's object mask, and a
meta-architecture without it is refused."""
import pytest
import torch
from detectron2.config import get_cfg

import part_d2  # noqa: F401  (registers the meta-architectures)
from part_d2.config import add_part_d2_config
from part_d2.modeling.build import build_part_model
from part_d2.modeling.object_aware import PostAwareFilter
from part_d2.utils.errors import ConfigError


def _cfg(config, **over):
    cfg = get_cfg()
    add_part_d2_config(cfg)
    cfg.merge_from_file(config)
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "TEST.POST_AWARE.ENABLED", "True", "TEST.DETECTIONS_PER_IMAGE", "7",
                         "MODEL.RPN.POST_NMS_TOPK_TEST", "50", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"])
    for k, v in over.items():
        cfg.merge_from_list([k, v])
    return cfg


@pytest.mark.parametrize("config", ["configs/synthetic/mask2former_R_tiny_agnostic.yaml",
                                    "configs/synthetic/cascade_mask_rcnn_R_tiny_agnostic.yaml"])
def test_meta_architecture_crops_its_predictions_to_the_object_mask(config):
    torch.manual_seed(0)
    model = build_part_model(_cfg(config)).eval()
    assert isinstance(model.post_aware, PostAwareFilter)
    h, w = 64, 80
    object_mask = torch.zeros(h, w, dtype=torch.bool)
    object_mask[:, : w // 2] = True
    inputs = [{"image": torch.randint(0, 256, (3, h, w), dtype=torch.uint8), "height": h, "width": w,
               "object_mask": object_mask}]
    with torch.no_grad():
        inst = model(inputs)[0]["instances"]
        filter_, model.post_aware = model.post_aware, None
        plain = model(inputs)[0]["instances"]
        model.post_aware = filter_

    def binary(masks):
        return masks if masks.dtype == torch.bool else masks >= 0.5

    assert (binary(plain.pred_masks) & ~object_mask).any()  # the untrained model predicts outside it
    assert not (binary(inst.pred_masks) & ~object_mask).any()
    with pytest.raises(KeyError, match="object_mask"), torch.no_grad():
        model([{k: v for k, v in inputs[0].items() if k != "object_mask"}])


def test_post_aware_needs_a_meta_architecture_that_does_it():
    cfg = _cfg("configs/synthetic/cascade_mask_rcnn_R_tiny_agnostic.yaml",
               **{"MODEL.META_ARCHITECTURE": "GeneralizedRCNN"})
    with pytest.raises(ConfigError, match="no post-aware post-processing"):
        build_part_model(cfg)
