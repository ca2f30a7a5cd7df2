"""OPS self-supervised loss: online k-means of pixel features, then pull/push around centroids.

Computed as the OPS reference implementation (tydpan/OpenPartSeg: the loss in
``mask2former/modeling/criterion.py``, its caller in ``mask2former/maskformer_model.py``) does, per
image ``b`` of the batch, on the stride-4 per-pixel mask features of the Mask2Former pixel decoder:

1. the object mask is resized to the feature resolution with ``nearest-exact`` interpolation;
2. ``f`` = L2-normalised features at object pixels (the pixels are the points, gradients flow);
3. ``K' = min(K, #object pixels)``; the image is skipped when ``K' <= 1``; k-means with ``K'``
   clusters on the *detached* ``f`` gives labels (or precomputed ``labels`` are used);
4. cluster ``m`` is kept only if ``|m| / |hull(m)| > hull_ratio`` (0.1), where ``hull(m)`` is the
   pixel count of scikit-image's ``convex_hull_image`` of the cluster's pixels on the feature
   grid (pixels as diamonds of half-pixel radius, pixel centres on the hull border count); an
   empty cluster is never kept;
5. for every kept cluster, ``c = mean(f[m])`` (not re-normalised) and
   ``L_a += mean_{p in m} exp(||p - c|| / tau_a)``;
6. if at least two clusters are kept, ``L_c += mean_{i, j} exp(-||c_i - c_j|| / tau_c)`` over the
   full kept-by-kept matrix, diagonal included, and ``n_valid += 1``;

and finally ``L_a`` and ``L_c`` are divided by ``max(n_valid, 1)``. Distances are Euclidean (not
squared). An image with a single kept cluster adds to ``L_a`` but not to ``n_valid``.

``formulation="paper"`` follows the equations printed in the OPS paper instead. With ``K`` the
number of kept clusters of the image (the clusters the sums run over) and ``c_k`` their centroids:

- Eq. 1 (contrast): ``L_c = (1/K) sum_{i, j} exp(-||c_i - c_j||^2 / tau_c)`` over all ``K^2``
  ordered pairs, ``i = j`` included (so the diagonal alone contributes 1);
- Eq. 2 (affinity): ``L_a = (1/K) sum_k (1/|m_k|) sum_{p in m_k} exp(||p - c_k||^2 / tau_a)``;

i.e. squared distances in both exponentials, the contrast matrix summed and divided by ``K``
(the reference's mean divides by ``K^2``), the affinity averaged over the kept clusters (the
reference sums). Normalisation over the batch is as above: both terms are summed over the images
and divided by ``max(n_valid, 1)``.

Hull filter cost: the label maps of the whole batch go to the CPU once (one transfer per batch,
not per cluster). A cluster whose pixel count exceeds ``hull_ratio`` times its bounding-box area is
kept without computing its hull (the hull never exceeds the bounding box, so the decision is the
same); the others call ``convex_hull_image`` on their bounding-box crop, which gives the same
pixel count as on the full grid.

Caller's side in the reference: the object mask is the 4th (alpha) input channel after
normalisation ``> 0`` (raw alpha above the pixel mean 128) on the padded batch, and the loss is
applied to every image of the combined labeled + unlabeled batch. The reference draws K from
``MODEL.CONTRASTIVE.N_CLUSTERS`` (OPS configs: 10) and its k-means uses the unseeded global RNG
with random init and at most 20 iterations (see :mod:`part_d2.clustering.kmeans`).
"""
from typing import Dict, Optional

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from skimage.morphology import convex_hull_image
from torch import nn

from part_d2.clustering import batched_kmeans

FORMULATIONS = ("reference", "paper")


def resize_object_masks(object_masks: torch.Tensor, size) -> torch.Tensor:
    """Object masks at the feature resolution, as the reference resizes them.

    Args:
        object_masks: (B, Hm, Wm) bool.
        size: (H, W) target size.
    Returns:
        (B, H, W) bool, ``nearest-exact`` interpolation.
    """
    if tuple(object_masks.shape[-2:]) == tuple(size):
        return object_masks.bool()
    resized = F.interpolate(object_masks[:, None].float(), size=tuple(size), mode="nearest-exact")
    return resized[:, 0] > 0.5


def hull_area(mask: np.ndarray) -> int:
    """Pixel count of scikit-image's convex hull image of a non-empty (H, W) bool mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    crop = mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    return int(convex_hull_image(crop).sum())


def keep_compact_clusters(label_map: np.ndarray, num_clusters: int, hull_ratio: float = 0.1) -> np.ndarray:
    """Which clusters pass the reference's compactness test ``|m| / |hull(m)| > hull_ratio``.

    Args:
        label_map: (H, W) int, cluster id per pixel, negative for pixels in no cluster.
        num_clusters: clusters ``0 .. num_clusters - 1`` are tested.
        hull_ratio: threshold on the area ratio.
    Returns:
        (num_clusters,) bool; empty clusters are False.
    """
    keep = np.zeros(num_clusters, dtype=bool)
    for m in range(num_clusters):
        mask = label_map == m
        count = int(mask.sum())
        if count == 0:
            continue
        rows = np.flatnonzero(mask.any(axis=1))
        cols = np.flatnonzero(mask.any(axis=0))
        box_area = (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1)
        keep[m] = count / box_area > hull_ratio or count / hull_area(mask) > hull_ratio
    return keep


def cluster_features(
    features_norm: torch.Tensor,
    object_masks: torch.Tensor,
    k: int,
    kmeans_iters: int = 20,
    kmeans_init: str = "random",
    seed: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Batched k-means of each image's normalised object-pixel features (float32, no gradient).

    Only the object pixels are clustered: they are gathered (contiguous, in raster order) into a
    (B, max #object pixels, C) batch, and the labels are scattered back.

    Args:
        features_norm: (B, C, H, W) float, L2-normalised at object pixels.
        object_masks: (B, H, W) bool.
        k: clusters per image (image ``b`` uses ``min(k, #object pixels)``).
    Returns:
        (B, H, W) long cluster ids, -1 outside the object.
    """
    b, c, h, w = features_norm.shape
    masks = object_masks.flatten(1)
    counts = masks.sum(dim=1)
    n_max = max(int(counts.max()), 1) if b else 1
    index = torch.argsort((~masks).to(torch.uint8), dim=1, stable=True)[:, :n_max]  # object pixels first
    flat = features_norm.detach().float().flatten(2)  # (B, C, H*W)
    points = torch.gather(flat, 2, index[:, None].expand(-1, c, -1)).transpose(1, 2).contiguous()
    valid = torch.arange(n_max, device=masks.device)[None] < counts[:, None]
    labels, _, _ = batched_kmeans(
        points,
        k,
        valid=valid,
        max_iter=kmeans_iters,
        init=kmeans_init,
        seed=seed,
        generator=generator,
    )
    out = torch.full((b, h * w), -1, dtype=torch.long, device=labels.device)
    return out.scatter_(1, index, labels).view(b, h, w)


def _check_labels(labels, masks, k_eff):
    inside = torch.where(masks, labels, torch.full_like(labels, -1))
    too_big = inside >= k_eff[:, None, None]
    if bool(too_big.any()):
        bad = int(too_big.flatten(1).any(dim=1).nonzero()[0])
        raise ValueError(
            f"labels of image {bad} has cluster ids >= K' = min(k, #object pixels) = {int(k_eff[bad])}"
        )
    return inside


def _image_losses(points, labels, keep, tau_a, tau_c, squared):
    """Affinity and contrast terms of one image.

    Args:
        points: (N, C) normalised object-pixel features; labels: (N,) long cluster ids (-1: none).
        keep: (K',) bool kept clusters.
    Returns:
        (affinity, contrast or None) scalars; contrast is None with fewer than 2 kept clusters.
        ``squared``: the paper's Eq. 1 / Eq. 2 (see the module docstring), else the reference.
    """
    kept_ids = keep.nonzero()[:, 0]
    n_kept = kept_ids.numel()
    if n_kept == 0:
        return points.new_zeros(()), None
    # one extra trailing slot so that label -1 (no cluster) maps to -1 as well
    remap = torch.full((keep.numel() + 1,), -1, dtype=torch.long, device=points.device)
    remap[kept_ids] = torch.arange(n_kept, device=points.device)
    cluster = remap[labels]
    sel = cluster >= 0
    pts, cluster = points[sel], cluster[sel]
    counts = torch.bincount(cluster, minlength=n_kept).to(pts.dtype)
    centroids = torch.zeros(n_kept, pts.shape[1], dtype=pts.dtype, device=pts.device)
    centroids = centroids.index_add(0, cluster, pts) / counts[:, None]
    dist = torch.linalg.vector_norm(pts - centroids[cluster], dim=1)
    dist = dist**2 if squared else dist
    per_cluster = torch.zeros(n_kept, dtype=pts.dtype, device=pts.device)
    per_cluster = per_cluster.index_add(0, cluster, torch.exp(dist / tau_a)) / counts
    affinity = per_cluster.mean() if squared else per_cluster.sum()
    if n_kept < 2:
        return affinity, None
    cdist = torch.cdist(centroids, centroids)
    if not squared:
        return affinity, torch.exp(-cdist / tau_c).mean()
    return affinity, torch.exp(-(cdist**2) / tau_c).sum() / n_kept  # Eq. 1: (1/K) sum over ordered pairs


def cluster_contrastive_losses(
    features: torch.Tensor,
    object_masks: torch.Tensor,
    labels: Optional[torch.Tensor] = None,
    k: int = 10,
    tau_a: float = 1.0,
    tau_c: float = 1.0,
    hull_ratio: float = 0.1,
    formulation: str = "reference",
    kmeans_iters: int = 20,
    kmeans_init: str = "random",
    seed: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
) -> Dict[str, torch.Tensor]:
    """The OPS self-supervised loss terms (unweighted); see the module docstring.

    Args:
        features: (B, C, H, W) float per-pixel features (mask features at stride 4).
        object_masks: (B, Hm, Wm) bool object masks at any resolution (resized to (H, W)).
        labels: optional (B, H, W) long precomputed cluster ids in ``[0, K')`` (-1: no cluster);
            k-means is run when None.
        k: number of clusters K.
        tau_a, tau_c: temperatures of the affinity and contrast terms.
        hull_ratio: compactness threshold of the cluster filter.
        formulation: "reference" (code) or "paper" (printed equations).
        kmeans_iters, kmeans_init, seed, generator: k-means options.
    Returns:
        dict with ``loss_affinity`` and ``loss_contrast`` (scalars of the features' float dtype,
        differentiable w.r.t. ``features``) and ``n_valid`` (long scalar: images with >= 2 kept
        clusters).
    """
    if formulation not in FORMULATIONS:
        raise ValueError(f"unknown formulation {formulation!r}; expected one of {FORMULATIONS}")
    if features.dim() != 4 or object_masks.dim() != 3 or len(features) != len(object_masks):
        raise ValueError(
            f"expected features (B, C, H, W) and object_masks (B, H, W), got "
            f"{tuple(features.shape)} and {tuple(object_masks.shape)}"
        )
    if features.dtype in (torch.float16, torch.bfloat16):
        features = features.float()
    masks = resize_object_masks(object_masks.to(features.device), features.shape[-2:])
    norm = F.normalize(features, dim=1) * masks[:, None]
    k_eff = masks.flatten(1).sum(dim=1).clamp(max=k)
    if labels is None:
        labels = cluster_features(norm, masks, k, kmeans_iters, kmeans_init, seed, generator)
    elif labels.shape != masks.shape:
        raise ValueError(f"labels has shape {tuple(labels.shape)}, expected {tuple(masks.shape)}")
    labels = _check_labels(labels.to(features.device).long(), masks, k_eff)

    labels_cpu, k_cpu = labels.cpu().numpy(), k_eff.tolist()
    keep = torch.zeros(len(features), k, dtype=torch.bool)
    for b, kb in enumerate(k_cpu):
        if kb > 1:
            keep[b, :kb] = torch.from_numpy(keep_compact_clusters(labels_cpu[b], kb, hull_ratio))
    keep = keep.to(features.device)

    zero = features.new_zeros(())
    loss_a, loss_c, n_valid = zero, zero, 0
    for b, kb in enumerate(k_cpu):
        if kb <= 1:
            continue
        pixels = norm[b].permute(1, 2, 0)[masks[b]]
        affinity, contrast = _image_losses(
            pixels, labels[b][masks[b]], keep[b, :kb], tau_a, tau_c, formulation == "paper"
        )
        loss_a = loss_a + affinity
        if contrast is not None:
            loss_c = loss_c + contrast
            n_valid += 1
    denom = max(n_valid, 1)
    return {
        "loss_affinity": loss_a / denom,
        "loss_contrast": loss_c / denom,
        "n_valid": torch.tensor(n_valid, device=features.device),
    }


def weighted_cluster_contrastive_losses(
    features: torch.Tensor,
    object_masks: torch.Tensor,
    weight_affinity: float = 0.5,
    weight_contrast: float = 10.0,
    **kwargs,
) -> Dict[str, torch.Tensor]:
    """λ-weighted loss terms, ready to add to a detectron2 loss dict.

    Args:
        features, object_masks, **kwargs: as :func:`cluster_contrastive_losses`.
        weight_affinity: λ_a; weight_contrast: λ_c.
    Returns:
        dict with ``loss_affinity = λ_a L_a`` and ``loss_contrast = λ_c L_c`` (scalars).
    """
    losses = cluster_contrastive_losses(features, object_masks, **kwargs)
    return {
        "loss_affinity": weight_affinity * losses["loss_affinity"],
        "loss_contrast": weight_contrast * losses["loss_contrast"],
    }


class ClusterContrastiveLoss(nn.Module):
    """Configurable wrapper of :func:`weighted_cluster_contrastive_losses` (``MODEL.OPS.SS_LOSS``).

    ``forward(features: (B, C, H, W), object_masks: (B, Hm, Wm) bool) -> dict`` of the two
    weighted losses. Draws k-means randomness from its own CPU generator seeded with ``seed``
    (torch's global RNG when ``seed < 0``).
    """

    @configurable
    def __init__(
        self,
        *,
        k: int = 10,
        tau_a: float = 1.0,
        tau_c: float = 1.0,
        weight_affinity: float = 0.5,
        weight_contrast: float = 10.0,
        hull_ratio: float = 0.1,
        formulation: str = "reference",
        kmeans_iters: int = 20,
        kmeans_init: str = "random",
        seed: int = -1,
    ):
        super().__init__()
        if formulation not in FORMULATIONS:
            raise ValueError(f"unknown formulation {formulation!r}; expected one of {FORMULATIONS}")
        self.k = k
        self.tau_a = tau_a
        self.tau_c = tau_c
        self.weight_affinity = weight_affinity
        self.weight_contrast = weight_contrast
        self.hull_ratio = hull_ratio
        self.formulation = formulation
        self.kmeans_iters = kmeans_iters
        self.kmeans_init = kmeans_init
        self.generator = torch.Generator().manual_seed(seed) if seed >= 0 else None

    @classmethod
    def from_config(cls, cfg):
        ss = cfg.MODEL.OPS.SS_LOSS
        return {
            "k": ss.K,
            "tau_a": ss.TAU_A,
            "tau_c": ss.TAU_C,
            "weight_affinity": ss.WEIGHT_AFFINITY,
            "weight_contrast": ss.WEIGHT_CONTRAST,
            "hull_ratio": ss.HULL_RATIO,
            "formulation": ss.FORMULATION,
            "kmeans_iters": ss.KMEANS_ITERS,
            "kmeans_init": ss.KMEANS_INIT,
            "seed": ss.SEED,
        }

    def forward(self, features: torch.Tensor, object_masks: torch.Tensor) -> Dict[str, torch.Tensor]:
        return weighted_cluster_contrastive_losses(
            features,
            object_masks,
            weight_affinity=self.weight_affinity,
            weight_contrast=self.weight_contrast,
            k=self.k,
            tau_a=self.tau_a,
            tau_c=self.tau_c,
            hull_ratio=self.hull_ratio,
            formulation=self.formulation,
            kmeans_iters=self.kmeans_iters,
            kmeans_init=self.kmeans_init,
            generator=self.generator,
        )
