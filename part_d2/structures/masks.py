"""The one place for mask conversions: polygons, COCO RLE and binary masks.

Every part_d2 module that encodes, decodes, measures or crops masks calls these functions.
RLEs are COCO's compressed format with ``counts`` as ``str`` (JSON-serialisable).
"""
from typing import Dict, List, Sequence, Union

import numpy as np
import pycocotools.mask as mask_util

Segmentation = Union[List[List[float]], Dict]


def mask_to_rle(mask: np.ndarray) -> Dict:
    """Encode one binary mask.

    Args:
        mask: (H, W) bool or {0, 1} array.
    Returns:
        COCO RLE ``{"size": [H, W], "counts": str}``.
    """
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def masks_to_rles(masks: np.ndarray) -> List[Dict]:
    """Encode N binary masks.

    Args:
        masks: (N, H, W) bool or {0, 1} array.
    Returns:
        N COCO RLEs with ``str`` counts.
    """
    if len(masks) == 0:
        return []
    rles = mask_util.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return rles


def _as_coco_rle(segm: Segmentation, height: int, width: int) -> Dict:
    """Any COCO segmentation (polygons, uncompressed or compressed RLE) as one compressed RLE."""
    if isinstance(segm, list):
        rles = mask_util.frPyObjects([list(map(float, p)) for p in segm], height, width)
        return mask_util.merge(rles)
    if isinstance(segm, dict):
        if isinstance(segm.get("counts"), list):
            return mask_util.frPyObjects(segm, *segm["size"])
        counts = segm["counts"]
        return {"size": list(segm["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    raise TypeError(f"unsupported segmentation of type {type(segm).__name__}")


def segmentation_to_mask(segm: Segmentation, height: int, width: int) -> np.ndarray:
    """Decode a COCO segmentation (polygons or RLE) to a (H, W) bool mask."""
    return mask_util.decode(_as_coco_rle(segm, height, width)).astype(bool)


def segmentation_to_rle(segm: Segmentation, height: int, width: int) -> Dict:
    """A COCO segmentation (polygons or RLE) as a compressed RLE with ``str`` counts."""
    rle = _as_coco_rle(segm, height, width)
    counts = rle["counts"]
    return {"size": list(rle["size"]), "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}


def segmentations_union(segms: Sequence[Segmentation], height: int, width: int) -> Dict:
    """Union of one or more COCO segmentations as a compressed RLE with ``str`` counts."""
    rles = [_as_coco_rle(s, height, width) for s in segms]
    rle = rles[0] if len(rles) == 1 else mask_util.merge(rles, intersect=False)
    counts = rle["counts"]
    return {"size": list(rle["size"]), "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}


def segmentation_area(segm: Segmentation, height: int, width: int) -> float:
    """Number of foreground pixels of a COCO segmentation (polygons or RLE)."""
    return float(mask_util.area(_as_coco_rle(segm, height, width)))


def segmentation_bbox(segm: Segmentation, height: int, width: int) -> List[float]:
    """Tight XYWH box of a COCO segmentation (polygons or RLE), as pycocotools computes it."""
    return [float(v) for v in mask_util.toBbox(_as_coco_rle(segm, height, width))]


def rle_area(rle: Dict) -> float:
    """Number of foreground pixels of a COCO RLE."""
    return float(mask_util.area(_as_coco_rle(rle, *rle["size"])))


def mask_to_bbox(mask: np.ndarray) -> List[float]:
    """Tight XYWH box of a (H, W) binary mask in COCO's convention (``[0, 0, 0, 0]`` if empty)."""
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    if len(xs) == 0:
        return [0.0, 0.0, 0.0, 0.0]
    return [float(xs[0]), float(ys[0]), float(xs[-1] + 1 - xs[0]), float(ys[-1] + 1 - ys[0])]


def polygon_is_valid(poly: Sequence[float]) -> bool:
    """A polygon needs an even number of at least 6 coordinates (3 points)."""
    return len(poly) >= 6 and len(poly) % 2 == 0
