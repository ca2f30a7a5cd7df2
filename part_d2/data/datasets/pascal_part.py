"""Pascal-Part (official ``Annotations_Part`` .mat files on VOC2010) in the 58 / 108 part taxonomies.

Prepared layout under the datasets root::

    pascal_part/VOC2010/JPEGImages/*.jpg, ImageSets/Main/{train,val}.txt   # VOC2010 (link)
    pascal_part/Annotations_Part/*.mat                                    # Pascal-Part release
    pascal_part/annotations/pascal_part{58,108}_{split}.json              # full scenes
    pascal_part/annotations/pascal_part{58,108}_crop_{split}.json         # object crops
    pascal_part/crops/{split}/<imname>_<k>.jpg                            # crop images

Each object's original parts are mapped to the taxonomy's classes by exact part name
(``part_d2/data/metadata/pascal_part{58,108}.json``, with their ``source``); the parts of one
object that map to one class form one part instance. ``__silhouette__`` (object pixels no part
covers) joins the class the taxonomy names for it; ``__ignore_255__`` and ``background`` parts are
dropped. Object masks are kept as the ``objects`` of the part json.
"""
import logging
import os
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image
from tqdm import tqdm

from part_d2.data.part_json import category_entries, instance_entry, part_json, register_part_json, write_part_json
from part_d2.utils.errors import PartDatasetError

from .utils import RepairLog, atomic_save_image, dataset_root, load_metadata, read_lines

logger = logging.getLogger(__name__)

TAXONOMIES = (58, 108)
SPLITS = ("train", "val")
DROPPED_TARGETS = ("__ignore_255__", "background")
SILHOUETTE = "__silhouette__"
DEFAULT_CROP_MARGIN = 0.1
PREPARE_CMD = "python datasets/prepare_pascal_part.py"


def _as_list(x) -> list:
    """A MATLAB struct array read with ``squeeze_me=True`` as a list (empty, single or many)."""
    if isinstance(x, np.ndarray):
        return list(x.reshape(-1))
    return [x]


def read_pascal_part_mat(path: str) -> Tuple[str, List[Dict]]:
    """Read one ``Annotations_Part`` file.

    Returns:
        (imname, objects) with objects ``[{"class": str, "mask": (H, W) bool,
        "parts": [(part_name, (H, W) bool), ...]}]``.
    """
    import scipy.io

    try:
        anno = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)["anno"]
    except (KeyError, ValueError, OSError) as e:
        raise PartDatasetError(f"{path}: not a Pascal-Part annotation file ({e})") from None
    objects = []
    for obj in _as_list(anno.objects):
        parts = [(str(p.part_name), np.asarray(p.mask).astype(bool)) for p in _as_list(obj.parts)]
        objects.append({"class": str(obj.__dict__["class"]), "mask": np.asarray(obj.mask).astype(bool), "parts": parts})
    return str(anno.imname), objects


class Taxonomy:
    """A merged part taxonomy: class ids (index in the class list, 0 = background) and mapping."""

    def __init__(self, num_classes: int):
        meta = load_metadata(f"pascal_part{num_classes}")
        self.num_classes = num_classes
        self.classes: List[str] = meta["classes"]
        self.mapping: Dict[str, Dict[str, str]] = meta["mapping"]
        self.object_classes: List[str] = load_metadata("pascal_part_original_parts")["object_classes"]
        owner = {}
        for obj, table in self.mapping.items():
            for target in table.values():
                owner.setdefault(target, obj)
        self.categories = [
            {"id": i, "name": name, "supercategory": owner.get(name, "")}
            for i, name in enumerate(self.classes)
            if i > 0
        ]
        self.class_id = {c["name"]: c["id"] for c in self.categories}

    def merge_object(self, cls: str, obj_mask: np.ndarray, parts, log: RepairLog) -> "OrderedDict[int, np.ndarray]":
        """Merged part masks of one object, ``{class id: (H, W) bool}`` in class-id order."""
        table = self.mapping[cls]
        merged: Dict[int, np.ndarray] = {}
        covered = np.zeros_like(obj_mask)
        for name, mask in parts:
            if mask.shape != obj_mask.shape:
                log.add("part masks whose size differs from the object mask (dropped)")
                continue
            if name not in table:
                log.add(f"part names unknown to the taxonomy (dropped): {cls}/{name}")
                continue
            covered |= mask
            target = table[name]
            if target in DROPPED_TARGETS:
                log.add(f"parts mapped to {target} (dropped)")
                continue
            cid = self.class_id[target]
            merged[cid] = merged[cid] | mask if cid in merged else mask.copy()
        target = table.get(SILHOUETTE)
        if target is not None and target not in DROPPED_TARGETS:
            rest = obj_mask & ~covered
            if rest.any():
                cid = self.class_id[target]
                merged[cid] = merged[cid] | rest if cid in merged else rest
        return OrderedDict((cid, m) for cid, m in sorted(merged.items()) if m.any())


def crop_box(mask: np.ndarray, margin: float) -> Tuple[int, int, int, int]:
    """Crop window of an object: its tight box grown by ``margin`` x its width (height) on the
    left and right (top and bottom), rounded outwards and clipped to the image.

    Args:
        mask: (H, W) bool, not empty.
    Returns:
        (x0, y0, x1, y1), end-exclusive pixel coordinates.
    """
    ys, xs = np.nonzero(mask)
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    mx, my = margin * (x1 - x0), margin * (y1 - y0)
    h, w = mask.shape
    return (max(0, int(np.floor(x0 - mx))), max(0, int(np.floor(y0 - my))),
            min(w, int(np.ceil(x1 + mx))), min(h, int(np.ceil(y1 + my))))


def image_id_of(imname: str) -> int:
    """``2008_000002`` -> 2008000002."""
    return int(imname.replace("_", ""))


def prepare_pascal_part(
    root: Optional[str] = None,
    splits: Sequence[str] = SPLITS,
    taxonomies: Sequence[int] = TAXONOMIES,
    crop_margin: float = DEFAULT_CROP_MARGIN,
    min_crop_parts: int = 2,
) -> Dict[str, str]:
    """Write the scene and crop part jsons of every taxonomy and split; returns ``{name: path}``."""
    base = os.path.join(dataset_root(root), "pascal_part")
    voc = os.path.join(base, "VOC2010")
    taxes = [Taxonomy(n) for n in taxonomies]
    written = {}
    for split in splits:
        ids = read_lines(os.path.join(voc, "ImageSets", "Main", f"{split}.txt"))
        outputs = {(t.num_classes, kind): _empty_json(t, kind, split) for t in taxes for kind in ("scene", "crop")}
        logs = {t.num_classes: RepairLog(f"Pascal-Part-{t.num_classes} {split}") for t in taxes}
        for imname in tqdm(ids, desc=f"Pascal-Part {split}"):
            mat = os.path.join(base, "Annotations_Part", f"{imname}.mat")
            if not os.path.isfile(mat):
                for log in logs.values():
                    log.add("split images without an Annotations_Part file (skipped)")
                continue
            _, objects = read_pascal_part_mat(mat)
            for t in taxes:
                _add_image(t, imname, objects, split, base, outputs, logs[t.num_classes], crop_margin, min_crop_parts)
        for t in taxes:
            for kind in ("scene", "crop"):
                data = outputs[(t.num_classes, kind)]
                name = f"pascal_part{t.num_classes}{'_crop' if kind == 'crop' else ''}_{split}"
                path = os.path.join(base, "annotations", f"{name}.json")
                write_part_json(path, data)
                logs[t.num_classes].add(f"{kind}: images written", len(data["images"]))
                logs[t.num_classes].add(f"{kind}: part instances written", len(data["annotations"]))
                written[name] = path
            print(logs[t.num_classes].summary())
    return written


def _empty_json(tax: Taxonomy, kind: str, split: str) -> Dict:
    info = {"description": f"Pascal-Part-{tax.num_classes} {split} ({kind}s), prepared by part_d2"}
    return part_json([], [], tax.categories, [], category_entries(tax.object_classes, tax.object_classes), info)


def _add_image(tax, imname, objects, split, base, outputs, log, crop_margin, min_crop_parts):
    scene = outputs[(tax.num_classes, "scene")]
    image_id = image_id_of(imname)
    if not objects:
        log.add("images without objects (skipped)")
        return
    h, w = objects[0]["mask"].shape
    scene["images"].append({"id": image_id, "file_name": f"{imname}.jpg", "height": h, "width": w})
    for k, obj in enumerate(objects):
        if obj["class"] not in tax.mapping:
            log.add("objects of unknown classes (dropped)")
            continue
        if obj["mask"].shape != (h, w) or not obj["mask"].any():
            log.add("objects with an empty or mis-sized mask (dropped)")
            continue
        merged = tax.merge_object(obj["class"], obj["mask"], obj["parts"], log)
        obj_cat = tax.object_classes.index(obj["class"]) + 1
        obj_id = image_id * 100 + k
        scene["objects"].append(instance_entry(obj_id, image_id, obj_cat, obj["mask"]))
        for cid, mask in merged.items():
            scene["annotations"].append(
                instance_entry(len(scene["annotations"]) + 1, image_id, cid, mask, object_id=obj_id))
        if not merged:
            log.add("objects without any part in the taxonomy (kept as objects)")
        if len(merged) >= min_crop_parts:
            _add_crop(
                tax, imname, k, obj, obj_cat, merged, split, base, outputs[(tax.num_classes, "crop")], log, crop_margin
            )


def _add_crop(tax, imname, k, obj, obj_cat, merged, split, base, crop_json, log, crop_margin):
    x0, y0, x1, y1 = crop_box(obj["mask"], crop_margin)
    file_name = f"{split}/{imname}_{k}.jpg"
    crop_path = os.path.join(base, "crops", file_name)
    if not os.path.isfile(crop_path):
        src = os.path.join(base, "VOC2010", "JPEGImages", f"{imname}.jpg")
        if not os.path.isfile(src):
            log.add("crops skipped: VOC2010 image not found")
            return
        with Image.open(src) as im:
            atomic_save_image(crop_path, im.convert("RGB").crop((x0, y0, x1, y1)))
    crop_id = len(crop_json["images"]) + 1
    crop_json["images"].append({
        "id": crop_id, "file_name": file_name, "height": y1 - y0, "width": x1 - x0,
        "object_category_id": obj_cat, "source_image": f"{imname}.jpg", "crop_box": [x0, y0, x1, y1],
    })
    window = (slice(y0, y1), slice(x0, x1))
    crop_json["objects"].append(instance_entry(crop_id, crop_id, obj_cat, obj["mask"][window]))
    for cid, mask in merged.items():
        crop_json["annotations"].append(
            instance_entry(len(crop_json["annotations"]) + 1, crop_id, cid, mask[window], object_id=crop_id))


def register_pascal_part(root: Optional[str] = None) -> List[str]:
    """Register ``pascal_part{58,108}[_crop]_{train,val}_{parts,agnostic,objects}``."""
    base = os.path.join(dataset_root(root), "pascal_part")
    names = []
    for n in TAXONOMIES:
        tax = Taxonomy(n)
        part_classes = [c["name"] for c in tax.categories]
        for split in SPLITS:
            for crop in ("", "_crop"):
                prefix = f"pascal_part{n}{crop}_{split}"
                names += register_part_json(
                    prefix,
                    os.path.join(base, "annotations", f"{prefix}.json"),
                    os.path.join(base, "crops") if crop else os.path.join(base, "VOC2010", "JPEGImages"),
                    part_classes=part_classes,
                    object_classes=list(tax.object_classes),
                    prepare_hint=PREPARE_CMD,
                    taxonomy=f"pascal_part{n}",
                )
    return names
