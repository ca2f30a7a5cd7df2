"""A tiny PartMask2Former end to end: training losses/gradients and inference outputs, with 3 and 4
input channels, and the Swin backbone on a tiny input."""
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_backbone, build_model
from detectron2.structures import BitMasks, Instances, PolygonMasks

import part_d2.modeling.backbone  # noqa: F401  (registers D2SwinTransformer)
import part_d2.modeling.mask2former  # noqa: F401  (registers PartMask2Former)
from part_d2.config import add_part_d2_config
from part_d2.modeling.mask2former.meta_arch import gt_mask_tensor

TINY = "configs/synthetic/mask2former_R_tiny_agnostic.yaml"


def tiny_cfg(channels=3):
    cfg = get_cfg()
    add_part_d2_config(cfg)
    cfg.merge_from_file(TINY)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.MASK_FORMER.TRAIN_NUM_POINTS = 256
    cfg.MODEL.MASK_FORMER.DEC_LAYERS = 3
    cfg.MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS = 1
    cfg.TEST.DETECTIONS_PER_IMAGE = 7
    if channels == 4:
        cfg.MODEL.PIXEL_MEAN = list(cfg.MODEL.PIXEL_MEAN) + [127.5]
        cfg.MODEL.PIXEL_STD = list(cfg.MODEL.PIXEL_STD) + [127.5]
    return cfg


def fake_batch(channels=3, sizes=((64, 96), (80, 64))):
    batch = []
    for i, (h, w) in enumerate(sizes):
        image = torch.randint(0, 256, (channels, h, w), dtype=torch.uint8)
        inst = Instances((h, w))
        masks = torch.zeros(2, h, w, dtype=torch.bool)
        masks[0, : h // 2, : w // 2] = True
        masks[1, h // 2:, w // 3:] = True
        if channels == 4:
            image[3] = (masks.any(0) * 255).to(torch.uint8)
        inst.gt_masks = BitMasks(masks) if i == 0 else PolygonMasks(
            [[[0, 0, w / 2, 0, w / 2, h / 2, 0, h / 2]], [[w / 3, h / 2, w, h / 2, w, h, w / 3, h]]]
        )
        inst.gt_classes = torch.zeros(2, dtype=torch.int64)
        batch.append({"image": image, "instances": inst, "height": 2 * h, "width": w})
    return batch


@pytest.mark.parametrize("channels", [3, 4])
def test_training_losses_and_gradients(channels):
    torch.manual_seed(0)
    model = build_model(tiny_cfg(channels))
    model.train()
    batch = fake_batch(channels)
    empty = Instances((64, 64))
    empty.gt_masks = BitMasks(torch.zeros(0, 64, 64, dtype=torch.bool))
    empty.gt_classes = torch.zeros(0, dtype=torch.int64)
    batch.append({"image": torch.zeros(channels, 64, 64, dtype=torch.uint8), "instances": empty})
    losses = model(batch)
    # DEC_LAYERS 3: final prediction + 2 auxiliary ones, 3 losses each, weighted 2 / 5 / 5
    assert set(losses) == {f"loss_{n}{s}" for n in ("ce", "mask", "dice") for s in ("", "_0", "_1")}
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    sum(losses.values()).backward()
    stem = model.backbone.stem.conv1.weight
    assert stem.shape[1] == channels and stem.grad.abs().sum() > 0
    assert model.sem_seg_head.predictor.query_feat.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("channels", [3, 4])
def test_inference_outputs(channels):
    torch.manual_seed(0)
    cfg = tiny_cfg(channels)
    cfg.MODEL.MASK_FORMER.TEST.RETURN_QUERY_EMBEDDINGS = True
    model = build_model(cfg).eval()
    batch = fake_batch(channels)
    with torch.no_grad():
        results = model(batch)
    for x, res in zip(batch, results):
        inst = res["instances"]
        assert inst.image_size == (x["height"], x["width"])
        assert len(inst) == 7  # TEST.DETECTIONS_PER_IMAGE; 20 queries x 1 class available
        assert inst.pred_masks.shape == (7, x["height"], x["width"]) and inst.pred_masks.dtype == torch.bool
        assert inst.query_embeddings.shape == (7, cfg.MODEL.MASK_FORMER.HIDDEN_DIM)
        assert ((inst.scores >= 0) & (inst.scores <= 1)).all()
        assert (inst.pred_classes == 0).all()
        assert len(set(inst.query_indices.tolist())) == 7


def test_mask_features_and_forward_features():
    model = build_model(tiny_cfg()).eval()
    batch = fake_batch()
    with torch.no_grad():
        images, outputs = model.forward_features(batch)
        feats = model.mask_features(batch)
    n, _, h, w = images.tensor.shape
    assert (h, w) == (96, 96)  # padded to 32
    assert feats.shape == (n, 64, h // 4, w // 4)
    assert outputs["pred_masks"].shape == (n, 20, h // 4, w // 4)
    assert outputs["pred_embeddings"].shape == (n, 20, 64)
    assert len(outputs["aux_outputs"]) == 2


def test_eval_mode_fast_paths_give_the_training_mode_predictions():
    """Without training, attention masks come from resized mask features and only the last
    prediction has full masks: every prediction's logits and the last masks are unchanged."""
    torch.manual_seed(0)
    model = build_model(tiny_cfg())
    batch = fake_batch()
    with torch.no_grad():
        model.eval()
        _, fast = model.forward_features(batch)
        model.train()  # dropout is 0 in this config: only the code paths differ
        _, full = model.forward_features(batch)
    torch.testing.assert_close(fast["pred_logits"], full["pred_logits"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(fast["pred_masks"], full["pred_masks"], atol=1e-4, rtol=1e-4)
    assert all("pred_masks" in aux for aux in full["aux_outputs"])
    assert not any("pred_masks" in aux for aux in fast["aux_outputs"])
    for a, b in zip(fast["aux_outputs"], full["aux_outputs"]):
        torch.testing.assert_close(a["pred_logits"], b["pred_logits"], atol=1e-4, rtol=1e-4)


def test_wrong_channel_count_is_a_clear_error():
    model = build_model(tiny_cfg(4)).eval()
    with pytest.raises(ValueError, match="PIXEL_MEAN"):
        model(fake_batch(3))


def test_polygon_gt_masks_are_rasterised():
    inst = Instances((4, 4))
    inst.gt_masks = PolygonMasks([[[0, 0, 2, 0, 2, 2, 0, 2]]])
    mask = gt_mask_tensor(inst, 4, 4)
    assert mask.dtype == torch.bool and mask[0, :2, :2].all() and mask.sum() == 4


def test_tiny_swin_backbone_strides_and_four_channels():
    cfg = get_cfg()
    add_part_d2_config(cfg)
    cfg.MODEL.BACKBONE.NAME = "D2SwinTransformer"
    cfg.MODEL.PIXEL_MEAN = [0.0] * 4
    cfg.MODEL.PIXEL_STD = [1.0] * 4
    cfg.MODEL.SWIN.EMBED_DIM = 16
    cfg.MODEL.SWIN.DEPTHS = [2, 2, 2, 2]
    cfg.MODEL.SWIN.NUM_HEADS = [1, 2, 2, 4]
    cfg.MODEL.SWIN.WINDOW_SIZE = 3
    backbone = build_backbone(cfg).eval()
    assert backbone.patch_embed.proj.weight.shape == (16, 4, 4, 4)
    out = backbone(torch.randn(1, 4, 70, 50))  # not multiples of the window or of 32
    shapes = {k: tuple(v.shape) for k, v in out.items()}
    assert shapes == {"res2": (1, 16, 18, 13), "res3": (1, 32, 9, 7), "res4": (1, 64, 5, 4), "res5": (1, 128, 3, 2)}
    assert {k: v.stride for k, v in backbone.output_shape().items()} == {"res2": 4, "res3": 8, "res4": 16, "res5": 32}
