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
from part_d2.evaluation.ground_truth import parts_view
from part_d2.evaluation.oracle_semantic_evaluator import OracleSemanticEvaluator, oracle_confusion


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
    assert parts_view("orc_agnostic") == "orc_parts"
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
    for r in results.values():
        assert r["num_images"] == 2 and r["params"] == {}
        assert 0 <= r["mIoU"] <= 100 and 0 <= r["mACC"] <= 100 and 0 <= r["pACC"] <= 100
        assert r["segments_per_object"] >= 1  # a non-empty object always gets at least one segment
    assert results["ncut"]["ncut_fallbacks"] >= 0
    # deterministic: a second run gives the same numbers
    assert main(["--dataset", "orc_parts", "--max-images", "2"]) == results
    # tuning to a segment count on a (here: the same) dataset records the chosen parameter values
    tuned = main(["--dataset", "orc_parts", "--max-images", "2", "--tune-dataset", "orc_parts",
                  "--target-segments", "2", "--baselines", "slic", "felzenszwalb"])
    assert set(tuned["slic"]["params"]) == {"n_segments"} and set(tuned["felzenszwalb"]["params"]) == {"scale"}


def _noise_object(seed=0):
    """A 24 x 24 object of black/white pixel noise on grey: the similarity RAG of its SLIC
    superpixels has near-zero edge weights; scikit-image 0.24's NCut stopped on it with ARPACK's
    "starting vector is zero" (in a fresh process; ARPACK's outcome depends on earlier calls)."""
    image = np.full((32, 32, 3), 128, dtype=np.uint8)
    rng = np.random.default_rng(seed)
    image[4:28, 4:28] = (rng.random((24, 24, 1)) > 0.5) * 255
    mask = np.zeros((32, 32), dtype=bool)
    mask[4:28, 4:28] = True
    return image, mask


def test_ncut_on_an_image_where_scikit_image_failed():
    from collections import Counter

    from part_d2.evaluation.superpixel_baselines import ncut_parts

    image, mask = _noise_object()
    for solver in ("dense", "arpack"):
        stats = Counter()
        parts = ncut_parts(image, mask, solver=solver, stats=stats)
        assert len(parts) >= 1
        assert np.array_equal(parts.sum(axis=0), mask.astype(int))  # disjoint, cover exactly the object
        assert stats["ncut_fallbacks"] in (0, 1)
    dense = ncut_parts(image, mask)
    assert np.array_equal(ncut_parts(image, mask), dense)  # the default solver is deterministic


def test_ncut_arpack_failure_falls_back_to_the_dense_solver_and_is_counted(monkeypatch):
    from collections import Counter

    from scipy.sparse.linalg import ArpackError

    from part_d2.evaluation import superpixel_baselines as sb

    def failing_cut(*args, **kwargs):
        raise ArpackError(-9)

    image, mask = _noise_object()
    monkeypatch.setattr(sb, "cut_normalized", failing_cut)
    stats = Counter()
    parts = sb.ncut_parts(image, mask, solver="arpack", stats=stats)
    assert stats["ncut_fallbacks"] == 1
    assert np.array_equal(parts, sb.ncut_parts(image, mask, solver="dense"))


def test_dense_normalized_cut_by_hand():
    from part_d2.evaluation.superpixel_baselines import dense_normalized_cut

    # two components {0, 1} and {2, 3}: separated whatever the threshold
    w = np.zeros((4, 4))
    w[0, 1] = w[1, 0] = w[2, 3] = w[3, 2] = 1.0
    assert dense_normalized_cut(w, thresh=1e-9).tolist() in ([0, 0, 1, 1], [1, 1, 0, 0])
    # chain 0 -1- 1 -0.001- 2 -1- 3: the cut {0, 1} | {2, 3} costs 0.001 / 2.001 * 2 = 0.0009995
    w[1, 2] = w[2, 1] = 0.001
    labels = dense_normalized_cut(w, thresh=0.001)
    assert labels[0] == labels[1] != labels[2] == labels[3]
    assert dense_normalized_cut(w, thresh=0.0009).tolist() == [0, 0, 0, 0]  # cost above thresh: no cut
    # an isolated node (zero degree, ARPACK's failure case) becomes its own segment
    w5 = np.zeros((5, 5))
    w5[:4, :4] = w
    labels = dense_normalized_cut(w5, thresh=0.001)
    assert len(set(labels.tolist())) == 3 and labels[4] not in labels[:4]
