"""Mask2Former components against the paper's definitions on hand-computed inputs."""
import math

import pytest
import torch
import torch.nn.functional as F

from part_d2.modeling.mask2former.criterion import SetCriterion, classification_loss
from part_d2.modeling.mask2former.inference import boxes_from_masks, instance_inference, mask_score, select_topk
from part_d2.modeling.mask2former.losses import (
    dice_loss,
    pairwise_dice_cost,
    pairwise_sigmoid_ce_cost,
    sigmoid_ce_loss,
)
from part_d2.modeling.mask2former.matcher import HungarianMatcher
from part_d2.modeling.mask2former.ms_deform_attn import MSDeformAttn, WeightedBags, ms_deform_attn_sample
from part_d2.modeling.mask2former.pixel_decoder import reference_points
from part_d2.modeling.mask2former.point_sampling import importance_points, point_sample
from part_d2.modeling.mask2former.position_encoding import PositionEmbeddingSine
from part_d2.modeling.mask2former.transformer_decoder import attention_mask_from_logits


def test_dice_loss_hand_computed():
    logits = torch.tensor([[0.0, 0.0], [100.0, -100.0]])
    targets = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    # mask 0: p = (.5, .5): 1 - (2 * .5 + 1) / (1 + 1 + 1) = 1/3; mask 1: perfect -> 0
    assert dice_loss(logits, targets, num_masks=2).item() == pytest.approx((1 / 3) / 2, abs=1e-6)


def test_sigmoid_ce_loss_hand_computed():
    logits = torch.tensor([[0.0, 2.0]])
    targets = torch.tensor([[1.0, 0.0]])
    expected = (math.log(2) + math.log(1 + math.exp(2))) / 2
    assert sigmoid_ce_loss(logits, targets, num_masks=1).item() == pytest.approx(expected, rel=1e-6)


def test_pairwise_costs_equal_the_matched_losses():
    torch.manual_seed(0)
    logits, targets = torch.randn(4, 7), (torch.rand(3, 7) > 0.5).float()
    dice, ce = pairwise_dice_cost(logits, targets), pairwise_sigmoid_ce_cost(logits, targets)
    assert dice.shape == ce.shape == (4, 3)
    for q in range(4):
        for t in range(3):
            assert dice[q, t].item() == pytest.approx(dice_loss(logits[q:q + 1], targets[t:t + 1], 1).item(), abs=1e-6)
            assert ce[q, t].item() == pytest.approx(sigmoid_ce_loss(logits[q:q + 1], targets[t:t + 1], 1).item(),
                                                    abs=1e-6)


def test_point_sample_reads_pixel_centres_and_interpolates():
    feat = torch.arange(6.0).view(1, 1, 2, 3)
    coords = torch.tensor([[[0.5 / 3, 0.5 / 2], [2.5 / 3, 1.5 / 2], [1.0 / 3, 0.5 / 2]]])
    # centres of (0, 0) and (1, 2); the third is halfway between columns 0 and 1 of row 0
    assert point_sample(feat, coords)[0, 0].tolist() == pytest.approx([0.0, 5.0, 0.5], abs=1e-6)


def test_importance_points_keep_the_most_uncertain_candidates():
    torch.manual_seed(0)
    logits = torch.full((1, 1, 8, 8), 10.0)
    logits[..., :, 3:5] = 0.0  # uncertain band: x in [3/8, 5/8)
    coords = importance_points(logits, num_points=16, oversample_ratio=3.0, importance_ratio=0.75)
    assert coords.shape == (1, 16, 2)
    # the 12 chosen points are among the most uncertain of 48 candidates: about a quarter fall in
    # the band, so all 12 must lie within the band's bilinear support
    chosen_x = coords[0, :12, 0]
    assert ((chosen_x > 2.5 / 8) & (chosen_x < 5.5 / 8)).all()


def _naive_bilinear(value_hw_d, x, y):
    """value: (H, W, D); (x, y) normalised; zero padding, align_corners=False."""
    h, w, d = value_hw_d.shape
    px, py = x * w - 0.5, y * h - 0.5
    x0, y0 = math.floor(px), math.floor(py)
    out = torch.zeros(d)
    for yy, wy in ((y0, 1 - (py - y0)), (y0 + 1, py - y0)):
        for xx, wx in ((x0, 1 - (px - x0)), (x0 + 1, px - x0)):
            if 0 <= yy < h and 0 <= xx < w:
                out += wy * wx * value_hw_d[yy, xx]
    return out


def sample_by_grid(value, spatial_shapes, sampling_locations, attention_weights):
    """An independent implementation of :func:`ms_deform_attn_sample` (same arguments): one
    ``grid_sample`` per level, as the Deformable DETR reference's PyTorch path samples."""
    n, _, heads, dim = value.shape
    _, num_queries, _, levels, points, _ = sampling_locations.shape
    values = value.split([h * w for h, w in spatial_shapes], dim=1)
    grids = sampling_locations * 2 - 1
    weights = attention_weights.transpose(1, 2).reshape(n * heads, 1, num_queries, levels, points)
    out = 0
    for level, (h, w) in enumerate(spatial_shapes):
        value_l = values[level].permute(0, 2, 3, 1).reshape(n * heads, dim, h, w)
        grid_l = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)
        sampled = F.grid_sample(value_l, grid_l, mode="bilinear", padding_mode="zeros", align_corners=False)
        out = out + (sampled * weights[:, :, :, level]).sum(-1)
    return out.view(n, heads * dim, num_queries).transpose(1, 2)


@pytest.mark.parametrize("sampler", [sample_by_grid, ms_deform_attn_sample])
def test_deformable_sampling_equals_naive_loop(sampler):
    torch.manual_seed(0)
    shapes = [(3, 4), (2, 2)]
    n, heads, dim, queries, points = 2, 2, 3, 5, 3
    value = torch.randn(n, sum(h * w for h, w in shapes), heads, dim)
    locations = torch.rand(n, queries, heads, len(shapes), points, 2) * 1.4 - 0.2
    # exact edges and corners of the maps, and samples far outside
    locations[0, 0, 0, :, 0] = torch.tensor([1.0, 1.0])
    locations[0, 0, 0, :, 1] = torch.tensor([0.0, 0.0])
    locations[1, 1, 1, :, 0] = torch.tensor([1.125, 1.25])
    locations[1, 2, 0, :, 2] = torch.tensor([-3.0, 7.0])
    weights = torch.rand(n, queries, heads, len(shapes), points)
    out = sampler(value, shapes, locations, weights)
    starts = [0, 12]
    expected = torch.zeros(n, queries, heads * dim)
    for b in range(n):
        for q in range(queries):
            for m in range(heads):
                acc = torch.zeros(dim)
                for lvl, (h, w) in enumerate(shapes):
                    v = value[b, starts[lvl]: starts[lvl] + h * w, m].view(h, w, dim)
                    for p in range(points):
                        x, y = locations[b, q, m, lvl, p].tolist()
                        acc += weights[b, q, m, lvl, p] * _naive_bilinear(v, x, y)
                expected[b, q, m * dim:(m + 1) * dim] = acc
    assert torch.allclose(out, expected, atol=1e-5)


def _graph_nodes(fn):
    """Names of the autograd nodes reachable from ``fn``."""
    seen, stack = set(), [fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        stack.extend(next_fn for next_fn, _ in node.next_functions)
    return {type(node).__name__ for node in seen}


def test_deformable_sampling_gradients_equal_grid_sample():
    """Values, locations and attention weights get grid_sample's gradients (also through the zero
    border and samples far outside); the graph holds the sorted-bags backward."""
    torch.manual_seed(0)
    shapes = [(13, 19), (7, 10), (4, 5)]
    value = torch.randn(2, sum(h * w for h, w in shapes), 4, 8)
    # away from pixel centres, where bilinear sampling has no derivative
    locations = torch.rand(2, 30, 4, 3, 4, 2) * 1.4 - 0.2
    locations[0, 0, 0, 0] = torch.tensor([-3.0, 7.0])
    weights = torch.rand(2, 30, 4, 3, 4)
    grad_out = torch.randn(2, 30, 4 * 8)
    grads = []
    for sampler in (ms_deform_attn_sample, sample_by_grid):
        inputs = [t.clone().requires_grad_() for t in (value, locations, weights)]
        out = sampler(*inputs[:1], shapes, *inputs[1:])
        out.backward(grad_out)
        grads.append((out.detach(), *(t.grad for t in inputs)))
        if sampler is ms_deform_attn_sample:
            assert "WeightedBagsBackward" in _graph_nodes(out.grad_fn)
    for ours, reference in zip(*grads):
        torch.testing.assert_close(ours, reference, atol=1e-4, rtol=1e-4)


def test_location_gradient_at_a_pixel_centre_is_the_right_sided_one():
    """At a pixel centre bilinear sampling has no derivative; like the official CUDA kernel
    (corners floor(x * W - 0.5) and the next pixel) the gradient is the right-sided one."""
    value = torch.tensor([0.0, 1.0, 3.0]).view(1, 3, 1, 1)  # one 1x3 level, one head, D = 1
    locations = torch.tensor([0.5, 0.5]).view(1, 1, 1, 1, 1, 2).requires_grad_()  # centre of pixel 1
    out = ms_deform_attn_sample(value, [(1, 3)], locations, torch.ones(1, 1, 1, 1, 1))
    out.sum().backward()
    assert out.item() == 1.0
    # x: (3 - 1) * W; y: the row below is outside (zero): (0 - 1) * H
    assert locations.grad.view(2).tolist() == [6.0, -1.0]


def test_weighted_bags_backward_hand_computed():
    table = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], requires_grad=True)
    index = torch.tensor([[0, 2], [2, 2]], dtype=torch.int32)
    weights = torch.tensor([[0.5, 2.0], [1.0, 3.0]], requires_grad=True)
    out = WeightedBags.apply(table, index, weights)
    assert out.tolist() == [[10.5, 13.0], [20.0, 24.0]]
    out.backward(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    # row 0: bag 0 * 0.5; row 1: never read; row 2: bag 0 * 2 + bag 1 * (1 + 3)
    assert table.grad.tolist() == [[0.5, 0.0], [0.0, 0.0], [2.0, 4.0]]
    # weights: row . grad of its bag
    assert weights.grad.tolist() == [[1.0, 5.0], [6.0, 6.0]]


def test_ms_deform_attn_initial_offsets_ring_around_reference():
    attn = MSDeformAttn(d_model=8, n_levels=1, n_heads=4, n_points=2)
    offsets = attn.sampling_offsets.bias.view(4, 1, 2, 2)
    # head 0 looks right (1, 0) then (2, 0); head 1 (angle pi/2) looks down
    assert torch.allclose(offsets[0, 0], torch.tensor([[1.0, 0.0], [2.0, 0.0]]), atol=1e-6)
    assert torch.allclose(offsets[1, 0], torch.tensor([[0.0, 1.0], [0.0, 2.0]]), atol=1e-6)
    assert attn.attention_weights.weight.abs().sum() == 0


def test_reference_points_are_normalised_pixel_centres():
    ref = reference_points([(2, 4), (1, 2)], batch=1, device="cpu")
    assert ref.shape == (1, 10, 2, 2)
    assert ref[0, 1, 0].tolist() == pytest.approx([1.5 / 4, 0.5 / 2])
    assert ref[0, 8, 1].tolist() == pytest.approx([0.5 / 2, 0.5])


def test_position_embedding_sine_values():
    pe = PositionEmbeddingSine(num_pos_feats=4, normalize=True)(torch.zeros(1, 1, 2, 3))
    assert pe.shape == (1, 8, 2, 3)
    scale, eps = 2 * math.pi, 1e-6
    y = 1 / (2 + eps) * scale  # row 0 of 2
    x = 3 / (3 + eps) * scale  # column 2 of 3
    expected_y = [math.sin(y), math.cos(y), math.sin(y / 100), math.cos(y / 100)]
    expected_x = [math.sin(x), math.cos(x), math.sin(x / 100), math.cos(x / 100)]
    assert pe[0, :, 0, 2].tolist() == pytest.approx(expected_y + expected_x, abs=1e-5)


def test_attention_mask_blocks_background_and_unmasks_empty_queries():
    logits = torch.tensor([[[[5.0, -5.0], [-5.0, 5.0]], [[-5.0, -5.0], [-5.0, -5.0]]]])  # (1, 2, 2, 2)
    mask = attention_mask_from_logits(logits, num_heads=3)
    assert mask.shape == (3, 2, 4)
    assert mask[0, 0].tolist() == [False, True, True, False]
    assert not mask[:, 1].any()  # empty prediction: attends everywhere
    assert torch.equal(mask[0], mask[2])


def test_matcher_finds_the_obvious_assignment():
    masks = torch.zeros(2, 8, 8)
    masks[0, :4] = 1
    masks[1, 4:] = 1
    pred_masks = torch.stack([masks[1], torch.zeros(8, 8), masks[0]]) * 20 - 10  # (3, 8, 8)
    logits = torch.tensor([[5.0, 0.0], [0.0, 5.0], [5.0, 0.0]])
    matcher = HungarianMatcher(class_weight=2, mask_weight=5, dice_weight=5, num_points=64)
    torch.manual_seed(0)
    (rows, cols), = matcher(
        {"pred_logits": logits[None], "pred_masks": pred_masks[None]},
        [{"labels": torch.tensor([0, 0]), "masks": masks}],
    )
    assert dict(zip(rows.tolist(), cols.tolist())) == {0: 1, 2: 0}


def test_classification_loss_uses_no_object_weight():
    logits = torch.zeros(1, 3, 2)  # uniform: every CE = log 2
    weights = torch.tensor([1.0, 0.1])
    indices = [(torch.tensor([1]), torch.tensor([0]))]
    loss = classification_loss(logits, indices, [torch.tensor([0])], weights)
    assert loss.item() == pytest.approx(math.log(2), rel=1e-6)  # weighted mean of equal terms
    logits[0, 1, 0] = 2.0  # matched query more confident on its class
    ce_matched = -F.log_softmax(torch.tensor([2.0, 0.0]), 0)[0].item()
    expected = (1.0 * ce_matched + 0.1 * math.log(2) * 2) / (1.0 + 0.2)
    loss = classification_loss(logits, indices, [torch.tensor([0])], weights)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("mode", ["importance", "uniform"])
def test_criterion_losses_and_aux_names(mode):
    torch.manual_seed(0)
    masks = torch.zeros(1, 16, 16, dtype=torch.bool)
    masks[0, 4:12, 4:12] = True
    pred = {"pred_logits": torch.randn(1, 4, 2, requires_grad=True),
            "pred_masks": torch.randn(1, 4, 4, 4, requires_grad=True)}
    outputs = dict(pred, aux_outputs=[{k: v * 1.0 for k, v in pred.items()}])
    criterion = SetCriterion(1, HungarianMatcher(1, 1, 1, num_points=32), {}, 0.1, 64, 3.0, 0.75, mode)
    losses = criterion(outputs, [{"labels": torch.tensor([0]), "masks": masks}])
    assert set(losses) == {"loss_ce", "loss_mask", "loss_dice", "loss_ce_0", "loss_mask_0", "loss_dice_0"}
    sum(losses.values()).backward()
    assert pred["pred_masks"].grad.abs().sum() > 0
    assert criterion.empty_weight.tolist() == pytest.approx([1.0, 0.1])
    criterion.deep_supervision = False
    assert set(criterion(outputs, [{"labels": torch.tensor([0]), "masks": masks}])) == {
        "loss_ce",
        "loss_mask",
        "loss_dice",
    }


def test_criterion_rejects_unknown_point_sampling():
    with pytest.raises(ValueError, match="POINT_SAMPLING"):
        SetCriterion(1, HungarianMatcher(1, 1, 1, 4), {}, 0.1, 4, 3.0, 0.75, "grid")


def test_select_topk_over_queries_and_classes():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3], [0.05, 0.05, 0.9]]))
    scores, classes, queries = select_topk(logits, topk=3)
    assert scores.tolist() == pytest.approx([0.6, 0.5, 0.3])
    assert classes.tolist() == [1, 0, 1]
    assert queries.tolist() == [1, 0, 0]


def test_instance_inference_score_formula_and_boxes():
    class_logits = torch.log(torch.tensor([[0.8, 0.2], [0.4, 0.6]]))
    mask_logits = torch.full((2, 4, 5), -3.0)
    mask_logits[0, 1:3, 1:4] = 2.0
    mask_logits[1, 0, 0] = 1.0
    result = instance_inference(class_logits, mask_logits, (4, 5), topk=10)
    sig = torch.sigmoid
    assert result.scores.tolist() == pytest.approx([0.8 * sig(torch.tensor(2.0)).item(),
                                                    0.4 * sig(torch.tensor(1.0)).item()], rel=1e-5)
    assert result.pred_boxes.tensor.tolist() == [[1.0, 1.0, 4.0, 3.0], [0.0, 0.0, 1.0, 1.0]]
    assert result.pred_masks.dtype == torch.bool and result.pred_masks[0].sum() == 6
    assert mask_score(torch.full((1, 2, 2), -1.0)).item() == 0.0


def test_boxes_from_masks_empty_mask_gets_zero_box():
    masks = torch.zeros(2, 3, 3, dtype=torch.bool)
    masks[1, 2, 1] = True
    assert boxes_from_masks(masks).tolist() == [[0, 0, 0, 0], [1, 2, 2, 3]]
