"""Losses of part_d2 models."""
from .cluster_contrastive import (
    ClusterContrastiveLoss,
    cluster_contrastive_losses,
    keep_compact_clusters,
    weighted_cluster_contrastive_losses,
)

__all__ = [
    "ClusterContrastiveLoss",
    "cluster_contrastive_losses",
    "keep_compact_clusters",
    "weighted_cluster_contrastive_losses",
]
