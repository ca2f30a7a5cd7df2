"""Federated loss: class frequencies, per-batch class sampling, the restricted sigmoid CE, and a
tiny class-aware Cascade Mask R-CNN with ``FederatedCascadeROIHeads`` (train step + inference)."""
import json
import math

import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage

from part_d2.modeling.roi_heads import (
    FederatedFastRCNNOutputLayers,
    dataset_image_counts,
    federated_class_weights,
    image_counts_from_json,
    image_counts_from_records,
    sample_federated_classes,
    sigmoid_cross_entropy,
)

TINY_CASCADE = "configs/synthetic/cascade_mask_rcnn_R_tiny_agnostic.yaml"
PINPP_CONFIG = "configs/cascade_mask_rcnn_R_50_FPN_pinpp_fedloss.yaml"


def _softplus(x):
    return math.log1p(math.exp(x))


def _register_counts(name, counts, records=()):
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: list(records))
    MetadataCatalog.get(name).set(
        thing_classes=[f"c{i}" for i in range(len(counts))],
        class_image_count=[{"id": i + 1, "image_count": n} for i, n in enumerate(counts)],
    )


# ---------------------------------------------------------------- sampling


def test_sampled_classes_include_gt_have_requested_size_and_no_background():
    gt = torch.tensor([3, 7, 7, 20, 20])  # 20 = background of K = 20
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        classes = sample_federated_classes(gt, 20, 6, torch.ones(20), generator=g)
        assert len(classes) == 6 and len(set(classes.tolist())) == 6
        assert {3, 7} <= set(classes.tolist())
        assert classes.max() < 20 and classes.tolist() == sorted(classes.tolist())


def test_more_gt_classes_than_requested_keeps_exactly_the_gt_classes():
    gt = torch.tensor([4, 1, 0, 2, 5])
    assert sample_federated_classes(gt, 6, 3, torch.ones(6)).tolist() == [0, 1, 2, 4, 5]


def test_unseen_classes_are_never_sampled():
    weights = torch.tensor([0.0, 2.0, 0.0, 1.0, 0.0])
    # only classes 1 and 3 can be negatives: 1 GT + 2 negatives although 4 were requested
    classes = sample_federated_classes(torch.tensor([4, 5]), 5, 4, weights)
    assert classes.tolist() == [1, 3, 4]


def test_negatives_follow_the_frequency_weights():
    counts = torch.tensor([1.0, 16.0, 0.0, 81.0])
    weights = counts ** 0.5  # 1, 4, 0, 9
    g = torch.Generator().manual_seed(0)
    n = 3000
    hits = torch.zeros(4)
    for _ in range(n):
        hits[sample_federated_classes(torch.tensor([4]), 4, 1, weights, generator=g)] += 1
    assert torch.allclose(hits / n, torch.tensor([1 / 14, 4 / 14, 0.0, 9 / 14]), atol=0.03)
    # with class 3 in the GT, the one negative is 0 or 1 with odds 1 : 4
    hits = torch.zeros(4)
    for _ in range(n):
        hits[sample_federated_classes(torch.tensor([3, 4]), 4, 2, weights, generator=g)] += 1
    assert hits[3] == n and hits[2] == 0
    assert abs(hits[1] / n - 0.8) < 0.03 and abs(hits[0] / n - 0.2) < 0.03


def test_weights_shape_is_checked():
    with pytest.raises(ValueError, match=r"expected \(5,\)"):
        sample_federated_classes(torch.tensor([0]), 5, 2, torch.ones(4))


# ---------------------------------------------------------------- loss


def test_sigmoid_ce_on_sampled_classes_equals_hand_computation():
    # K = 3 foreground classes + background column; proposals of classes 0, 2 and background
    logits = torch.tensor([[0.5, -1.0, 2.0, 3.0], [1.5, 0.0, -0.5, -2.0], [-0.3, 0.7, 1.0, 4.0]], requires_grad=True)
    gt = torch.tensor([0, 2, 3])
    loss = sigmoid_cross_entropy(logits, gt, torch.tensor([0, 1]))
    # BCE(x, t) = softplus(x) - t * x, summed over the rows and classes {0, 1}, divided by 3 rows
    expected = ((_softplus(0.5) - 0.5) + _softplus(-1.0)
                + _softplus(1.5) + _softplus(0.0)
                + _softplus(-0.3) + _softplus(0.7)) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert (logits.grad[:, 2:] == 0).all()  # unsampled class 2 and the background column
    assert (logits.grad[:, :2] != 0).all()
    # d/dx = (sigmoid(x) - t) / R
    assert logits.grad[0, 0].item() == pytest.approx((1 / (1 + math.exp(-0.5)) - 1) / 3, rel=1e-6)


def test_sigmoid_ce_over_all_classes_and_background_only_batches():
    logits = torch.tensor([[0.2, -0.4, 1.0], [2.0, 1.0, -3.0]])
    gt = torch.tensor([2, 2])  # K = 2: both proposals are background, every target is 0
    expected = (_softplus(0.2) + _softplus(-0.4) + _softplus(2.0) + _softplus(1.0)) / 2
    assert sigmoid_cross_entropy(logits, gt).item() == pytest.approx(expected, rel=1e-6)
    # a background-only batch: the federated set is only sampled negatives
    classes = sample_federated_classes(gt, 2, 1, torch.tensor([0.0, 1.0]))
    assert classes.tolist() == [1]
    assert sigmoid_cross_entropy(logits, gt, classes).item() == pytest.approx(
        (_softplus(-0.4) + _softplus(1.0)) / 2, rel=1e-6)


def test_empty_batch_gives_zero_connected_to_the_graph():
    logits = torch.zeros(0, 4, requires_grad=True)
    loss = sigmoid_cross_entropy(logits, torch.zeros(0, dtype=torch.long), torch.tensor([0]))
    assert loss.item() == 0.0 and loss.requires_grad


# ---------------------------------------------------------------- class frequencies


def test_image_counts_from_json_and_records(tmp_path):
    lvis = tmp_path / "lvis.json"
    lvis.write_text(json.dumps({"categories": [{"id": 9, "image_count": 7}, {"id": 2, "image_count": 3},
                                               {"id": 5, "image_count": 0}]}))
    assert image_counts_from_json(str(lvis)).tolist() == [3, 0, 7]  # contiguous = sorted by id
    plain = tmp_path / "coco.json"
    plain.write_text(json.dumps({"categories": [{"id": 1, "name": "a"}]}))
    assert image_counts_from_json(str(plain)) is None
    records = [{"annotations": [{"category_id": 0}, {"category_id": 0}, {"category_id": 2}]},
               {"annotations": [{"category_id": 2}]}, {"annotations": []}]
    assert image_counts_from_records(records, 4).tolist() == [1, 0, 2, 0]
    with pytest.raises(ValueError, match="outside"):
        image_counts_from_records(records, 2)


def test_dataset_counts_fall_back_to_records_and_weights_sum_datasets():
    records = [{"file_name": "a", "annotations": [{"category_id": 1}]},
               {"file_name": "b", "annotations": [{"category_id": 1}, {"category_id": 0}]}]
    name = "fedloss_test_records"
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: records)
    MetadataCatalog.get(name).set(thing_classes=["x", "y", "z"])
    assert dataset_image_counts(name).tolist() == [1, 2, 0]
    _register_counts("fedloss_test_meta", [3, 2, 9])
    weights = federated_class_weights([name, "fedloss_test_meta"], 0.5, 3)
    assert torch.allclose(weights, torch.tensor([2.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="NUM_CLASSES is 4"):
        federated_class_weights(name, 0.5, 4)


def test_pinpp_lvis_image_counts_match_its_records(tmp_path):
    from fixtures_raw import write_pinpp_release

    from part_d2.data.datasets.pinpp import prepare_pinpp, register_pinpp

    raw, root = str(tmp_path / "raw"), str(tmp_path / "d2")
    write_pinpp_release(raw)
    prepare_pinpp(raw, root)
    register_pinpp(root)
    try:
        counts = dataset_image_counts("pinpp_train_parts")  # from the LVIS json's image_count
        assert counts.tolist() == image_counts_from_records(DatasetCatalog.get("pinpp_train_parts"), 4).tolist()
        assert counts.sum() > 0
    finally:
        register_pinpp()


# ---------------------------------------------------------------- box predictor and cascade model


def _proposals(gt_classes, num_classes):
    n = len(gt_classes)
    inst = Instances((32, 32))
    inst.proposal_boxes = Boxes(torch.tensor([[0.0, 0.0, 10.0, 10.0]]).repeat(n, 1))
    inst.gt_boxes = Boxes(torch.tensor([[1.0, 1.0, 11.0, 12.0]]).repeat(n, 1))
    inst.gt_classes = torch.tensor(gt_classes)
    return [inst]


def test_predictor_losses_and_probabilities():
    from detectron2.layers import ShapeSpec
    from detectron2.modeling.box_regression import Box2BoxTransform

    torch.manual_seed(0)
    calls = []

    def weights():
        calls.append(1)
        return torch.tensor([1.0, 0.0, 1.0, 1.0])

    predictor = FederatedFastRCNNOutputLayers(
        ShapeSpec(channels=8), box2box_transform=Box2BoxTransform((10.0, 10.0, 5.0, 5.0)), num_classes=4,
        cls_agnostic_bbox_reg=True, use_sigmoid_ce=True, use_fed_loss=True, fed_loss_num_classes=4,
        fed_loss_cls_weights=weights)
    assert predictor.fed_loss_cls_weights is None and not calls  # computed at the first training step
    x = torch.randn(3, 8)
    scores, deltas = predictor(x)
    with EventStorage():
        losses = predictor.losses((scores, deltas), _proposals([0, 4, 2], 4))
    assert len(calls) == 1
    # set = GT {0, 2} + the only other positive-weight class 3; class 1 (weight 0) is excluded
    expected = sigmoid_cross_entropy(scores, torch.tensor([0, 4, 2]), torch.tensor([0, 2, 3]))
    assert losses["loss_cls"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert losses["loss_box_reg"].item() > 0
    probs = predictor.predict_probs((scores, deltas), _proposals([0, 4, 2], 4))
    assert torch.allclose(probs[0], scores.sigmoid())
    with pytest.raises(ValueError, match="USE_SIGMOID_CE"):
        FederatedFastRCNNOutputLayers(
            ShapeSpec(channels=8), box2box_transform=Box2BoxTransform((10.0, 10.0, 5.0, 5.0)), num_classes=4,
            use_fed_loss=True, fed_loss_cls_weights=torch.ones(4))


def _tiny_cascade_cfg(train_set):
    from part_d2.engine.setup import load_config

    return load_config(TINY_CASCADE, [
        "MODEL.ROI_HEADS.NAME", "FederatedCascadeROIHeads", "MODEL.ROI_HEADS.NUM_CLASSES", "5",
        "MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK", "False", "DATASETS.CLASS_AGNOSTIC", "False",
        "MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE", "True", "MODEL.ROI_BOX_HEAD.USE_FED_LOSS", "True",
        "MODEL.ROI_BOX_HEAD.FED_LOSS_NUM_CLASSES", "3", "DATASETS.TRAIN", f"('{train_set}',)",
        "MODEL.RPN.POST_NMS_TOPK_TRAIN", "64", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32",
        "MODEL.RPN.POST_NMS_TOPK_TEST", "50", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
    ])


def _fake_image(boxes, classes, size=64):
    masks = torch.zeros(len(boxes), size, size, dtype=torch.bool)
    for m, (x0, y0, x1, y1) in zip(masks, boxes):
        m[y0:y1, x0:x1] = True
    inst = Instances((size, size))
    inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
    inst.gt_classes = torch.tensor(classes)
    inst.gt_masks = BitMasks(masks)
    return {"image": torch.randint(0, 255, (3, size, size), dtype=torch.uint8), "height": size, "width": size,
            "instances": inst}


def test_tiny_class_aware_cascade_trains_and_infers():
    from detectron2.modeling import build_model

    _register_counts("fedloss_test_train", [10, 0, 5, 1, 3])  # class 1: in no training image
    cfg = _tiny_cascade_cfg("fedloss_test_train")
    torch.manual_seed(0)
    model = build_model(cfg)
    predictors = model.roi_heads.box_predictor
    assert len(predictors) == 3 and all(isinstance(p, FederatedFastRCNNOutputLayers) for p in predictors)
    assert model.roi_heads.mask_head.predictor.out_channels == 5  # class-aware masks
    batch = [_fake_image([[4, 4, 30, 30], [34, 8, 60, 40]], [0, 2]), _fake_image([[10, 20, 50, 56]], [2])]
    model.train()
    with EventStorage():
        losses = model(batch)
    assert {"loss_cls_stage0", "loss_cls_stage2", "loss_box_reg_stage1", "loss_mask"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    for p in predictors:
        assert torch.allclose(p.fed_loss_cls_weights, torch.tensor([10.0, 0.0, 5.0, 1.0, 3.0]) ** 0.5)
        grad = p.cls_score.weight.grad.abs().sum(dim=1)  # (K + 1,)
        assert grad[1] == 0 and grad[5] == 0  # never-sampled class and the unused background logit
        assert grad[0] > 0 and grad[2] > 0  # the batch's GT classes
    model.eval()
    with torch.no_grad():
        out = model([{k: v for k, v in batch[0].items() if k != "instances"}])[0]["instances"]
    assert len(out) > 0
    assert out.pred_classes.min() >= 0 and out.pred_classes.max() < 5
    assert ((out.scores >= 0) & (out.scores <= 1)).all()
    assert out.pred_masks.shape[1:] == (64, 64)


def test_pinpp_config_builds_without_its_data():
    from detectron2.modeling import build_model

    from part_d2.engine.setup import load_config

    cfg = load_config(PINPP_CONFIG, ["MODEL.DEVICE", "cpu", "MODEL.RESNETS.DEPTH", "18",
                                     "MODEL.RESNETS.RES2_OUT_CHANNELS", "64"])
    assert cfg.MODEL.ROI_BOX_HEAD.USE_FED_LOSS and cfg.MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE
    assert cfg.DATASETS.TRAIN == ("pinpp_train_parts",) and not cfg.MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK
    model = build_model(cfg)  # class weights are read at the first training step, not here
    assert all(p.num_classes == 3308 and p.fed_loss_cls_weights is None for p in model.roi_heads.box_predictor)
