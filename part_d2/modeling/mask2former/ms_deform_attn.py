"""Multi-scale deformable attention (Deformable DETR) in pure PyTorch.

The sampling step gathers the four bilinear corners of every sample as weighted bags of
``embedding_bag`` (it reads each value row once per corner instead of stacking all samples, 2-3x
faster than ``grid_sample`` per level on CPU); its backward (:class:`WeightedBags`) sorts the
corners by table row once and scatters the gradient with another ``embedding_bag``, instead of
``embedding_bag``'s own dense backward.
"""
import math
from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..onednn import Linear


def ms_deform_attn_sample(
    value: torch.Tensor,
    spatial_shapes: List[Tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Attention-weighted sum of bilinearly sampled values over levels and points.

    Locations are normalised to each level's extent (0 and 1 are the outer pixel edges, as
    ``grid_sample``'s ``align_corners=False``); samples outside the map read zero.

    On a level with a zero border, the continuous pixel coordinate ``u = x * W + 0.5`` (``x * W - 0.5``
    plus the border) clamped to [0, W + 1] has its corners ``floor(u)`` and ``floor(u) + 1`` inside
    the bordered map or on a corner of weight 0, and a clamped sample lies entirely in the zero
    border, as ``grid_sample``'s zero padding reads it. At a pixel centre (where the initial
    offsets put every sample) bilinear sampling has no derivative: ``u`` equals the official CUDA
    kernel's ``x * W - 0.5`` plus 1 exactly, so the location gradient is its right-sided one
    (``grid_sample``, the official CPU path, rounds ``(2x - 1 + 1) * W / 2 - 0.5`` and may take
    the other side).

    Args:
        value: (N, S, M, D) float, the S = sum(H_l * W_l) flattened pixels of all levels, M heads.
        spatial_shapes: L pairs (H_l, W_l).
        sampling_locations: (N, Lq, M, L, P, 2) float, (x, y).
        attention_weights: (N, Lq, M, L, P) float.
    Returns:
        (N, Lq, M * D) float.
    """
    n, _, heads, dim = value.shape
    _, num_queries, _, levels, points, _ = sampling_locations.shape
    device = value.device
    table, bordered = zero_bordered_table(value, spatial_shapes)
    coord = torch.float64 if table.shape[0] >= 2**24 else torch.float32  # exact integer row indices
    hs, ws = (torch.tensor([s[i] for s in spatial_shapes], dtype=coord, device=device).view(levels, 1) for i in (0, 1))
    sizes = [(h + 2) * (w + 2) for h, w in spatial_shapes]
    starts = torch.tensor([sum(sizes[:i]) for i in range(levels)], dtype=coord, device=device).view(levels, 1)
    loc = sampling_locations.to(coord)
    u = torch.clamp(loc[..., 0] * ws + 0.5, min=torch.zeros_like(ws), max=ws + 1)  # (N, Lq, M, L, P)
    v = torch.clamp(loc[..., 1] * hs + 0.5, min=torch.zeros_like(hs), max=hs + 1)
    x0, y0 = u.floor(), v.floor()
    fx, fy = u - x0, v - y0
    index = torch.int32 if table.shape[0] < 2**31 else torch.int64  # embedding_bag takes either
    image = torch.arange(n, device=device, dtype=coord).view(n, 1, 1, 1, 1) * bordered
    head = torch.arange(heads, device=device, dtype=coord).view(1, 1, heads, 1, 1)
    # table row of the top-left corner, (n * S' + start_l + y * (W_l + 2) + x) * M + m: integers
    # computed exactly in ``coord`` (below 2**24 rows for float32)
    first = ((starts + y0 * (ws + 2) + x0 + image) * heads + head).to(index)
    step_x, step_y = heads, ((ws + 2) * heads).to(index)  # (L, 1): one pixel right / down
    corners = torch.stack([first, first + step_x, first + step_y, first + step_y + step_x], -1)
    top = attention_weights.to(coord) * (1 - fy)
    bottom = attention_weights.to(coord) * fy
    left = 1 - fx
    weights = torch.stack([top * left, top * fx, bottom * left, bottom * fx], -1)
    bags = n * num_queries * heads
    out = WeightedBags.apply(table, corners.view(bags, -1), weights.view(bags, -1).to(table.dtype))
    return out.view(n, num_queries, heads * dim)


class WeightedBags(torch.autograd.Function):
    """``out[b] = sum_k weights[b, k] * table[index[b, k]]``, ``embedding_bag``'s weighted sum.

    Its backward gives the table's gradient as the transposed bags: the (b, k) pairs sorted by
    table row, summed per row by ``embedding_bag`` over the rows of ``grad`` (4-5x faster on CPU
    than ``embedding_bag``'s dense backward, which this replaces; the weights' gradient is
    ``embedding_bag``'s own).
    """

    @staticmethod
    def forward(ctx, table: torch.Tensor, index: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """table (R, D) float; index (B, K) int32/int64 rows of ``table``; weights (B, K) float.
        Returns (B, D)."""
        ctx.save_for_backward(table, index, weights)
        return F.embedding_bag(index, table, per_sample_weights=weights, mode="sum")

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        """grad (B, D) -> gradients of table (R, D), index (None) and weights (B, K)."""
        table, index, weights = ctx.saved_tensors
        grad = grad.contiguous()
        grad_table = grad_weights = None
        if ctx.needs_input_grad[0]:
            flat = index.reshape(-1)
            order = torch.argsort(flat, stable=True)
            counts = torch.bincount(flat, minlength=table.shape[0])
            offsets = counts.cumsum(0) - counts  # start of each row's run in ``order``
            bag_of_pair = torch.div(order, index.shape[1], rounding_mode="floor")
            grad_table = F.embedding_bag(bag_of_pair, grad, offsets, mode="sum",
                                         per_sample_weights=weights.reshape(-1).index_select(0, order))
        if ctx.needs_input_grad[2]:
            with torch.enable_grad():
                detached = weights.detach().requires_grad_()
                out = F.embedding_bag(index, table.detach(), per_sample_weights=detached, mode="sum")
                (grad_weights,) = torch.autograd.grad(out, detached, grad)
        return grad_table, None, grad_weights


def zero_bordered_table(value: torch.Tensor, spatial_shapes: List[Tuple[int, int]]) -> Tuple[torch.Tensor, int]:
    """Each level of ``value`` with a one-pixel zero border, flattened to rows of D values.

    Args:
        value: (N, S, M, D).
        spatial_shapes: L pairs (H_l, W_l).
    Returns:
        table (N * S' * M + T, D), row ``(n * S' + s) * M + m`` = pixel s of image n, head m, where
        S' = sum((H_l + 2)(W_l + 2)) and the T = M * (max W_l + 3) trailing zero rows absorb the
        zero-weight corners read past the last pixel; and S'.
    """
    n, _, heads, dim = value.shape
    levels = value.split([h * w for h, w in spatial_shapes], dim=1)
    padded = [
        F.pad(v.reshape(n, h, w, heads * dim), (0, 0, 1, 1, 1, 1)).reshape(n, -1, heads, dim)
        for v, (h, w) in zip(levels, spatial_shapes)
    ]
    table = torch.cat(padded, 1)
    tail = table.new_zeros(heads * (max(w for _, w in spatial_shapes) + 3), dim)
    return torch.cat([table.reshape(-1, dim), tail], 0), table.shape[1]


class MSDeformAttn(nn.Module):
    """Each query attends to ``n_points`` learned offsets around its reference point on every level.

    Parameter names and shapes follow Deformable DETR so that its checkpoints load.
    """

    def __init__(self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8, n_points: int = 4):
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.d_model = d_model
        self.n_levels = n_levels
        self.n_heads = n_heads
        self.n_points = n_points
        self.sampling_offsets = Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = Linear(d_model, d_model)
        self.output_proj = Linear(d_model, d_model)
        self.reset_parameters()

    def reset_parameters(self):
        """Offsets start as rings around the reference point, one direction per head, radius 1..P
        pixels; uniform attention weights; Xavier projections."""
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        directions = torch.stack([angles.cos(), angles.sin()], -1)
        directions = directions / directions.abs().max(-1, keepdim=True).values
        radii = torch.arange(1, self.n_points + 1, dtype=torch.float32)
        bias = directions[:, None, None, :] * radii[None, None, :, None]
        bias = bias.expand(self.n_heads, self.n_levels, self.n_points, 2)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(bias.reshape(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for proj in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(proj.weight)
            nn.init.zeros_(proj.bias)

    def forward(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        input_flatten: torch.Tensor,
        spatial_shapes: List[Tuple[int, int]],
    ) -> torch.Tensor:
        """
        Args:
            query: (N, Lq, C) float (with position embedding added).
            reference_points: (N, Lq, L, 2) float, (x, y) in [0, 1] per level.
            input_flatten: (N, S, C) float, flattened pixels of the L levels.
            spatial_shapes: L pairs (H_l, W_l).
        Returns:
            (N, Lq, C) float.
        """
        n, num_queries, _ = query.shape
        value = self.value_proj(input_flatten).view(n, input_flatten.shape[1], self.n_heads, -1)
        offsets = self.sampling_offsets(query).view(
            n, num_queries, self.n_heads, self.n_levels, self.n_points, 2
        )
        weights = self.attention_weights(query).view(n, num_queries, self.n_heads, -1).softmax(-1)
        weights = weights.view(n, num_queries, self.n_heads, self.n_levels, self.n_points)
        sizes_xy = torch.tensor([[w, h] for h, w in spatial_shapes], dtype=query.dtype, device=query.device)
        locations = reference_points[:, :, None, :, None, :] + offsets / sizes_xy[None, None, None, :, None, :]
        return self.output_proj(ms_deform_attn_sample(value, spatial_shapes, locations, weights))
