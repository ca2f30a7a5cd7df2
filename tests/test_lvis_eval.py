"""LVIS-style (federated) evaluation: hand-computed cases, and exact equality with lvis 0.5.3's
LVISEval on a seeded fixture of 60 images and 120 categories."""
import copy
import json

import numpy as np
import pycocotools.mask as mask_util
import pytest

from part_d2.evaluation.lvis_eval import evaluate_lvis, summarize_lvis

FREQ = ("r", "c", "f")


def _rle(mask: np.ndarray):
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _box_mask(h, w, x0, y0, x1, y1):
    mask = np.zeros((h, w), dtype=bool)
    mask[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = True
    return mask


def make_fixture(seed: int = 0, num_images: int = 60, num_cats: int = 120):
    """LVIS ground truth and segm+bbox detections exercising every federated rule.

    Categories (ids not contiguous) get a random frequency; the last 20 never have ground truth.
    Images: 1-5 positive categories with 1-3 boxes of all sizes (some ``ignore``, one with area
    0), negatives drawn from the absent categories, not-exhaustive ones from present and absent
    categories; 8 images have no detection. Detections: shifted copies of ground truth, duplicates,
    false positives of present / negative / not-exhaustive / unrelated / GT-less categories, empty
    masks, and scores rounded to 2 decimals so that ties occur.
    """
    rng = np.random.default_rng(seed)
    cat_ids = sorted(rng.choice(np.arange(1, 400), size=num_cats, replace=False).tolist())
    categories = [{"id": c, "name": f"c{c}", "frequency": FREQ[rng.integers(3)]} for c in cat_ids]
    with_gt = cat_ids[:-20]
    images, anns, dets = [], [], []
    for img_id in range(1, num_images + 1):
        h, w = (int(v) for v in rng.integers(24, 161, size=2))
        present = sorted(rng.choice(with_gt, size=int(rng.integers(1, 6)), replace=False).tolist())
        absent = [c for c in cat_ids if c not in present]
        neg = sorted(rng.choice(absent, size=int(rng.integers(0, 8)), replace=False).tolist())
        others = [c for c in absent if c not in neg]
        nel = [c for c in present if rng.random() < 0.3] + [c for c in others[:2] if rng.random() < 0.3]
        images.append({"id": img_id, "height": h, "width": w, "neg_category_ids": neg,
                       "not_exhaustive_category_ids": sorted(nel)})
        boxes = []
        for c in present:
            for _ in range(int(rng.integers(1, 4))):
                bw, bh = (int(v) for v in rng.integers(3, [w + 1, h + 1]))
                x0, y0 = int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1))
                mask = _box_mask(h, w, x0, y0, x0 + bw, y0 + bh)
                ann = {"id": len(anns) + 1, "image_id": img_id, "category_id": c, "segmentation": _rle(mask),
                       "area": float(mask.sum()), "bbox": [x0, y0, bw, bh]}
                if rng.random() < 0.05:
                    ann["ignore"] = 1
                if rng.random() < 0.02:
                    ann["area"] = 0.0
                anns.append(ann)
                boxes.append((c, x0, y0, bw, bh))
        if img_id % 8 == 0:
            continue
        for c, x0, y0, bw, bh in boxes:
            for _ in range(int(rng.choice([0, 1, 1, 1, 2]))):
                dx, dy = (int(v) for v in rng.integers(-max(bw // 3, 1), max(bw // 3, 1) + 1, size=2))
                dets.append((img_id, c, x0 + dx, y0 + dy, bw + int(rng.integers(-2, 3)), bh))
        fp_cats = present + neg[:3] + nel + others[:3] + cat_ids[-3:]
        for c in rng.choice(fp_cats, size=int(rng.integers(0, 12))):
            bw, bh = (int(v) for v in rng.integers(2, [w + 1, h + 1]))
            dets.append((img_id, int(c), int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1)), bw, bh))
        if rng.random() < 0.3:
            dets.append((img_id, present[0], 0, 0, 0, 0))  # empty mask
    sizes = {im["id"]: (im["height"], im["width"]) for im in images}
    segm, bbox = [], []
    for img_id, c, x0, y0, bw, bh in dets:
        h, w = sizes[img_id]
        mask = _box_mask(h, w, x0, y0, x0 + bw, y0 + bh)
        score = round(float(rng.random()), 2)
        segm.append({"image_id": img_id, "category_id": c, "score": score, "segmentation": _rle(mask)})
        ys, xs = np.nonzero(mask)
        box = [float(xs.min()), float(ys.min()), float(np.ptp(xs) + 1), float(np.ptp(ys) + 1)] if len(xs) else [0.0] * 4
        bbox.append({"image_id": img_id, "category_id": c, "score": score, "bbox": box})
    gt = {"images": images, "categories": categories, "annotations": anns}
    return gt, segm, bbox


def _lvis_eval(gt, dets, iou_type, max_dets, tmp_path, monkeypatch):
    """lvis 0.5.3's LVISEval; ``np.float`` (removed in numpy 1.24) is put back for it on numpy 2."""
    lvis = pytest.importorskip("lvis")
    monkeypatch.setattr(np, "float", float, raising=False)
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    lvis_gt = lvis.LVIS(str(path))
    ev = lvis.LVISEval(lvis_gt, lvis.LVISResults(lvis_gt, copy.deepcopy(dets), max_dets=max_dets), iou_type)
    ev.run()
    return ev


@pytest.fixture(scope="module")
def fixture():
    return make_fixture()


@pytest.mark.parametrize("iou_type,max_dets", [("segm", 300), ("segm", 6), ("bbox", 300)])
def test_equals_lvis_eval(fixture, iou_type, max_dets, tmp_path, monkeypatch):
    gt, segm, bbox = fixture
    dets = segm if iou_type == "segm" else bbox
    ref = _lvis_eval(gt, dets, iou_type, max_dets, tmp_path, monkeypatch)
    res = evaluate_lvis(gt, copy.deepcopy(dets), iou_type=iou_type, max_dets=max_dets)
    assert res.precision.shape == ref.eval["precision"].shape == (10, 101, 120, 4)
    assert np.abs(res.precision - ref.eval["precision"]).max() == 0
    assert np.abs(res.recall - ref.eval["recall"]).max() == 0
    ours = summarize_lvis(res)
    theirs = [np.nan if v == -1 else float(v) * 100 for v in ref.results.values()]
    assert len(ours) == len(theirs) == 13
    assert list(ours)[9] == f"AR@{max_dets}"
    diff = np.abs(np.array(list(ours.values())) - np.array(theirs))
    assert np.array_equal(np.isnan(diff), np.isnan(theirs)) and np.nanmax(diff) == 0
    # the fixture exercises the rules: every frequency group, categories without ground truth,
    # and not-exhaustive categories that change the result
    assert all(np.isfinite(ours[k]) for k in ("APr", "APc", "APf", "APs", "APm", "APl"))
    assert (res.precision[0, 0, :, 0] == -1).sum() >= 20
    exhaustive = copy.deepcopy(gt)
    for im in exhaustive["images"]:
        im["not_exhaustive_category_ids"] = []
    assert summarize_lvis(evaluate_lvis(exhaustive, dets, iou_type=iou_type, max_dets=max_dets))["AP"] < ours["AP"]


def _square(size=10, x=0):
    return _rle(_box_mask(size, 20, x, 0, x + size, size))


def _tiny(neg2=(), nel1=()):
    """Two 10x20 images; category 1 has one ground truth (left square) in image 1."""
    gt = {
        "images": [
            {"id": 1, "height": 10, "width": 20, "neg_category_ids": [], "not_exhaustive_category_ids": list(nel1)},
            {"id": 2, "height": 10, "width": 20, "neg_category_ids": list(neg2), "not_exhaustive_category_ids": []},
        ],
        "categories": [{"id": 1, "frequency": "r"}, {"id": 2, "frequency": "f"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": _square(), "area": 100.0}],
    }
    return gt


def test_federated_rules_by_hand():
    hit = {"image_id": 1, "category_id": 1, "score": 0.5, "segmentation": _square()}
    elsewhere = {"image_id": 2, "category_id": 1, "score": 0.9, "segmentation": _square()}
    miss = {"image_id": 1, "category_id": 1, "score": 0.9, "segmentation": _square(x=10)}
    # a detection of a category neither positive nor negative in its image is not evaluated
    assert summarize_lvis(evaluate_lvis(_tiny(), [hit, elsewhere]))["AP"] == pytest.approx(100)
    # ... but is a false positive where the image says the category is absent: precision 1/2
    assert summarize_lvis(evaluate_lvis(_tiny(neg2=[1]), [hit, elsewhere]))["AP"] == pytest.approx(50)
    # an unmatched detection of a not-exhaustively annotated category is not a false positive
    assert summarize_lvis(evaluate_lvis(_tiny(), [hit, miss]))["AP"] == pytest.approx(50)
    assert summarize_lvis(evaluate_lvis(_tiny(nel1=[1]), [hit, miss]))["AP"] == pytest.approx(100)
    # the per-image cut over all categories keeps the best `max_dets`: here only the miss
    summary = summarize_lvis(evaluate_lvis(_tiny(), [hit, miss], max_dets=1))
    assert summary["AP"] == 0 and summary["AR@1"] == 0
    assert np.isnan(summary["APf"]) and summary["APr"] == 0  # category 2 has no ground truth


def test_bad_input_is_named():
    gt = _tiny()
    del gt["images"][0]["neg_category_ids"]
    with pytest.raises(ValueError, match="image 1 .*neg_category_ids"):
        evaluate_lvis(gt, [])
    gt = _tiny()
    gt["categories"][1]["frequency"] = "x"
    with pytest.raises(ValueError, match="frequency"):
        evaluate_lvis(gt, [])
    gt = _tiny()
    del gt["annotations"][0]["area"]
    with pytest.raises(ValueError, match="annotation .* no 'area'"):
        evaluate_lvis(gt, [])
    with pytest.raises(ValueError, match="detection has no 'category_id'"):
        evaluate_lvis(_tiny(), [{"image_id": 1, "score": 1.0, "segmentation": _square()}])
    with pytest.raises(ValueError, match="unknown to the ground truth"):
        evaluate_lvis(_tiny(), [{"image_id": 7, "category_id": 1, "score": 1.0, "segmentation": _square()}])


def test_evaluator_maps_contiguous_ids_and_reports_percent(tmp_path):
    import torch
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.structures import Instances

    from part_d2.engine.setup import load_config
    from part_d2.engine.trainer import build_evaluator
    from part_d2.evaluation.lvis_eval import LvisEvaluator

    gt = _tiny(neg2=[1])
    gt["categories"] = [{"id": 5, "frequency": "r"}, {"id": 9, "frequency": "f"}]
    gt["annotations"][0]["category_id"] = 5
    gt["images"][1]["neg_category_ids"] = [5]
    (tmp_path / "lvis.json").write_text(json.dumps(gt))
    name = "lvis_eval_test_tiny"
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: [])
    MetadataCatalog.get(name).set(json_file=str(tmp_path / "lvis.json"), evaluator_type="lvis",
                                  thing_classes=["a", "b"])
    evaluator = build_evaluator(load_config("", ["TEST.LVIS_EVAL.MAX_DETS", 2]), name, str(tmp_path))
    assert isinstance(evaluator, LvisEvaluator) and evaluator._lvis_max_dets == 2
    evaluator._distributed = False
    masks = torch.from_numpy(np.stack([_box_mask(10, 20, 0, 0, 10, 10), _box_mask(10, 20, 10, 0, 20, 10)]))
    for img_id, scores in ((1, [0.5, 0.4]), (2, [0.9, 0.8])):
        inst = Instances((10, 20), pred_masks=masks, scores=torch.tensor(scores), pred_classes=torch.tensor([0, 0]))
        evaluator.process([{"image_id": img_id}], [{"instances": inst}])
    res = evaluator.evaluate()["segm"]
    # category 5: the hit in image 1, two false positives in image 2 (negative there) ranked above it
    assert res["AP"] == pytest.approx(100 / 3) and res["AR@2"] == pytest.approx(100)
    assert np.isnan(res["APf"]) and (tmp_path / "part_predictions.json").is_file()


def test_bench_case_tiny_scale():
    import os
    import sys

    pytest.importorskip("lvis")
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
    import bench_lvis_evaluator

    result = bench_lvis_evaluator.run(scale=0.02)
    assert result["params"]["images"] == 10 and result["params"]["categories"] == 10
    assert result["details"]["max_abs_diff"] == 0 and result["rows"][0]["quality_ok"]
