"""Mask2Former's masked-attention transformer decoder.

Each layer lets the queries cross-attend to one level of the pixel decoder (coarsest first, in a
round-robin), restricted to the pixels that the previous prediction's mask covers, then
self-attend, then pass an FFN. A prediction (class logits and mask logits) is made from the
learnable queries and after every layer.
"""
from typing import Dict, List, Optional

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.utils.registry import Registry
from torch import nn

from ..onednn import Linear, linear
from .position_encoding import PositionEmbeddingSine

TRANSFORMER_DECODER_REGISTRY = Registry("PART_D2_TRANSFORMER_DECODER")
TRANSFORMER_DECODER_REGISTRY.__doc__ = """Transformer decoders of part_d2's Mask2Former, built with
``(cfg, in_channels)`` from ``MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME``."""


def attention_mask_from_logits(mask_logits: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Masked-attention mask: a query may attend only where its predicted mask probability is
    >= 0.5. Queries whose mask is empty at this resolution attend everywhere instead.

    Args:
        mask_logits: (N, Q, H, W) float, at the size of the attended feature level.
    Returns:
        (N * num_heads, Q, H * W) bool, True = not allowed (``nn.MultiheadAttention`` convention).
    """
    blocked = mask_logits.sigmoid().flatten(2) < 0.5
    blocked = blocked & ~blocked.all(-1, keepdim=True)
    return blocked.repeat_interleave(num_heads, dim=0)


def multi_head_attention(mha: nn.MultiheadAttention, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                         attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """What ``mha(query, key, value, attn_mask=attn_mask)[0]`` computes (sequence-first inputs, the
    module's own parameters and dropout), with the projections by :func:`~part_d2.modeling.linear.linear`.

    Args:
        query: (Q, N, C). key, value: (S, N, C).
        attn_mask: (N * heads, Q, S) bool, True = not allowed, or None.
    Returns:
        (Q, N, C).
    """
    heads, (q_len, batch, dim) = mha.num_heads, query.shape
    w_q, w_k, w_v = mha.in_proj_weight.chunk(3)
    b_q, b_k, b_v = mha.in_proj_bias.chunk(3)
    head_dim = dim // heads

    def split_heads(x):  # (L, N, C) -> (N * heads, L, C / heads)
        return x.reshape(x.shape[0], batch * heads, head_dim).transpose(0, 1)

    q = split_heads(linear(query, w_q, b_q)) * head_dim ** -0.5
    k = split_heads(linear(key, w_k, b_k))
    v = split_heads(linear(value, w_v, b_v))
    if attn_mask is None:
        scores = torch.bmm(q, k.transpose(1, 2))
    else:
        bias = torch.zeros(attn_mask.shape, dtype=q.dtype, device=q.device).masked_fill_(attn_mask, float("-inf"))
        scores = torch.baddbmm(bias, q, k.transpose(1, 2))
    weights = F.dropout(scores.softmax(-1), p=mha.dropout, training=mha.training)
    out = torch.bmm(weights, v).transpose(0, 1).reshape(q_len, batch, dim)
    return linear(out, mha.out_proj.weight, mha.out_proj.bias)


class _PostOrPreNorm(nn.Module):
    """Residual block ``x + f(x)`` with LayerNorm after (default) or before ``f``."""

    def __init__(self, d_model: int, normalize_before: bool):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.normalize_before = normalize_before

    def _reset_parameters(self):
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def _residual(self, x: torch.Tensor, fn) -> torch.Tensor:
        if self.normalize_before:
            return x + fn(self.norm(x))
        return self.norm(x + fn(x))


class SelfAttentionLayer(_PostOrPreNorm):
    """Query self-attention; query positions are added to queries and keys."""

    def __init__(self, d_model: int, nhead: int, dropout: float = 0.0, normalize_before: bool = False):
        super().__init__(d_model, normalize_before)
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.dropout = nn.Dropout(dropout)
        self._reset_parameters()

    def forward(self, tgt: torch.Tensor, query_pos: torch.Tensor) -> torch.Tensor:
        """tgt, query_pos: (Q, N, C) -> (Q, N, C)."""
        def attend(x):
            q = x + query_pos
            return self.dropout(multi_head_attention(self.self_attn, q, q, x))

        return self._residual(tgt, attend)


class CrossAttentionLayer(_PostOrPreNorm):
    """Query-to-pixel attention with an optional attention mask."""

    def __init__(self, d_model: int, nhead: int, dropout: float = 0.0, normalize_before: bool = False):
        super().__init__(d_model, normalize_before)
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.dropout = nn.Dropout(dropout)
        self._reset_parameters()

    def forward(self, tgt, memory, memory_mask: Optional[torch.Tensor], pos, query_pos) -> torch.Tensor:
        """
        Args:
            tgt, query_pos: (Q, N, C). memory, pos: (HW, N, C).
            memory_mask: (N * heads, Q, HW) bool or None.
        Returns:
            (Q, N, C).
        """
        def attend(x):
            out = multi_head_attention(self.multihead_attn, x + query_pos, memory + pos, memory, memory_mask)
            return self.dropout(out)

        return self._residual(tgt, attend)


class FFNLayer(_PostOrPreNorm):
    """Two-layer ReLU MLP with a residual."""

    def __init__(self, d_model: int, dim_feedforward: int = 2048, dropout: float = 0.0,
                 normalize_before: bool = False):
        super().__init__(d_model, normalize_before)
        self.linear1 = Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model)
        self._reset_parameters()

    def forward(self, tgt: torch.Tensor) -> torch.Tensor:
        """tgt: (Q, N, C) -> (Q, N, C)."""
        return self._residual(
            tgt, lambda x: self.dropout(self.linear2(self.dropout(F.relu(self.linear1(x)))))
        )


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between them."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(Linear(i, o) for i, o in zip(dims_in, dims_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


@TRANSFORMER_DECODER_REGISTRY.register()
class MultiScaleMaskedTransformerDecoder(nn.Module):
    """The decoder; attribute names follow the official checkpoints."""

    num_feature_levels = 3

    @configurable
    def __init__(
        self,
        in_channels: int,
        *,
        num_classes: int,
        hidden_dim: int,
        num_queries: int,
        nheads: int,
        dim_feedforward: int,
        dec_layers: int,
        pre_norm: bool,
        mask_dim: int,
        enforce_input_project: bool,
        query_feature_normalize: bool = False,
        class_head: bool = True,
    ):
        """
        Args:
            in_channels: channels of the pixel decoder's levels.
            dec_layers: number of attention layers (the config's DEC_LAYERS - 1).
            query_feature_normalize: L2-normalise each query's mask embedding before its product
                with the mask features (PartDistillation's ``QUERY_FEATURE_NORMALIZE``; the
                reference's ``part_distillation_transformer_decoder.py`` ``forward_prediction_heads``).
            class_head: False when another module computes the class logits (PartDistillation's
                per-object classifier, from ``pred_embeddings``): no ``class_embed``, and
                ``pred_logits`` is (N, Q, 0).
        """
        super().__init__()
        self.pe_layer = PositionEmbeddingSine(hidden_dim // 2, normalize=True)
        self.num_heads = nheads
        self.num_layers = dec_layers
        self.transformer_self_attention_layers = nn.ModuleList(
            SelfAttentionLayer(hidden_dim, nheads, 0.0, pre_norm) for _ in range(dec_layers)
        )
        self.transformer_cross_attention_layers = nn.ModuleList(
            CrossAttentionLayer(hidden_dim, nheads, 0.0, pre_norm) for _ in range(dec_layers)
        )
        self.transformer_ffn_layers = nn.ModuleList(
            FFNLayer(hidden_dim, dim_feedforward, 0.0, pre_norm) for _ in range(dec_layers)
        )
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.num_queries = num_queries
        self.query_feat = nn.Embedding(num_queries, hidden_dim)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.level_embed = nn.Embedding(self.num_feature_levels, hidden_dim)
        self.input_proj = nn.ModuleList()
        for _ in range(self.num_feature_levels):
            if in_channels != hidden_dim or enforce_input_project:
                proj = nn.Conv2d(in_channels, hidden_dim, kernel_size=1)
                weight_init.c2_xavier_fill(proj)
                self.input_proj.append(proj)
            else:
                self.input_proj.append(nn.Sequential())
        self.class_embed = Linear(hidden_dim, num_classes + 1) if class_head else None
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)
        self.query_feature_normalize = query_feature_normalize

    @classmethod
    def from_config(cls, cfg, in_channels: int):
        mf = cfg.MODEL.MASK_FORMER
        if mf.DEC_LAYERS < 1:
            raise ValueError(f"MODEL.MASK_FORMER.DEC_LAYERS must be >= 1, got {mf.DEC_LAYERS}")
        return {
            "in_channels": in_channels,
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
            "hidden_dim": mf.HIDDEN_DIM,
            "num_queries": mf.NUM_OBJECT_QUERIES,
            "nheads": mf.NHEADS,
            "dim_feedforward": mf.DIM_FEEDFORWARD,
            "dec_layers": mf.DEC_LAYERS - 1,
            "pre_norm": mf.PRE_NORM,
            "mask_dim": cfg.MODEL.SEM_SEG_HEAD.MASK_DIM,
            "enforce_input_project": mf.ENFORCE_INPUT_PROJ,
            "query_feature_normalize": mf.QUERY_FEATURE_NORMALIZE,
            "class_head": cfg.PART_DISTILLATION.CLASSIFIER != "per_object",
        }

    def forward(self, features: List[torch.Tensor], mask_features: torch.Tensor) -> Dict:
        """
        Args:
            features: 3 levels (N, C_in, H_l, W_l), coarsest first.
            mask_features: (N, mask_dim, H/4, W/4).
        Returns:
            ``"pred_logits"`` (N, Q, K + 1), ``"pred_masks"`` (N, Q, H/4, W/4) and
            ``"pred_embeddings"`` (N, Q, hidden_dim) (normalised query features) of the last layer;
            ``"aux_outputs"``: the earlier predictions, as dicts with the same keys.
        """
        if len(features) != self.num_feature_levels:
            raise ValueError(f"expected {self.num_feature_levels} feature levels, got {len(features)}")
        sizes, srcs, pos = [], [], []
        for i, x in enumerate(features):
            sizes.append(x.shape[-2:])
            pos.append(self.pe_layer(x).flatten(2).permute(2, 0, 1))
            src = self.input_proj[i](x).flatten(2) + self.level_embed.weight[i][None, :, None]
            srcs.append(src.permute(2, 0, 1))
        batch = srcs[0].shape[1]
        query_pos = self.query_embed.weight.unsqueeze(1).repeat(1, batch, 1)
        output = self.query_feat.weight.unsqueeze(1).repeat(1, batch, 1)

        # The attention masks come from the mask features resized to each level (bilinear resizing
        # is linear, so this equals resizing the mask logits, up to float rounding) at a fraction of
        # the cost; they carry no gradient. Without training only the last prediction needs
        # full-resolution masks.
        with torch.no_grad():
            level_features = {
                tuple(size): F.interpolate(mask_features, size=size, mode="bilinear", align_corners=False)
                for size in sizes
            }
        predictions = []
        full = self.training or self.num_layers == 0
        pred, attn_mask = self.prediction_heads(output, mask_features, sizes[0], level_features, full)
        predictions.append(pred)
        for i in range(self.num_layers):
            level = i % self.num_feature_levels
            output = self.transformer_cross_attention_layers[i](output, srcs[level], attn_mask, pos[level], query_pos)
            output = self.transformer_self_attention_layers[i](output, query_pos)
            output = self.transformer_ffn_layers[i](output)
            pred, attn_mask = self.prediction_heads(
                output, mask_features, sizes[(i + 1) % self.num_feature_levels], level_features,
                self.training or i == self.num_layers - 1,
            )
            predictions.append(pred)
        out = dict(predictions[-1])
        out["aux_outputs"] = predictions[:-1]
        return out

    def prediction_heads(self, output: torch.Tensor, mask_features: torch.Tensor, attn_size,
                         level_features: Dict, full_masks: bool = True):
        """
        Args:
            output: (Q, N, C) query features. mask_features: (N, mask_dim, h, w).
            attn_size: (H, W) of the level the next layer attends to.
            level_features: the mask features resized to each level's (H, W), without gradient:
                the attention mask is computed at that size.
            full_masks: whether this prediction gets ``pred_masks``.
        Returns:
            dict with ``pred_logits`` (N, Q, K + 1), ``pred_masks`` (N, Q, h, w) (see above),
            ``pred_embeddings`` (N, Q, C); and the next attention mask (N * heads, Q, H * W) bool.
        """
        embeddings = self.decoder_norm(output).transpose(0, 1)
        logits = (self.class_embed(embeddings) if self.class_embed is not None
                  else embeddings.new_zeros(embeddings.shape[:-1] + (0,)))
        pred = {"pred_logits": logits, "pred_embeddings": embeddings}
        mask_embed = self.mask_embed(embeddings)
        if self.query_feature_normalize:
            mask_embed = F.normalize(mask_embed, p=2, dim=-1)
        if full_masks:
            pred["pred_masks"] = torch.einsum("nqc,nchw->nqhw", mask_embed, mask_features)
        with torch.no_grad():
            attn_logits = torch.einsum("nqc,nchw->nqhw", mask_embed, level_features[tuple(attn_size)])
        return pred, attention_mask_from_logits(attn_logits, self.num_heads)
