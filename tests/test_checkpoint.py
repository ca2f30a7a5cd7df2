"""PartCheckpointer: 3 -> 4 channel stem initialisation, class-head skipping, wrong checkpoints."""
import logging
import pickle

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model

import part_d2.modeling.mask2former  # noqa: F401
from part_d2.checkpoint import CheckpointMismatchError, PartCheckpointer
from part_d2.config import add_part_d2_config
from part_d2.modeling.backbone import widen_input_weight

STEM = "backbone.stem.conv1.weight"


def tiny_model(channels=3, num_classes=1):
    cfg = get_cfg()
    add_part_d2_config(cfg)
    cfg.merge_from_file("configs/synthetic/mask2former_R_tiny_agnostic.yaml")
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.MASK_FORMER.DEC_LAYERS = 2
    cfg.MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS = 1
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = num_classes
    cfg.MODEL.PIXEL_MEAN = [0.0] * channels
    cfg.MODEL.PIXEL_STD = [1.0] * channels
    return build_model(cfg)


@pytest.fixture(scope="module")
def saved_three_channel(tmp_path_factory):
    torch.manual_seed(1)
    model = tiny_model(3, num_classes=80)
    path = tmp_path_factory.mktemp("ckpt") / "model_3ch.pth"
    torch.save({"model": model.state_dict(), "iteration": 7}, path)
    return path, {k: v.clone() for k, v in model.state_dict().items()}


def test_widen_input_weight_modes():
    w = torch.arange(6.0).view(1, 3, 1, 2)
    assert widen_input_weight(w, 4, "zero")[0, 3].tolist() == [[0.0, 0.0]]
    assert widen_input_weight(w, 4, "mean")[0, 3].tolist() == [[2.0, 3.0]]
    assert torch.equal(widen_input_weight(w, 4, "mean")[:, :3], w)
    own = torch.randn(1, 4, 1, 2)
    assert torch.equal(widen_input_weight(w, 4, "random", own), own)
    with pytest.raises(ValueError, match="OBJECT_MASK.INIT"):
        widen_input_weight(w, 4, "ones")


@pytest.mark.parametrize("init", ["zero", "mean", "random"])
def test_four_channel_stem_from_three_channel_checkpoint(saved_three_channel, init):
    path, reference = saved_three_channel
    torch.manual_seed(2)
    model = tiny_model(4)
    before = model.state_dict()[STEM].clone()
    PartCheckpointer(model, init=init).load(str(path))
    stem = model.state_dict()[STEM]
    assert stem.shape[1] == 4
    if init == "random":
        assert torch.equal(stem, before)
    else:
        assert torch.equal(stem[:, :3], reference[STEM])
        extra = torch.zeros_like(stem[:, 3]) if init == "zero" else reference[STEM].mean(1)
        assert torch.allclose(stem[:, 3], extra)
    res2 = "backbone.res2.0.conv1.weight"
    assert torch.equal(model.state_dict()[res2], reference[res2])


def test_class_agnostic_model_skips_only_the_class_head(saved_three_channel, caplog):
    path, reference = saved_three_channel
    model = tiny_model(3, num_classes=1)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    with caplog.at_level(logging.WARNING):
        incompatible = PartCheckpointer(model).load(str(path))
    head = {"sem_seg_head.predictor.class_embed.weight", "sem_seg_head.predictor.class_embed.bias",
            "criterion.empty_weight"}
    state = model.state_dict()
    not_loaded = {k for k in state if not torch.equal(state[k], reference[k]) or state[k].shape != reference[k].shape}
    assert not_loaded == head
    assert all(torch.equal(state[k], fresh[k]) for k in head)
    assert "3 checkpoint entries skipped for shape" in caplog.text
    assert incompatible == {"iteration": 7}  # the rest of the checkpoint is returned


def test_pkl_model_zoo_file_loads_with_a_warning(tmp_path, caplog):
    model = tiny_model(3)
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    path = tmp_path / "zoo.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": state, "__author__": "test"}, f)
    target = tiny_model(3)
    with caplog.at_level(logging.WARNING):
        PartCheckpointer(target).load(str(path))
    assert "unpickling can execute arbitrary code" in caplog.text
    assert np.array_equal(target.state_dict()[STEM].numpy(), state[STEM])


def test_checkpoint_of_another_architecture_is_an_error(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"encoder.weight": torch.zeros(3, 3), "head.bias": torch.zeros(2)}, path)
    with pytest.raises(CheckpointMismatchError, match="encoder.weight"):
        PartCheckpointer(tiny_model(3)).load(str(path))


def test_unknown_init_mode_is_rejected():
    with pytest.raises(ValueError, match="zero"):
        PartCheckpointer(torch.nn.Linear(1, 1), init="copy")


def test_backbone_only_pkl_with_matching_heuristics_widens_the_stem(tmp_path):
    source = tiny_model(3)
    backbone = {k[len("backbone."):]: v.numpy() for k, v in source.state_dict().items() if k.startswith("backbone.")}
    path = tmp_path / "imagenet.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": backbone, "__author__": "torchvision", "matching_heuristics": True}, f)
    target = tiny_model(4)
    PartCheckpointer(target, init="mean").load(str(path))
    stem = target.state_dict()[STEM]
    assert np.allclose(stem[:, :3].numpy(), backbone["stem.conv1.weight"])
    assert np.allclose(stem[:, 3].numpy(), backbone["stem.conv1.weight"].mean(1))
    res3 = "res3.0.conv2.weight"
    assert np.array_equal(target.state_dict()["backbone." + res3].numpy(), backbone[res3])
