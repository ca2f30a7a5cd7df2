"""PartDistillation stage-3 weights are exchangeable with the reference implementation's layout:
one float64 ``sem_seg_head.predictor.class_embed`` of N_obj x P + 1 rows (no-object row last) and
L2-normalised mask embeddings (``QUERY_FEATURE_NORMALIZE``)."""
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from detectron2.modeling import META_ARCH_REGISTRY, build_model
from test_pd_models import batch, tiny_cfg
from tool_loader import load_tool

from part_d2.checkpoint import (
    REFERENCE_CLASS_EMBED,
    CheckpointMismatchError,
    PartCheckpointer,
    from_reference_layout,
    to_reference_layout,
)
from part_d2.engine.setup import load_config

REPO = Path(__file__).resolve().parents[1]
SHAPES = REPO.parent / "shared" / "reference" / "partdistillation_state_dict_shapes.json"
STAGE3 = "projects/PartDistillation/configs/part_distillation_swinL.yaml"


def test_swin_l_stage3_in_reference_layout_equals_the_reference_entries():
    """Keys, shapes and dtypes of the paper-scale stage-3 model (1,000 object classes, built on the
    meta device) converted to the reference layout equal the reference's 650 entries."""
    if not SHAPES.is_file():
        pytest.skip(f"reference shapes not found at {SHAPES}")
    reference = json.loads(SHAPES.read_text())["distill"]
    cfg = load_config(str(REPO / STAGE3), ["PART_DISTILLATION.NUM_OBJECT_CLASSES", "1000"])
    with torch.device("meta"):
        model = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)(cfg)
        state = to_reference_layout(model.state_dict())
    ours = {k: [list(v.shape), str(v.dtype)] for k, v in state.items()}
    assert sorted(set(reference) ^ set(ours)) == []
    assert {k: v for k, v in ours.items() if reference[k] != v} == {}
    assert reference[f"{REFERENCE_CLASS_EMBED}.weight"] == [[8001, 256], "torch.float64"]


def reference_forward(state, outputs, object_classes, num_parts):
    """The reference's prediction heads on part_d2's decoder outputs, from the checkpoint tensors:
    float64 logits of all N_obj x P + 1 rows sliced to the image's object class + no object, and
    normalised mask embeddings times the mask features."""
    emb = outputs["pred_embeddings"]
    full = emb.double() @ state[f"{REFERENCE_CLASS_EMBED}.weight"].t() + state[f"{REFERENCE_CLASS_EMBED}.bias"]
    logits = torch.stack([torch.cat([full[i, :, o * num_parts:(o + 1) * num_parts], full[i, :, -1:]], dim=-1)
                          for i, o in enumerate(object_classes)])
    x = emb
    for i in range(3):
        x = F.linear(x, state[f"sem_seg_head.predictor.mask_embed.layers.{i}.weight"],
                     state[f"sem_seg_head.predictor.mask_embed.layers.{i}.bias"])
        x = F.relu(x) if i < 2 else x
    masks = torch.einsum("nqc,nchw->nqhw", F.normalize(x, dim=-1), outputs["mask_features"])
    return logits, masks


def fake_reference_checkpoint(tmp_path, cfg, seed=1):
    """A tiny-width stage-3 checkpoint in the reference layout (random weights, float64 head)."""
    torch.manual_seed(seed)
    state = to_reference_layout(build_model(cfg).state_dict())
    state[f"{REFERENCE_CLASS_EMBED}.weight"] = torch.randn_like(state[f"{REFERENCE_CLASS_EMBED}.weight"])
    state[f"{REFERENCE_CLASS_EMBED}.bias"] = torch.randn_like(state[f"{REFERENCE_CLASS_EMBED}.bias"])
    path = tmp_path / "reference_stage3.pth"
    torch.save({"model": state}, path)
    return path, state


def test_reference_checkpoint_loads_with_identical_logits_and_masks(tmp_path):
    cfg = tiny_cfg("per_object")
    cfg.MODEL.MASK_FORMER.QUERY_FEATURE_NORMALIZE = True
    path, state = fake_reference_checkpoint(tmp_path, cfg)
    assert state[f"{REFERENCE_CLASS_EMBED}.weight"].shape == (5 * 3 + 1, 64)
    assert state[f"{REFERENCE_CLASS_EMBED}.weight"].dtype == torch.float64
    torch.manual_seed(2)
    model = build_model(cfg)
    PartCheckpointer(model).load(str(path))
    assert model.part_classifier.weight.dtype == torch.float32
    model.eval()
    inputs = batch((1, 4))
    with torch.no_grad():
        _, outputs = model.forward_features(inputs)
        logits, masks = reference_forward(state, outputs, [1, 4], 3)
    logit_diff = (outputs["pred_logits"].double() - logits).abs().max().item()
    mask_diff = (outputs["pred_masks"] - masks).abs().max().item()
    print(f"max |logit difference| {logit_diff:.3g}, max |mask-logit difference| {mask_diff:.3g}")
    assert logit_diff < 1e-4 and mask_diff < 1e-4
    # without the normalisation the masks are not the reference's
    model.sem_seg_head.predictor.query_feature_normalize = False
    with torch.no_grad():
        _, plain = model.forward_features(inputs)
    assert (plain["pred_masks"] - masks).abs().max() > 1e-2


def test_part_d2_weights_round_trip_through_the_reference_layout(tmp_path):
    main = load_tool("convert_pd_checkpoint").main

    cfg = tiny_cfg("per_object")
    torch.manual_seed(0)
    original = build_model(cfg).state_dict()
    torch.save({"model": original}, tmp_path / "ours.pth")
    assert main(["--to", "reference", str(tmp_path / "ours.pth"), str(tmp_path / "ref.pth")]) == 0
    ref = torch.load(tmp_path / "ref.pth", weights_only=True)["model"]
    assert not any(k.startswith("part_classifier.") for k in ref)
    assert ref[f"{REFERENCE_CLASS_EMBED}.weight"].shape == (16, 64)
    torch.testing.assert_close(ref[f"{REFERENCE_CLASS_EMBED}.weight"][-1].float(),
                               original["part_classifier.no_object.weight"][0])
    assert main(["--to", "part_d2", str(tmp_path / "ref.pth"), str(tmp_path / "back.pth")]) == 0
    back = torch.load(tmp_path / "back.pth", weights_only=True)["model"]
    assert set(back) == set(original)
    assert all(torch.equal(back[k], original[k]) for k in original)
    model = build_model(cfg)
    PartCheckpointer(model).load(str(tmp_path / "ref.pth"))
    assert all(torch.equal(v, original[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("head", ["none", "coco", "other_n_obj", "part_d2_shape"])
def test_missing_or_mismatched_classifier_is_an_error(tmp_path, head):
    cfg = tiny_cfg("per_object")
    torch.manual_seed(0)
    state = to_reference_layout(build_model(cfg).state_dict())
    key = f"{REFERENCE_CLASS_EMBED}.weight"
    if head == "none":
        state = {k: v for k, v in state.items() if not k.startswith(REFERENCE_CLASS_EMBED)}
    elif head == "coco":
        state[key], state[key.replace("weight", "bias")] = torch.zeros(81, 64), torch.zeros(81)
    elif head == "other_n_obj":
        state[key], state[key.replace("weight", "bias")] = torch.zeros(7 * 3 + 1, 64), torch.zeros(22)
    else:
        state = from_reference_layout(state)
        state["part_classifier.weight"] = torch.zeros(4 * 3, 64)
    torch.save({"model": state}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointMismatchError) as err:
        PartCheckpointer(build_model(cfg)).load(str(tmp_path / "bad.pth"))
    message = str(err.value)
    assert "\n" not in message
    wanted = {"none": "class_embed.weight: checkpoint has missing", "coco": "has (81, 64)",
              "other_n_obj": "has (22, 64), the per-object model needs (16, 64)",
              "part_d2_shape": "part_classifier.weight: checkpoint has (12, 64), the model needs (15, 64)"}
    assert wanted[head] in message


def test_proposal_checkpoint_starts_a_fresh_classifier_with_a_warning(tmp_path, caplog):
    torch.manual_seed(0)
    torch.save({"model": build_model(tiny_cfg("agnostic")).state_dict()}, tmp_path / "proposals.pth")
    model = build_model(tiny_cfg("per_object"))
    before = model.part_classifier.weight.detach().clone()
    PartCheckpointer(model).load(str(tmp_path / "proposals.pth"))
    assert torch.equal(model.part_classifier.weight, before)
    assert "starts from its random initialisation" in caplog.text
