"""OPS evaluation: the oracle semantic evaluator against hand-computed values, its selection by
config, and the superpixel-baselines tool."""
import json

import cv2
import numpy as np
import pytest
import torch
from detectron2.evaluation import DatasetEvaluators
from detectron2.structures import Instances

import part_d2  # noqa: F401
from part_d2.data.part_json import register_part_json
from part_d2.engine.setup import load_config
from part_d2.engine.trainer import build_evaluator
from part_d2.evaluation import PartEvaluator
from part_d2.evaluation.oracle_semantic_evaluator import OracleSemanticEvaluator, oracle_confusion, parts_view_name


def output(masks, scores):
    masks = torch.as_tensor(np.asarray(masks, dtype=bool))
    inst = Instances(tuple(masks.shape[1:]), pred_masks=masks, scores=torch.tensor(scores, dtype=torch.float32),
                     pred_classes=torch.zeros(len(scores), dtype=torch.long))
    return {"instances": inst}


def test_oracle_confusion_by_hand():
    # 1x4 image; GT: class 0 on pixels 0-1, class 1 on pixels 2-3
    gt = np.array([[[1, 1, 0, 0]], [[0, 0, 1, 1]]], dtype=bool)
    classes = np.array([0, 1])
    # part A (score 0.9) covers 1-3 -> more overlap with class 1; part B (0.5) covers 0-1 -> class 0
    pred = np.array([[[0, 1, 1, 1]], [[1, 1, 0, 0]]], dtype=bool)
    conf = oracle_confusion(pred, [0.9, 0.5], gt, classes, 2)
    # pixel 0: B -> 0 (ok); pixel 1: A wins -> 1 (GT 0); pixels 2, 3: A -> 1 (ok)
    assert conf.tolist() == [[1, 1, 0], [0, 2, 0]]
    # with a threshold above 0.5, B is ignored: pixel 0 becomes "missed"
    assert oracle_confusion(pred, [0.9, 0.5], gt, classes, 2, score_thresh=0.6).tolist() == [[0, 1, 1], [0, 2, 0]]


@pytest.fixture
def registered(tiny_part_dataset):
    json_file, root, data = tiny_part_dataset
    register_part_json("orc", json_file, root)
    return data


def test_evaluator_hand_computed(registered):
    ev = OracleSemanticEvaluator("orc_agnostic", distributed=False)  # GT classes from orc_parts
    assert parts_view_name("orc_agnostic") == "orc_parts"
    ev.reset()
    # image 0: object x in [8, 40), y in [8, 32): left part "head" (class 0), right part "body" (class 1)
    whole = np.zeros((1, 48, 64), dtype=bool)
    whole[0, 8:32, 8:40] = True
    ev.process([{"image_id": 0}], [output(whole, [0.9])])
    # image 1 (object shifted by 1 px): one exact prediction per part
    halves = np.zeros((2, 48, 64), dtype=bool)
    halves[0, 8:32, 9:25] = True
    halves[1, 8:32, 25:41] = True
    ev.process([{"image_id": 1}], [output(halves, [0.3, 0.4])])
    res = ev.evaluate()["part_sem"]
    # image 0: the whole object ties both parts -> class 0: head 384 TP, body 384 -> head.
    # image 1: 384 TP each. head: TP 768, FP 384, FN 0; body: TP 384, FN 384.
    assert res["IoU-head"] == pytest.approx(100 * 768 / 1152)
    assert res["IoU-body"] == pytest.approx(100 * 384 / 768)
    assert res["mIoU"] == pytest.approx(100 * (768 / 1152 + 0.5) / 2)
    assert res["fwIoU"] == pytest.approx(100 * (768 / 1152 + 0.5) / 2)  # equal GT frequencies
    assert res["mACC"] == pytest.approx(100 * (1.0 + 0.5) / 2)
    assert res["pACC"] == pytest.approx(100 * 1152 / 1536)


def test_evaluator_selected_by_config(registered):
    cfg = load_config("", ["TEST.PART_EVAL.ORACLE_SEMANTIC", "True"])
    ev = build_evaluator(cfg, "orc_agnostic")
    assert isinstance(ev, DatasetEvaluators)
    assert [type(e) for e in ev._evaluators] == [PartEvaluator, OracleSemanticEvaluator]
    assert isinstance(build_evaluator(load_config("", []), "orc_agnostic"), PartEvaluator)
    with pytest.raises(ValueError, match="objects view"):
        OracleSemanticEvaluator("orc_objects")


def test_baselines_tool_on_two_images(registered, tiny_part_dataset, tmp_path):
    from tool_loader import load_tool

    main = load_tool("eval_superpixel_baselines").main

    json_file, root, data = tiny_part_dataset
    for img in data["images"]:  # flat colours: red left part, blue right part, grey background
        x0 = 8 + img["id"]
        image = np.full((48, 64, 3), 128, dtype=np.uint8)
        image[8:32, x0:x0 + 16] = (0, 0, 255)
        image[8:32, x0 + 16:x0 + 32] = (255, 0, 0)
        cv2.imwrite(f"{root}/{img['file_name']}", image)
    out = tmp_path / "baselines.json"
    results = main(["--dataset", "orc_parts", "--max-images", "2", "--output", str(out)])
    assert set(results) == {"slic", "ncut", "felzenszwalb"}
    assert json.loads(out.read_text()) == json.loads(json.dumps(results))
    assert all(r["num_images"] == 2 and 0 <= r["mIoU"] <= 100 for r in results.values())
    # two flat-coloured parts: the normalized cut separates them, the others mostly
    assert results["ncut"]["mIoU"] > 99
    assert results["slic"]["mIoU"] > 75 and results["felzenszwalb"]["mIoU"] > 75
