"""Mask2Former's pixel decoder: a deformable-attention encoder over strides 8-32 plus an FPN
step to stride 4 that produces the per-pixel mask features."""
import math
from typing import Dict, List, Tuple

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import ShapeSpec, get_norm
from detectron2.utils.registry import Registry
from torch import nn

from ..onednn import Conv2d, Linear
from .ms_deform_attn import MSDeformAttn
from .position_encoding import PositionEmbeddingSine

PIXEL_DECODER_REGISTRY = Registry("PART_D2_PIXEL_DECODER")
PIXEL_DECODER_REGISTRY.__doc__ = """Pixel decoders of part_d2's Mask2Former, built with
``(cfg, input_shape: Dict[str, ShapeSpec])`` from ``MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME``."""


def reference_points(spatial_shapes: List[Tuple[int, int]], batch: int, device) -> torch.Tensor:
    """Pixel centres of every level, normalised to [0, 1], repeated for each level.

    Returns:
        (batch, S, L, 2) float, (x, y), S = sum(H_l * W_l) in level order.
    """
    points = []
    for h, w in spatial_shapes:
        ys = (torch.arange(h, dtype=torch.float32, device=device) + 0.5) / h
        xs = (torch.arange(w, dtype=torch.float32, device=device) + 0.5) / w
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        points.append(torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], -1))
    points = torch.cat(points, 0)
    return points[None, :, None, :].expand(batch, -1, len(spatial_shapes), -1)


class DeformableEncoderLayer(nn.Module):
    """Post-norm layer: deformable self-attention then a ReLU FFN, each with a residual."""

    def __init__(self, d_model: int, dim_feedforward: int, dropout: float, n_levels: int, n_heads: int,
                 n_points: int):
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = Linear(d_model, dim_feedforward)
        self.dropout2 = nn.Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model)
        self.dropout3 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, src, pos, ref_points, spatial_shapes):
        """src, pos: (N, S, C); ref_points: (N, S, L, 2) -> (N, S, C)."""
        src = self.norm1(src + self.dropout1(self.self_attn(src + pos, ref_points, src, spatial_shapes)))
        hidden = self.linear1(src)
        # in place only without autograd: on the view linear returns, it makes autograd copy the base
        ffn = self.linear2(self.dropout2(F.relu(hidden, inplace=not hidden.requires_grad)))
        return self.norm2(src + self.dropout3(ffn))


class DeformableEncoderStack(nn.Module):
    """``num_layers`` :class:`DeformableEncoderLayer` applied in sequence."""

    def __init__(self, num_layers: int, **layer_kwargs):
        super().__init__()
        self.layers = nn.ModuleList(DeformableEncoderLayer(**layer_kwargs) for _ in range(num_layers))

    def forward(self, src, pos, ref_points, spatial_shapes):
        """src, pos: (N, S, C); ref_points: (N, S, L, 2) -> (N, S, C)."""
        for layer in self.layers:
            src = layer(src, pos, ref_points, spatial_shapes)
        return src


class DeformableEncoder(nn.Module):
    """A :class:`DeformableEncoderStack` over the flattened levels, with a learned embedding per
    level added to the position encoding."""

    def __init__(self, d_model: int, n_heads: int, num_layers: int, dim_feedforward: int, dropout: float,
                 n_levels: int, n_points: int):
        super().__init__()
        self.level_embed = nn.Parameter(torch.empty(n_levels, d_model))
        self.encoder = DeformableEncoderStack(
            num_layers, d_model=d_model, dim_feedforward=dim_feedforward, dropout=dropout,
            n_levels=n_levels, n_heads=n_heads, n_points=n_points,
        )
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for m in self.modules():
            if isinstance(m, MSDeformAttn):
                m.reset_parameters()
        nn.init.normal_(self.level_embed)

    def forward(self, srcs: List[torch.Tensor], pos: List[torch.Tensor]):
        """
        Args:
            srcs, pos: L tensors (N, C, H_l, W_l).
        Returns:
            memory (N, S, C) and the L level shapes (H_l, W_l).
        """
        shapes = [tuple(s.shape[-2:]) for s in srcs]
        src = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], 1)
        pos = torch.cat([p.flatten(2).transpose(1, 2) + self.level_embed[i] for i, p in enumerate(pos)], 1)
        ref = reference_points(shapes, src.shape[0], src.device)
        return self.encoder(src, pos, ref, shapes), shapes


@PIXEL_DECODER_REGISTRY.register()
class MSDeformAttnPixelDecoder(nn.Module):
    """Deformable encoder over the coarse levels, then lateral + 3x3 convs down to ``common_stride``.

    ``forward_features`` returns the mask features at ``common_stride`` and the three coarsest
    decoder levels (stride 32, 16, 8) that feed the masked-attention transformer decoder.
    """

    @configurable
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        transformer_dropout: float,
        transformer_nheads: int,
        transformer_dim_feedforward: int,
        transformer_enc_layers: int,
        transformer_n_points: int,
        conv_dim: int,
        mask_dim: int,
        norm: str,
        transformer_in_features: List[str],
        common_stride: int,
    ):
        super().__init__()
        ordered = sorted(input_shape.items(), key=lambda kv: kv[1].stride)
        self.in_features = [k for k, _ in ordered]
        missing = set(transformer_in_features) - set(self.in_features)
        if missing:
            raise ValueError(f"encoder features {sorted(missing)} are not among the inputs {self.in_features}")
        encoder_feats = [k for k, _ in ordered if k in transformer_in_features]
        self.transformer_in_features = encoder_feats
        self.input_proj = nn.ModuleList(
            nn.Sequential(Conv2d(input_shape[k].channels, conv_dim, kernel_size=1), nn.GroupNorm(32, conv_dim))
            for k in encoder_feats[::-1]
        )
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight, gain=1)
            nn.init.zeros_(proj[0].bias)
        self.transformer = DeformableEncoder(
            conv_dim, transformer_nheads, transformer_enc_layers, transformer_dim_feedforward,
            transformer_dropout, len(encoder_feats), transformer_n_points,
        )
        self.pe_layer = PositionEmbeddingSine(conv_dim // 2, normalize=True)
        self.mask_dim = mask_dim
        self.mask_features = Conv2d(conv_dim, mask_dim, kernel_size=1)
        weight_init.c2_xavier_fill(self.mask_features)
        self.num_decoder_levels = 3
        finest_encoder_stride = input_shape[encoder_feats[0]].stride
        num_fpn_levels = int(math.log2(finest_encoder_stride) - math.log2(common_stride))
        self.fpn_features = self.in_features[:num_fpn_levels][::-1]
        self.lateral_convs, self.output_convs = [], []
        use_bias = norm == ""
        for idx, name in enumerate(self.in_features[:num_fpn_levels]):
            lateral = Conv2d(input_shape[name].channels, conv_dim, kernel_size=1, bias=use_bias,
                             norm=get_norm(norm, conv_dim))
            output = Conv2d(conv_dim, conv_dim, kernel_size=3, padding=1, bias=use_bias,
                            norm=get_norm(norm, conv_dim), activation=F.relu)
            weight_init.c2_xavier_fill(lateral)
            weight_init.c2_xavier_fill(output)
            self.add_module(f"adapter_{idx + 1}", lateral)
            self.add_module(f"layer_{idx + 1}", output)
            self.lateral_convs.append(lateral)
            self.output_convs.append(output)
        self.lateral_convs = self.lateral_convs[::-1]
        self.output_convs = self.output_convs[::-1]

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        head = cfg.MODEL.SEM_SEG_HEAD
        return {
            "input_shape": {k: v for k, v in input_shape.items() if k in head.IN_FEATURES},
            "transformer_dropout": cfg.MODEL.MASK_FORMER.DROPOUT,
            "transformer_nheads": head.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS,
            "transformer_dim_feedforward": 1024,
            "transformer_enc_layers": head.TRANSFORMER_ENC_LAYERS,
            "transformer_n_points": head.DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS,
            "conv_dim": head.CONVS_DIM,
            "mask_dim": head.MASK_DIM,
            "norm": head.NORM,
            "transformer_in_features": head.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES,
            "common_stride": head.COMMON_STRIDE,
        }

    def forward_features(self, features: Dict[str, torch.Tensor]):
        """
        Args:
            features: backbone outputs by name, (N, C_f, H_f, W_f).
        Returns:
            mask_features (N, mask_dim, H/s, W/s) at s = common_stride; the encoder output at the
            coarsest level (N, conv_dim, H/32, W/32); and the decoder levels, coarsest first:
            3 tensors (N, conv_dim, H_l, W_l).
        """
        names = self.transformer_in_features[::-1]
        srcs = [self.input_proj[i](features[name].float()) for i, name in enumerate(names)]
        pos = [self.pe_layer(s) for s in srcs]
        memory, shapes = self.transformer(srcs, pos)
        n = memory.shape[0]
        chunks = memory.split([h * w for h, w in shapes], dim=1)
        outs = [c.transpose(1, 2).reshape(n, -1, h, w) for c, (h, w) in zip(chunks, shapes)]
        for name, lateral, output in zip(self.fpn_features, self.lateral_convs, self.output_convs):
            lat = lateral(features[name].float())
            up = F.interpolate(outs[-1], size=lat.shape[-2:], mode="bilinear", align_corners=False)
            outs.append(output(lat + up))
        return self.mask_features(outs[-1]), outs[0], outs[: self.num_decoder_levels]
