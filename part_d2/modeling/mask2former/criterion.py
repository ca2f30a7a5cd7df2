"""Mask2Former's set criterion: classification and point-sampled mask losses on matched pairs."""
from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from detectron2.utils import comm
from torch import nn

from .losses import dice_loss, sigmoid_ce_loss
from .point_sampling import importance_points, point_sample, uniform_points

POINT_SAMPLING_MODES = ("importance", "uniform")


def classification_loss(
    class_logits: torch.Tensor,
    indices: List[Tuple[torch.Tensor, torch.Tensor]],
    target_classes: List[torch.Tensor],
    class_weights: torch.Tensor,
) -> torch.Tensor:
    """Weighted cross-entropy of all queries; unmatched queries target the "no object" class K.

    Args:
        class_logits: (B, Q, K + 1) float.
        indices: B pairs (query_indices, target_indices).
        target_classes: B tensors (T_b,) int64.
        class_weights: (K + 1,) float, e.g. ones with ``no_object_weight`` last.
    Returns:
        scalar: ``sum_i w[y_i] CE_i / sum_i w[y_i]`` over all B * Q queries.
    """
    num_classes = class_logits.shape[-1] - 1
    labels = torch.full(class_logits.shape[:2], num_classes, dtype=torch.int64, device=class_logits.device)
    for b, (query_idx, target_idx) in enumerate(indices):
        labels[b, query_idx.to(labels.device)] = target_classes[b][target_idx.to(labels.device)]
    return F.cross_entropy(class_logits.float().transpose(1, 2), labels, class_weights.float())


class SetCriterion(nn.Module):
    """Matches predictions to targets and computes ``loss_ce``, ``loss_mask`` and ``loss_dice`` for
    the final prediction and, with deep supervision, ``<name>_<i>`` for each auxiliary one.

    Losses are returned unweighted; ``weight_dict`` gives each name's weight.
    """

    def __init__(
        self,
        num_classes: int,
        matcher: nn.Module,
        weight_dict: Dict[str, float],
        no_object_weight: float,
        num_points: int,
        oversample_ratio: float,
        importance_sample_ratio: float,
        point_sampling: str = "importance",
        deep_supervision: bool = True,
    ):
        """
        Args:
            num_classes: K; class logits have K + 1 entries, the last one "no object".
            weight_dict: weight of each loss name (used by the model to sum the losses).
            no_object_weight: cross-entropy weight of the "no object" class.
            num_points, oversample_ratio, importance_sample_ratio: mask-loss points per mask and
                the importance-sampling parameters.
            point_sampling: "importance" or "uniform" choice of the mask-loss points.
            deep_supervision: also compute the losses of ``outputs["aux_outputs"]``.
        """
        super().__init__()
        if point_sampling not in POINT_SAMPLING_MODES:
            raise ValueError(
                f"MODEL.MASK_FORMER.POINT_SAMPLING must be one of {POINT_SAMPLING_MODES}, got "
                f"{point_sampling!r}"
            )
        self.num_classes = num_classes
        self.matcher = matcher
        self.weight_dict = weight_dict
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        self.point_sampling = point_sampling
        self.deep_supervision = deep_supervision
        class_weights = torch.ones(num_classes + 1)
        class_weights[-1] = no_object_weight
        self.register_buffer("empty_weight", class_weights)

    def _sample_points(self, mask_logits: torch.Tensor) -> torch.Tensor:
        """mask_logits: (M, 1, h, w) -> loss points (M, P, 2)."""
        if self.point_sampling == "uniform":
            return uniform_points(mask_logits.shape[0], self.num_points, mask_logits.device)
        return importance_points(
            mask_logits, self.num_points, self.oversample_ratio, self.importance_sample_ratio
        )

    def mask_losses(
        self,
        mask_logits: torch.Tensor,
        indices: List[Tuple[torch.Tensor, torch.Tensor]],
        target_masks: List[torch.Tensor],
        num_masks: float,
    ) -> Dict[str, torch.Tensor]:
        """BCE and dice of matched masks on :attr:`num_points` points per mask.

        Args:
            mask_logits: (B, Q, h, w) float.
            target_masks: B tensors (T_b, H, W), all with the same (H, W).
        """
        pred = torch.cat([mask_logits[b, q.to(mask_logits.device)] for b, (q, _) in enumerate(indices)])
        if pred.shape[0] == 0:
            zero = mask_logits.sum() * 0.0
            return {"loss_mask": zero, "loss_dice": zero}
        target = torch.cat([target_masks[b][t.to(mask_logits.device)] for b, (_, t) in enumerate(indices)])
        pred = pred[:, None].float()
        with torch.no_grad():
            coords = self._sample_points(pred)
            point_labels = point_sample(target[:, None].to(pred.dtype), coords)[:, 0]
        point_logits = point_sample(pred, coords)[:, 0]
        return {
            "loss_mask": sigmoid_ce_loss(point_logits, point_labels, num_masks),
            "loss_dice": dice_loss(point_logits, point_labels, num_masks),
        }

    def _losses_of(self, outputs, targets, num_masks) -> Dict[str, torch.Tensor]:
        indices = self.matcher(outputs, targets)
        losses = {
            "loss_ce": classification_loss(
                outputs["pred_logits"], indices, [t["labels"] for t in targets], self.empty_weight
            )
        }
        losses.update(self.mask_losses(outputs["pred_masks"], indices, [t["masks"] for t in targets], num_masks))
        return losses

    def forward(self, outputs: Dict, targets: List[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
        """
        Args:
            outputs: ``"pred_logits"`` (B, Q, K + 1), ``"pred_masks"`` (B, Q, h, w) and optionally
                ``"aux_outputs"``: a list of dicts with the same two keys.
            targets: B dicts with ``"labels"`` (T_b,) int64 and ``"masks"`` (T_b, H, W).
        Returns:
            unweighted losses by name.
        """
        num_masks = torch.as_tensor(
            float(sum(len(t["labels"]) for t in targets)), device=outputs["pred_logits"].device
        )
        if comm.get_world_size() > 1:
            torch.distributed.all_reduce(num_masks)
        num_masks = torch.clamp(num_masks / comm.get_world_size(), min=1).item()
        # float once for the matcher and the losses of every decoder layer
        targets = [dict(t, masks=t["masks"].float()) for t in targets]
        losses = self._losses_of(outputs, targets, num_masks)
        for i, aux in enumerate(outputs.get("aux_outputs", []) if self.deep_supervision else []):
            losses.update({f"{k}_{i}": v for k, v in self._losses_of(aux, targets, num_masks).items()})
        return losses
