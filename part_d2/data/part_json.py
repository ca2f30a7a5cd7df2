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
"""
import json
import logging
import os
import re
from collections import Counter
from typing import Callable, Dict, List, Optional

import numpy as np
import pycocotools.mask as mask_util
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
from part_d2.structures.masks import polygon_is_valid

logger = logging.getLogger(__name__)

LABEL_VIEWS = ("parts", "agnostic", "objects")
AGNOSTIC_CLASS = "part"


_ERROR_NAME = re.compile(r"^(?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?:Error|Exception): ")


def clean_error_message(text: str) -> str:
    """An error message as its user should read it, without a worker's traceback.

    PyTorch re-raises an error of a DataLoader worker with the worker's traceback as its message,
    and ``mp.spawn`` reports a child's error as a traceback. From such text this returns the
    message of its last line (``[module.]ErrorName: message`` without the name); a single line
    loses a leading error name; other text is returned unchanged.
    """
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if not lines or (len(lines) > 1 and not any("Traceback (most recent call last)" in line for line in lines)):
        return text
    return _ERROR_NAME.sub("", lines[-1].strip(), count=1)


class PartDatasetError(RuntimeError):
    """A dataset file is missing or malformed; the message names the file and the problem.

    Re-raised from a DataLoader worker, it keeps only that message (see :func:`clean_error_message`).
    """

    def __init__(self, message: str = ""):
        super().__init__(clean_error_message(message) if isinstance(message, str) else message)


def read_json(path: str) -> Dict:
    """Read a json file, raising :class:`PartDatasetError` naming the file on any problem."""
    if not os.path.isfile(path):
        raise PartDatasetError(f"{path}: file not found")
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise PartDatasetError(f"{path}: malformed or truncated json ({e})") from None
    except UnicodeDecodeError as e:
        raise PartDatasetError(f"{path}: not a text json file ({e})") from None


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
        area = float(mask_util.area(mask_util.merge(mask_util.frPyObjects(polys, height, width))))
        return polys, area
    if isinstance(segm, dict) and "counts" in segm and "size" in segm and valid_size(segm):
        if list(segm["size"]) != [height, width]:
            stats["RLEs whose size differs from the image (dropped)"] += 1
            return None, 0.0
        problem = rle_problem(segm, height, width)
        if problem:
            stats[problem] += 1
            return None, 0.0
        rle = mask_util.frPyObjects(segm, height, width) if isinstance(segm["counts"], list) else segm
        if isinstance(rle["counts"], str):
            rle = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
        return segm, float(mask_util.area(rle))
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
        bbox = _segm_bbox(segm, img["height"], img["width"])
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


def _segm_bbox(segm, height, width) -> List[float]:
    if isinstance(segm, list):
        rle = mask_util.merge(mask_util.frPyObjects(segm, height, width))
    elif isinstance(segm["counts"], list):
        rle = mask_util.frPyObjects(segm, height, width)
    else:
        rle = {
            "size": segm["size"],
            "counts": segm["counts"].encode("ascii") if isinstance(segm["counts"], str) else segm["counts"],
        }
    return [float(v) for v in mask_util.toBbox(rle)]


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


def register_config_part_jsons(cfg) -> List[str]:
    """Register every ``DATASETS.PART_JSONS`` entry as ``name_{parts,agnostic,objects}``
    (idempotent; called by :func:`part_d2.engine.setup.load_config`); returns the names."""
    from part_d2.data.shards import register_stage_output

    names = []
    for spec in cfg.DATASETS.PART_JSONS:
        entry = parse_part_json_spec(spec)
        if os.path.isdir(entry["json_file"]):
            names += register_stage_output(entry["name"], entry["json_file"])
        else:
            names += register_part_json(entry["name"], entry["json_file"], entry["image_root"])
    return names
