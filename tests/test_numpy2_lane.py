"""The numpy-2 lane's check (``tools/numpy2_lane.sh``), also part of the normal suite: on whatever
numpy, Pillow and detectron2 are installed, every part_d2 module imports, the COCO and LVIS-style
evaluators, the dataset mapper and both meta-architectures' forward (Cascade Mask R-CNN and
Mask2Former, tiny synthetic configs) run and give the expected results."""
import ast
import importlib
import json
import os
import pkgutil

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_model
from detectron2.structures import Instances
from detectron2.utils.events import EventStorage

import part_d2
from part_d2.data.dataset_mapper import PartDatasetMapper
from part_d2.data.part_json import load_part_json, register_part_json
from part_d2.engine.setup import load_config
from part_d2.engine.trainer import build_evaluator
from part_d2.evaluation import PartEvaluator
from part_d2.evaluation.lvis_eval import LvisEvaluator
from part_d2.structures.masks import segmentation_to_mask

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = {
    "cascade": "configs/synthetic/cascade_mask_rcnn_R_tiny_agnostic.yaml",
    "mask2former": "configs/synthetic/mask2former_R_tiny_agnostic.yaml",
}


def test_versions_and_every_module_imports():
    print(f"numpy {np.__version__}, torch {torch.__version__}")  # shown with -s
    names = [m.name for m in pkgutil.walk_packages(part_d2.__path__, "part_d2.")]
    failed = {}
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as e:  # report every module that fails, not only the first
            failed[name] = repr(e)
    assert not failed
    assert len(names) > 50


def test_nothing_imports_a_top_level_tools_module():
    """An editable detectron2 install puts detectron2's own ``tools/`` on ``sys.path``: part_d2's
    scripts are run or loaded by file path (tests/tool_loader.py), never imported as ``tools``."""
    offenders = []
    for folder in ("part_d2", "tests", "tools", "bench", "projects"):
        for dirpath, _, files in os.walk(os.path.join(ROOT, folder)):
            for name in (f for f in files if f.endswith(".py")):
                path = os.path.join(dirpath, name)
                with open(path) as f:
                    tree = ast.parse(f.read(), path)
                for node in ast.walk(tree):
                    modules = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                        [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
                    offenders += [f"{path}:{node.lineno}" for m in modules if m.split(".")[0] == "tools"]
    assert not offenders


def _register(tiny_part_dataset, tmp_path):
    """``np2tiny_{parts,agnostic,objects}`` from the 3-image fixture, plus an LVIS json of its parts
    registered as ``np2tiny_lvis``. Returns the parts records."""
    json_file, root, data = tiny_part_dataset
    register_part_json("np2tiny", json_file, root)
    lvis = dict(data, images=[dict(im, neg_category_ids=[], not_exhaustive_category_ids=[]) for im in data["images"]],
                categories=[dict(c, frequency="rf"[c["id"] - 1]) for c in data["categories"]])
    (tmp_path / "lvis.json").write_text(json.dumps(lvis))
    if "np2tiny_lvis" in DatasetCatalog.list():
        DatasetCatalog.remove("np2tiny_lvis")
        MetadataCatalog.remove("np2tiny_lvis")
    DatasetCatalog.register("np2tiny_lvis", lambda: load_part_json(json_file, root, "parts"))
    MetadataCatalog.get("np2tiny_lvis").set(json_file=str(tmp_path / "lvis.json"), evaluator_type="lvis",
                                            thing_classes=["head", "body"])
    return DatasetCatalog.get("np2tiny_parts")


def _predict(evaluator, records, shift: int):
    """Feed the ground-truth parts, the first one of each image shifted right by ``shift`` pixels."""
    evaluator.reset()
    for rec in records:
        masks = np.stack([segmentation_to_mask(a["segmentation"], rec["height"], rec["width"])
                          for a in rec["annotations"]])
        masks[0] = np.roll(masks[0], shift, axis=1)
        inst = Instances((rec["height"], rec["width"]), pred_masks=torch.from_numpy(masks),
                         scores=torch.linspace(0.9, 0.5, len(masks)),
                         pred_classes=torch.tensor([a["category_id"] for a in rec["annotations"]]))
        evaluator.process([{"image_id": rec["image_id"]}], [{"instances": inst}])
    return evaluator.evaluate()


def test_coco_and_lvis_evaluators(tiny_part_dataset, tmp_path):
    records = _register(tiny_part_dataset, tmp_path)
    cfg = load_config("", ["TEST.PART_EVAL.CLASS_AWARE", True])
    coco = build_evaluator(cfg, "np2tiny_parts")
    lvis = build_evaluator(cfg, "np2tiny_lvis")
    assert type(coco) is PartEvaluator and type(lvis) is LvisEvaluator
    coco._distributed = lvis._distributed = False
    assert _predict(coco, records, 0)["part_segm"]["AP"] == pytest.approx(100)
    assert _predict(lvis, records, 0)["segm"]["AP"] == pytest.approx(100)
    # the "head" prediction shifted by 5 of its 16 columns: IoU 11/21, a hit at IoU threshold 0.5 only
    coco_res = _predict(coco, records, 5)["part_segm"]
    lvis_res = _predict(lvis, records, 5)["segm"]
    assert coco_res["cls_AP-head"] == pytest.approx(10) and coco_res["cls_AP-body"] == pytest.approx(100)
    assert lvis_res["APr"] == pytest.approx(10) and lvis_res["APf"] == pytest.approx(100)
    assert lvis_res["AP"] == pytest.approx(coco_res["cls_AP"]) == pytest.approx(55)
    assert lvis_res["AP50"] == pytest.approx(100) and lvis_res["AR@300"] == pytest.approx(55)


@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_mapper_and_model_forward(arch, tiny_part_dataset):
    json_file, root, _ = tiny_part_dataset
    records = load_part_json(json_file, root, "agnostic")
    cfg = load_config(os.path.join(ROOT, CONFIGS[arch]), ["MODEL.DEVICE", "cpu", "INPUT.MIN_SIZE_TEST", 64,
                                                            "INPUT.MAX_SIZE_TEST", 96])
    torch.manual_seed(0)
    np.random.seed(0)
    train_batch = [PartDatasetMapper(cfg, True)(r) for r in records[:2]]
    for item in train_batch:
        assert item["image"].dtype == torch.uint8 and item["image"].shape[0] == 3
        assert len(item["instances"]) == 2 and item["instances"].gt_classes.tolist() == [0, 0]
    model = build_model(cfg)
    model.train()
    with EventStorage(0):
        losses = model(train_batch)
    total = sum(losses.values())
    assert torch.isfinite(total) and total > 0
    total.backward()
    model.eval()
    test_item = PartDatasetMapper(cfg, False)(records[0])
    assert tuple(test_item["image"].shape[1:]) == (64, 85)
    with torch.no_grad():
        (out,) = model([test_item])
    inst = out["instances"]
    assert inst.image_size == (48, 64) and len(inst) > 0
    assert inst.pred_masks.shape[1:] == (48, 64) and inst.scores.isfinite().all()
