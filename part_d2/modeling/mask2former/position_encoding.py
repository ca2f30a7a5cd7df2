"""Sinusoidal 2-D position encoding of DETR (normalised variant used by Mask2Former)."""
import math

import torch
from torch import nn


class PositionEmbeddingSine(nn.Module):
    """Sine/cosine encoding of normalised (y, x) pixel positions; no parameters.

    Channel ``2i`` / ``2i + 1`` of each half holds ``sin`` / ``cos`` of
    ``pos * scale / temperature ** (2i / num_pos_feats)`` where ``pos = cumsum / total`` in (0, 1].
    The first half encodes y, the second x.
    """

    def __init__(self, num_pos_feats: int = 64, temperature: float = 10000.0, normalize: bool = True,
                 scale: float = 2 * math.pi):
        super().__init__()
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, C, H, W) (only its shape and device are used) -> (N, 2 * num_pos_feats, H, W) float."""
        n, _, h, w = x.shape
        ones = torch.ones((n, h, w), dtype=torch.float32, device=x.device)
        y = ones.cumsum(1)
        x_pos = ones.cumsum(2)
        if self.normalize:
            eps = 1e-6
            y = y / (y[:, -1:, :] + eps) * self.scale
            x_pos = x_pos / (x_pos[:, :, -1:] + eps) * self.scale
        exponent = 2 * torch.div(torch.arange(self.num_pos_feats, device=x.device), 2, rounding_mode="floor")
        dim_t = self.temperature ** (exponent.float() / self.num_pos_feats)
        return torch.cat([self._interleave(y[..., None] / dim_t), self._interleave(x_pos[..., None] / dim_t)],
                         dim=3).permute(0, 3, 1, 2)

    @staticmethod
    def _interleave(angles: torch.Tensor) -> torch.Tensor:
        """(N, H, W, F) -> (N, H, W, F): sin of even channels and cos of odd ones, alternating."""
        return torch.stack([angles[..., 0::2].sin(), angles[..., 1::2].cos()], dim=4).flatten(3)
