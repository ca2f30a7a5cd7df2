"""Tests of part_d2.evaluation: equality with pycocotools' COCOeval, hand-computed cases, PartEvaluator."""
import contextlib
import copy
import io
import json
import math

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Instances
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from part_d2.config import add_part_d2_config
from part_d2.evaluation import EvalParams, PartEvaluator, evaluate_coco, greedy_match, per_category_ap, summarize
from part_d2.structures.masks import mask_to_bbox, mask_to_rle

SIZES = ((64, 64), (48, 80), (128, 128))
GT_CATS = (1, 2, 5)


def _rect(h, w, y0, x0, y1, x1):
    m = np.zeros((h, w), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def _random_rect(rng, h, w):
    y0, y1 = np.sort(rng.integers(0, h + 1, size=2))
    x0, x1 = np.sort(rng.integers(0, w + 1, size=2))
    return _rect(h, w, y0, x0, max(y1, y0 + 1), max(x1, x0 + 1))


def _random_blob(rng, h, w):
    cy, cx = rng.uniform(0, h), rng.uniform(0, w)
    ry, rx = rng.uniform(1.5, h / 2), rng.uniform(1.5, w / 2)
    yy, xx = np.mgrid[:h, :w]
    m = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    return m if m.any() else _random_rect(rng, h, w)


def _perturb(rng, mask):
    """A detection near a ground-truth mask: shifted, cut, or an exact copy."""
    kind = rng.integers(4)
    if kind == 0:
        return mask.copy()
    if kind == 1:
        return np.roll(mask, tuple(rng.integers(-3, 4, size=2)), axis=(0, 1))
    ys, xs = np.nonzero(mask)
    cut = mask.copy()
    if kind == 2:
        cut[: ys.min() + rng.integers(0, max(1, (ys.max() - ys.min()) // 2) + 1)] = False
    else:
        cut[:, xs.max() - rng.integers(0, max(1, (xs.max() - xs.min()) // 2) + 1) + 1 :] = False
    return cut if cut.any() else mask.copy()


def _rect_polygon(mask):
    x, y, w, h = mask_to_bbox(mask)
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


def _random_dataset(seed, num_images=50, dets_per_image=200):
    """Ground truth and detections with crowds, empty images, score ties, duplicates, all sizes."""
    rng = np.random.default_rng(seed)
    images, anns, dets = [], [], []
    for i in range(num_images):
        h, w = SIZES[i % len(SIZES)]
        img_id = 1000 - 7 * i
        images.append({"id": img_id, "height": h, "width": w})
        gts = []
        for _ in range(0 if i % 6 == 4 else int(rng.integers(1, 9))):
            is_rect = rng.random() < 0.5
            mask = _random_rect(rng, h, w) if is_rect else _random_blob(rng, h, w)
            gts.append((mask, int(rng.choice(GT_CATS)), int(rng.random() < 0.12), is_rect))
        if gts and h * w > 96**2 and rng.random() < 0.7:
            y0, x0 = rng.integers(0, 20, size=2)
            large = _rect(h, w, y0, x0, y0 + 100, x0 + 100 + rng.integers(0, 8))
            gts.append((large, int(rng.choice(GT_CATS)), 0, True))
        if gts and rng.random() < 0.4:
            gts.append(gts[0])
        tie_dets = []
        if i % 5 == 1:  # a detection with equal IoU (0.6) to two GTs, then one that fits the first only
            y0, x0, cat = int(rng.integers(0, h - 10)), int(rng.integers(0, w - 18)), int(rng.choice(GT_CATS))
            first, second = _rect(h, w, y0, x0, y0 + 10, x0 + 12), _rect(h, w, y0, x0 + 6, y0 + 10, x0 + 18)
            gts += [(first, cat, 0, True), (second, cat, 0, True)]
            tie_dets = [(_rect(h, w, y0, x0 + 3, y0 + 10, x0 + 15), cat, 0.99), (first, cat, 0.98)]
        for mask, cat, crowd, is_rect in gts:
            area = float(mask.sum()) if rng.random() < 0.8 else float(mask.sum()) * rng.uniform(0.5, 1.5)
            segm = _rect_polygon(mask) if is_rect and not crowd else mask_to_rle(mask)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": img_id,
                    "category_id": cat,
                    "segmentation": segm,
                    "area": area,
                    "iscrowd": crowd,
                    "bbox": mask_to_bbox(mask),
                }
            )
        for mask, cat, score in tie_dets:
            dets.append({"image_id": img_id, "category_id": cat, "score": score,
                         "segmentation": mask_to_rle(mask), "bbox": mask_to_bbox(mask)})
        for _ in range(0 if i % 9 == 7 else dets_per_image):
            if gts and rng.random() < 0.5:
                mask, cat, _, _ = gts[rng.integers(len(gts))]
                mask = _perturb(rng, mask)
                cat = cat if rng.random() < 0.8 else int(rng.choice(GT_CATS + (9,)))
            else:
                mask = _random_rect(rng, h, w) if rng.random() < 0.5 else _random_blob(rng, h, w)
                cat = int(rng.choice(GT_CATS + (9,)))
            score = round(float(rng.random()), 1) if rng.random() < 0.5 else float(rng.random())
            dets.append(
                {"image_id": img_id, "category_id": cat, "score": score,
                 "segmentation": mask_to_rle(mask), "bbox": mask_to_bbox(mask)}
            )
    categories = [{"id": c, "name": f"c{c}"} for c in GT_CATS + (7,)]
    return {"images": images, "annotations": anns, "categories": categories}, dets


def _pycocotools(gt, dets, iou_type, use_cats, max_dets):
    keep = "segmentation" if iou_type == "segm" else "bbox"
    results = [{k: v for k, v in d.items() if k in ("image_id", "category_id", "score", keep)} for d in dets]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_eval = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(results)), iou_type)
        coco_eval.params.useCats = int(use_cats)
        coco_eval.params.maxDets = list(max_dets)
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval


@pytest.fixture(scope="module")
def random_data():
    return _random_dataset(0)


@pytest.mark.parametrize(
    "iou_type,use_cats,max_dets",
    [
        ("segm", True, (1, 10, 100, 200)),
        ("segm", False, (1, 10, 100)),
        ("segm", False, (1, 10, 100, 200)),
        ("bbox", True, (1, 10, 100)),
    ],
)
def test_equals_pycocotools(random_data, iou_type, use_cats, max_dets):
    gt, dets = random_data
    assert len(gt["images"]) >= 50 and len(dets) >= 200 * 40
    ref = _pycocotools(gt, dets, iou_type, use_cats, max_dets)
    ours = evaluate_coco(gt, dets, EvalParams(iou_type=iou_type, use_cats=use_cats, max_dets=max_dets))
    assert ours.precision.shape == ref.eval["precision"].shape
    np.testing.assert_allclose(ours.precision, ref.eval["precision"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(ours.recall, ref.eval["recall"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(ours.scores, ref.eval["scores"], rtol=0, atol=1e-9)
    # the fixture exercises every case: a category without GT (-1, per category only), 0 and > 0
    assert (ours.precision == -1).any() == use_cats
    assert (ours.precision > 0).any() and (ours.precision == 0).any()
    stats = summarize(ours)
    # pycocotools' summary reports AP and ARs/m/l at maxDets[2] = 100
    expected = {"AR@1": 6, "AR@10": 7, "AR@100": 8}
    if max_dets[-1] == 100:
        expected.update({"AP": 0, "AP50": 1, "AP75": 2, "APs": 3, "APm": 4, "APl": 5})
        expected.update({"ARs@100": 9, "ARm@100": 10, "ARl@100": 11})
    for key, idx in expected.items():
        ref_value = 100 * ref.stats[idx] if ref.stats[idx] >= 0 else float("nan")
        assert stats[key] == pytest.approx(ref_value, abs=1e-9, nan_ok=True), key
    assert set(stats) == {"AP", "AP50", "AP75", "APs", "APm", "APl"} | {f"AR@{m}" for m in max_dets} | {
        f"AR{s}@{max_dets[-1]}" for s in "sml"
    }
    if max_dets[-1] == 200:
        ap200, ar200 = ref.eval["precision"][:, :, :, 0, -1], ref.eval["recall"][:, :, 3, -1]
        assert stats["AP"] == pytest.approx(100 * ap200[ap200 > -1].mean(), abs=1e-9)
        assert stats["ARl@200"] == pytest.approx(100 * ar200[ar200 > -1].mean(), abs=1e-9)


def _one_image(gt_masks, crowd=None, areas=None):
    h, w = gt_masks[0].shape
    anns = [
        {"id": n + 1, "image_id": 1, "category_id": 1, "segmentation": mask_to_rle(m),
         "area": float(m.sum()) if areas is None else areas[n], "iscrowd": 0 if crowd is None else crowd[n]}
        for n, m in enumerate(gt_masks)
    ]
    return {"images": [{"id": 1, "height": h, "width": w}], "annotations": anns, "categories": [{"id": 1}]}


def _dets(masks, scores):
    return [
        {"image_id": 1, "category_id": 1, "score": s, "segmentation": mask_to_rle(m)} for m, s in zip(masks, scores)
    ]


GT = _rect(40, 40, 0, 0, 10, 10)  # 100 px, small
OTHER = _rect(40, 40, 20, 20, 30, 30)


def test_perfect_prediction_is_100():
    stats = summarize(evaluate_coco(_one_image([GT, OTHER]), _dets([GT, OTHER], [0.9, 0.8])))
    for key in ("AP", "AP50", "AR@10", "APs"):
        assert stats[key] == pytest.approx(100.0, abs=1e-9), key
    assert stats["AR@1"] == pytest.approx(50.0, abs=1e-9)
    assert math.isnan(stats["APm"]) and math.isnan(stats["APl"]) and math.isnan(stats["ARl@200"])


def test_false_positive_above_true_positive_halves_ap():
    stats = summarize(evaluate_coco(_one_image([GT]), _dets([OTHER, GT], [0.9, 0.8])))
    # precision envelope [0.5, 0.5] at recalls [0, 1]: 0.5 at every recall threshold
    assert stats["AP"] == pytest.approx(50.0, abs=1e-9)
    assert stats["AR@1"] == 0 and stats["AR@10"] == 100


def test_false_positive_below_true_positive_keeps_ap():
    ap = summarize(evaluate_coco(_one_image([GT]), _dets([GT, OTHER], [0.9, 0.8])))["AP"]
    assert ap == pytest.approx(100.0, abs=1e-9)


def test_half_recall():
    stats = summarize(evaluate_coco(_one_image([GT, OTHER]), _dets([GT], [0.5])))
    assert stats["AP"] == pytest.approx(100 * 51 / 101, abs=1e-9)  # recall thresholds 0..0.5
    assert stats["AR@100"] == pytest.approx(50.0)


def test_iou_threshold_counting():
    det = _rect(40, 40, 0, 0, 10, 10)
    det[:, 7:] = False  # 70 px inside GT: IoU 0.7 matches at 0.5 ... 0.7
    stats = summarize(evaluate_coco(_one_image([GT]), _dets([det], [1.0])))
    assert stats["AP"] == pytest.approx(50.0, abs=1e-9) and stats["AP75"] == 0
    assert stats["AP50"] == pytest.approx(100.0, abs=1e-9)


def test_crowd_region_ignores_detections_inside():
    crowd = _rect(40, 40, 10, 10, 40, 40)
    inside = _rect(40, 40, 12, 12, 20, 20)  # IoU with crowd = 64 / 64 (det-area denominator)
    ev = evaluate_coco(_one_image([GT, crowd], crowd=[0, 1]), _dets([inside, GT], [0.9, 0.8]))
    assert summarize(ev)["AP"] == pytest.approx(100.0, abs=1e-9)


def test_gt_area_field_decides_area_range():
    stats = summarize(evaluate_coco(_one_image([GT], areas=[5000.0]), _dets([GT], [0.9])))
    assert math.isnan(stats["APs"]) and stats["APm"] == pytest.approx(100.0, abs=1e-9)


def test_no_detections_gives_zero_and_no_gt_gives_nan():
    assert summarize(evaluate_coco(_one_image([GT]), []))["AP"] == 0
    gt = _one_image([GT])
    gt["annotations"] = []
    assert math.isnan(summarize(evaluate_coco(gt, _dets([GT], [0.9])))["AP"])


def test_greedy_match_prefers_regular_and_later_tie():
    ious = np.array([[0.6, 0.9, 0.6], [0.6, 0.6, 0.6]])
    ignore = np.array([[False, True, False]])
    match = greedy_match(ious, ignore, np.array([False, False, False]), np.array([0.5, 0.7]))
    # t=0.5: det 0 takes the later of the two regular 0.6 ties (col 2), det 1 the other (col 0);
    # t=0.7: only the ignored 0.9 qualifies for det 0, nothing for det 1
    assert match[0].tolist() == [[2, 0], [1, -1]]


def test_unknown_image_raises():
    with pytest.raises(ValueError, match="unknown to the ground truth"):
        evaluate_coco(_one_image([GT]), [dict(_dets([GT], [0.9])[0], image_id=5)])


DATASET = "part_d2_test_part_evaluator"


@pytest.fixture(scope="module")
def registered():
    h, w = 32, 40
    masks = [_rect(h, w, 0, 0, 8, 8), _rect(h, w, 10, 10, 30, 30), _rect(h, w, 0, 20, 6, 40)]
    records = [
        {"image_id": 3, "height": h, "width": w, "file_name": "a.png", "annotations": [
            {"segmentation": _rect_polygon(masks[0]), "category_id": 0, "iscrowd": 0, "area": 64.0},
            {"segmentation": mask_to_rle(masks[1]), "category_id": 1, "iscrowd": 0},
        ]},
        {"image_id": 4, "height": h, "width": w, "file_name": "b.png", "annotations": [
            {"segmentation": mask_to_rle(masks[2]), "category_id": 1, "iscrowd": 0, "area": 120.0},
        ]},
        {"image_id": 5, "height": h, "width": w, "file_name": "c.png", "annotations": []},
    ]
    if DATASET not in DatasetCatalog.list():
        DatasetCatalog.register(DATASET, lambda: copy.deepcopy(records))
        MetadataCatalog.get(DATASET).set(thing_classes=["leg", "arm"])
    return records, masks


def _outputs(records, masks_per_image, classes_per_image, scores_per_image):
    outputs = []
    for rec, masks, classes, scores in zip(records, masks_per_image, classes_per_image, scores_per_image):
        inst = Instances((rec["height"], rec["width"]))
        empty = np.zeros((0, rec["height"], rec["width"]), dtype=bool)
        inst.pred_masks = torch.as_tensor(np.stack(masks) if masks else empty)
        inst.scores = torch.tensor(scores, dtype=torch.float32)
        inst.pred_classes = torch.tensor(classes, dtype=torch.int64)
        outputs.append({"instances": inst})
    return outputs


def _run(evaluator, records, outputs):
    evaluator.reset()
    for rec, out in zip(records, outputs):
        evaluator.process([{"image_id": rec["image_id"]}], [out])
    return evaluator.evaluate()


def test_part_evaluator_end_to_end(registered, tmp_path):
    records, masks = registered
    empty = np.zeros_like(masks[0])
    outputs = _outputs(
        records,
        [[masks[0], masks[1].astype(np.float32)], [masks[2], masks[0]], [empty]],
        [[1, 1], [1, 0], [0]],  # masks[0] gets the wrong class
        [[0.9, 0.8], [0.7, 0.6], [0.5]],
    )
    evaluator = PartEvaluator(DATASET, output_dir=str(tmp_path), class_aware=True, distributed=False)
    res = _run(evaluator, records, outputs)["part_segm"]
    # class-agnostic: 3 GT all found; the FP (0.6, image 4) and empty mask (0.5) come after them
    assert res["AP"] == pytest.approx(100.0) and res["AR@1"] == pytest.approx(200 / 3)
    # class-aware: "leg" gets only false positives; "arm" ranks FP, TP, TP -> precision 2/3
    assert res["cls_AP-leg"] == 0 and res["cls_AP-arm"] == pytest.approx(200 / 3)
    assert res["cls_AP"] == pytest.approx(100 / 3)
    saved = json.loads((tmp_path / "part_predictions.json").read_text())
    assert len(saved) == 5 and {p["image_id"] for p in saved} == {3, 4, 5}
    assert saved[0]["segmentation"] == mask_to_rle(masks[0]) and saved[0]["category_id"] == 1


def test_part_evaluator_matches_evaluate_coco(registered, random_data):
    records, masks = registered
    rng = np.random.default_rng(1)
    dets = [[_perturb(rng, m) for m in masks for _ in range(3)] for _ in records]
    scores = [rng.random(len(d)).round(1).tolist() for d in dets]
    classes = [[0] * len(d) for d in dets]
    res = _run(PartEvaluator(DATASET, distributed=False), records, _outputs(records, dets, classes, scores))
    gt = {
        "images": [{"id": r["image_id"], "height": r["height"], "width": r["width"]} for r in records],
        "categories": [{"id": 0}],
        "annotations": [
            {"id": n + 1, "image_id": img, "category_id": 0, "iscrowd": 0, "segmentation": segm, "area": area}
            for n, (img, segm, area) in enumerate(
                [(3, records[0]["annotations"][0]["segmentation"], 64.0), (3, mask_to_rle(masks[1]), 400.0),
                 (4, mask_to_rle(masks[2]), 120.0)]
            )
        ],
    }
    flat = [
        {"image_id": r["image_id"], "category_id": 0, "score": float(np.float32(s)), "segmentation": mask_to_rle(m)}
        for r, ms, ss in zip(records, dets, scores) for m, s in zip(ms, ss)
    ]
    expected = summarize(evaluate_coco(gt, flat, EvalParams(use_cats=False)))
    assert set(res["part_segm"]) == set(expected)
    for key, value in expected.items():
        assert res["part_segm"][key] == pytest.approx(value, abs=1e-9, nan_ok=True), key


def test_part_evaluator_from_config(registered):
    records, masks = registered
    cfg = add_part_d2_config(get_cfg())
    cfg.TEST.PART_EVAL.MAX_DETS = [1, 5]
    cfg.TEST.PART_EVAL.CLASS_AWARE = True
    outputs = _outputs(records, [[masks[0], masks[1]], [masks[2]], []], [[0, 1], [1], []], [[0.9, 0.8], [0.7], []])
    res = _run(PartEvaluator(cfg, DATASET), records, outputs)["part_segm"]
    assert {"AR@1", "AR@5", "ARl@5", "cls_AR@5", "cls_AP-leg"} <= set(res) and "AR@200" not in res
    assert res["AP"] == pytest.approx(100.0) and res["cls_AP"] == pytest.approx(100.0)


def test_part_evaluator_requires_masks(registered):
    records, _ = registered
    inst = Instances((32, 40))
    inst.scores = torch.ones(1)
    inst.pred_classes = torch.zeros(1, dtype=torch.int64)
    evaluator = PartEvaluator(DATASET, distributed=False)
    evaluator.reset()
    with pytest.raises(ValueError, match="pred_masks"):
        evaluator.process([{"image_id": 3}], [{"instances": inst}])


def test_per_category_ap_keys(random_data):
    gt, dets = random_data
    small = [d for d in dets if d["image_id"] == gt["images"][0]["id"]]
    aps = per_category_ap(evaluate_coco(gt, small, EvalParams(max_dets=(1, 10, 100))))
    assert list(aps) == [1, 2, 5, 7] and math.isnan(aps[7])
