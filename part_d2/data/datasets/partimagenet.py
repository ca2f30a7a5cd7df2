"""PartImageNet (OOD release, COCO polygons) and its Seg release (PNG label maps).

Prepared layout under the datasets root::

    partimagenet/images/{train,val,test}/<wnid>/<wnid>_<n>.JPEG    # the release's images
    partimagenet/annotations/partimagenet_{split}.json             # part json (datasets/prepare_partimagenet.py)
    partimagenet_seg/partimagenet_seg_{split}.json                 # index of (image, label map) pairs

Part classes are the release's 40 categories (ids 0-39, ``part_d2/data/metadata/partimagenet.json``).
Object classes of a split are its ImageNet wnids (sorted); an image's object is the union of its parts.

Held-out split of train (OPS). The OPS reference trains its base models on an "in-domain train"
part of PartImageNet train and keeps the rest as "in-domain val" (OpenPartSeg ``train_net_part.py``:
datasets ``partimagenet_rgba_alpha0.5*_indomain_{train,val}``), which its test-protocol config adds
back to the training images (``configs/part_segmentation/dt_alpha/
partimagenet_test_clsag_ssl_k10_st_score0.1.yaml``). The released code has no split files; its
base config's schedule comment gives the in-domain train size, 13275 images
(``configs/part_segmentation/dt_alpha/clsag.yaml``), i.e. 3265 of the 16540 train images held out.
part_d2 registers ``partimagenet_indomain_{train,val}_{parts,agnostic,objects}``: the held-out
fraction 3265 / 16540 of the train images, stratified by object class (largest-remainder quotas per
wnid), each class's images drawn by a seeded permutation of their sorted image ids
(:func:`heldout_image_ids`; seed ``HELDOUT_SEED``). The image selection is therefore deterministic
but not the reference's (unknown) one.
"""
import logging
import os
import re
import zipfile
from collections import Counter, defaultdict
from typing import Dict, List, Optional, Sequence

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image
from tqdm import tqdm

from part_d2.data.part_json import LABEL_VIEWS, part_json, register_part_json, write_part_json
from part_d2.structures.masks import rle_area, segmentation_bbox, segmentations_union
from part_d2.utils.errors import PartDatasetError
from part_d2.utils.io import atomic_write_json, read_json

from .utils import RepairLog, checked_segmentation, dataset_root, load_metadata

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
HELDOUT_FRACTION = 3265 / 16540  # OPS reference: 13275 in-domain train of the 16540 train images
HELDOUT_SEED = 0
_WNID = re.compile(r"^n\d{8}$")
PREPARE_CMD = "python datasets/prepare_partimagenet.py --raw <PartImageNet_OOD release folder or zip>"
PREPARE_SEG_CMD = "python datasets/prepare_partimagenet.py --seg-raw <PartImageNet_Seg release folder or zip>"


def extract_zips(raw: str, work_dir: str) -> List[str]:
    """Extract ``raw`` (a zip, or a folder that may hold zips), nested zips included.

    A top-level zip ``x.zip`` goes to ``work_dir/x/``; a nested zip is extracted beside itself.
    Extraction is skipped when the target folder exists. Returns the folders to search.
    """
    if os.path.isfile(raw):
        if not zipfile.is_zipfile(raw):
            raise PartDatasetError(f"{raw}: neither a zip file nor a folder")
        pending, roots = [raw], []
    elif os.path.isdir(raw):
        pending, roots = _zips_under(raw), [raw]
    else:
        raise PartDatasetError(f"{raw}: not found")
    done = set()
    while pending:
        zpath = pending.pop()
        done.add(zpath)
        nested = os.path.abspath(zpath).startswith(os.path.abspath(work_dir) + os.sep)
        stem = (
            os.path.splitext(zpath)[0]
            if nested
            else os.path.join(work_dir, os.path.splitext(os.path.basename(zpath))[0])
        )
        if not os.path.isdir(stem):
            logger.info(f"Extracting {zpath} to {stem}")
            with zipfile.ZipFile(zpath) as zf:
                zf.extractall(stem + ".partial", [m for m in zf.namelist() if not m.startswith("__MACOSX")])
            os.replace(stem + ".partial", stem)
        pending += [z for z in _zips_under(stem) if z not in done]
    if done:
        roots.append(work_dir)
    return roots


def _zips_under(folder: str) -> List[str]:
    return sorted(
        os.path.join(d, f) for d, _, files in os.walk(folder) for f in files if f.lower().endswith(".zip")
    )


def find_split_jsons(search_roots: Sequence[str]) -> Dict[str, str]:
    """Locate ``{split}.json`` (flat or under ``annotations/``) for every split of the release.

    When several candidates exist the shallowest one is used and the others are logged.
    """
    found: Dict[str, List[str]] = defaultdict(list)
    for root in search_roots:
        for d, _, files in os.walk(root):
            for split in SPLITS:
                if f"{split}.json" in files:
                    found[split].append(os.path.join(d, f"{split}.json"))
    result = {}
    for split, paths in found.items():
        paths = sorted(set(paths), key=lambda p: (p.count(os.sep), p))
        if len(paths) > 1:
            logger.warning(f"PartImageNet {split}: several {split}.json found, using {paths[0]} (ignored: {paths[1:]})")
        result[split] = paths[0]
    return result


def _clean_polygons(segm, height: int, width: int, log: RepairLog) -> List[List[float]]:
    polys = []
    for poly in segm:
        if len(poly) == 4:
            log.add("polygons with 4 values (a 2-point line, dropped)")
            continue
        if len(poly) < 6:
            log.add("polygons with fewer than 6 values (dropped)")
            continue
        if len(poly) % 2:
            log.add("polygons with an odd number of values (dropped)")
            continue
        arr = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
        clipped = np.stack([arr[:, 0].clip(0, width), arr[:, 1].clip(0, height)], axis=1)
        if not np.array_equal(arr, clipped):
            log.add("polygons outside the image (clipped)")
        polys.append([float(v) for v in clipped.reshape(-1)])
    return polys


def _union_segmentation(segms: List, height: int, width: int):
    """Union of several cleaned segmentations: polygons stay polygons, otherwise an RLE.

    Returns:
        (segmentation, rle) where rle is the compressed RLE (str counts) of the union.
    """
    if all(isinstance(s, list) for s in segms):
        polys = [p for s in segms for p in s]
        return polys, segmentations_union([polys], height, width)
    rle = segmentations_union(segms, height, width)
    return rle, rle


def convert_partimagenet_split(data: Dict, split: str, json_path: str, log: RepairLog) -> Dict:
    """Convert one split of the release's COCO json to a part json.

    Repairs: invalid polygons dropped, polygons clipped to the image, annotations of one part class
    of one image merged into one instance, zero-area parts dropped; areas and boxes recomputed.
    """
    meta = load_metadata("partimagenet")
    expected = {c["id"]: c["name"] for c in meta["categories"]}
    got = {c.get("id"): c.get("name") for c in data.get("categories", [])}
    if got != expected:
        raise PartDatasetError(
            f"{json_path}: categories differ from PartImageNet's 40 part classes (ids 0-39) in "
            f"part_d2/data/metadata/partimagenet.json"
        )
    super_of = {c["id"]: c["supercategory"] for c in meta["categories"]}
    images = {}
    for img in data.get("images", []):
        if not all(k in img for k in ("id", "file_name", "height", "width")):
            log.add("image entries without id/file_name/height/width (dropped)")
            continue
        base = os.path.basename(img["file_name"])
        wnid = base.split("_")[0]
        if not _WNID.match(wnid):
            log.add("images whose file name has no wnid prefix (dropped)")
            continue
        images[img["id"]] = dict(img, wnid=wnid, base=base)

    groups: Dict = defaultdict(list)
    for ann in tqdm(data.get("annotations", []), desc=f"PartImageNet {split}"):
        img = images.get(ann.get("image_id"))
        if img is None:
            log.add("annotations of unknown images (dropped)")
            continue
        if ann.get("category_id") not in expected:
            log.add("annotations of unknown categories (dropped)")
            continue
        segm = checked_segmentation(ann.get("segmentation"), log,
                                    lambda polys: _clean_polygons(polys, img["height"], img["width"], log))
        if segm is None:
            continue
        groups[(img["id"], ann["category_id"])].append(segm)

    wnids = sorted({img["wnid"] for img in images.values()})
    wnid_index = {w: i for i, w in enumerate(wnids)}
    supers_of_wnid: Dict[str, Counter] = defaultdict(Counter)
    annotations, part_rles = [], defaultdict(list)
    for (img_id, cat_id), segms in sorted(groups.items()):
        img = images[img_id]
        if len(segms) > 1:
            log.add("parts split across several annotations (merged into one instance per image x part class)")
        segm, rle = _union_segmentation(segms, img["height"], img["width"])
        area = rle_area(rle)
        if area <= 0:
            log.add("zero-area part annotations (dropped)")
            continue
        part_rles[img_id].append(rle)
        supers_of_wnid[img["wnid"]][super_of[cat_id]] += 1
        annotations.append(
            {
                "id": len(annotations) + 1,
                "image_id": img_id,
                "category_id": cat_id,
                "object_id": img_id,
                "segmentation": segm,
                "area": area,
                "bbox": segmentation_bbox(rle, img["height"], img["width"]),
                "iscrowd": 0,
            }
        )

    objects, out_images = [], []
    for img_id, img in sorted(images.items()):
        out_images.append(
            {
                "id": img_id,
                "file_name": f"{split}/{img['wnid']}/{img['base']}",
                "height": img["height"],
                "width": img["width"],
                "object_category_id": wnid_index[img["wnid"]],
            }
        )
        if not part_rles.get(img_id):
            log.add("images without any valid part (kept, no object)")
            continue
        union = segmentations_union(part_rles[img_id], img["height"], img["width"])
        objects.append(
            {
                "id": img_id,
                "image_id": img_id,
                "category_id": wnid_index[img["wnid"]],
                "segmentation": union,
                "area": rle_area(union),
                "bbox": segmentation_bbox(union, img["height"], img["width"]),
                "iscrowd": 0,
            }
        )
    object_categories = [
        {"id": i, "name": w, "supercategory": supers_of_wnid[w].most_common(1)[0][0] if supers_of_wnid[w] else ""}
        for i, w in enumerate(wnids)
    ]
    _check_split_counts(split, len(out_images), len(wnids), meta, log)
    info = {"description": f"PartImageNet OOD {split}, prepared by part_d2", "source": json_path}
    return part_json(out_images, annotations, meta["categories"], objects, object_categories, info)


def _check_split_counts(split: str, n_images: int, n_classes: int, meta: Dict, log: RepairLog) -> None:
    official = meta["official_splits"].get(split)
    if official and (official["images"], official["classes"]) != (n_images, n_classes):
        logger.warning(
            f"PartImageNet {split}: {n_images} images / {n_classes} classes, the official release has "
            f"{official['images']} / {official['classes']} (a partial or modified copy?)"
        )
        log.add(f"{split}: split counts differ from the official release (warned)")


def prepare_partimagenet(raw: str, root: Optional[str] = None, splits: Sequence[str] = SPLITS) -> Dict[str, str]:
    """Convert the PartImageNet OOD release to part jsons; returns ``{split: written json}``."""
    out_dir = os.path.join(dataset_root(root), "partimagenet")
    search = extract_zips(raw, os.path.join(out_dir, "raw_extracted"))
    jsons = find_split_jsons(search)
    missing = [s for s in splits if s not in jsons]
    if missing:
        raise PartDatasetError(f"{raw}: no {', '.join(s + '.json' for s in missing)} found in the release")
    written = {}
    for split in splits:
        log = RepairLog(f"PartImageNet {split}")
        out = convert_partimagenet_split(read_json(jsons[split]), split, jsons[split], log)
        _count_missing_images(out, os.path.join(out_dir, "images"), log)
        path = os.path.join(out_dir, "annotations", f"partimagenet_{split}.json")
        write_part_json(path, out)
        log.add("images written", len(out["images"]))
        log.add("part instances written", len(out["annotations"]))
        log.add("objects written", len(out["objects"]))
        print(log.summary())
        written[split] = path
    return written


def _count_missing_images(part_json: Dict, image_root: str, log: RepairLog) -> None:
    missing = sum(1 for img in part_json["images"] if not os.path.isfile(os.path.join(image_root, img["file_name"])))
    if missing:
        log.add(f"images not found under {image_root} (kept; place the release's images there)", missing)


def prepare_partimagenet_seg(raw: str, root: Optional[str] = None, splits: Sequence[str] = SPLITS) -> Dict[str, str]:
    """Index the Seg release: pair each label map with its image (and ``*_whole`` object map).

    Label maps hold part ids 0-39, 40 = background (255 tolerated as ignore); other values are
    counted. Writes ``partimagenet_seg/partimagenet_seg_{split}.json`` with paths relative to
    ``partimagenet_seg/``.
    """
    out_dir = os.path.join(dataset_root(root), "partimagenet_seg")
    search = extract_zips(raw, os.path.join(out_dir, "raw_extracted"))
    meta = load_metadata("partimagenet")
    valid = set(range(meta["seg_background_label"] + 1)) | {meta["seg_ignore_label"]}
    written = {}
    for split in splits:
        log = RepairLog(f"PartImageNet-Seg {split}")
        label_dir = _find_dir(search, ("annotations", split))
        image_dir = _find_dir(search, ("images", split))
        if label_dir is None or image_dir is None:
            raise PartDatasetError(f"{raw}: no annotations/{split} and images/{split} folders in the Seg release")
        images = {os.path.splitext(f)[0]: os.path.join(d, f) for d, _, fs in os.walk(image_dir) for f in fs
                  if f.lower().endswith((".jpeg", ".jpg", ".png"))}
        whole_dir = _find_dir(search, ("annotations", f"{split}_whole"))
        records = []
        for name in sorted(os.listdir(label_dir)):
            stem, ext = os.path.splitext(name)
            if ext.lower() != ".png" or stem.endswith("_whole"):
                continue
            if stem not in images:
                log.add("label maps without an image (dropped)")
                continue
            label_path = os.path.join(label_dir, name)
            label = np.asarray(Image.open(label_path))
            values = set(np.unique(label).tolist())
            if not values <= valid:
                log.add("label maps with values outside 0-40/255 (kept; those pixels are not evaluated)")
            record = {
                "file_name": os.path.relpath(images[stem], out_dir),
                "sem_seg_file_name": os.path.relpath(label_path, out_dir),
                "height": int(label.shape[0]),
                "width": int(label.shape[1]),
            }
            whole = _whole_map(label_dir, whole_dir, stem)
            if whole:
                record["whole_file_name"] = os.path.relpath(whole, out_dir)
            records.append(record)
        path = os.path.join(out_dir, f"partimagenet_seg_{split}.json")
        atomic_write_json(path, records)
        log.add("image / label pairs written", len(records))
        print(log.summary())
        written[split] = path
    return written


def _find_dir(search_roots: Sequence[str], tail: Sequence[str]) -> Optional[str]:
    hits = sorted(
        (
            d
            for root in search_roots
            for d, _, _ in os.walk(root)
            if tuple(os.path.normpath(d).split(os.sep)[-len(tail) :]) == tuple(tail)
        ),
        key=lambda d: (d.count(os.sep), d),
    )
    return hits[0] if hits else None


def _whole_map(label_dir: str, whole_dir: Optional[str], stem: str) -> Optional[str]:
    candidates = [os.path.join(label_dir, f"{stem}_whole.png")]
    if whole_dir:
        candidates.append(os.path.join(whole_dir, f"{stem}.png"))
    return next((c for c in candidates if os.path.isfile(c)), None)


def load_partimagenet_seg(index_file: str, seg_root: str) -> List[Dict]:
    """Detectron2 sem_seg records (``file_name``, ``sem_seg_file_name``) of the Seg release."""
    records = read_json(index_file)
    if not isinstance(records, list):
        raise PartDatasetError(f"{index_file}: expected a list of records")
    out = []
    for r in records:
        rec = {"file_name": os.path.join(seg_root, r["file_name"]),
               "sem_seg_file_name": os.path.join(seg_root, r["sem_seg_file_name"]),
               "height": r["height"], "width": r["width"]}
        if "whole_file_name" in r:
            rec["whole_file_name"] = os.path.join(seg_root, r["whole_file_name"])
        out.append(rec)
    return out


def heldout_image_ids(records: List[Dict], fraction: float = HELDOUT_FRACTION, seed: int = HELDOUT_SEED) -> set:
    """Image ids of the held-out part of a split, stratified by ``object_category_id``.

    ``round(fraction * #images)`` images in all; class ``c`` with ``n_c`` images gets
    ``floor(n_c * fraction')`` of them plus one for the classes with the largest remainders (ties:
    smaller class id), ``fraction'`` being the rounded total over #images; within a class the
    images are a prefix of a permutation of their sorted ids by ``numpy.random.default_rng([seed, c])``.

    Args:
        records: dataset records with ``image_id`` and ``object_category_id``.
    Returns:
        set of held-out image ids.
    """
    by_class: Dict[int, List] = defaultdict(list)
    for r in records:
        by_class[int(r.get("object_category_id", -1))].append(r["image_id"])
    total = len({r["image_id"] for r in records})
    n_heldout = int(round(fraction * total))
    if not total or not n_heldout:
        return set()
    exact = {c: len(ids) * n_heldout / total for c, ids in by_class.items()}
    quota = {c: int(np.floor(q)) for c, q in exact.items()}
    for c in sorted(exact, key=lambda c: (-(exact[c] - quota[c]), c))[: n_heldout - sum(quota.values())]:
        quota[c] += 1
    held = set()
    for c, ids in by_class.items():
        ids = sorted(set(ids))
        order = np.random.default_rng([seed, c + 1]).permutation(len(ids))
        held.update(ids[i] for i in order[: quota[c]])
    return held


def _register_heldout_views() -> List[str]:
    """``partimagenet_indomain_{train,val}_{view}``: train minus / only the held-out images."""
    names = []
    for subset, keep_heldout in (("partimagenet_indomain_train", False), ("partimagenet_indomain_val", True)):
        for view in LABEL_VIEWS:
            src, name = f"partimagenet_train_{view}", f"{subset}_{view}"

            def _load(src=src, name=name, keep_heldout=keep_heldout):
                records = DatasetCatalog.get(src)
                # the split is drawn on the parts view (the same images and ids in every view)
                held = heldout_image_ids(DatasetCatalog.get("partimagenet_train_parts"))
                _copy_metadata(src, name)
                return [r for r in records if (r["image_id"] in held) == keep_heldout]

            if name in DatasetCatalog.list():
                DatasetCatalog.remove(name)
                MetadataCatalog.remove(name)
            DatasetCatalog.register(name, _load)
            _copy_metadata(src, name)
            names.append(name)
    return names


def _copy_metadata(src: str, name: str) -> None:
    meta = MetadataCatalog.get(name)
    for key, value in MetadataCatalog.get(src).as_dict().items():
        if key != "name" and not hasattr(meta, key):
            meta.set(**{key: value})


def register_partimagenet(root: Optional[str] = None) -> List[str]:
    """Register ``partimagenet_{split}_{parts,agnostic,objects}``, the held-out split of train
    ``partimagenet_indomain_{train,val}_{parts,agnostic,objects}`` and ``partimagenet_seg_{split}``."""
    root = dataset_root(root)
    meta = load_metadata("partimagenet")
    part_classes = [c["name"] for c in sorted(meta["categories"], key=lambda c: c["id"])]
    names = []
    for split in SPLITS:
        names += register_part_json(
            f"partimagenet_{split}",
            os.path.join(root, "partimagenet", "annotations", f"partimagenet_{split}.json"),
            os.path.join(root, "partimagenet", "images"),
            prepare_hint=PREPARE_CMD,
            part_supercategories=[c["supercategory"] for c in sorted(meta["categories"], key=lambda c: c["id"])],
        )
        names.append(_register_seg(split, root, part_classes, meta))
    return names + _register_heldout_views()


def _register_seg(split: str, root: str, part_classes: List[str], meta: Dict) -> str:
    name = f"partimagenet_seg_{split}"
    seg_root = os.path.join(root, "partimagenet_seg")
    index = os.path.join(seg_root, f"partimagenet_seg_{split}.json")

    def _load():
        if not os.path.isfile(index):
            raise PartDatasetError(f"dataset '{name}': {index} not found. Run: {PREPARE_SEG_CMD}")
        return load_partimagenet_seg(index, seg_root)

    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, _load)
    MetadataCatalog.get(name).set(
        stuff_classes=part_classes + ["background"],
        ignore_label=meta["seg_ignore_label"],
        evaluator_type="sem_seg",
        image_root=seg_root,
        sem_seg_root=seg_root,
    )
    return name
