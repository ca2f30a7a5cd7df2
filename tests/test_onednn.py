"""CPU products on oneDNN (part_d2/modeling/onednn.py) against PyTorch's own F.linear / conv2d /
nn.MultiheadAttention, forward and backward, and the fall-backs that must be exactly PyTorch's."""
import os

import pytest
import torch
import torch.nn.functional as F
from detectron2.layers import Conv2d as D2Conv2d

from part_d2.modeling import onednn
from part_d2.modeling.mask2former.transformer_decoder import multi_head_attention

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_onednn = pytest.mark.skipif(not onednn.onednn_available(), reason="this PyTorch has no oneDNN linear")


def _grads(fn, *tensors):
    """fn's output and the gradients of a fixed random function of it w.r.t. ``tensors``."""
    for t in tensors:
        t.grad = None
    out = fn()
    g = torch.Generator().manual_seed(5)
    (out * torch.randn(out.shape, generator=g)).sum().backward()
    return out.detach(), [t.grad.clone() for t in tensors]


@needs_onednn
@pytest.mark.parametrize("shape", [(700, 256), (2, 350, 256)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_equals_f_linear_forward_and_backward(shape, bias, monkeypatch):
    calls = []
    mm = onednn._onednn_mm
    monkeypatch.setattr(onednn, "_onednn_mm", lambda *a: calls.append(1) or mm(*a))
    monkeypatch.setattr(onednn, "GRAD_ROWS_PER_CHUNK", 256)  # 700 rows: the weight gradient in 3 chunks
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen, requires_grad=True)
    w = torch.randn(300, 256, generator=gen, requires_grad=True)
    b = torch.randn(300, generator=gen, requires_grad=True) if bias else None
    params = [x, w] + ([b] if bias else [])
    assert x[..., 0].numel() * 300 * 256 >= onednn.MIN_MACS  # the oneDNN path is taken
    ours, ours_grads = _grads(lambda: onednn.linear(x, w, b), *params)
    assert len(calls) == 1 + 1 + 3  # forward, grad of x, grad of w (3 chunks) on oneDNN
    ref, ref_grads = _grads(lambda: F.linear(x, w, b), *params)
    assert ours.shape == ref.shape == (*shape[:-1], 300)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-4)
    for a, r in zip(ours_grads, ref_grads):
        torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-3)


@needs_onednn
def test_linear_without_grad_runs_the_op_directly_and_keeps_no_graph():
    x, w = torch.randn(400, 128), torch.randn(256, 128, requires_grad=True)
    with torch.no_grad():
        out = onednn.linear(x, w)
    assert out.grad_fn is None
    torch.testing.assert_close(out, F.linear(x, w.detach()), rtol=1e-5, atol=1e-4)


def test_small_products_other_dtypes_and_empty_inputs_are_f_linear_exactly():
    gen = torch.Generator().manual_seed(1)
    small = torch.randn(10, 16, generator=gen), torch.randn(8, 16, generator=gen)
    assert torch.equal(onednn.linear(*small), F.linear(*small))
    doubles = torch.randn(700, 256, dtype=torch.float64), torch.randn(300, 256, dtype=torch.float64)
    assert torch.equal(onednn.linear(*doubles), F.linear(*doubles))
    empty = torch.randn(0, 256), torch.randn(300, 256)
    assert onednn.linear(*empty).shape == (0, 300)


def test_linear_module_has_nn_linear_parameters_and_keys():
    torch.manual_seed(0)
    ours = onednn.Linear(256, 300)
    torch.manual_seed(0)
    ref = torch.nn.Linear(256, 300)
    assert list(ours.state_dict()) == list(ref.state_dict()) == ["weight", "bias"]
    assert torch.equal(ours.weight, ref.weight) and torch.equal(ours.bias, ref.bias)
    x = torch.randn(700, 256)
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-4)


@needs_onednn
def test_pointwise_conv_in_channels_last_equals_conv2d_with_norm_and_activation():
    torch.manual_seed(0)
    conv = onednn.Conv2d(64, 96, kernel_size=1, norm=torch.nn.GroupNorm(8, 96), activation=F.relu)
    x = torch.randn(2, 64, 30, 40).contiguous(memory_format=torch.channels_last).requires_grad_()
    params = [x, conv.weight, conv.bias]
    ours, ours_grads = _grads(lambda: conv(x), *params)
    ref, ref_grads = _grads(lambda: F.relu(conv.norm(F.conv2d(x, conv.weight, conv.bias))), *params)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    for a, r in zip(ours_grads, ref_grads):
        torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-4)


def test_other_convolutions_are_detectron2s():
    torch.manual_seed(0)
    strided = onednn.Conv2d(16, 32, kernel_size=1, stride=2)
    spatial = onednn.Conv2d(16, 32, kernel_size=3, padding=1)
    x = torch.randn(1, 16, 20, 20)
    for conv in (strided, spatial):
        assert torch.equal(conv(x), D2Conv2d.forward(conv, x))


@needs_onednn
def test_channels_last_converts_in_place_keeps_keys_and_results_and_is_idempotent():
    torch.manual_seed(0)
    model = torch.nn.Sequential(D2Conv2d(8, 16, kernel_size=3, padding=1, activation=F.relu),
                                D2Conv2d(16, 24, kernel_size=1), torch.nn.Conv2d(24, 4, kernel_size=1))
    x = torch.randn(2, 8, 20, 24)
    ref = model(x)
    keys = list(model.state_dict())
    assert onednn.channels_last(model) is model
    assert onednn.channels_last(model) is model
    assert [type(m) for m in model] == [onednn.Conv2d, onednn.Conv2d, torch.nn.Conv2d]
    assert list(model.state_dict()) == keys
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in model.parameters() if p.dim() == 4)
    out = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert torch.equal(model(x), model(x))  # NCHW inputs still work


@pytest.mark.parametrize("masked", [False, True])
def test_multi_head_attention_equals_nn_multihead_attention(masked):
    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(64, 8)
    torch.nn.init.uniform_(mha.in_proj_bias, -0.5, 0.5)
    q = torch.randn(30, 2, 64, requires_grad=True)
    k = torch.randn(500, 2, 64, requires_grad=True)
    v = torch.randn(500, 2, 64, requires_grad=True)
    mask = None
    if masked:
        mask = torch.rand(16, 30, 500, generator=torch.Generator().manual_seed(3)) < 0.7
    params = [q, k, v, mha.in_proj_weight, mha.in_proj_bias, mha.out_proj.weight]
    ours, ours_grads = _grads(lambda: multi_head_attention(mha, q, k, v, mask), *params)
    ref, ref_grads = _grads(lambda: mha(q, k, v, attn_mask=mask)[0], *params)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    for a, r in zip(ours_grads, ref_grads):
        torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-4)


@needs_onednn
def test_mask2former_on_cpu_runs_channels_last_with_the_same_outputs(monkeypatch):
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    from part_d2.config import add_part_d2_config

    cfg = get_cfg()
    add_part_d2_config(cfg)
    cfg.merge_from_file(os.path.join(ROOT, "configs/synthetic/mask2former_R_tiny_agnostic.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    image = torch.randint(0, 256, (3, 96, 128), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    batch = [{"image": image, "height": 96, "width": 128}]
    monkeypatch.setattr(onednn, "runs_on_onednn", lambda x: False)
    monkeypatch.setattr(onednn, "MIN_MACS", 1 << 62)
    with torch.no_grad():
        ref = model.forward_features(batch)[1]
    monkeypatch.undo()
    with torch.no_grad():
        ours = model.forward_features(batch)[1]
    convs = [m for m in model.backbone.modules() if isinstance(m, D2Conv2d)]
    assert convs and all(type(m) is onednn.Conv2d for m in convs)
    assert model.backbone.stem.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(ours["pred_logits"], ref["pred_logits"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours["pred_masks"], ref["pred_masks"], rtol=1e-4, atol=1e-3)
