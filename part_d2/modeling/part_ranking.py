"""PartDistillation stage 2: class-specific part ranking from part-proposal query features.

Per object: the proposals' masks are made disjoint inside the object (every pixel goes to the
covering proposal of highest score), then filtered by area (fraction of the object) and score,
keeping all when none passes (as the reference). Per object class, the L2-normalised decoder
query features of the kept proposals of the whole dataset are clustered into ``PART_DISTILLATION.NUM_PART_MODES`` modes
(:class:`PartCentroids`, persisted). A proposal's part class within its object's class is ranked
by a softmax over the modes of

- ``-|x - c|^2`` (default, the squared L2 distance), or
- ``x.c - |x|^2 - |c|^2`` (``faithful``): the reference's "l2" classifier. It is *not* the
  negative squared distance (that is ``2 x.c - |x|^2 - |c|^2``); it weights the dot product half
  as much, which flattens the softmax and can change the ranking for centroids of unequal norms.
"""
import json
import os
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from part_d2.clustering.kmeans import batched_kmeans
from part_d2.utils.io import atomic_write_json, atomic_write_npy

CENTROIDS_JSON = "part_centroids.json"
CENTROIDS_NPY = "part_centroids.npy"


def unique_assignment(masks: np.ndarray, scores: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Make masks disjoint inside ``region``: each covered pixel goes to its best-scoring mask.

    Args:
        masks: (N, H, W) bool; scores: (N,) float; region: (H, W) bool.
    Returns:
        (N, H, W) bool, disjoint, inside ``region`` (ties go to the lower index).
    """
    if len(masks) == 0:
        return masks.astype(bool)
    weighted = np.where(masks, np.asarray(scores, np.float64)[:, None, None], -np.inf)
    best = weighted.argmax(axis=0)
    covered = masks.any(axis=0) & region
    return (best[None] == np.arange(len(masks))[:, None, None]) & covered[None]


def keep_or_all(passes: np.ndarray) -> np.ndarray:
    """``passes`` if any element passes, else all True (the reference's filtering rule)."""
    return passes if passes.any() else np.ones_like(passes, dtype=bool)


def filter_proposals(areas: np.ndarray, scores: np.ndarray, object_area: float,
                     min_area_ratio: float, min_score: float) -> np.ndarray:
    """Indices of the proposals kept by the area filter then the score filter (each keeps all
    its inputs when none passes); empty proposals are never kept."""
    idx = np.flatnonzero(areas > 0)
    idx = idx[keep_or_all(areas[idx] / max(object_area, 1.0) > min_area_ratio)]
    return idx[keep_or_all(scores[idx] > min_score)]


def ranking_logits(x: torch.Tensor, centroids: torch.Tensor, faithful: bool = False) -> torch.Tensor:
    """Logits of features against modes.

    Args:
        x: (M, D); centroids: (K, D).
    Returns:
        (M, K): ``-|x - c|^2``, or ``x.c - |x|^2 - |c|^2`` when ``faithful``.
    """
    xc = x @ centroids.t()
    xx = (x * x).sum(dim=1, keepdim=True)
    cc = (centroids * centroids).sum(dim=1)[None]
    return (xc if faithful else 2 * xc) - xx - cc


class PartCentroids:
    """Per object class, ``K`` part modes: centroids (C, K, D), counts (C, K) of clustered features.

    A mode with count 0 is unused (a class with fewer than K features has fewer modes).
    """

    def __init__(self, class_names: Sequence[str], centroids: np.ndarray, counts: np.ndarray,
                 normalize: bool = True):
        self.class_names = list(class_names)
        self.centroids = np.asarray(centroids, dtype=np.float32)
        self.counts = np.asarray(counts, dtype=np.int64)
        self.normalize = normalize
        if self.centroids.shape[:2] != self.counts.shape or len(self.class_names) != len(self.counts):
            raise ValueError("class names, centroids (C, K, D) and counts (C, K) disagree in shape")

    @property
    def num_modes(self) -> int:
        return self.centroids.shape[1]

    def save(self, directory: str) -> None:
        """Write ``part_centroids.npy`` (C, K, D) float32 and ``part_centroids.json``."""
        atomic_write_npy(os.path.join(directory, CENTROIDS_NPY), self.centroids)
        atomic_write_json(os.path.join(directory, CENTROIDS_JSON), {
            "class_names": self.class_names, "counts": self.counts.tolist(), "normalize": self.normalize,
            "shape": list(self.centroids.shape)})

    @classmethod
    def load(cls, directory: str) -> "PartCentroids":
        with open(os.path.join(directory, CENTROIDS_JSON)) as f:
            meta = json.load(f)
        centroids = np.load(os.path.join(directory, CENTROIDS_NPY), allow_pickle=False)
        if list(centroids.shape) != meta["shape"]:
            raise ValueError(f"{directory}: {CENTROIDS_NPY} has shape {centroids.shape}, json says {meta['shape']}")
        return cls(meta["class_names"], centroids, np.asarray(meta["counts"]), meta["normalize"])

    def probabilities(self, features: np.ndarray, class_index: int, faithful: bool = False) -> np.ndarray:
        """(M, K) softmax over the used modes of ``class_index`` (unused modes get 0).

        Args:
            features: (M, D) raw query features (normalised here if the centroids were).
        """
        x = torch.as_tensor(np.asarray(features, np.float32))
        if self.normalize:
            x = torch.nn.functional.normalize(x, dim=1)
        logits = ranking_logits(x, torch.as_tensor(self.centroids[class_index]), faithful)
        logits = logits.masked_fill(torch.as_tensor(self.counts[class_index] == 0)[None], float("-inf"))
        return logits.softmax(dim=1).numpy()


def default_group_size(device: Union[str, torch.device]) -> int:
    """Object classes per :func:`batched_kmeans` call: 4 on CPU (larger padded batches fall out of
    cache), 128 on a GPU (enough to fill it)."""
    return 128 if torch.device(device).type == "cuda" else 4


def cluster_part_modes(features: np.ndarray, classes: np.ndarray, class_names: Sequence[str], k: int,
                       n_init: int = 10, max_iter: int = 300, seed: int = 0, normalize: bool = True,
                       group_size: Optional[int] = None, device: Union[str, torch.device] = "cpu") -> PartCentroids:
    """k-means of the features of each object class.

    Classes are sorted by their number of features and clustered ``group_size`` at a time in one
    :func:`batched_kmeans` call (padded with ``valid``). Class ``c`` draws from its own generator
    seeded ``seed * 100003 + c``, so its modes do not depend on the other classes nor on
    ``group_size`` (up to float rounding).

    Args:
        features: (M, D) float; classes: (M,) int object class of each feature.
        class_names: the C object classes (classes without features get no used mode).
        group_size: classes per call; None: :func:`default_group_size` of ``device``.
        device: where to cluster.
    """
    x = torch.as_tensor(np.asarray(features, np.float32))
    if normalize and len(x):
        x = torch.nn.functional.normalize(x, dim=1)
    dim = x.shape[1] if x.dim() == 2 else 0
    centroids = np.zeros((len(class_names), k, dim), np.float32)
    counts = np.zeros((len(class_names), k), np.int64)
    classes = np.asarray(classes, np.int64).reshape(-1)
    if len(classes) != len(x):
        raise ValueError(f"got {len(x)} features but {len(classes)} class indices")
    if len(classes) and (classes.min() < 0 or classes.max() >= len(class_names)):
        raise ValueError(f"class indices must be in [0, {len(class_names)}), got [{classes.min()}, {classes.max()}]")
    order = np.argsort(classes, kind="stable")
    sizes = np.bincount(classes, minlength=len(class_names))
    starts = np.concatenate([[0], np.cumsum(sizes)])
    present = np.flatnonzero(sizes)
    present = present[np.argsort(sizes[present], kind="stable")]
    group_size = group_size or default_group_size(device)
    for g in range(0, len(present), group_size):
        group = present[g : g + group_size]
        n_max = int(sizes[group].max())
        points = torch.zeros(len(group), n_max, dim)
        valid = torch.zeros(len(group), n_max, dtype=torch.bool)
        for j, c in enumerate(group):
            points[j, : sizes[c]] = x[order[starts[c] : starts[c + 1]]]
            valid[j, : sizes[c]] = True
        gens = [torch.Generator(device="cpu").manual_seed(int(seed) * 100003 + int(c)) for c in group]
        labels, cents, _ = batched_kmeans(points.to(device), k, valid=valid.to(device), n_init=n_init,
                                          max_iter=max_iter, generator=gens)
        centroids[group] = cents.cpu().numpy()
        labels = labels.cpu()
        for j, c in enumerate(group):
            counts[c] = np.bincount(labels[j, : sizes[c]].numpy(), minlength=k)[:k]
    return PartCentroids(class_names, centroids, counts, normalize)


def label_segments(segments: np.ndarray, scores: np.ndarray, probs: np.ndarray
                   ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Give each segment its most probable mode and merge the segments of each mode.

    Args:
        segments: (N, H, W) bool disjoint; scores: (N,); probs: (N, K).
    Returns:
        masks (P, H, W) bool (union per mode), modes (P,) int, scores (P,) = max over the merged
        segments of score x mode probability; by increasing mode.
    """
    if len(segments) == 0:
        return segments.astype(bool), np.zeros(0, np.int64), np.zeros(0, np.float64)
    modes = probs.argmax(axis=1)
    conf = np.asarray(scores, np.float64) * probs.max(axis=1)
    present = np.unique(modes)
    masks = np.stack([segments[modes == m].any(axis=0) for m in present])
    return masks, present.astype(np.int64), np.array([conf[modes == m].max() for m in present])


def object_proposals(instances, object_mask: np.ndarray, min_area_ratio: float, min_score: float
                     ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """Disjoint, filtered proposals of one object from a model's predictions.

    Args:
        instances: detectron2 Instances (CPU) with ``pred_masks`` (N, H, W), ``scores`` and
            optionally ``query_embeddings`` (N, D).
        object_mask: (H, W) bool.
    Returns:
        segments (M, H, W) bool, scores (M,), indices (M,) into ``instances``, features (M, D)
        or None.
    """
    masks = instances.pred_masks.numpy().astype(bool)
    scores = instances.scores.numpy().astype(np.float64)
    segs = unique_assignment(masks, scores, object_mask)
    idx = filter_proposals(segs.reshape(len(segs), -1).sum(axis=1), scores, float(object_mask.sum()),
                           min_area_ratio, min_score)
    feats = instances.query_embeddings.numpy()[idx] if instances.has("query_embeddings") else None
    return segs[idx], scores[idx], idx, feats


def mode_names(object_classes: Sequence[str], k: int) -> List[str]:
    """Part class names of the (object class, mode) pairs: ``"{object}:{mode}"``, object-major."""
    return [f"{o}:{m}" for o in object_classes for m in range(k)]
