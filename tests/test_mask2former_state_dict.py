"""The official COCO-instance configurations build models whose state_dict keys and shapes equal
the official checkpoints' (so ``model_final_*.pkl`` load unchanged)."""
import json
from pathlib import Path

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import META_ARCH_REGISTRY

import part_d2.modeling.backbone  # noqa: F401
import part_d2.modeling.mask2former  # noqa: F401
from part_d2.config import add_part_d2_config

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO.parent / "shared" / "reference" / "mask2former_coco_instance_state_dict_shapes.json"
CONFIGS = {
    "r50": "configs/mask2former/maskformer2_R50_part_agnostic.yaml",
    "swinl": "configs/mask2former/maskformer2_swin_large_part_agnostic.yaml",
}


def build_on_meta(config: str, num_classes: int):
    """Build the model without allocating memory (parameters on the meta device)."""
    cfg = get_cfg()
    add_part_d2_config(cfg)
    cfg.merge_from_file(str(REPO / config))
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = num_classes
    with torch.device("meta"):
        return META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)(cfg)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_state_dict_equals_official(name):
    if not REFERENCE.is_file():
        pytest.skip(f"reference shapes not found at {REFERENCE}")
    reference = json.loads(REFERENCE.read_text())[name]
    model = build_on_meta(CONFIGS[name], num_classes=80)
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert sorted(set(reference) - set(shapes)) == []
    assert sorted(set(shapes) - set(reference)) == []
    assert {k: v for k, v in shapes.items() if reference[k] != v} == {}


def test_class_agnostic_model_differs_only_in_class_head():
    if not REFERENCE.is_file():
        pytest.skip(f"reference shapes not found at {REFERENCE}")
    reference = json.loads(REFERENCE.read_text())["r50"]
    model = build_on_meta(CONFIGS["r50"], num_classes=1)
    different = {k for k, v in model.state_dict().items() if list(v.shape) != reference[k]}
    assert different == {
        "sem_seg_head.predictor.class_embed.weight",
        "sem_seg_head.predictor.class_embed.bias",
        "criterion.empty_weight",
    }
