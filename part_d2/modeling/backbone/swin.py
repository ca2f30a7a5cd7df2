"""Swin Transformer backbone (Liu et al., 2021) for detectron2, with the parameter names of the
official Swin / Mask2Former checkpoints.

Presets (``MODEL.SWIN``): T: EMBED_DIM 96, DEPTHS [2, 2, 6, 2], NUM_HEADS [3, 6, 12, 24];
S: 96, [2, 2, 18, 2], [3, 6, 12, 24]; B: 128, [2, 2, 18, 2], [4, 8, 16, 32];
L: 192, [2, 2, 18, 2], [6, 12, 24, 48]. WINDOW_SIZE 7 (224 pretraining) or 12 (384).
"""
from typing import Optional

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as checkpoint
from detectron2.config import configurable
from detectron2.modeling import BACKBONE_REGISTRY, Backbone, ShapeSpec
from torch import nn


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, W, C) with H, W multiples of ``window`` -> (B * nW, window, window, C)."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window, window, c)


def window_reverse(windows: torch.Tensor, window: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: (B * nW, window, window, C) -> (B, H, W, C)."""
    b = windows.shape[0] // ((h // window) * (w // window))
    x = windows.view(b, h // window, w // window, window, window, -1)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, -1)


def drop_path(x: torch.Tensor, prob: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero whole samples with probability ``prob``, rescale the others."""
    if prob == 0.0 or not training:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1 - prob)
    return x * keep / (1 - prob)


def relative_position_index(window: int) -> torch.Tensor:
    """(window², window²) int64 index into the (2 window - 1)² relative-bias table."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, drop: float):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x):
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows with a learned relative position bias."""

    def __init__(self, dim: int, window: int, num_heads: int, qkv_bias: bool, qk_scale: Optional[float],
                 attn_drop: float, proj_drop: float):
        super().__init__()
        self.num_heads = num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        """
        Args:
            x: (B * nW, N, C) tokens of each window.
            mask: (nW, N, N) additive mask (0 or -100) or None.
        """
        bw, n, c = x.shape
        q, k, v = self.qkv(x).reshape(bw, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1)
        attn = attn + bias.permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(bw // nw, nw, self.num_heads, n, n) + mask[None, :, None]
            attn = attn.view(bw, self.num_heads, n, n)
        attn = self.attn_drop(attn.softmax(-1))
        return self.proj_drop(self.proj((attn @ v).transpose(1, 2).reshape(bw, n, c)))


class SwinTransformerBlock(nn.Module):
    """(Shifted) window attention and MLP, both pre-norm residual."""

    def __init__(self, dim, num_heads, window, shift, mlp_ratio, qkv_bias, qk_scale, drop, attn_drop, path_drop):
        super().__init__()
        self.window = window
        self.shift = shift
        self.path_drop = path_drop
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window, num_heads, qkv_bias, qk_scale, attn_drop, drop)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)

    def forward(self, x: torch.Tensor, h: int, w: int, shift_mask: torch.Tensor) -> torch.Tensor:
        """x: (B, H * W, C); shift_mask: (nW, N, N) for the padded map -> (B, H * W, C)."""
        b, _, c = x.shape
        y = self.norm1(x).view(b, h, w, c)
        pad_b, pad_r = (-h) % self.window, (-w) % self.window
        y = F.pad(y, (0, 0, 0, pad_r, 0, pad_b))
        hp, wp = h + pad_b, w + pad_r
        if self.shift > 0:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
        windows = window_partition(y, self.window).view(-1, self.window * self.window, c)
        windows = self.attn(windows, shift_mask if self.shift > 0 else None)
        y = window_reverse(windows.view(-1, self.window, self.window, c), self.window, hp, wp)
        if self.shift > 0:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        y = y[:, :h, :w, :].reshape(b, h * w, c)
        x = x + drop_path(y, self.path_drop, self.training)
        return x + drop_path(self.mlp(self.norm2(x)), self.path_drop, self.training)


class PatchMerging(nn.Module):
    """2x2 neighbourhood concatenation (C -> 4C), LayerNorm, linear 4C -> 2C."""

    def __init__(self, dim: int):
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """(B, H * W, C) -> (B, ceil(H/2) * ceil(W/2), 2C)."""
        b, _, c = x.shape
        x = F.pad(x.view(b, h, w, c), (0, 0, 0, w % 2, 0, h % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x.view(b, -1, 4 * c)))


def shift_window_mask(hp: int, wp: int, window: int, shift: int, device) -> torch.Tensor:
    """Additive mask (nW, window², window²): -100 between tokens that the cyclic shift brought
    together from different image regions, else 0."""
    regions = torch.zeros((1, hp, wp, 1), device=device)
    spans = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    label = 0
    for hs in spans:
        for ws in spans:
            regions[:, hs, ws, :] = label
            label += 1
    ids = window_partition(regions, window).view(-1, window * window)
    diff = ids[:, None, :] - ids[:, :, None]
    return diff.ne(0).float() * -100.0


class BasicLayer(nn.Module):
    """One stage: ``depth`` blocks alternating regular and shifted windows, then optional merging."""

    def __init__(self, dim, depth, num_heads, window, mlp_ratio, qkv_bias, qk_scale, drop, attn_drop,
                 path_drops, downsample: bool, use_checkpoint: bool):
        super().__init__()
        self.window = window
        self.shift = window // 2
        self.use_checkpoint = use_checkpoint
        self.blocks = nn.ModuleList(
            SwinTransformerBlock(dim, num_heads, window, 0 if i % 2 == 0 else self.shift, mlp_ratio, qkv_bias,
                                 qk_scale, drop, attn_drop, path_drops[i])
            for i in range(depth)
        )
        self.downsample = PatchMerging(dim) if downsample else None

    def forward(self, x: torch.Tensor, h: int, w: int):
        """x: (B, H * W, C) -> stage output (B, H * W, C) and the next stage's input and size."""
        hp = -(-h // self.window) * self.window
        wp = -(-w // self.window) * self.window
        mask = shift_window_mask(hp, wp, self.window, self.shift, x.device).to(x.dtype)
        for blk in self.blocks:
            if self.use_checkpoint and self.training:
                x = checkpoint.checkpoint(blk, x, h, w, mask, use_reentrant=False)
            else:
                x = blk(x, h, w, mask)
        if self.downsample is None:
            return x, x, h, w
        return x, self.downsample(x, h, w), (h + 1) // 2, (w + 1) // 2


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch`` x ``patch`` convolution, optionally followed by LayerNorm."""

    def __init__(self, patch: int, in_chans: int, embed_dim: int, norm: bool):
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch, stride=patch)
        self.norm = nn.LayerNorm(embed_dim) if norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, embed_dim, ceil(H/p), ceil(W/p))."""
        h, w = x.shape[-2:]
        x = self.proj(F.pad(x, (0, (-w) % self.patch, 0, (-h) % self.patch)))
        if self.norm is not None:
            b, c, hh, ww = x.shape
            x = self.norm(x.flatten(2).transpose(1, 2)).transpose(1, 2).view(b, c, hh, ww)
        return x


@BACKBONE_REGISTRY.register()
class D2SwinTransformer(Backbone):
    """Swin Transformer returning ``res2``..``res5`` (strides 4-32), each LayerNorm-ed.

    The input channels come from ``input_shape.channels`` (detectron2 passes
    ``len(MODEL.PIXEL_MEAN)``), so 4-channel object-aware input widens ``patch_embed.proj``.
    """

    @configurable
    def __init__(
        self,
        *,
        in_chans: int = 3,
        patch_size: int = 4,
        embed_dim: int = 96,
        depths=(2, 2, 6, 2),
        num_heads=(3, 6, 12, 24),
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: Optional[float] = None,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.2,
        ape: bool = False,
        pretrain_img_size: int = 224,
        patch_norm: bool = True,
        out_features=("res2", "res3", "res4", "res5"),
        use_checkpoint: bool = False,
    ):
        super().__init__()
        if len(depths) != len(num_heads):
            raise ValueError(f"SWIN.DEPTHS {depths} and SWIN.NUM_HEADS {num_heads} differ in length")
        self.num_layers = len(depths)
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim, patch_norm)
        self.ape = ape
        if ape:
            grid = pretrain_img_size // patch_size
            self.absolute_pos_embed = nn.Parameter(torch.zeros(1, embed_dim, grid, grid))
            nn.init.trunc_normal_(self.absolute_pos_embed, std=0.02)
        self.pos_drop = nn.Dropout(drop_rate)
        path_drops = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        self.num_features = [int(embed_dim * 2 ** i) for i in range(self.num_layers)]
        self.layers = nn.ModuleList()
        for i, depth in enumerate(depths):
            self.layers.append(BasicLayer(
                self.num_features[i], depth, num_heads[i], window_size, mlp_ratio, qkv_bias, qk_scale,
                drop_rate, attn_drop_rate, path_drops[sum(depths[:i]): sum(depths[: i + 1])],
                downsample=i < self.num_layers - 1, use_checkpoint=use_checkpoint,
            ))
        self._out_features = list(out_features)
        self._out_feature_strides = {f"res{i + 2}": patch_size * 2 ** i for i in range(self.num_layers)}
        self._out_feature_channels = {f"res{i + 2}": c for i, c in enumerate(self.num_features)}
        unknown = set(self._out_features) - set(self._out_feature_strides)
        if unknown:
            raise ValueError(f"SWIN.OUT_FEATURES {sorted(unknown)} not in {sorted(self._out_feature_strides)}")
        self._init_weights()
        for name in self._out_features:
            i = int(name[3:]) - 2
            self.add_module(f"norm{i}", nn.LayerNorm(self.num_features[i]))

    def _init_weights(self):
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec):
        s = cfg.MODEL.SWIN
        return {
            "in_chans": input_shape.channels,
            "patch_size": s.PATCH_SIZE,
            "embed_dim": s.EMBED_DIM,
            "depths": tuple(s.DEPTHS),
            "num_heads": tuple(s.NUM_HEADS),
            "window_size": s.WINDOW_SIZE,
            "mlp_ratio": s.MLP_RATIO,
            "qkv_bias": s.QKV_BIAS,
            "qk_scale": s.QK_SCALE,
            "drop_rate": s.DROP_RATE,
            "attn_drop_rate": s.ATTN_DROP_RATE,
            "drop_path_rate": s.DROP_PATH_RATE,
            "ape": s.APE,
            "pretrain_img_size": s.PRETRAIN_IMG_SIZE,
            "patch_norm": s.PATCH_NORM,
            "out_features": tuple(s.OUT_FEATURES),
            "use_checkpoint": s.USE_CHECKPOINT,
        }

    def forward(self, x: torch.Tensor):
        """x: (N, C_in, H, W) -> {"res<i>": (N, C_i, H / s_i, W / s_i)} for the out features."""
        if x.dim() != 4:
            raise ValueError(f"SwinTransformer takes (N, C, H, W) inputs, got shape {tuple(x.shape)}")
        x = self.patch_embed(x)
        h, w = x.shape[-2:]
        if self.ape:
            x = x + F.interpolate(self.absolute_pos_embed, size=(h, w), mode="bicubic", align_corners=False)
        x = self.pos_drop(x.flatten(2).transpose(1, 2))
        outs = {}
        for i, layer in enumerate(self.layers):
            out, x, next_h, next_w = layer(x, h, w)
            name = f"res{i + 2}"
            if name in self._out_features:
                out = getattr(self, f"norm{i}")(out)
                outs[name] = out.view(-1, h, w, self.num_features[i]).permute(0, 3, 1, 2).contiguous()
            h, w = next_h, next_w
        return outs

    def output_shape(self):
        return {
            name: ShapeSpec(channels=self._out_feature_channels[name], stride=self._out_feature_strides[name])
            for name in self._out_features
        }

    @property
    def size_divisibility(self) -> int:
        return 32
