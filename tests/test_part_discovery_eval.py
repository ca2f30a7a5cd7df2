"""Part-discovery evaluation on hand-made cases: AR with and without per-object merged ground
truth, ownership tables, majority vote, C-/A-mIoU, and the evaluator end to end (mapped and
clustered)."""
import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Instances

from part_d2.evaluation.ground_truth import coco_gt, merge_parts_per_object
from part_d2.evaluation.part_discovery import (
    PartDiscoveryEvaluator,
    average_recall,
    discovery_miou,
    label_confusion,
    majority_vote,
    mapped_confusion,
    ownership_table,
)
from part_d2.structures.masks import mask_to_rle

H = W = 20


def box(y0, y1, x0, x1):
    m = np.zeros((H, W), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


LEG_A, LEG_B, BODY = box(10, 20, 0, 5), box(10, 20, 5, 10), box(0, 10, 0, 10)
OTHER_LEG = box(10, 20, 15, 20)  # a leg of a second object


def ann(mask, cls, obj):
    return {
        "segmentation": mask_to_rle(mask),
        "category_id": cls,
        "object_id": obj,
        "area": float(mask.sum()),
        "iscrowd": 0,
    }


def record():
    return {"image_id": 1, "height": H, "width": W, "object_category_id": 0,
            "annotations": [ann(LEG_A, 1, 7), ann(LEG_B, 1, 7), ann(BODY, 0, 7)]}


def test_merge_parts_per_object():
    anns = [ann(LEG_A, 1, 7), ann(BODY, 0, 7), ann(LEG_B, 1, 7), ann(OTHER_LEG, 1, 8)]
    merged = merge_parts_per_object(anns, H, W)
    assert [(m["object_id"], m["category_id"], m["area"]) for m in merged] == [
        (7, 1, 100.0),
        (7, 0, 100.0),
        (8, 1, 50.0),
    ]


def test_ar_with_and_without_merged_ground_truth():
    rec = record()
    results = [
        {"image_id": 1, "category_id": 0, "score": 0.9, "segmentation": mask_to_rle(LEG_A | LEG_B)},
        {"image_id": 1, "category_id": 0, "score": 0.8, "segmentation": mask_to_rle(BODY)},
    ]
    plain = average_recall(coco_gt([rec], agnostic=True), results, (1, 10))
    merged = average_recall(coco_gt([rec], agnostic=True, merged=True), results, (1, 10))
    # plain GT (leg, leg, body): the two-leg mask has IoU exactly 0.5 with each leg
    assert plain["AR@10"] == pytest.approx(100 * (2 / 3 + 9 * (1 / 3)) / 10)
    assert plain["AR@1"] == pytest.approx(100 * (1 / 3) / 10)
    # merged GT (legs, body): both found at every threshold; the top-1 finds the legs
    assert merged["AR@10"] == pytest.approx(100.0)
    assert merged["AR@1"] == pytest.approx(50.0)


def test_ownership_table_prefers_high_scores_and_clips_to_object():
    preds = np.stack([box(0, 20, 0, 10), box(0, 10, 0, 20)])  # left half (0.5), top half (0.9)
    gt = np.stack([BODY, LEG_A])
    obj = BODY | LEG_A | LEG_B
    table = ownership_table(preds, np.array([0.5, 0.9]), gt, np.array([0, 1]), 2, object_mask=obj)
    # pred 1 owns the top half inside the object = BODY (100 px of class 0); pred 0 owns the legs
    assert table.tolist() == [[0, 50, 50], [100, 0, 0], [0, 0, 200]]
    unclipped = ownership_table(preds, np.array([0.5, 0.9]), gt, np.array([0, 1]), 2)
    assert unclipped[1].tolist() == [100, 0, 100] and unclipped[2].tolist() == [0, 0, 100]


def test_majority_vote_mapping_and_miou():
    tables = [np.array([[30, 10, 0], [0, 40, 5], [0, 0, 15]])]  # 2 predictions, 2 GT classes
    conf = label_confusion(tables, [np.array([1, 0])], num_labels=3)
    assert conf.tolist() == [[0, 40, 5], [30, 10, 0], [0, 0, 0], [0, 0, 15]]
    mapping = majority_vote(conf)
    assert mapping.tolist() == [1, 0, 2]  # label 2 overlaps nothing -> background
    final = mapped_confusion(conf, mapping)
    assert final.tolist() == [[30, 0, 0], [10, 40, 0], [0, 5, 15]]
    iou0 = 30 / (30 + 40 - 30)  # GT 30, predicted 40 (10 of which are class 1)
    iou1 = 40 / (50 + 45 - 40)
    scores = discovery_miou({0: final})
    assert scores["C-mIoU"] == pytest.approx(100 * (iou0 + iou1) / 2)
    assert scores["A-mIoU"] == pytest.approx(100 * (iou0 + iou1) / 2)


def test_c_miou_averages_object_classes_and_a_miou_pairs():
    perfect = np.diag([10, 10, 0])  # object class A: two parts, both IoU 1
    half = np.array([[10, 0, 0], [0, 0, 0], [10, 0, 0]])  # class B: part 0 also painted on 10 bg px
    scores = discovery_miou({0: perfect, 1: half})
    assert scores["C-mIoU"] == pytest.approx(100 * (1.0 + 0.5) / 2)
    assert scores["A-mIoU"] == pytest.approx(100 * (1 + 1 + 0.5) / 3)
    predicted_only = np.array([[10, 0, 0], [0, 0, 0], [0, 10, 0]])  # class 1: no GT, predicted on bg
    assert discovery_miou({0: predicted_only})["C-mIoU"] == pytest.approx(100 * 1.0 / 2)
    assert discovery_miou({0: predicted_only})["A-mIoU"] == pytest.approx(100.0)


@pytest.fixture
def dataset():
    name = "test_part_discovery_tiny"
    records = [record(), dict(record(), image_id=2, object_category_id=1)]
    DatasetCatalog.register(name, lambda: records)
    MetadataCatalog.get(name).set(part_classes=["body", "leg"])
    yield name
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def outputs_of(masks, scores, modes=None, embeddings=None, object_class=None):
    inst = Instances((H, W))
    inst.pred_masks = torch.as_tensor(np.stack(masks))
    inst.scores = torch.tensor(scores)
    inst.pred_classes = torch.tensor(modes if modes is not None else [0] * len(masks))
    if object_class is not None:
        inst.pred_object_classes = torch.full((len(masks),), object_class)
    if embeddings is not None:
        inst.query_embeddings = torch.tensor(embeddings, dtype=torch.float32)
    return [{"instances": inst}]


def test_evaluator_mapped_and_clustered_on_perfect_parts(dataset):
    ev = PartDiscoveryEvaluator(dataset, max_dets=(1, 10), num_clusters=2, distributed=False)
    ev.reset()
    legs_then_body = [LEG_A, LEG_B, BODY]
    # image 1: modes 5 (legs) and 2 (body); image 2 swaps them: mapping is per object class
    ev.process([{"image_id": 1}], outputs_of(legs_then_body, [0.9, 0.8, 0.7], [5, 5, 2],
                                             [[1, 0], [1, 0.1], [0, 1]], object_class=0))
    ev.process([{"image_id": 2}], outputs_of(legs_then_body, [0.9, 0.8, 0.7], [2, 2, 5],
                                             [[1, 0], [1, 0.1], [0, 1]], object_class=1))
    res = ev.evaluate()["part_discovery"]
    assert res["AR@10"] == pytest.approx(100.0)
    # merged GT (both legs, body): a single leg has IoU 0.5 with the merged legs
    assert res["merged_AR@10"] == pytest.approx(100 * (1 + 9 * 0.5) / 10)
    assert res["mapped_C-mIoU"] == pytest.approx(100.0) and res["mapped_A-mIoU"] == pytest.approx(100.0)
    assert res["clustered_C-mIoU"] == pytest.approx(100.0)


def test_evaluator_mapped_miou_penalises_merged_modes(dataset):
    ev = PartDiscoveryEvaluator(dataset, max_dets=(1, 10), distributed=False)
    ev.reset()
    # one mode for everything: all 200 object pixels map to the majority class "leg" (100 px)
    ev.process([{"image_id": 1}], outputs_of([LEG_A | LEG_B | BODY], [0.9], [3], object_class=0))
    res = ev.evaluate()["part_discovery"]
    assert res["mapped_C-mIoU"] == pytest.approx(100 * (0 + 100 / 200) / 2)
    assert "clustered_C-mIoU" not in res
