"""PartDistillation stage 2: class-specific part ranking from part-proposal query features.

Per object (the paper's rule, supplementary "part ranking"; the reference's
``PartRankingModel._unique_assignment`` with ``USE_PER_PIXEL_LABEL_DURING_CLUSTERING True``):

1. every pixel of the object goes to ``argmax_j sigmoid(M_j) * s_j``, with ``M_j`` the mask
   logits and ``s_j`` the class probability of proposal ``j`` (the predictions keep both:
   ``mask_probs`` and ``class_scores``). The reference also leaves out the pixels that no
   proposal covers (every probability <= 0.5);
2. the resulting disjoint segments are filtered by area (fraction of the object, ``MIN_AREA_RATIO``)
   then by class probability ``s_j > tau_s`` (``MIN_SCORE``), each filter keeping all its inputs
   when none passes (as the reference).

Per object class, the (optionally L2-normalised) decoder query features of the kept proposals of
the whole dataset are clustered into ``PART_DISTILLATION.NUM_PART_MODES`` modes (:class:`PartCentroids`, persisted).
A proposal's part class within its object's class is ranked by a softmax over the modes of the
``RANKING.METRIC`` logits (:func:`ranking_logits`):

- ``"l2"`` (default, the paper's distance): ``-|x - c|^2``;
- ``"reference_l2"``: ``x.c - |x|^2 - |c|^2``, the reference's classifier named "l2"
  (``part_ranking_model.py`` ``use_classifier``; its default ``PART_RANKING.CLASSIFIER_METRIC`` and
  its released ``sh_files/part_ranking/run.sh``). It is *not* the negative squared distance
  (``2 x.c - |x|^2 - |c|^2``): the dot product weighs half as much, which flattens the softmax and
  can change the ranking for centroids of unequal norms;
- ``"dot"``: ``x.c``, the reference's other ``CLASSIFIER_METRIC``.
"""
import json
import os
from typing import Callable, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from part_d2.clustering.kmeans import batched_kmeans
from part_d2.utils.io import atomic_write_json, atomic_write_npy

CENTROIDS_JSON = "part_centroids.json"
CENTROIDS_NPY = "part_centroids.npy"


def unique_assignment(mask_probs: np.ndarray, scores: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Disjoint segments covering ``region``: each pixel goes to ``argmax_j mask_probs[j] * scores[j]``.

    Args:
        mask_probs: (N, H, W) float in [0, 1] (sigmoid of the mask logits); scores: (N,) float
            class probabilities; region: (H, W) bool (the object mask).
    Returns:
        (N, H, W) bool, disjoint, inside ``region`` (ties go to the lower index).
    """
    if len(mask_probs) == 0:
        return np.zeros(mask_probs.shape, bool)
    probs = np.asarray(mask_probs, np.float64)
    best = (probs * np.asarray(scores, np.float64)[:, None, None]).argmax(axis=0)
    return (best[None] == np.arange(len(probs))[:, None, None]) & region[None]


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


METRICS = ("l2", "reference_l2", "dot")


def ranking_logits(x: torch.Tensor, centroids: torch.Tensor, metric: str = "l2") -> torch.Tensor:
    """Logits of features against modes.

    Args:
        x: (M, D); centroids: (K, D); metric: one of :data:`METRICS` (see the module docstring).
    Returns:
        (M, K): ``-|x - c|^2`` ("l2"), ``x.c - |x|^2 - |c|^2`` ("reference_l2") or ``x.c`` ("dot").
    """
    if metric not in METRICS:
        raise ValueError(f"PART_DISTILLATION.RANKING.METRIC={metric!r}; expected one of {METRICS}")
    xc = x @ centroids.t()
    if metric == "dot":
        return xc
    xx = (x * x).sum(dim=1, keepdim=True)
    cc = (centroids * centroids).sum(dim=1)[None]
    return (xc if metric == "reference_l2" else 2 * xc) - xx - cc


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

    def probabilities(self, features: np.ndarray, class_index: int, metric: str = "l2") -> np.ndarray:
        """(M, K) softmax over the used modes of ``class_index`` (unused modes get 0).

        Args:
            features: (M, D) raw query features (normalised here if the centroids were).
        """
        x = torch.as_tensor(np.asarray(features, np.float32))
        if self.normalize:
            x = torch.nn.functional.normalize(x, dim=1)
        logits = ranking_logits(x, torch.as_tensor(self.centroids[class_index]), metric)
        logits = logits.masked_fill(torch.as_tensor(self.counts[class_index] == 0)[None], float("-inf"))
        return logits.softmax(dim=1).numpy()


def default_group_size(device: Union[str, torch.device]) -> int:
    """Object classes per :func:`batched_kmeans` call: 4 on CPU (larger padded batches fall out of
    cache), 128 on a GPU (enough to fill it)."""
    return 128 if torch.device(device).type == "cuda" else 4


def _check_classes(classes: np.ndarray, num_rows: int, num_classes: int) -> np.ndarray:
    """``classes`` as a flat int64 array, checked against the feature rows and the class count."""
    classes = np.asarray(classes, np.int64).reshape(-1)
    if len(classes) != num_rows:
        raise ValueError(f"got {num_rows} features but {len(classes)} class indices")
    if len(classes) and (classes.min() < 0 or classes.max() >= num_classes):
        raise ValueError(f"class indices must be in [0, {num_classes}), got [{classes.min()}, {classes.max()}]")
    return classes


def _cluster_classes(x: torch.Tensor, classes: np.ndarray, class_ids: np.ndarray, centroids: np.ndarray,
                     counts: np.ndarray, k: int, n_init: int, max_iter: int, seed: int, group_size: int,
                     device: Union[str, torch.device]) -> None:
    """k-means of the rows of each class of ``class_ids``, written into ``centroids``/``counts``.

    Args:
        x: (M, D) float32 (normalised if wanted); classes: (M,) int64, each in ``class_ids``.
        class_ids: (C',) the classes to cluster, ascending.
        centroids: (C, K, D), counts: (C, K): filled at the rows of the present classes.
    """
    sizes = np.zeros(len(centroids), np.int64)
    sizes[class_ids] = np.bincount(np.searchsorted(class_ids, classes), minlength=len(class_ids))
    order = np.argsort(classes, kind="stable")
    starts = np.concatenate([[0], np.cumsum(sizes)])
    present = class_ids[sizes[class_ids] > 0]
    present = present[np.argsort(sizes[present], kind="stable")]
    dim = x.shape[-1]
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


def _as_points(features, normalize: bool) -> torch.Tensor:
    """(M, D) float32 tensor of ``features`` (any float dtype), L2-normalised when ``normalize``."""
    x = torch.from_numpy(np.array(features, np.float32))  # a new array (one float32 copy)
    if normalize and len(x):  # in place, the operations of torch.nn.functional.normalize(x, dim=1)
        x.div_(x.norm(dim=1, keepdim=True).clamp_min(1e-12))
    return x


def cluster_part_modes(features: np.ndarray, classes: np.ndarray, class_names: Sequence[str], k: int,
                       n_init: int = 10, max_iter: int = 300, seed: int = 0, normalize: bool = True,
                       group_size: Optional[int] = None, device: Union[str, torch.device] = "cpu") -> PartCentroids:
    """k-means of the features of each object class.

    Classes are sorted by their number of features and clustered ``group_size`` at a time in one
    :func:`batched_kmeans` call (padded with ``valid``). Class ``c`` draws from its own generator
    seeded ``seed * 100003 + c``, so its modes do not depend on the other classes nor on
    ``group_size`` (up to float rounding). :func:`cluster_part_modes_streaming` gives the same
    modes from features read in chunks, in bounded memory.

    Args:
        features: (M, D) float; classes: (M,) int object class of each feature.
        class_names: the C object classes (classes without features get no used mode).
        group_size: classes per call; None: :func:`default_group_size` of ``device``.
        device: where to cluster.
    """
    x = _as_points(features, normalize)
    dim = x.shape[1] if x.dim() == 2 else 0
    centroids = np.zeros((len(class_names), k, dim), np.float32)
    counts = np.zeros((len(class_names), k), np.int64)
    classes = _check_classes(classes, len(x), len(class_names))
    _cluster_classes(x, classes, np.arange(len(class_names)), centroids, counts, k, n_init, max_iter, seed,
                     group_size or default_group_size(device), device)
    return PartCentroids(class_names, centroids, counts, normalize)


FeatureChunks = Callable[[], Iterable[Tuple[np.ndarray, np.ndarray]]]


def plan_buckets(sizes: np.ndarray, row_bytes: int, budget_bytes: int) -> np.ndarray:
    """Split the classes, in id order, into consecutive ranges of at most ``budget_bytes`` of features.

    Args:
        sizes: (C,) features per class; row_bytes: bytes of one feature row in memory.
    Returns:
        (B + 1,) class boundaries: bucket ``b`` holds classes ``[bounds[b], bounds[b + 1])``. A class
        larger than the budget gets a bucket of its own.
    """
    bounds, used = [0], 0
    for c, n in enumerate(np.asarray(sizes, np.int64)):
        if used and used + n * row_bytes > budget_bytes:
            bounds.append(c)
            used = 0
        used += int(n) * row_bytes
    return np.asarray(bounds + [len(sizes)], np.int64)


def cluster_part_modes_streaming(chunks: FeatureChunks, class_names: Sequence[str], k: int, workdir: str,
                                 n_init: int = 10, max_iter: int = 300, seed: int = 0, normalize: bool = True,
                                 group_size: Optional[int] = None, device: Union[str, torch.device] = "cpu",
                                 budget_bytes: int = 1 << 30) -> PartCentroids:
    """:func:`cluster_part_modes` of features read chunk by chunk, holding at most about
    ``budget_bytes`` of (float32) features in memory at once.

    Three passes: (1) count the features of each class (reads only the class indices); split the
    classes into ranges whose float32 features fit the budget (:func:`plan_buckets`); (2) append
    each chunk's rows to the file of their range under ``workdir`` (in the chunk's dtype, e.g.
    float16 stays float16); (3) per range, load its file and cluster its classes as
    :func:`cluster_part_modes` does. Each class keeps its rows in input order and its own generator,
    so the modes equal the in-memory ones exactly when one range holds every class, and up to float
    rounding otherwise (classes are grouped into ``batched_kmeans`` calls within a range). Memory: one
    chunk plus one range (its features, their float32 copy and the k-means work space).

    Args:
        chunks: ``() -> iterable of (features (m, D) float array, classes (m,) int)``, called twice;
            a memory-mapped array is read only in pass 2. The range files keep the dtype of the
            (last non-empty) chunk.
        workdir: folder of the range files (created; removed with them when done, if empty).
    """
    sizes, dim, dtype = np.zeros(len(class_names), np.int64), 0, np.dtype(np.float32)
    for feats, cls in chunks():
        cls = _check_classes(cls, len(feats), len(class_names))
        sizes += np.bincount(cls, minlength=len(class_names))
        if len(cls):
            dim, dtype = feats.shape[1], np.dtype(feats.dtype)
    bounds = plan_buckets(sizes, 4 * dim, budget_bytes)
    os.makedirs(workdir, exist_ok=True)
    paths = [(os.path.join(workdir, f"bucket-{b:05d}.feat"), os.path.join(workdir, f"bucket-{b:05d}.cls"))
             for b in range(len(bounds) - 1)]
    try:
        for fp, cp in paths:
            open(fp, "wb").close()
            open(cp, "wb").close()
        for feats, cls in chunks():
            cls = np.asarray(cls, np.int64).reshape(-1)
            if not len(cls):
                continue
            bucket = np.searchsorted(bounds, cls, side="right") - 1
            order = np.argsort(bucket, kind="stable")
            cuts = np.searchsorted(bucket[order], np.arange(len(paths) + 1))
            rows = np.asarray(feats, dtype)
            for b in np.unique(bucket):
                idx = order[cuts[b] : cuts[b + 1]]
                with open(paths[b][0], "ab") as f:
                    np.ascontiguousarray(rows[idx]).tofile(f)
                with open(paths[b][1], "ab") as f:
                    cls[idx].astype(np.int32).tofile(f)
        centroids = np.zeros((len(class_names), k, dim), np.float32)
        counts = np.zeros((len(class_names), k), np.int64)
        for b, (fp, cp) in enumerate(paths):
            cls = np.fromfile(cp, np.int32).astype(np.int64)
            if not len(cls):
                continue
            x = _as_points(np.fromfile(fp, dtype).reshape(-1, dim), normalize)
            _cluster_classes(x, cls, np.arange(bounds[b], bounds[b + 1]), centroids, counts, k, n_init, max_iter,
                             seed, group_size or default_group_size(device), device)
            del x
    finally:
        for fp, cp in paths:
            for path in (fp, cp):
                if os.path.exists(path):
                    os.remove(path)
        if os.path.isdir(workdir) and not os.listdir(workdir):
            os.rmdir(workdir)
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
    """Disjoint, filtered proposals of one object from a model's predictions (module docstring).

    Args:
        instances: detectron2 Instances (CPU) with ``mask_probs`` (N, H, W) float,
            ``class_scores`` (N,) and optionally ``query_embeddings`` (N, D).
        object_mask: (H, W) bool.
    Returns:
        segments (M, H, W) bool, class probabilities (M,), indices (M,) into ``instances``,
        features (M, D) or None.
    """
    if not (instances.has("mask_probs") and instances.has("class_scores")):
        raise ValueError("part ranking needs mask_probs and class_scores in the predictions "
                         "(set the model's return_mask_probs, as build_proposal_predictor does)")
    scores = instances.class_scores.numpy().astype(np.float64)
    segs = unique_assignment(instances.mask_probs.numpy(), scores, object_mask)
    idx = filter_proposals(segs.reshape(len(segs), -1).sum(axis=1), scores, float(object_mask.sum()),
                           min_area_ratio, min_score)
    feats = instances.query_embeddings.numpy()[idx] if instances.has("query_embeddings") else None
    return segs[idx], scores[idx], idx, feats


def mode_names(object_classes: Sequence[str], k: int) -> List[str]:
    """Part class names of the (object class, mode) pairs: ``"{object}:{mode}"``, object-major."""
    return [f"{o}:{m}" for o in object_classes for m in range(k)]
