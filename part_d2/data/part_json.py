"""part_d2's COCO-style part json: loading, validation, label views and registration.

Format (a superset of COCO instances json, so pycocotools reads it unchanged)::

    {
      "info": {...},
      "images":            [{"id", "file_name", "height", "width",
                             "object_category_id": int (optional, image-level object class)}],
      "categories":        [{"id", "name", "supercategory"}],        # part classes
      "annotations":       [{"id", "image_id", "category_id", "object_id",
                             "segmentation", "area", "bbox", "iscrowd"}],  # part instances
      "object_categories": [{"id", "name", "supercategory"}],        # object classes
      "objects":           [{"id", "image_id", "category_id",
                             "segmentation", "area", "bbox", "iscrowd"}]   # object instances
    }

``segmentation`` is COCO polygons or RLE. ``object_id`` links a part to its object in
``objects``. Every part dataset of part_d2 (synthetic and real) is converted to this format by
its preparation script and read by :func:`load_part_json` in one of three **label views**:

- ``parts``: part instances with their part classes;
- ``agnostic``: part instances, all of the single class ``part``;
- ``objects``: object instances with their object classes.

Bad annotations are repaired or skipped with a logged count; a missing or malformed json raises
:class:`PartDatasetError` naming the file.

**Writing** (the one writer, :func:`part_json` + :func:`write_part_json`, used by every preparer,
generator and stage). Id convention: the reader accepts any integer ids (sorted category ids
define the contiguous class order). part_d2 writes 1-based ids: images, annotations and objects
are numbered from 1, and a class with contiguous index ``c`` is written as id :func:`class_id`
``(c) = c + 1`` (:func:`category_entries`); an unknown image-level object class is written as no
``object_category_id`` key. The one exception: preparers of a released dataset keep the release's
own category ids (PartImageNet's part ids 0-39, ImageNet class indices, the Pascal-Part and
Cityscapes-Panoptic-Parts taxonomies in ``part_d2/data/metadata``), so that its official files
and ours name classes alike.
"""
import logging
import os
from collections import Counter
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from part_d2.data.validation import (
    check_categories,
    check_unique_ids,
    index_images,
    polygon_problem,
    rle_problem,
    valid_size,
)
from part_d2.structures.masks import (
    mask_to_bbox,
    mask_to_rle,
    polygon_is_valid,
    rle_area,
    segmentation_area,
    segmentation_bbox,
)
from part_d2.utils.errors import PartDatasetError, clean_error_message  # noqa: F401  (re-exported)
from part_d2.utils.io import atomic_write_json, read_json

logger = logging.getLogger(__name__)

LABEL_VIEWS = ("parts", "agnostic", "objects")
AGNOSTIC_CLASS = "part"


def _check_keys(path: str, data: Dict, keys) -> None:
    if not isinstance(data, dict):
        raise PartDatasetError(f"{path}: expected a json object at top level, got {type(data).__name__}")
    missing = [k for k in keys if k not in data]
    if missing:
        raise PartDatasetError(f"{path}: missing top-level key(s) {missing}")


def _clean_segmentation(segm, height: int, width: int, stats: Counter):
    """Repair one segmentation: drop invalid polygons, clip to the image; None if nothing remains.

    Returns:
        (segmentation, area) with area in pixels, or (None, 0.0).
    """
    if isinstance(segm, list):
        if not segm:
            stats["empty segmentations [] (dropped)"] += 1
            return None, 0.0
        polys = []
        for poly in segm:
            problem = polygon_problem(poly)
            if problem:
                stats[problem] += 1
                continue
            if not polygon_is_valid(poly):
                stats["polygons with < 6 or an odd number of values (dropped)"] += 1
                continue
            arr = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
            if (arr < 0).any() or (arr[:, 0] > width).any() or (arr[:, 1] > height).any():
                stats["polygons outside the image (clipped)"] += 1
                arr = np.stack([arr[:, 0].clip(0, width), arr[:, 1].clip(0, height)], axis=1)
            polys.append(arr.reshape(-1).tolist())
        if not polys:
            return None, 0.0
        return polys, segmentation_area(polys, height, width)
    if isinstance(segm, dict) and "counts" in segm and "size" in segm and valid_size(segm):
        if list(segm["size"]) != [height, width]:
            stats["RLEs whose size differs from the image (dropped)"] += 1
            return None, 0.0
        problem = rle_problem(segm, height, width)
        if problem:
            stats[problem] += 1
            return None, 0.0
        return segm, segmentation_area(segm, height, width)
    stats["unreadable segmentations (dropped)"] += 1
    return None, 0.0


def _instances(path, anns, images, cat_map, stats, min_area, kind):
    """Group valid instances by image id as detectron2 annotation dicts."""
    by_image: Dict[int, List[Dict]] = {}
    for ann in anns:
        img = images.get(ann.get("image_id")) if _hashable(ann.get("image_id")) else None
        if img is None:
            stats[f"{kind} of unknown images (dropped)"] += 1
            continue
        if not _hashable(ann.get("category_id")) or ann.get("category_id") not in cat_map:
            stats[f"{kind} of unknown categories (dropped)"] += 1
            continue
        if ann.get("iscrowd", 0) not in (0, 1):
            stats[f"{kind} with an iscrowd other than 0 or 1 (dropped)"] += 1
            continue
        if "segmentation" not in ann:
            stats[f"{kind} without segmentation (dropped)"] += 1
            continue
        segm, area = _clean_segmentation(ann["segmentation"], img["height"], img["width"], stats)
        if segm is None:
            continue
        if area <= 0:
            stats[f"{kind} with zero area (dropped)"] += 1
            continue
        if area < min_area:
            stats[f"{kind} smaller than {min_area} px (dropped)"] += 1
            continue
        bbox = segmentation_bbox(segm, img["height"], img["width"])
        by_image.setdefault(img["id"], []).append(
            {
                "id": ann.get("id"),
                "bbox": bbox,
                "bbox_mode": BoxMode.XYWH_ABS,
                "category_id": cat_map[ann["category_id"]],
                "segmentation": segm,
                "area": area,
                "iscrowd": int(ann.get("iscrowd", 0)),
                "object_id": ann.get("object_id", ann.get("id") if kind == "objects" else -1),
            }
        )
    return by_image


def _hashable(value) -> bool:
    return isinstance(value, (int, str)) or value is None


def load_part_json(
    json_file: str, image_root: str, view: str = "parts", min_part_area: float = 0.0
) -> List[Dict]:
    """Load a part json as detectron2 dataset dicts in one label view.

    Each record: ``file_name, height, width, image_id, object_category_id`` (contiguous, -1 when
    unknown), ``annotations`` (instances of the view, ``category_id`` contiguous) and ``objects``
    (the object instances, ``category_id`` = contiguous object class).
    """
    if view not in LABEL_VIEWS:
        raise ValueError(f"unknown label view {view!r}; expected one of {LABEL_VIEWS}")
    data = read_json(json_file)
    _check_keys(json_file, data, ("images", "annotations", "categories"))
    stats: Counter = Counter()
    images = index_images(json_file, data["images"])
    check_unique_ids(json_file, data["annotations"], "annotations")
    check_unique_ids(json_file, data.get("objects", []), "objects")
    check_categories(json_file, data["categories"], "categories")
    check_categories(json_file, data.get("object_categories", []), "object_categories")
    part_cats = sorted(data["categories"], key=lambda c: c["id"])
    obj_cats = sorted(data.get("object_categories", []), key=lambda c: c["id"])
    part_map = {c["id"]: i for i, c in enumerate(part_cats)}
    obj_map = {c["id"]: i for i, c in enumerate(obj_cats)}

    parts = _instances(json_file, data["annotations"], images, part_map, stats, min_part_area, "parts")
    objects = _instances(json_file, data.get("objects", []), images, obj_map, stats, 0.0, "objects")
    records = []
    for img_id, img in images.items():
        record = {
            "file_name": os.path.join(image_root, img["file_name"]),
            "height": int(img["height"]),
            "width": int(img["width"]),
            "image_id": img_id,
            "object_category_id": obj_map.get(img.get("object_category_id"), -1)
            if _hashable(img.get("object_category_id")) else -1,
            "objects": objects.get(img_id, []),
        }
        if view == "objects":
            record["annotations"] = [dict(o) for o in record["objects"]]
        else:
            record["annotations"] = parts.get(img_id, [])
            if view == "agnostic":
                record["annotations"] = [dict(a, category_id=0) for a in record["annotations"]]
        records.append(record)
    n_empty = sum(1 for r in records if not r["annotations"])
    if n_empty:
        stats["images without annotations (kept for evaluation)"] += n_empty
    for what, n in sorted(stats.items()):
        logger.warning(f"{json_file}: {n} {what}")
    logger.info(f"Loaded {len(records)} images from {json_file} ({view} view)")
    return records


def categories_of(json_file: str) -> Dict[str, List[str]]:
    """Part and object class names of a part json, in contiguous order."""
    data = read_json(json_file)
    _check_keys(json_file, data, ("categories",))
    check_categories(json_file, data["categories"], "categories")
    check_categories(json_file, data.get("object_categories", []), "object_categories")
    return {
        "part_classes": [c["name"] for c in sorted(data["categories"], key=lambda c: c["id"])],
        "object_classes": [c["name"] for c in sorted(data.get("object_categories", []), key=lambda c: c["id"])],
    }


def register_part_json(
    prefix: str,
    json_file: str,
    image_root: str,
    part_classes: Optional[List[str]] = None,
    object_classes: Optional[List[str]] = None,
    prepare_hint: str = "",
    ensure_fn: Optional[Callable[[], None]] = None,
    views=LABEL_VIEWS,
    **metadata,
) -> List[str]:
    """Register ``{prefix}_{view}`` datasets for the label views of one part json.

    Args:
        part_classes / object_classes: class names in contiguous order (from a metadata file);
            when None they are read from the json at load time.
        prepare_hint: the command that creates the files, shown when they are absent.
        ensure_fn: called before loading to create the files on demand (synthetic data).
    Returns:
        The registered dataset names.
    """
    names = []
    for view in views:
        name = f"{prefix}_{view}"

        def _load(view=view, name=name):
            if ensure_fn is not None:
                ensure_fn()
            if not os.path.isfile(json_file):
                hint = f" Run: {prepare_hint}" if prepare_hint else ""
                raise PartDatasetError(f"dataset '{name}': {json_file} not found.{hint}")
            _set_classes(name, view, categories_of(json_file))
            return load_part_json(json_file, image_root, view)

        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        DatasetCatalog.register(name, _load)
        meta = MetadataCatalog.get(name)
        meta.set(json_file=json_file, image_root=image_root, evaluator_type="part", label_view=view, **metadata)
        if part_classes is not None:
            _set_classes(name, view, {"part_classes": part_classes, "object_classes": object_classes or []})
        names.append(name)
    return names


def _set_classes(name: str, view: str, classes: Dict[str, List[str]]) -> None:
    meta = MetadataCatalog.get(name)
    thing = {
        "parts": classes["part_classes"],
        "agnostic": [AGNOSTIC_CLASS],
        "objects": classes["object_classes"],
    }[view]
    if hasattr(meta, "thing_classes"):
        if list(meta.thing_classes) != list(thing):
            raise PartDatasetError(
                f"dataset '{name}': classes in {meta.json_file} differ from its registered metadata"
            )
        return
    meta.set(thing_classes=list(thing), part_classes=list(classes["part_classes"]),
             object_classes=list(classes["object_classes"]))


def parse_part_json_spec(spec: str) -> Dict[str, str]:
    """Split a ``DATASETS.PART_JSONS`` entry ``"name:json_file[:image_root]"``.

    Without ``image_root``, the json's ``info.image_root`` is used (written by the pseudo-label
    tool); file names of the json are relative to it (or absolute). ``json_file`` may also be the
    output directory of an offline stage (sharded part jsons, see :mod:`part_d2.data.shards`).
    Returns:
        dict with ``name``, ``json_file`` and ``image_root``.
    """
    fields = spec.split(":")
    if len(fields) not in (2, 3) or not all(fields):
        raise PartDatasetError(f"DATASETS.PART_JSONS entry {spec!r}: expected 'name:json_file[:image_root]'")
    name, json_file = fields[:2]
    if len(fields) == 3:
        image_root = fields[2]
    elif os.path.isdir(json_file):
        image_root = ""
    else:
        image_root = read_json(json_file).get("info", {}).get("image_root", "")
    return {"name": name, "json_file": json_file, "image_root": image_root}


def category_entries(names: Sequence[str], supercategory="part", **extra_fields) -> List[Dict]:
    """Categories of contiguous classes ``names``: ids 1..N in this order.

    Args:
        supercategory: one name for all, or one per class.
        extra_fields: per-class lists of further fields (e.g. ``split=[...]``).
    """
    supers = [supercategory] * len(names) if isinstance(supercategory, str) else list(supercategory)
    return [
        dict({"id": i + 1, "name": n, "supercategory": supers[i]}, **{k: v[i] for k, v in extra_fields.items()})
        for i, n in enumerate(names)
    ]


def class_id(contiguous: int) -> int:
    """The id part_d2 writes for the class of contiguous index ``contiguous`` (0-based): ``+ 1``."""
    return int(contiguous) + 1


def image_entry(image_id: int, file_name: str, height: int, width: int, object_category_id: Optional[int] = None,
                **extra) -> Dict:
    """An image; ``object_category_id`` is the written id of its image-level object class (None:
    unknown, no key)."""
    entry = dict({"id": image_id, "file_name": file_name, "height": int(height), "width": int(width)}, **extra)
    if object_category_id is not None:
        entry["object_category_id"] = int(object_category_id)
    return entry


def instance_entry(ann_id: int, image_id: int, category_id: int, mask_or_rle, **extra) -> Dict:
    """A part or object instance of category ``category_id`` (the written id).

    Args:
        mask_or_rle: (H, W) bool mask (encoded as RLE; area and box computed), or a COCO RLE
            with str counts (area computed; ``bbox`` must be given in ``extra``).
        extra: further fields (``object_id``, ``score``, ...).
    """
    if isinstance(mask_or_rle, np.ndarray):
        rle, bbox = mask_to_rle(mask_or_rle), mask_to_bbox(mask_or_rle)
    else:
        rle, bbox = mask_or_rle, extra.pop("bbox")
    return dict({"id": ann_id, "image_id": image_id, "category_id": int(category_id), "segmentation": rle,
                 "area": rle_area(rle), "bbox": bbox, "iscrowd": 0}, **extra)


def part_json(images: List[Dict], annotations: List[Dict], categories, objects: Sequence[Dict] = (),
              object_categories=(), info: Optional[Dict] = None, **extra) -> Dict:
    """The one constructor of a part json (see the module docstring for the format and ids).

    Args:
        categories / object_categories: class names (ids 1..N in this order, supercategory
            ``"part"`` / ``"object"``) or ready category dicts (kept as given).
        extra: further top-level keys (e.g. PartImageNet++'s ``part_inclusions``).
    """
    def cats(c, supercategory):
        c = list(c)
        return category_entries(c, supercategory) if c and isinstance(c[0], str) else c

    return {
        "info": dict(info or {}),
        "images": list(images),
        "annotations": list(annotations),
        "categories": cats(categories, "part"),
        "objects": list(objects),
        "object_categories": cats(object_categories, "object"),
        **extra,
    }


def write_part_json(path: str, data: Dict) -> None:
    """Write a part json atomically (canonical bytes: equal content, equal file)."""
    _check_keys(path, data, ("images", "annotations", "categories"))
    atomic_write_json(path, data)
