"""Point sampling of mask logits: bilinear reads at normalised coordinates and the choice of the
points on which Mask2Former computes its matching costs and mask losses."""
import torch
import torch.nn.functional as F


def point_sample(features: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Bilinearly read ``features`` at normalised points (zero outside, ``align_corners=False``).

    Args:
        features: (R, C, H, W) float.
        coords: (R, P, 2) float, (x, y) in [0, 1] relative to the feature map's extent.
    Returns:
        (R, C, P) float.
    """
    grid = coords.unsqueeze(2) * 2.0 - 1.0
    return F.grid_sample(features, grid.to(features.dtype), mode="bilinear", align_corners=False).squeeze(3)


def uncertainty(logits: torch.Tensor) -> torch.Tensor:
    """Uncertainty of binary mask logits: ``-|logit|`` (highest at the decision boundary).

    Args:
        logits: (R, 1, P) float.
    Returns:
        (R, 1, P) float.
    """
    return -logits.abs()


def uniform_points(num_masks: int, num_points: int, device=None) -> torch.Tensor:
    """``num_points`` uniformly random points per mask: (num_masks, num_points, 2) in [0, 1)."""
    return torch.rand(num_masks, num_points, 2, device=device)


def importance_points(
    mask_logits: torch.Tensor, num_points: int, oversample_ratio: float, importance_ratio: float
) -> torch.Tensor:
    """PointRend's training-point selection, as used by Mask2Former's mask losses.

    ``int(num_points * oversample_ratio)`` candidates are drawn uniformly; the
    ``int(importance_ratio * num_points)`` most uncertain of them (largest :func:`uncertainty`
    of the bilinearly sampled logit) are kept and the rest is filled with fresh uniform points.

    Args:
        mask_logits: (R, 1, H, W) float, predicted mask logits.
    Returns:
        (R, num_points, 2) float, (x, y) in [0, 1).
    """
    if oversample_ratio < 1 or not 0 <= importance_ratio <= 1:
        raise ValueError(
            f"need oversample_ratio >= 1 and importance_ratio in [0, 1], got {oversample_ratio}, "
            f"{importance_ratio}"
        )
    num_masks = mask_logits.shape[0]
    device = mask_logits.device
    num_candidates = int(num_points * oversample_ratio)
    candidates = uniform_points(num_masks, num_candidates, device)
    scores = uncertainty(point_sample(mask_logits, candidates))[:, 0, :]
    num_uncertain = int(importance_ratio * num_points)
    top = scores.topk(num_uncertain, dim=1).indices
    chosen = torch.gather(candidates, 1, top.unsqueeze(-1).expand(-1, -1, 2))
    num_random = num_points - num_uncertain
    if num_random > 0:
        chosen = torch.cat([chosen, uniform_points(num_masks, num_random, device)], dim=1)
    return chosen
