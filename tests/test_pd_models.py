"""PartDistillation models: freezing, the gathered per-object-class classifier (values, gradients,
materialised elements), weight-decay exclusion, object conditioning and few-shot selection."""
import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Instances
from torch.utils._python_dispatch import TorchDispatchMode

import part_d2.modeling.mask2former  # noqa: F401  (registers PartMask2Former)
from part_d2.config import add_part_d2_config
from part_d2.data.few_shot import few_shot_subset, filter_by_area_ratios, select_training_records
from part_d2.modeling.mask2former.object_conditioning import FeatureObjectConditioning
from part_d2.modeling.mask2former.part_classifier import PerObjectPartClassifier, split_part_labels
from part_d2.solver.build import build_optimizer, param_groups
from part_d2.structures.masks import mask_to_rle

TINY = "configs/synthetic/mask2former_R_tiny_agnostic.yaml"


def tiny_cfg(classifier="agnostic", **pd):
    cfg = get_cfg()
    add_part_d2_config(cfg)
    cfg.merge_from_file(TINY)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.META_ARCHITECTURE = "PartDistillationMask2Former"
    cfg.MODEL.MASK_FORMER.TRAIN_NUM_POINTS = 128
    cfg.MODEL.MASK_FORMER.DEC_LAYERS = 3
    cfg.MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS = 1
    cfg.TEST.DETECTIONS_PER_IMAGE = 5
    cfg.PART_DISTILLATION.CLASSIFIER = classifier
    if classifier == "per_object":
        cfg.PART_DISTILLATION.NUM_OBJECT_CLASSES = 5
        cfg.PART_DISTILLATION.NUM_PART_MODES = 3
        cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 3
    for k, v in pd.items():
        cfg.PART_DISTILLATION[k] = v
    return cfg


def batch(object_classes=(1, 3), num_parts=3, size=48, agnostic=False):
    out = []
    for o in object_classes:
        masks = torch.zeros(2, size, size, dtype=torch.bool)
        masks[0, : size // 2, : size // 2] = True
        masks[1, size // 2 :, size // 3 :] = True
        inst = Instances((size, size))
        inst.gt_masks = BitMasks(masks)
        inst.gt_classes = (
            torch.zeros(2, dtype=torch.int64) if agnostic else torch.tensor([o * num_parts, o * num_parts + 2])
        )
        out.append({"image": torch.randint(0, 256, (3, size, size), dtype=torch.uint8), "instances": inst,
                    "object_category_id": o, "object_mask": masks.any(0)})
    return out


@pytest.mark.parametrize("pixel_decoder", ["encoder", "all"])
def test_frozen_parameters_get_no_gradient(pixel_decoder):
    torch.manual_seed(0)
    model = build_model(tiny_cfg(FREEZE_BACKBONE=True, FREEZE_PIXEL_DECODER=pixel_decoder))
    model.train()
    sum(model(batch(agnostic=True)).values()).backward()
    frozen_prefix = "sem_seg_head.pixel_decoder." + ("transformer.encoder." if pixel_decoder == "encoder" else "")
    names = dict(model.named_parameters())
    frozen = [n for n in names if n.startswith("backbone.") or n.startswith(frozen_prefix)]
    assert frozen and all(not names[n].requires_grad and names[n].grad is None for n in frozen)
    trainable = [n for n in names if n not in frozen]
    assert all(names[n].requires_grad for n in trainable)
    assert names["sem_seg_head.predictor.query_feat.weight"].grad.abs().sum() > 0
    if pixel_decoder == "encoder":  # the rest of the pixel decoder still learns, as in the reference
        assert names["sem_seg_head.pixel_decoder.mask_features.weight"].grad.abs().sum() > 0


def test_unknown_freeze_mode_is_rejected():
    with pytest.raises(ValueError, match="FREEZE_PIXEL_DECODER"):
        build_model(tiny_cfg(FREEZE_PIXEL_DECODER="decoder"))


def dense_reference(clf, embeddings, object_classes):
    """Dense N_obj x P logits, then the image's rows: what the gathered classifier must equal."""
    dense = embeddings @ clf.weight.t() + clf.bias  # (B, Q, N_obj * P)
    dense = dense.view(*dense.shape[:2], clf.num_object_classes, clf.num_part_classes)
    rows = dense[torch.arange(len(object_classes)), :, object_classes]  # (B, Q, P)
    return torch.cat([rows, clf.no_object(embeddings)], dim=-1)


@pytest.mark.parametrize("sparse", [False, True])
def test_gathered_classifier_equals_dense_rows_in_values_and_gradients(sparse):
    torch.manual_seed(0)
    clf = PerObjectPartClassifier(num_object_classes=6, num_part_classes=3, embed_dim=5, sparse_grad=sparse)
    emb = torch.randn(2, 4, 5, requires_grad=True)
    obj = torch.tensor([4, 1])
    upstream = torch.randn(2, 4, 4)
    out = clf(emb, obj)
    (out * upstream).sum().backward()
    assert clf.weight.grad.is_sparse == sparse and clf.bias.grad.is_sparse == sparse
    if sparse:
        assert sorted(clf.weight.grad.coalesce().indices()[0].tolist()) == [3, 4, 5, 12, 13, 14]
    grads = {n: p.grad.to_dense().clone() for n, p in clf.named_parameters()}
    grad_emb = emb.grad.clone()
    clf.zero_grad()
    emb.grad = None
    ref = dense_reference(clf, emb, obj)
    (ref * upstream).sum().backward()
    assert out.shape == (2, 4, 4)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(grad_emb, emb.grad)
    for n, p in clf.named_parameters():
        torch.testing.assert_close(grads[n], p.grad)
    touched = (grads["weight"].abs().sum(1) > 0).nonzero().flatten().tolist()
    assert touched == [3, 4, 5, 12, 13, 14]  # rows of objects 1 and 4 only


class ElementCounter(TorchDispatchMode):
    """Counts the elements of every tensor an op returns, except parameter-shaped ones (the
    parameter gradients, which a dense classifier materialises just the same)."""

    def __init__(self, skip_shapes):
        super().__init__()
        self.skip = {tuple(s) for s in skip_shapes}
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor) and tuple(t.shape) not in self.skip:
                self.count += t.numel()
        return out


def materialised(fn, module):
    counter = ElementCounter([p.shape for p in module.parameters()])
    with counter:
        fn()
    return counter.count


def test_classifier_memory_is_far_below_dense_logits():
    torch.manual_seed(0)
    num_obj, parts, batch_size, queries, dim = 22000, 8, 8, 200, 16
    clf = PerObjectPartClassifier(num_obj, parts, dim)
    emb = torch.randn(batch_size, queries, dim, requires_grad=True)
    obj = torch.randint(0, num_obj, (batch_size,))
    used = materialised(lambda: clf(emb, obj).sum().backward(), clf)
    dense_logits = batch_size * queries * num_obj * parts
    assert used * 50 <= dense_logits
    # the proxy does see dense logits: on 200 classes the dense path materialises them all
    small = PerObjectPartClassifier(200, parts, dim)
    dense_used = materialised(lambda: dense_reference(small, emb, obj % 200).sum().backward(), small)
    assert dense_used >= batch_size * queries * 200 * parts


def test_classifier_rows_are_excluded_from_weight_decay():
    cfg = tiny_cfg("per_object")
    cfg.SOLVER.WEIGHT_DECAY = 0.05
    model = build_model(cfg)
    decay = {id(g["params"][0]): g["weight_decay"] for g in param_groups(cfg, model)}
    assert decay[id(model.part_classifier.weight)] == 0.0
    assert decay[id(model.part_classifier.bias)] == 0.0
    assert decay[id(model.part_classifier.no_object.weight)] == 0.05
    assert model.sem_seg_head.predictor.class_embed is None  # the decoder is built without its own class head


def test_per_object_model_trains_on_its_rows_and_predicts_object_classes():
    torch.manual_seed(0)
    model = build_model(tiny_cfg("per_object"))
    model.train()
    losses = model(batch((1, 3)))
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    touched = (model.part_classifier.weight.grad.abs().sum(1) > 0).nonzero().flatten().tolist()
    assert touched == [3, 4, 5, 9, 10, 11]
    model.eval()
    with torch.no_grad():
        out = model(batch((2,)))[0]["instances"]
    assert out.pred_object_classes.tolist() == [2] * len(out)
    assert out.pred_classes.max() < 3


def test_sparse_classifier_gradients_train_only_the_gathered_rows():
    cfg = tiny_cfg("per_object", SPARSE_CLASSIFIER_GRAD=True)
    cfg.SOLVER.OPTIMIZER = "ADAMW"
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "full_model"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 0.01
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    optimizer = build_optimizer(cfg, model)
    before = model.part_classifier.weight.detach().clone()
    for _ in range(2):
        optimizer.zero_grad()
        sum(model(batch((1, 3))).values()).backward()
        assert model.part_classifier.weight.grad.is_sparse
        optimizer.step()
    moved = (model.part_classifier.weight.detach() != before).any(1).nonzero().flatten().tolist()
    assert moved == [3, 4, 5, 9, 10, 11]
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "value"
    with pytest.raises(ValueError, match="per-parameter clipping"):
        build_optimizer(cfg, model)


def test_per_object_model_rejects_parts_of_another_object():
    model = build_model(tiny_cfg("per_object"))
    model.train()
    inputs = batch((1,))
    inputs[0]["object_category_id"] = 2
    with pytest.raises(ValueError, match="not"):
        model(inputs)


def test_split_part_labels():
    objects, modes = split_part_labels(torch.tensor([0, 7, 8, 23]), 8)
    assert objects.tolist() == [0, 0, 1, 2] and modes.tolist() == [0, 7, 0, 7]


def test_feature_conditioning_offsets_by_object_fraction():
    cond = FeatureObjectConditioning(level_channels=2, mask_dim=1, num_levels=1)
    level = torch.zeros(1, 2, 2, 2)
    mask_features = torch.zeros(1, 1, 2, 2)
    obj = torch.zeros(1, 4, 4, dtype=torch.bool)
    obj[0, :2, :2] = True  # covers cell (0, 0) fully
    obj[0, 2, 2] = True  # covers a quarter of cell (1, 1)
    levels, masks = cond([level], mask_features, obj)
    assert torch.equal(levels[0], level) and torch.equal(masks, mask_features)  # zero init: identity
    with torch.no_grad():
        cond.level_offsets[0, 0] = torch.tensor([4.0, 8.0])  # inside
        cond.level_offsets[0, 1] = torch.tensor([-4.0, 0.0])  # outside
    levels, _ = cond([level], mask_features, obj)
    assert levels[0][0, :, 0, 0].tolist() == [4.0, 8.0]
    assert levels[0][0, :, 0, 1].tolist() == [-4.0, 0.0]
    assert levels[0][0, :, 1, 1].tolist() == [0.25 * 4 - 0.75 * 4, 0.25 * 8]


def test_object_conditioned_model_needs_an_object_mask_at_test_time():
    torch.manual_seed(0)
    model = build_model(tiny_cfg(OBJECT_CONDITIONING="feature"))
    model.train()
    sum(model(batch(agnostic=True)).values()).backward()
    assert model.object_conditioning.level_offsets.grad.abs().sum() > 0
    model.eval()
    inputs = batch((1,), agnostic=True)
    with torch.no_grad():
        assert len(model(inputs)[0]["instances"]) == 5
        del inputs[0]["object_mask"]
        with pytest.raises(ValueError, match="object_mask"):
            model(inputs)


def records_for_selection(n):
    return [{"image_id": i, "height": 10, "width": 10, "annotations": []} for i in range(n)]


def test_few_shot_is_seeded_like_the_reference_and_nested():
    records = records_for_selection(50)
    subset = few_shot_subset(records, 10)
    reference = list(records)
    np.random.seed(1234)
    np.random.shuffle(reference)
    assert [r["image_id"] for r in subset] == [r["image_id"] for r in reference[:5]]
    assert few_shot_subset(records, 10) == subset
    assert few_shot_subset(records, 30)[:5] == subset
    assert few_shot_subset(records, 10, seed=1) != subset
    assert few_shot_subset(records, 100) == records
    with pytest.raises(ValueError):
        few_shot_subset(records, 0)


def test_area_filters_and_config_selection():
    def rle(y0, y1, x0, x1):
        m = np.zeros((10, 10), dtype=bool)
        m[y0:y1, x0:x1] = True
        return mask_to_rle(m)

    big = {
        "image_id": 1,
        "height": 10,
        "width": 10,
        "objects": [{"id": 7, "segmentation": rle(0, 10, 0, 5), "area": 50}],
        "annotations": [
            {"object_id": 7, "segmentation": rle(0, 9, 0, 5), "area": 45},
            {"object_id": 7, "segmentation": rle(9, 10, 0, 2), "area": 2},
        ],
    }
    tiny = {"image_id": 2, "height": 10, "width": 10, "objects": [],
            "annotations": [{"segmentation": rle(0, 1, 0, 1)}]}  # object = union of parts: 1% of the image
    kept = filter_by_area_ratios([big, tiny], min_object_ratio=0.01, min_part_ratio=0.05)
    assert [r["image_id"] for r in kept] == [1]
    assert [a["area"] for a in kept[0]["annotations"]] == [45]  # 2/50 = 4% <= 5% dropped
    assert len(filter_by_area_ratios([big, tiny], 0.0, 0.0)) == 2
    cfg = tiny_cfg()
    cfg.DATASETS.MIN_OBJECT_AREA_RATIO = 0.01
    cfg.DATASETS.FEW_SHOT_PERCENTAGE = 50
    assert [r["image_id"] for r in select_training_records(cfg, [big, tiny, big])] == [1]


def test_integer_few_shot_percentage_from_the_command_line():
    from part_d2.engine.setup import load_config

    cfg = load_config("configs/synthetic/pd_few_shot_R_tiny.yaml", ["DATASETS.FEW_SHOT_PERCENTAGE", "1"])
    assert cfg.DATASETS.FEW_SHOT_PERCENTAGE == 1
    records = [{"file_name": str(i)} for i in range(250)]
    assert len(few_shot_subset(records, cfg.DATASETS.FEW_SHOT_PERCENTAGE)) == 2  # 1% of 250
    assert len(few_shot_subset(records[:10], 1)) == 1  # never empty


def test_few_shot_model_is_class_specific_and_starts_from_the_stage3_weights(tmp_path):
    """The few-shot model trains on real part labels with its own K-class head; the stage-3
    checkpoint gives everything else (its per-object classifier is skipped)."""
    from part_d2.checkpoint import PartCheckpointer
    from part_d2.engine.setup import load_config

    torch.manual_seed(0)
    stage3 = build_model(tiny_cfg("per_object")).state_dict()
    torch.save({"model": stage3}, tmp_path / "stage3.pth")
    cfg = load_config("configs/synthetic/pd_few_shot_R_tiny.yaml", ["MODEL.DEVICE", "cpu"] + sum(
        ([k, str(v)] for k, v in [("MODEL.MASK_FORMER.DEC_LAYERS", 3), ("MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS", 1),
                                  ("MODEL.MASK_FORMER.TRAIN_NUM_POINTS", 128),
                                  ("MODEL.MASK_FORMER.QUERY_FEATURE_NORMALIZE", False)]), []))
    model = build_model(cfg)
    PartCheckpointer(model).load(str(tmp_path / "stage3.pth"))
    loaded = model.state_dict()
    assert loaded["sem_seg_head.predictor.class_embed.weight"].shape == (14, 64)
    assert torch.equal(loaded["sem_seg_head.predictor.mask_embed.layers.0.weight"],
                       stage3["sem_seg_head.predictor.mask_embed.layers.0.weight"])
    model.train()
    inputs = batch((1,), num_parts=1, agnostic=False)
    inputs[0]["instances"].gt_classes = torch.tensor([4, 12])  # real part classes of the dataset
    losses = model(inputs)
    assert all(torch.isfinite(v) for v in losses.values())
