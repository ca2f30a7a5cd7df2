"""Evaluation ground truth: the one place that turns dataset records into GT arrays and COCO GT.

- :func:`parts_view`: the registered dataset holding the part classes of an evaluated dataset
  (an ``X_agnostic`` view is evaluated against ``X_parts``);
- :func:`gt_parts` / :func:`gt_object_mask`: a record's GT part masks and classes, its object mask;
- :func:`coco_gt`: COCO ground truth of records (class-aware, class-agnostic, or with the parts of
  one class inside one object merged, :func:`merge_parts_per_object`).
"""
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog

from part_d2.data.part_json import AGNOSTIC_CLASS
from part_d2.structures.masks import rle_area, segmentation_to_mask, segmentation_to_rle, segmentations_union

AGNOSTIC_ID = 0  # category id of every GT part and prediction in class-agnostic COCO evaluation


def parts_view(dataset_name: str) -> str:
    """The dataset with the part classes of ``dataset_name``: its ``_parts`` sibling for an
    ``_agnostic`` view registered from a part json, else the dataset itself.

    Raises:
        ValueError: for an ``objects`` view (object instances are not parts).
    """
    view = MetadataCatalog.get(dataset_name).get("label_view")
    if view == "objects":
        raise ValueError(f"{dataset_name}: part evaluation needs part annotations, not the objects view")
    if view == "agnostic" and dataset_name.endswith("_agnostic"):
        parts = dataset_name[: -len("_agnostic")] + "_parts"
        if parts in DatasetCatalog.list():
            return parts
    return dataset_name


def gt_parts(record: Dict) -> Tuple[np.ndarray, np.ndarray]:
    """GT part masks (G, H, W) bool and classes (G,) int64 of a record (crowd parts skipped)."""
    h, w = record["height"], record["width"]
    annos = [a for a in record.get("annotations", []) if not a.get("iscrowd", 0)]
    masks = np.zeros((len(annos), h, w), dtype=bool)
    for i, a in enumerate(annos):
        masks[i] = segmentation_to_mask(a["segmentation"], h, w)
    return masks, np.array([a["category_id"] for a in annos], dtype=np.int64)


def gt_object_mask(record: Dict, part_masks: Optional[np.ndarray] = None) -> np.ndarray:
    """(H, W) bool union of the record's objects; without objects, the union of ``part_masks``
    ((G, H, W), default :func:`gt_parts`)."""
    h, w = record["height"], record["width"]
    objects = record.get("objects", [])
    if objects:
        mask = np.zeros((h, w), dtype=bool)
        for o in objects:
            mask |= segmentation_to_mask(o["segmentation"], h, w)
        return mask
    return (gt_parts(record)[0] if part_masks is None else part_masks).any(0)


def merge_parts_per_object(annotations: List[Dict], height: int, width: int) -> List[Dict]:
    """Merge the parts of one class inside one object into one annotation.

    Args:
        annotations: part annotations with ``segmentation``, ``category_id`` and ``object_id``
            (parts without one, -1 or missing, are treated as one object).
    Returns:
        one annotation per (object_id, category_id), in first-appearance order, with an RLE
        ``segmentation``, its ``area`` and ``iscrowd`` 0 (1 only if all merged parts are crowd).
    """
    groups: Dict[Tuple, List[Dict]] = OrderedDict()
    for ann in annotations:
        groups.setdefault((ann.get("object_id", -1), ann["category_id"]), []).append(ann)
    merged = []
    for (object_id, category_id), anns in groups.items():
        rle = segmentations_union([a["segmentation"] for a in anns], height, width)
        merged.append(
            {
                "segmentation": rle,
                "category_id": category_id,
                "object_id": object_id,
                "area": rle_area(rle),
                "iscrowd": int(all(a.get("iscrowd", 0) for a in anns)),
            }
        )
    return merged


def coco_gt(records: Sequence[Dict], class_names: Optional[Sequence[str]] = None, *, agnostic: bool = False,
            merged: bool = False, name: str = "dataset") -> Dict:
    """COCO ground truth (RLE segmentations, annotation ids from 1) of dataset records.

    Args:
        class_names: names of the contiguous categories ``0..N-1``; None: the ids found.
        agnostic: every part is category :data:`AGNOSTIC_ID` (``part``).
        merged: the parts of one class inside one object become one (:func:`merge_parts_per_object`).
        name: the dataset's name in error messages.
    Returns:
        dict with "images", "categories" and "annotations"; a missing ``area`` is the mask area.
    """
    images, annotations = [], []
    for rec in records:
        h, w = rec["height"], rec["width"]
        images.append({"id": rec["image_id"], "height": h, "width": w})
        anns = rec.get("annotations", [])
        if any("segmentation" not in a for a in anns):
            raise ValueError(f"{name}: an annotation of image {rec['image_id']!r} has no segmentation")
        for ann in merge_parts_per_object(anns, h, w) if merged else anns:
            rle = segmentation_to_rle(ann["segmentation"], h, w)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": rec["image_id"],
                    "category_id": AGNOSTIC_ID if agnostic else int(ann["category_id"]),
                    "segmentation": rle,
                    "area": float(ann["area"]) if "area" in ann else rle_area(rle),
                    "iscrowd": int(ann.get("iscrowd", 0)),
                }
            )
    if agnostic:
        categories = [{"id": AGNOSTIC_ID, "name": AGNOSTIC_CLASS}]
    elif class_names is None:
        categories = [{"id": c, "name": str(c)} for c in sorted({a["category_id"] for a in annotations})]
    else:
        categories = [{"id": c, "name": n} for c, n in enumerate(class_names)]
    return {"images": images, "categories": categories, "annotations": annotations}


def dataset_to_coco(dataset_name: str) -> Dict:
    """:func:`coco_gt` of a registered dataset with its ``thing_classes`` (class-aware)."""
    classes = MetadataCatalog.get(dataset_name).get("thing_classes")
    return coco_gt(DatasetCatalog.get(dataset_name), classes, name=dataset_name)
