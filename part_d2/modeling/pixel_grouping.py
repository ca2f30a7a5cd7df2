"""PartDistillation stage 1a: part segments of each object by clustering backbone features.

For one image and its object masks:

1. backbone features ``FEATURE_KEYS`` (default res3 and res4) of an instance-segmentation model,
   each bilinearly resized to the first key's resolution (stride 8) and concatenated;
2. per object, k-means (k-means++, ``n_init`` restarts, seeded) of the feature vectors inside the
   object mask resized to that resolution (nearest), batched over the image's objects with
   :func:`part_d2.clustering.kmeans.batched_kmeans`;
3. every pixel of the object at the original resolution takes the cluster of highest score: the
   K score maps are computed at stride 8 and bilinearly upsampled. Scores are ``f.c`` ("dot") or
   ``2 f.c - |c|^2`` ("l2": ``-|f - c|^2`` up to ``-|f|^2``, equal for all clusters). Both are
   linear in ``f``, so upsampling the scores gives the same assignment as scoring upsampled
   features (the reference's way), without upsampling C-channel features;
4. optionally a dense CRF, by default on the whole image at the grouping size as the reference
   (``CRF.MODE``, :mod:`part_d2.modeling.dense_crf`).
"""
import logging
from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.structures import ImageList

from part_d2.clustering.kmeans import batched_kmeans
from part_d2.modeling.build import load_part_model
from part_d2.modeling.dense_crf import CRF_MODES, refine_parts_with_crf
from part_d2.modeling.onednn import channels_last_input

logger = logging.getLogger(__name__)
METRICS = ("dot", "l2")


def concat_features(features: Dict[str, torch.Tensor], keys: Sequence[str]) -> torch.Tensor:
    """Concatenate backbone features at the first key's resolution.

    Args:
        features: name -> (N, C_i, H_i, W_i) float.
    Returns:
        (N, sum C_i, H_0, W_0) float, others bilinearly resized (align_corners=False).
    """
    missing = [k for k in keys if k not in features]
    if missing:
        raise KeyError(f"backbone features {missing} not available; the backbone gives {sorted(features)}")
    size = features[keys[0]].shape[-2:]
    return torch.cat([F.interpolate(features[k], size=size, mode="bilinear", align_corners=False)
                      if features[k].shape[-2:] != size else features[k] for k in keys], dim=1)


def cluster_objects(features: torch.Tensor, masks: torch.Tensor, k: int, n_init: int = 10, max_iter: int = 300,
                    generator: Optional[torch.Generator] = None):
    """k-means of the feature vectors inside each object mask.

    Args:
        features: (C, h, w) float.
        masks: (B, h, w) bool, one per object (at least one pixel each).
    Returns:
        centers: (B, k, C) float; active: (B, k) bool, clusters in use (``min(k, #pixels)``).
    """
    flat = features.flatten(1).t()  # (h*w, C)
    counts = masks.flatten(1).sum(dim=1)
    n_max = int(counts.max())
    points = flat.new_zeros(len(masks), n_max, flat.shape[1])
    valid = torch.arange(n_max, device=flat.device)[None] < counts[:, None]
    for b, m in enumerate(masks.flatten(1)):
        points[b, : int(counts[b])] = flat[m]
    _, centers, _ = batched_kmeans(points, k, valid=valid, n_init=n_init, max_iter=max_iter,
                                   init="k-means++", generator=generator)
    active = torch.arange(k, device=flat.device)[None] < counts.clamp(max=k)[:, None]
    return centers, active


def centroid_scores(features: torch.Tensor, centers: torch.Tensor, metric: str = "dot") -> torch.Tensor:
    """Score of every pixel for every cluster (higher is closer).

    Args:
        features: (C, h, w); centers: (B, K, C).
    Returns:
        (B, K, h, w): ``f.c`` ("dot") or ``2 f.c - |c|^2`` ("l2").
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; expected one of {METRICS}")
    scores = torch.einsum("chw,bkc->bkhw", features, centers)
    if metric == "l2":
        scores = 2 * scores - (centers * centers).sum(-1)[..., None, None]
    return scores


def resize_matrix(out_size: int, in_size: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(out_size, in_size) weights of torch's 1-D linear resizing (align_corners=False):
    ``F.interpolate(v, out_size, mode="linear")`` equals ``resize_matrix(...) @ v``."""
    eye = torch.eye(in_size, device=device, dtype=dtype)[None]
    return F.interpolate(eye, size=out_size, mode="linear", align_corners=False)[0].t()


def _composite_resize(out_size: int, image_size: int, padded_size: int, in_size: int, device, dtype):
    """(out_size, in_size): resize to ``padded_size``, keep the first ``image_size``, resize to ``out_size``."""
    to_padded = resize_matrix(padded_size, in_size, device, dtype)[:image_size]
    return resize_matrix(out_size, image_size, device, dtype) @ to_padded


def assign_pixels(scores: torch.Tensor, active: torch.Tensor, padded_size, image_size, output_size,
                  object_masks: torch.Tensor) -> torch.Tensor:
    """Cluster labels at the output resolution from stride-8 score maps.

    The maps are resized like detectron2 resizes predictions: bilinearly to the padded input size,
    cropped to the (unpadded) input size, bilinearly resized to ``output_size``. Bilinear resizing
    is separable and linear, so the three steps are one (H_out, h) and one (W_out, w) matrix;
    each object's maps are computed (and arg-maxed) only inside its bounding box.

    Args:
        scores: (B, K, h, w); active: (B, K) bool.
        padded_size, image_size, output_size: (H, W) pairs.
        object_masks: (B, H_out, W_out) bool.
    Returns:
        (B, H_out, W_out) long: cluster index inside each object, -1 outside.
    """
    h, w = scores.shape[-2:]
    rows = _composite_resize(output_size[0], image_size[0], padded_size[0], h, scores.device, scores.dtype)
    cols = _composite_resize(output_size[1], image_size[1], padded_size[1], w, scores.device, scores.dtype)
    labels = torch.full(object_masks.shape, -1, dtype=torch.long, device=scores.device)
    for b, mask in enumerate(object_masks):
        ys, xs = mask.any(dim=1).nonzero()[:, 0], mask.any(dim=0).nonzero()[:, 0]
        if len(ys) == 0:
            continue
        y0, y1, x0, x1 = int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1
        up = rows[y0:y1] @ scores[b] @ cols[x0:x1].t()  # (K, bh, bw)
        up = up.masked_fill(~active[b, :, None, None], float("-inf"))
        box = mask[y0:y1, x0:x1]
        labels[b, y0:y1, x0:x1] = torch.where(box, up.argmax(dim=0), labels[b, y0:y1, x0:x1])
    return labels


def labels_to_parts(labels: np.ndarray) -> np.ndarray:
    """(H, W) labels (-1: none) -> (P, H, W) bool masks of the present labels, in label order."""
    present = [c for c in np.unique(labels) if c >= 0]
    return np.stack([labels == c for c in present]) if present else np.zeros((0,) + labels.shape, bool)


def resize_longest(image: np.ndarray, size: int) -> np.ndarray:
    """Resize (bilinear) so that the longer side is ``size`` (unchanged when ``size <= 0``)."""
    h, w = image.shape[:2]
    if size <= 0 or max(h, w) == size:
        return image
    s = size / max(h, w)
    return cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_LINEAR)


def select_backbone(model: torch.nn.Module, keys: Sequence[str]) -> torch.nn.Module:
    """The model's backbone, or its ``bottom_up`` (FPN) when only that one gives ``keys``."""
    backbone = model.backbone if hasattr(model, "backbone") else model
    if not set(keys) <= set(backbone.output_shape()) and hasattr(backbone, "bottom_up"):
        backbone = backbone.bottom_up
    if not set(keys) <= set(backbone.output_shape()):
        raise KeyError(f"PIXEL_GROUPING.FEATURE_KEYS {list(keys)} not among the backbone's outputs "
                       f"{sorted(backbone.output_shape())}")
    return backbone


def crf_options(cfg) -> Dict:
    """Keyword arguments of :func:`refine_parts_with_crf` from ``PART_DISTILLATION.PIXEL_GROUPING.CRF``."""
    pg = cfg.PART_DISTILLATION.PIXEL_GROUPING
    c = pg.CRF
    return {"mode": c.MODE, "image_size": pg.IMAGE_SIZE, "margin": c.CROP_MARGIN,
            "reference_relabel_bug": c.REFERENCE_RELABEL_BUG,
            "gt_prob": c.GT_PROB, "iterations": c.ITERATIONS, "gaussian_sxy": c.GAUSSIAN_SXY,
            "gaussian_compat": c.GAUSSIAN_COMPAT, "bilateral_sxy": c.BILATERAL_SXY,
            "bilateral_srgb": c.BILATERAL_SRGB, "bilateral_compat": c.BILATERAL_COMPAT}


class PixelGrouper:
    """Stage 1a on one image: ``grouper(image_rgb, object_masks, seed) -> [(P_i, H, W) bool]``."""

    @configurable
    def __init__(
        self,
        *,
        backbone: torch.nn.Module,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        input_format: str = "BGR",
        size_divisibility: int = 32,
        feature_keys: Sequence[str] = ("res3", "res4"),
        normalize_features: bool = False,
        num_clusters: int = 4,
        n_init: int = 10,
        max_iter: int = 300,
        metric: str = "dot",
        image_size: int = 640,
        crf: Optional[Dict] = None,
    ):
        """
        Args:
            backbone: detectron2 Backbone giving ``feature_keys``.
            pixel_mean, pixel_std: 3 values in ``input_format`` channel order.
            size_divisibility: pad inputs to a multiple of this (at least the backbone's).
            crf: None (no CRF) or keyword arguments of :func:`refine_parts_with_crf`.
        """
        if metric not in METRICS:
            raise ValueError(f"PIXEL_GROUPING.METRIC={metric!r}; expected one of {METRICS}")
        if crf is not None and crf.get("mode", "image") not in CRF_MODES:
            raise ValueError(f"PIXEL_GROUPING.CRF.MODE={crf['mode']!r}; expected one of {CRF_MODES}")
        if len(pixel_mean) != 3:
            raise ValueError(f"pixel grouping needs an RGB model (3 PIXEL_MEAN values), got {list(pixel_mean)}")
        self.backbone = backbone.eval()
        self.device = next(backbone.parameters()).device
        self.pixel_mean = torch.tensor(pixel_mean, dtype=torch.float32, device=self.device).view(3, 1, 1)
        self.pixel_std = torch.tensor(pixel_std, dtype=torch.float32, device=self.device).view(3, 1, 1)
        self.input_format = input_format
        self.size_divisibility = max(size_divisibility, getattr(backbone, "size_divisibility", 0))
        self.feature_keys = list(feature_keys)
        self.normalize_features = normalize_features
        self.num_clusters, self.n_init, self.max_iter = num_clusters, n_init, max_iter
        self.metric, self.image_size, self.crf = metric, image_size, crf

    @classmethod
    def from_config(cls, cfg, backbone: Optional[torch.nn.Module] = None):
        """``backbone`` defaults to that of ``build_part_model(cfg)`` with ``MODEL.WEIGHTS`` loaded."""
        pg = cfg.PART_DISTILLATION.PIXEL_GROUPING
        if backbone is None:
            model = load_part_model(cfg)
            backbone = select_backbone(model, pg.FEATURE_KEYS)
        return {
            "backbone": backbone,
            "pixel_mean": list(cfg.MODEL.PIXEL_MEAN),
            "pixel_std": list(cfg.MODEL.PIXEL_STD),
            "input_format": cfg.INPUT.FORMAT,
            "size_divisibility": max(0, cfg.MODEL.MASK_FORMER.SIZE_DIVISIBILITY),
            "feature_keys": list(pg.FEATURE_KEYS),
            "normalize_features": pg.NORMALIZE_FEATURES,
            "num_clusters": pg.NUM_CLUSTERS,
            "n_init": pg.KMEANS_N_INIT,
            "max_iter": pg.KMEANS_MAX_ITER,
            "metric": pg.METRIC,
            "image_size": pg.IMAGE_SIZE,
            "crf": crf_options(cfg) if pg.CRF.ENABLED else None,
        }

    @torch.no_grad()
    def features(self, image_rgb: np.ndarray):
        """Backbone features of the resized image.

        Returns:
            features: (C, h, w) at the first key's stride; padded_size and image_size (H, W) of the
            network input.
        """
        small = resize_longest(image_rgb, self.image_size)
        x = small[:, :, ::-1] if self.input_format == "BGR" else small
        x = torch.as_tensor(np.ascontiguousarray(x.transpose(2, 0, 1)), device=self.device).float()
        images = ImageList.from_tensors([(x - self.pixel_mean) / self.pixel_std], self.size_divisibility)
        x = channels_last_input(self.backbone, images.tensor)  # CPU: channels-last convolutions (onednn.py)
        feats = concat_features(self.backbone(x), self.feature_keys)[0]
        if self.normalize_features:
            feats = F.normalize(feats, dim=0)
        return feats, tuple(images.tensor.shape[-2:]), tuple(images.image_sizes[0])

    @torch.no_grad()
    def __call__(self, image_rgb: np.ndarray, object_masks: np.ndarray, seed: int = 0) -> List[Optional[np.ndarray]]:
        """Part segments of each object.

        Args:
            image_rgb: (H, W, 3) uint8.
            object_masks: (B, H, W) bool.
            seed: seed of the k-means generator (one generator for the image's batch of objects).
        Returns:
            B entries: (P, H, W) bool disjoint parts, or None for an object with no pixel at the
            feature resolution (or an empty mask).
        """
        out: List[Optional[np.ndarray]] = [None] * len(object_masks)
        if len(object_masks) == 0:
            return out
        feats, padded_size, image_size = self.features(image_rgb)
        masks_in = torch.zeros((len(object_masks),) + padded_size, dtype=torch.float32, device=self.device)
        for b, m in enumerate(object_masks):
            small = cv2.resize(m.astype(np.uint8), image_size[::-1], interpolation=cv2.INTER_NEAREST)
            masks_in[b, : image_size[0], : image_size[1]] = torch.from_numpy(small).to(self.device)
        masks_small = F.interpolate(masks_in[None], size=feats.shape[-2:], mode="nearest")[0] > 0.5
        keep = [b for b in range(len(object_masks)) if masks_small[b].any() and object_masks[b].any()]
        if not keep:
            return out
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        centers, active = cluster_objects(feats, masks_small[keep], self.num_clusters, self.n_init,
                                          self.max_iter, generator=gen)
        scores = centroid_scores(feats, centers.to(feats.dtype), self.metric)
        full = torch.from_numpy(np.ascontiguousarray(object_masks[keep])).to(self.device)
        labels = assign_pixels(scores, active, padded_size, image_size, object_masks.shape[1:], full).cpu().numpy()
        for j, b in enumerate(keep):
            parts = labels_to_parts(labels[j])
            if self.crf is not None:
                parts = refine_parts_with_crf(image_rgb, object_masks[b], parts, **self.crf)
            out[b] = parts
        return out
