"""Mask losses and matching costs of Mask2Former as pure functions.

The losses take one prediction per target (matched pairs); the ``pairwise_*`` costs compare every
prediction with every target. All work on mask logits/labels sampled at P points.
"""
import torch
import torch.nn.functional as F


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    """Sum over masks of ``1 - (2 |p t| + 1) / (|p| + |t| + 1)`` with ``p = sigmoid(logits)``, divided
    by ``num_masks``.

    Args:
        logits: (M, P) float. targets: (M, P) float in [0, 1].
    Returns:
        scalar.
    """
    probs = logits.sigmoid()
    numerator = 2 * (probs * targets).sum(-1)
    denominator = probs.sum(-1) + targets.sum(-1)
    return (1 - (numerator + 1) / (denominator + 1)).sum() / num_masks


def sigmoid_ce_loss(logits: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    """Per-mask mean binary cross-entropy (with logits) over points, summed over masks, divided by
    ``num_masks``.

    Args:
        logits: (M, P) float. targets: (M, P) float in [0, 1].
    Returns:
        scalar.
    """
    loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return loss.mean(1).sum() / num_masks


def pairwise_dice_cost(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Dice loss of every prediction against every target.

    Args:
        logits: (Q, P) float. targets: (T, P) float.
    Returns:
        (Q, T) float.
    """
    probs = logits.sigmoid()
    numerator = 2 * probs @ targets.t()
    denominator = probs.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)


def pairwise_sigmoid_ce_cost(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy over points of every prediction against every target.

    Args:
        logits: (Q, P) float. targets: (T, P) float.
    Returns:
        (Q, T) float.
    """
    num_points = logits.shape[1]
    loss_if_one = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    loss_if_zero = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    cost = loss_if_one @ targets.t() + loss_if_zero @ (1 - targets).t()
    return cost / num_points
