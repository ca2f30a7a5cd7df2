"""PartImageNet++ (per-class COCO jsons on 100 ImageNet-1K train images per class).

Release layout (``--raw``)::

    json/<wnid>.json          # COCO: images, annotations (polygons), categories of that class
    category_name.json        # per json file: its object name and its part names
    including/<wnid>.txt      # "inner:outer" part-name pairs (inclusion relations)
    discarded_data.json       # low-quality images, excluded

Prepared under the datasets root::

    pinpp/annotations/pinpp_{train,val}.json        # part json (part classes "<object>:<part>")
    pinpp/annotations/pinpp_{train,val}_lvis.json   # the parts in LVIS format (lvis package)

Images are read from ``imagenet1k/train/<wnid>/``. The split is 9:1 per class: each class's kept
images, sorted by file name, are shuffled with ``random.Random(f"{seed}:{wnid}")`` and the first
``round(n / 10)`` go to val.
"""
import logging
import os
import random
from collections import Counter, defaultdict
from typing import Dict, List, Optional, Sequence, Tuple

from tqdm import tqdm

from part_d2.data.part_json import part_json, register_part_json, write_part_json
from part_d2.structures.masks import polygon_is_valid, rle_area, segmentation_bbox, segmentations_union
from part_d2.utils.errors import PartDatasetError
from part_d2.utils.io import atomic_write_json, read_json

from .utils import RepairLog, checked_segmentation, dataset_root, reset_metadata

logger = logging.getLogger(__name__)

SPLITS = ("train", "val")
DEFAULT_SEED = 0
VAL_FRACTION = 0.1
PREPARE_CMD = "python datasets/prepare_partimagenet_pp.py --raw <PartImageNet++ release folder>"
_FILE_KEYS = ("file_name", "json", "file", "json_file")
_PART_KEYS = ("part_name", "part_names", "parts")
_OBJECT_KEYS = ("object_name", "object", "class_name")


def _pick(entry: Dict, keys: Sequence[str], path: str):
    for k in keys:
        if k in entry:
            return entry[k]
    raise PartDatasetError(f"{path}: entry {str(entry)[:120]} has none of the keys {list(keys)}")


def parse_category_names(path: str) -> Dict[str, Tuple[str, object]]:
    """``category_name.json`` as ``{wnid: (object name, part names)}``.

    Accepted shapes (the release documents the content, not the schema): a list of entries, or a
    dict keyed by json file name / wnid whose values are entries; an entry names its json file
    (keys ``file_name``/``json``/``file``), object (``object_name``/``object``/``class_name``) and
    parts (``part_name``/``part_names``/``parts``: a list in category-id order or ``{id: name}``).
    """
    data = read_json(path)
    entries = []
    if isinstance(data, dict):
        for key, value in data.items():
            if not isinstance(value, dict):
                raise PartDatasetError(f"{path}: value of {key!r} is not an object")
            entries.append(dict(value, file_name=value.get("file_name", key)))
    elif isinstance(data, list):
        entries = data
    else:
        raise PartDatasetError(f"{path}: expected a list or an object at top level")
    out = {}
    for entry in entries:
        wnid = os.path.splitext(os.path.basename(str(_pick(entry, _FILE_KEYS, path))))[0]
        parts = _pick(entry, _PART_KEYS, path)
        if isinstance(parts, str):
            parts = [parts]
        out[wnid] = (str(_pick(entry, _OBJECT_KEYS, path)), parts)
    return out


def parse_discarded(path: str) -> set:
    """Basenames of the discarded images (list of names or of ``{"file_name": ...}``, or per wnid)."""
    data = read_json(path)
    items = [x for v in data.values() for x in v] if isinstance(data, dict) else data
    names = set()
    for x in items:
        name = x.get("file_name") if isinstance(x, dict) else x
        if name:
            names.add(os.path.basename(str(name)))
    return names


def parse_inclusions(path: str, log: RepairLog) -> List[Tuple[str, str]]:
    """``including/<wnid>.txt``: ``inner:outer`` part-name pairs, one a line."""
    pairs = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            if line.count(":") != 1:
                log.add("inclusion lines not of the form inner:outer (dropped)")
                continue
            inner, outer = (s.strip() for s in line.split(":"))
            pairs.append((inner, outer))
    return pairs


def _part_name_of(parts, local_cats: List[Dict], cat_id) -> Optional[str]:
    if isinstance(parts, dict):
        return parts.get(str(cat_id), parts.get(cat_id))
    ids = sorted(c["id"] for c in local_cats)
    return parts[ids.index(cat_id)] if cat_id in ids and ids.index(cat_id) < len(parts) else None


def prepare_pinpp(raw: str, root: Optional[str] = None, seed: int = DEFAULT_SEED) -> Dict[str, str]:
    """Merge the per-class jsons into train/val part jsons and LVIS jsons; returns written paths."""
    log = RepairLog("PartImageNet++")
    names = parse_category_names(os.path.join(raw, "category_name.json"))
    discarded = parse_discarded(os.path.join(raw, "discarded_data.json"))
    json_dir = os.path.join(raw, "json")
    if not os.path.isdir(json_dir):
        raise PartDatasetError(f"{json_dir}: folder not found")
    wnids = sorted(os.path.splitext(f)[0] for f in os.listdir(json_dir) if f.endswith(".json"))
    no_names = [w for w in wnids if w not in names]
    if no_names:
        log.add("class jsons without an entry in category_name.json (skipped)", len(no_names))
        wnids = [w for w in wnids if w in names]

    categories, cat_index = [], {}
    for wnid in wnids:
        obj, parts = names[wnid]
        for part in (parts.values() if isinstance(parts, dict) else parts):
            if (wnid, part) not in cat_index:
                cat_index[(wnid, part)] = len(categories) + 1
                categories.append({"id": len(categories) + 1, "name": f"{obj}:{part}", "supercategory": obj,
                                   "object_wnid": wnid, "part_name": part})
    object_categories = [{"id": i, "name": names[w][0], "supercategory": "", "wnid": w} for i, w in enumerate(wnids)]
    logger.info(f"PartImageNet++: {len(categories)} part classes in category_name.json over {len(wnids)} classes")

    split_data = {s: {"images": [], "annotations": [], "objects": []} for s in SPLITS}
    for obj_idx, wnid in enumerate(tqdm(wnids, desc="PartImageNet++ classes")):
        _convert_class(os.path.join(json_dir, f"{wnid}.json"), wnid, obj_idx, names[wnid][1], cat_index,
                       discarded, seed, split_data, log)

    inclusions = _inclusions(os.path.join(raw, "including"), wnids, cat_index, log)
    out_dir = os.path.join(dataset_root(root), "pinpp", "annotations")
    written = {}
    for split in SPLITS:
        info = {"description": f"PartImageNet++ {split} (9:1 per class, seed {seed}), prepared by part_d2",
                "num_part_classes": len(categories)}
        data = part_json(categories=categories, object_categories=object_categories, info=info,
                         part_inclusions=inclusions, **split_data[split])
        path = os.path.join(out_dir, f"pinpp_{split}.json")
        write_part_json(path, data)
        written[split] = path
        lvis_path = os.path.join(out_dir, f"pinpp_{split}_lvis.json")
        atomic_write_json(lvis_path, to_lvis(data, split_data["train"]))
        written[f"{split}_lvis"] = lvis_path
        log.add(f"{split}: images written", len(data["images"]))
        log.add(f"{split}: part instances written", len(data["annotations"]))
    log.add("part classes (from category_name.json)", len(categories))
    log.add("inclusion pairs kept", len(inclusions))
    print(log.summary())
    return written


def _convert_class(path, wnid, obj_idx, part_names, cat_index, discarded, seed, split_data, log):
    data = read_json(path)
    local_cats = data.get("categories", [])
    images = {}
    for img in data.get("images", []):
        base = os.path.basename(str(img.get("file_name", "")))
        if base in discarded:
            log.add("discarded images (excluded)")
            continue
        if not all(k in img for k in ("id", "height", "width")) or not base:
            log.add("image entries without id/file_name/height/width (dropped)")
            continue
        images[img["id"]] = dict(img, base=base)
    anns = defaultdict(list)
    for ann in data.get("annotations", []):
        img = images.get(ann.get("image_id"))
        if img is None:
            continue
        part = _part_name_of(part_names, local_cats, ann.get("category_id"))
        if part is None or (wnid, part) not in cat_index:
            log.add("annotations whose category has no name in category_name.json (dropped)")
            continue
        segm = checked_segmentation(ann.get("segmentation"), log, lambda polys: list(filter(polygon_is_valid, polys)))
        if segm is None:
            continue
        rle = segmentations_union([segm], img["height"], img["width"])
        area = rle_area(rle)
        if area <= 0:
            log.add("zero-area part annotations (dropped)")
            continue
        anns[img["id"]].append((cat_index[(wnid, part)], segm, area, rle))

    order = sorted(images, key=lambda i: images[i]["base"])
    random.Random(f"{seed}:{wnid}").shuffle(order)
    n_val = int(round(len(order) * VAL_FRACTION))
    for rank, local_id in enumerate(order):
        split = "val" if rank < n_val else "train"
        out = split_data[split]
        img = images[local_id]
        image_id = obj_idx * 100000 + rank + 1
        out["images"].append({"id": image_id, "file_name": f"{wnid}/{img['base']}", "height": img["height"],
                              "width": img["width"], "object_category_id": obj_idx})
        rles = []
        for cat_id, segm, area, rle in anns.get(local_id, []):
            rles.append(rle)
            out["annotations"].append({
                "id": len(out["annotations"]) + 1, "image_id": image_id, "category_id": cat_id, "object_id": image_id,
                "segmentation": segm, "area": area, "bbox": segmentation_bbox(rle, *rle["size"]), "iscrowd": 0,
            })
        if rles:
            union = segmentations_union(rles, img["height"], img["width"])
            out["objects"].append({
                "id": image_id, "image_id": image_id, "category_id": obj_idx, "segmentation": union,
                "area": rle_area(union), "bbox": segmentation_bbox(union, *union["size"]), "iscrowd": 0,
            })


def _inclusions(folder: str, wnids: List[str], cat_index: Dict, log: RepairLog) -> List[Dict]:
    out = []
    for wnid in wnids:
        path = os.path.join(folder, f"{wnid}.txt")
        if not os.path.isfile(path):
            continue
        for inner, outer in parse_inclusions(path, log):
            if (wnid, inner) not in cat_index or (wnid, outer) not in cat_index:
                log.add("inclusion pairs naming unknown parts (dropped)")
                continue
            out.append({"object_wnid": wnid, "inner": cat_index[(wnid, inner)], "outer": cat_index[(wnid, outer)]})
    return out


def frequency_of(image_count: int) -> str:
    """LVIS frequency group of a class seen in ``image_count`` training images."""
    return "r" if image_count <= 10 else ("c" if image_count <= 100 else "f")


def to_lvis(data: Dict, train: Dict) -> Dict:
    """The parts of a part json in LVIS format.

    Frequencies come from the train split's image counts. An image's ``neg_category_ids`` are the
    part classes of its own object class that it does not contain (PartImageNet++ annotates every
    part of the object); parts of other object classes are neither positive nor negative there.
    """
    train_images = defaultdict(set)
    for a in train["annotations"]:
        train_images[a["category_id"]].add(a["image_id"])
    counts = Counter(a["category_id"] for a in data["annotations"])
    img_counts = defaultdict(set)
    for a in data["annotations"]:
        img_counts[a["category_id"]].add(a["image_id"])
    parts_of_object = defaultdict(set)
    wnid_index = {c["wnid"]: c["id"] for c in data["object_categories"]}
    for c in data["categories"]:
        parts_of_object[wnid_index.get(c["object_wnid"])].add(c["id"])
    present = defaultdict(set)
    for a in data["annotations"]:
        present[a["image_id"]].add(a["category_id"])
    images = [
        {"id": im["id"], "file_name": im["file_name"], "height": im["height"], "width": im["width"],
         "neg_category_ids": sorted(parts_of_object[im["object_category_id"]] - present[im["id"]]),
         "not_exhaustive_category_ids": []}
        for im in data["images"]
    ]
    categories = [
        {"id": c["id"], "name": c["name"], "synset": c["name"], "synonyms": [c["name"]], "def": "",
         "frequency": frequency_of(len(train_images[c["id"]])), "image_count": len(img_counts[c["id"]]),
         "instance_count": counts[c["id"]]}
        for c in data["categories"]
    ]
    annotations = [{k: a[k] for k in ("id", "image_id", "category_id", "segmentation", "area", "bbox")}
                   for a in data["annotations"]]
    return {
        "info": data["info"],
        "licenses": [],
        "images": images,
        "categories": categories,
        "annotations": annotations,
    }


def register_pinpp(root: Optional[str] = None) -> List[str]:
    """Register ``pinpp_{train,val}_{parts,agnostic,objects}``; the parts view is LVIS-evaluated."""
    root = dataset_root(root)
    names = []
    for split in SPLITS:
        ann_dir = os.path.join(root, "pinpp", "annotations")
        part_json = os.path.join(ann_dir, f"pinpp_{split}.json")
        registered = register_part_json(
            f"pinpp_{split}", part_json, os.path.join(root, "imagenet1k", "train"), prepare_hint=PREPARE_CMD)
        reset_metadata([f"pinpp_{split}_parts"], evaluator_type="lvis", part_json_file=part_json,
                       json_file=os.path.join(ann_dir, f"pinpp_{split}_lvis.json"))
        names += registered
    return names
