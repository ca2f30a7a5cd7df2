"""Clustering used across part_d2 (one k-means for OPS and PartDistillation)."""
from .kmeans import batched_kmeans, kmeans

__all__ = ["batched_kmeans", "kmeans"]
