"""OPS self-supervised fine-tuning: loss wiring of SelfSupervisedPartMask2Former and the training
object masks of the dataset mapper."""
import numpy as np
import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Instances

import part_d2  # noqa: F401
from part_d2.data.dataset_mapper import PartDatasetMapper
from part_d2.data.object_masks import union_of_objects
from part_d2.data.part_json import load_part_json
from part_d2.engine.setup import load_config
from part_d2.modeling.losses.cluster_contrastive import ClusterContrastiveLoss, resize_object_masks
from part_d2.modeling.mask2former.self_supervised import SelfSupervisedPartMask2Former, select_outputs

TINY = "configs/synthetic/mask2former_R_tiny_agnostic.yaml"
SUPERVISED = {f"loss_{n}{s}" for n in ("ce", "mask", "dice") for s in ("", "_0", "_1")}
SS = {"loss_affinity", "loss_contrast"}


def ss_cfg(ss=True):
    return load_config(TINY, [
        "MODEL.DEVICE", "cpu", "MODEL.META_ARCHITECTURE", "SelfSupervisedPartMask2Former",
        "MODEL.OPS.SS_LOSS.ENABLED", str(ss), "MODEL.OPS.SS_LOSS.K", "3", "MODEL.OPS.SS_LOSS.SEED", "0",
        "MODEL.MASK_FORMER.TRAIN_NUM_POINTS", "256", "MODEL.MASK_FORMER.DEC_LAYERS", "3",
        "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS", "1",
    ])


def make_input(labeled, size=(64, 64), seed=0):
    gen = torch.Generator().manual_seed(seed)
    h, w = size
    obj = torch.zeros(h, w, dtype=torch.bool)
    obj[8:48, 12:52] = True
    x = {"image": torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=gen), "object_mask": obj}
    if labeled:
        inst = Instances((h, w))
        masks = torch.zeros(2, h, w, dtype=torch.bool)
        masks[0, 8:48, 12:32] = True
        masks[1, 8:48, 32:52] = True
        inst.gt_masks = BitMasks(masks)
        inst.gt_classes = torch.zeros(2, dtype=torch.int64)
        x["instances"] = inst
    return x


def run_with_feature_grad(model, batch, keys):
    """Backward of the sum of ``keys`` losses; returns (losses, grad of mask_features)."""
    captured = {}
    original = model.forward_features

    def forward_features(inputs):
        images, outputs = original(inputs)
        outputs["mask_features"].retain_grad()
        captured["features"] = outputs["mask_features"]
        return images, outputs

    model.forward_features = forward_features
    try:
        losses = model(batch)
    finally:
        del model.forward_features
    sum(v for k, v in losses.items() if k in keys).backward()
    return losses, captured["features"].grad


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(ss_cfg()).train()


@pytest.fixture
def fresh(model):
    model.zero_grad(set_to_none=True)
    yield model
    model.zero_grad(set_to_none=True)


def test_registered_and_loss_keys(fresh):
    assert isinstance(fresh, SelfSupervisedPartMask2Former) and isinstance(fresh.ss_loss, ClusterContrastiveLoss)
    losses = fresh([make_input(True), make_input(False, seed=1)])
    assert set(losses) == SUPERVISED | SS
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_affinity"] > 0


def test_ss_gradients_only_from_object_pixels(fresh):
    batch = [make_input(True), make_input(False, seed=1)]
    _, grad = run_with_feature_grad(fresh, batch, SS)
    inside = resize_object_masks(torch.stack([x["object_mask"] for x in batch]), grad.shape[-2:])
    per_pixel = grad.abs().sum(dim=1)  # (N, h, w)
    assert per_pixel[~inside].max() == 0
    for i in range(len(batch)):  # labeled and unlabeled images both get the SS loss
        assert per_pixel[i][inside[i]].sum() > 0
    decoder_grads = [p.grad for p in fresh.sem_seg_head.pixel_decoder.parameters() if p.grad is not None]
    assert decoder_grads and any(g.abs().sum() > 0 for g in decoder_grads)
    # the SS loss does not reach the transformer decoder's queries
    assert fresh.sem_seg_head.predictor.query_feat.weight.grad is None


def test_supervised_losses_only_from_labeled_images(fresh):
    batch = [make_input(False, seed=1), make_input(True), make_input(False, seed=2)]
    torch.manual_seed(1)
    losses, grad = run_with_feature_grad(fresh, batch, SUPERVISED)
    per_image = grad.abs().flatten(1).sum(dim=1)
    assert per_image[0] == 0 and per_image[2] == 0 and per_image[1] > 0
    # the same supervised losses as for the labeled image alone (same padded size, same sampling)
    torch.manual_seed(1)
    with torch.no_grad():
        alone = fresh([make_input(True)])
    for k in SUPERVISED:
        assert torch.allclose(losses[k], alone[k], atol=1e-5), k


def test_without_ss_loss(fresh):
    ss_loss = fresh.ss_loss
    fresh.ss_loss = None
    try:
        with torch.no_grad():
            assert set(fresh([make_input(True), make_input(False, seed=1)])) == SUPERVISED
            with pytest.raises(ValueError, match="SS_LOSS"):
                fresh([make_input(False)])
    finally:
        fresh.ss_loss = ss_loss
    with torch.no_grad():
        assert set(fresh([make_input(False), make_input(False, seed=1)])) == SS
        with pytest.raises(KeyError, match="object_mask"):
            fresh([{k: v for k, v in make_input(True).items() if k != "object_mask"}])


def test_select_outputs():
    outputs = {"pred_logits": torch.arange(6).view(3, 2), "aux_outputs": [{"pred_masks": torch.arange(3)}], "x": 1}
    sel = select_outputs(outputs, torch.tensor([2, 0]))
    assert sel["pred_logits"].tolist() == [[4, 5], [0, 1]]
    assert sel["aux_outputs"][0]["pred_masks"].tolist() == [2, 0] and sel["x"] == 1


@pytest.mark.parametrize("channels", [3, 4])
def test_mapper_training_object_mask(tiny_part_dataset, channels):
    json_file, root, _ = tiny_part_dataset
    opts = ["MODEL.OPS.SS_LOSS.ENABLED", "True", "INPUT.IMAGE_SIZE", "64", "INPUT.MIN_SCALE", "1.0",
            "INPUT.MAX_SCALE", "1.0", "INPUT.RANDOM_FLIP_LSJ", "none"]
    if channels == 4:
        opts += ["INPUT.OBJECT_MASK.ENABLED", "True", "MODEL.PIXEL_MEAN", "[123.675, 116.28, 103.53, 127.5]",
                 "MODEL.PIXEL_STD", "[58.395, 57.12, 57.375, 127.5]"]
    cfg = load_config(TINY, opts)
    record = load_part_json(json_file, root, "agnostic")[0]
    out = PartDatasetMapper(cfg, True)(record)
    mask = out["object_mask"]
    assert mask.dtype == torch.bool and tuple(mask.shape) == tuple(out["image"].shape[1:]) == (64, 64)
    expected = np.zeros((64, 64), dtype=bool)  # 48x64 image, scale 1, padded to 64x64
    expected[:48] = union_of_objects(record)
    assert np.array_equal(mask.numpy(), expected)
    if channels == 4:
        assert torch.equal(out["image"][3] == 255, mask)
    # at test time the mask (original resolution) is only there for pre-aware models
    assert ("object_mask" in PartDatasetMapper(cfg, False)(record)) == (channels == 4)
    plain = PartDatasetMapper(load_config(TINY, []), True)(record)
    assert "object_mask" not in plain
