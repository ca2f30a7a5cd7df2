"""Selection of PartDistillation training records: few-shot subsets and pseudo-label area filters.

- **Few-shot** (the reference's label-percentage protocol): shuffle the records with numpy's legacy
  generator seeded 1234 and keep the first ``int(len * percentage / 100)`` (at least one). The same seed gives the
  same subset as the reference's ``np.random.seed(1234); np.random.shuffle(records)``, and a
  smaller percentage keeps a prefix of a larger one's subset.
- **Area filters** of stage-1a / stage-2 pseudo labels (the reference's ``MIN_OBJECT_AREA_RATIO``
  and ``MIN_AREA_RATIO``; proposal learning uses 0.01 and 0.05, self-training 0.001 and 0.001): an
  image is kept only if its objects cover more than ``min_object_ratio`` of the image, and a part
  only if it covers more than ``min_part_ratio`` of its object. The reference measures both on
  the augmented crop at every iteration; part_d2 measures them once, on the original record
  (object area: the ``objects`` annotations, or the union of the parts when a record has none;
  a part's object: its ``object_id``, or all parts of the image). Images left without parts are
  dropped.
"""
import logging
from collections import defaultdict
from typing import Dict, List

import numpy as np

from part_d2.structures.masks import segmentation_to_mask

logger = logging.getLogger(__name__)

FEW_SHOT_SEED = 1234


def few_shot_subset(records: List[Dict], percentage: float, seed: int = FEW_SHOT_SEED) -> List[Dict]:
    """The records of a ``percentage`` label budget (shuffled order, see the module docstring)."""
    if not 0 < percentage <= 100:
        raise ValueError(f"few-shot percentage must be in (0, 100], got {percentage}")
    if percentage >= 100:
        return list(records)
    order = np.random.RandomState(seed).permutation(len(records))
    keep = max(1, int(len(records) * percentage / 100))
    return [records[i] for i in order[:keep]]


def _area(segm, height: int, width: int) -> int:
    return int(segmentation_to_mask(segm, height, width).sum())


def _object_areas(record: Dict) -> Dict:
    """Object area by object id; parts without a known object share the key None."""
    h, w = record["height"], record["width"]
    areas = {o.get("object_id", o.get("id")): float(o.get("area", _area(o["segmentation"], h, w)))
             for o in record.get("objects", [])}
    if not areas:
        union = np.zeros((h, w), dtype=bool)
        for a in record.get("annotations", []):
            union |= segmentation_to_mask(a["segmentation"], h, w)
        areas = {None: float(union.sum())}
    return areas


def filter_by_area_ratios(records: List[Dict], min_object_ratio: float, min_part_ratio: float) -> List[Dict]:
    """Drop small objects' images and small parts (see the module docstring); logs the counts."""
    if min_object_ratio <= 0 and min_part_ratio <= 0:
        return list(records)
    kept, dropped = [], defaultdict(int)
    for rec in records:
        areas = _object_areas(rec)
        if sum(areas.values()) / float(rec["height"] * rec["width"]) <= min_object_ratio:
            dropped["images whose objects are too small"] += 1
            continue
        total = sum(areas.values())
        parts = []
        for a in rec.get("annotations", []):
            obj_area = areas.get(a.get("object_id"), total) if len(areas) > 1 else total
            part_area = float(a.get("area", _area(a["segmentation"], rec["height"], rec["width"])))
            if obj_area <= 0 or part_area / obj_area <= min_part_ratio:
                dropped["parts too small for their object"] += 1
                continue
            parts.append(a)
        if not parts:
            dropped["images left without parts"] += 1
            continue
        kept.append(dict(rec, annotations=parts))
    if dropped:
        logger.info(
            f"Area filters (object > {min_object_ratio}, part > {min_part_ratio}): kept {len(kept)} of "
            f"{len(records)} images; dropped " + ", ".join(f"{n} {what}" for what, n in sorted(dropped.items()))
        )
    return kept


def select_training_records(cfg, records: List[Dict]) -> List[Dict]:
    """Apply ``DATASETS.MIN_OBJECT_AREA_RATIO`` / ``MIN_PART_AREA_RATIO`` then the few-shot subset
    ``DATASETS.FEW_SHOT_PERCENTAGE`` (seed ``DATASETS.FEW_SHOT_SEED``)."""
    d = cfg.DATASETS
    records = filter_by_area_ratios(records, d.MIN_OBJECT_AREA_RATIO, d.MIN_PART_AREA_RATIO)
    subset = few_shot_subset(records, d.FEW_SHOT_PERCENTAGE, d.FEW_SHOT_SEED)
    if len(subset) < len(records):
        logger.info(f"Few-shot: training on {len(subset)} of {len(records)} images ({d.FEW_SHOT_PERCENTAGE}%)")
    return subset
