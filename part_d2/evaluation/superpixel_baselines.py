"""Bottom-up part baselines of the OPS paper: SLIC, Normalized Cut and Felzenszwalb.

Each baseline segments the pixels of one object (its mask) into regions with scikit-image and
returns them as part masks (N, H, W) bool, to be scored with oracle labels by
:mod:`part_d2.evaluation.semantic_metrics` exactly as the model's parts are. All regions lie inside
the object mask; regions are ordered by their first pixel in raster order.
"""
from typing import Optional

import numpy as np
from skimage.graph import cut_normalized, rag_mean_color
from skimage.segmentation import felzenszwalb, slic

BASELINES = ("slic", "ncut", "felzenszwalb")


def _check(image: np.ndarray, object_mask: np.ndarray):
    image = np.asarray(image)
    mask = np.asarray(object_mask, dtype=bool)
    if image.ndim != 3 or image.shape[:2] != mask.shape:
        raise ValueError(
            f"expected an (H, W, 3) image and an (H, W) object mask, got {image.shape} and {mask.shape}"
        )
    return image, mask


def labels_to_masks(labels: np.ndarray, object_mask: np.ndarray) -> np.ndarray:
    """Regions of a label map restricted to the object.

    Args:
        labels: (H, W) int region ids (any values).
        object_mask: (H, W) bool.
    Returns:
        (N, H, W) bool, one mask per region id present inside the object, in raster order of the
        regions' first pixels.
    """
    inside = labels[object_mask]
    _, first = np.unique(inside, return_index=True)
    ids = inside[np.sort(first)]
    if len(ids) == 0:
        return np.zeros((0,) + labels.shape, dtype=bool)
    return (labels[None] == ids[:, None, None]) & object_mask[None]


def slic_parts(
    image: np.ndarray, object_mask: np.ndarray, n_segments: int = 10, compactness: float = 10.0, sigma: float = 1.0
) -> np.ndarray:
    """SLIC superpixels inside the object mask.

    Args:
        image: (H, W, 3) RGB, uint8 or float in [0, 1].
        object_mask: (H, W) bool.
        n_segments: approximate number of superpixels in the object.
        compactness, sigma: ``skimage.segmentation.slic`` parameters.
    Returns:
        (N, H, W) bool part masks.
    """
    image, mask = _check(image, object_mask)
    if not mask.any():
        return np.zeros((0,) + mask.shape, dtype=bool)
    labels = slic(image, n_segments=n_segments, compactness=compactness, sigma=sigma, mask=mask, start_label=1)
    return labels_to_masks(labels, mask & (labels > 0))


def felzenszwalb_parts(
    image: np.ndarray, object_mask: np.ndarray, scale: float = 100.0, sigma: float = 0.8, min_size: int = 50
) -> np.ndarray:
    """Felzenszwalb graph segmentation of the image, cut to the object mask.

    The segmentation runs on the whole image (the algorithm takes no mask); each segment's part
    inside the object is one part.

    Args:
        image: (H, W, 3) RGB; object_mask: (H, W) bool.
        scale, sigma, min_size: ``skimage.segmentation.felzenszwalb`` parameters.
    Returns:
        (N, H, W) bool part masks.
    """
    image, mask = _check(image, object_mask)
    labels = felzenszwalb(image, scale=scale, sigma=sigma, min_size=min_size)
    return labels_to_masks(labels, mask)


def ncut_parts(
    image: np.ndarray,
    object_mask: np.ndarray,
    n_segments: int = 100,
    compactness: float = 10.0,
    thresh: float = 0.001,
    num_cuts: int = 10,
    seed: Optional[int] = 0,
) -> np.ndarray:
    """Normalized Cut of a SLIC over-segmentation's region adjacency graph, inside the object.

    SLIC superpixels of the object become the nodes of a mean-colour similarity RAG, which
    ``skimage.graph.cut_normalized`` partitions recursively.

    Args:
        image: (H, W, 3) RGB; object_mask: (H, W) bool.
        n_segments, compactness: SLIC over-segmentation parameters.
        thresh, num_cuts: ``cut_normalized`` parameters.
        seed: seed of the cut's random generator.
    Returns:
        (N, H, W) bool part masks.
    """
    image, mask = _check(image, object_mask)
    if not mask.any():
        return np.zeros((0,) + mask.shape, dtype=bool)
    labels = slic(image, n_segments=n_segments, compactness=compactness, mask=mask, start_label=1)
    inside = mask & (labels > 0)
    if len(np.unique(labels[inside])) < 2:
        return labels_to_masks(labels, inside)
    rag = rag_mean_color(image, labels, mode="similarity")
    if 0 in rag:
        rag.remove_node(0)
    cut = cut_normalized(labels, rag, thresh=thresh, num_cuts=num_cuts, rng=np.random.default_rng(seed))
    return labels_to_masks(cut, inside)


def baseline_parts(name: str, image: np.ndarray, object_mask: np.ndarray, **kwargs) -> np.ndarray:
    """Run the baseline ``name`` ("slic", "ncut" or "felzenszwalb"); (N, H, W) bool part masks."""
    funcs = {"slic": slic_parts, "ncut": ncut_parts, "felzenszwalb": felzenszwalb_parts}
    if name not in funcs:
        raise ValueError(f"unknown baseline {name!r}; expected one of {BASELINES}")
    return funcs[name](image, object_mask, **kwargs)
