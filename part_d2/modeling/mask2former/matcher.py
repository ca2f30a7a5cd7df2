"""Hungarian matching of Mask2Former's query predictions to ground-truth masks."""
from typing import Dict, List, Tuple

import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from .losses import pairwise_dice_cost, pairwise_sigmoid_ce_cost
from .point_sampling import point_sample, uniform_points


def matching_cost(
    class_logits: torch.Tensor,
    mask_logits: torch.Tensor,
    target_classes: torch.Tensor,
    target_masks: torch.Tensor,
    point_coords: torch.Tensor,
    class_weight: float,
    mask_weight: float,
    dice_weight: float,
) -> torch.Tensor:
    """Cost of assigning each query to each target of one image.

    ``class_weight * (-p(target class)) + mask_weight * BCE + dice_weight * dice`` with BCE and
    dice computed on the same points for predictions and targets.

    Args:
        class_logits: (Q, K + 1) float. mask_logits: (Q, h, w) float.
        target_classes: (T,) int64. target_masks: (T, H, W) float or bool.
        point_coords: (P, 2) float in [0, 1], shared by all masks.
    Returns:
        (Q, T) float.
    """
    class_cost = -class_logits.float().softmax(-1)[:, target_classes]
    num_queries, num_targets = mask_logits.shape[0], target_masks.shape[0]
    pred = point_sample(mask_logits[:, None].float(), point_coords.expand(num_queries, -1, -1))[:, 0]
    target = point_sample(
        target_masks[:, None].float(), point_coords.expand(num_targets, -1, -1)
    )[:, 0]
    return (
        class_weight * class_cost
        + mask_weight * pairwise_sigmoid_ce_cost(pred, target)
        + dice_weight * pairwise_dice_cost(pred, target)
    )


class HungarianMatcher(nn.Module):
    """One-to-one assignment minimising :func:`matching_cost` per image."""

    def __init__(self, class_weight: float = 1.0, mask_weight: float = 1.0, dice_weight: float = 1.0,
                 num_points: int = 0):
        """
        Args:
            num_points: points sampled uniformly per image for the mask costs (one set shared by
                all predictions and targets of the image).
        """
        super().__init__()
        if class_weight == 0 and mask_weight == 0 and dice_weight == 0:
            raise ValueError("HungarianMatcher: all cost weights are 0")
        if num_points <= 0:
            raise ValueError(f"HungarianMatcher: num_points must be positive, got {num_points}")
        self.class_weight = class_weight
        self.mask_weight = mask_weight
        self.dice_weight = dice_weight
        self.num_points = num_points

    @torch.no_grad()
    def forward(
        self, outputs: Dict[str, torch.Tensor], targets: List[Dict[str, torch.Tensor]]
    ) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """
        Args:
            outputs: ``"pred_logits"`` (B, Q, K + 1) and ``"pred_masks"`` (B, Q, h, w).
            targets: B dicts with ``"labels"`` (T,) int64 and ``"masks"`` (T, H, W).
        Returns:
            B pairs ``(query_indices, target_indices)`` of int64 tensors of length min(Q, T).
        """
        indices = []
        for b, target in enumerate(targets):
            coords = uniform_points(1, self.num_points, outputs["pred_masks"].device)
            cost = matching_cost(
                outputs["pred_logits"][b],
                outputs["pred_masks"][b],
                target["labels"],
                target["masks"],
                coords,
                self.class_weight,
                self.mask_weight,
                self.dice_weight,
            )
            rows, cols = linear_sum_assignment(cost.cpu().numpy())
            indices.append(
                (torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64))
            )
        return indices
