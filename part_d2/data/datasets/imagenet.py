"""Unlabeled ImageNet-1K / ImageNet-21K image lists (PartDistillation's training images).

Layout under the datasets root::

    imagenet1k/train/<wnid>/*.JPEG
    imagenet21k/words.txt, imagenet21k/synsets.dat, imagenet21k/<wnid>/*.JPEG
    imagenet/imagenet21k_classes.json        # 21K class list and the IN-1K -> 21K index map
    imagenet/imagenet{1k_train,21k}_unlabeled.json   # part jsons with images only

The 21K class list is ``words.txt`` (``wnid<TAB>names``) restricted to the wnids of
``synsets.dat``, in ``words.txt`` order: a class's index in it is its global class id. Include /
exclude lists only choose which classes' images are listed; they never renumber classes.
"""
import logging
import os
from typing import Dict, List, Optional, Sequence

from PIL import Image
from tqdm import tqdm

from part_d2.data.part_json import part_json, write_part_json
from part_d2.structures.masks import mask_to_bbox, rle_area, segmentation_to_mask
from part_d2.utils.errors import PartDatasetError
from part_d2.utils.io import atomic_write_json, read_json

from .utils import RepairLog, dataset_root, read_lines, register_single_view

logger = logging.getLogger(__name__)

IMAGE_EXTS = (".jpeg", ".jpg", ".png")
PREPARE_CMD = "python datasets/prepare_imagenet.py --which {which}"


def read_21k_classes(words_txt: str, synsets_dat: str) -> List[Dict]:
    """``[{"id", "wnid", "name"}]``: words.txt entries whose wnid is in synsets.dat, words.txt order."""
    keep = set(read_lines(synsets_dat))
    classes = []
    for line in read_lines(words_txt):
        wnid, _, names = line.partition("\t")
        if wnid in keep:
            classes.append({"id": len(classes), "wnid": wnid, "name": names.strip()})
    missing = keep - {c["wnid"] for c in classes}
    if missing:
        logger.warning(f"{synsets_dat}: {len(missing)} wnids have no entry in {words_txt} (left out)")
    return classes


def in1k_to_in21k(in1k_wnids: Sequence[str], classes_21k: List[Dict]) -> List[int]:
    """For each IN-1K class (sorted-wnid index), its 21K class id, -1 when absent."""
    index = {c["wnid"]: c["id"] for c in classes_21k}
    return [index.get(w, -1) for w in in1k_wnids]


def list_images(
    image_dir: str, classes: List[Dict], include=None, exclude=None, log: Optional[RepairLog] = None
) -> Dict:
    """A part json with ``images`` only from ``image_dir/<wnid>/*``; image sizes read from headers.

    Args:
        classes: object classes ``[{"id", "wnid", "name"}]`` (``object_category_id`` = id).
        include / exclude: optional wnid sets restricting the listed classes.
    """
    log = log or RepairLog("ImageNet")
    by_wnid = {c["wnid"]: c for c in classes}
    wnids = sorted(d for d in os.listdir(image_dir) if os.path.isdir(os.path.join(image_dir, d)))
    images = []
    for wnid in tqdm(wnids, desc=f"listing {image_dir}"):
        if wnid not in by_wnid:
            log.add("folders that are not a class of the class list (skipped)")
            continue
        if (include is not None and wnid not in include) or (exclude is not None and wnid in exclude):
            log.add("classes left out by the include/exclude lists")
            continue
        for name in sorted(os.listdir(os.path.join(image_dir, wnid))):
            if not name.lower().endswith(IMAGE_EXTS):
                continue
            try:
                with Image.open(os.path.join(image_dir, wnid, name)) as im:
                    width, height = im.size
            except OSError:
                log.add("unreadable images (skipped)")
                continue
            images.append({"id": len(images) + 1, "file_name": f"{wnid}/{name}", "height": height,
                           "width": width, "object_category_id": by_wnid[wnid]["id"]})
    object_categories = [{"id": c["id"], "name": c["name"], "supercategory": "", "wnid": c["wnid"]} for c in classes]
    return part_json(images, [], [], [], object_categories, {"description": f"unlabeled images of {image_dir}"})


def attach_object_masks(data: Dict, objects: Dict, log: Optional[RepairLog] = None) -> Dict:
    """Merge stored object masks into a part json's ``objects`` (returns a new dict).

    Args:
        objects: ``{file_name or str(image_id): [RLE, ...]}`` (COCO RLEs with ``size`` = [H, W]);
            each mask becomes an object of the image's ``object_category_id``.
    """
    log = log or RepairLog("object masks")
    out = dict(data, objects=list(data.get("objects", [])))
    next_id = max((o["id"] for o in out["objects"]), default=0) + 1
    for img in data["images"]:
        rles = objects.get(img["file_name"], objects.get(str(img["id"])))
        if rles is None:
            log.add("images without stored object masks")
            continue
        for rle in rles:
            if list(rle["size"]) != [img["height"], img["width"]]:
                log.add("object masks whose size differs from the image (dropped)")
                continue
            out["objects"].append({
                "id": next_id, "image_id": img["id"], "category_id": img.get("object_category_id", -1),
                "segmentation": rle, "area": rle_area(rle),
                "bbox": mask_to_bbox(segmentation_to_mask(rle, img["height"], img["width"])), "iscrowd": 0,
            })
            next_id += 1
    return out


def prepare_imagenet(root: Optional[str] = None, which: Sequence[str] = ("1k", "21k"),
                     include_file: Optional[str] = None, exclude_file: Optional[str] = None) -> Dict[str, str]:
    """Write the 21K class list / IN-1K mapping and the unlabeled image lists; returns paths."""
    base = dataset_root(root)
    out_dir = os.path.join(base, "imagenet")
    include = set(read_lines(include_file)) if include_file else None
    exclude = set(read_lines(exclude_file)) if exclude_file else None
    written = {}
    classes_21k = None
    in21k = os.path.join(base, "imagenet21k")
    if os.path.isfile(os.path.join(in21k, "words.txt")):
        classes_21k = read_21k_classes(os.path.join(in21k, "words.txt"), os.path.join(in21k, "synsets.dat"))
    elif "21k" in which:
        raise PartDatasetError(f"{in21k}/words.txt not found (needed for the 21K class list)")
    in1k_train = os.path.join(base, "imagenet1k", "train")
    in1k_wnids = sorted(d for d in os.listdir(in1k_train) if os.path.isdir(os.path.join(in1k_train, d))) \
        if os.path.isdir(in1k_train) else []
    if classes_21k is not None:
        path = os.path.join(out_dir, "imagenet21k_classes.json")
        atomic_write_json(path, {"classes": classes_21k, "in1k_wnids": in1k_wnids,
                                 "in1k_to_in21k": in1k_to_in21k(in1k_wnids, classes_21k)})
        written["classes"] = path
    for key in which:
        log = RepairLog(f"ImageNet-{key}")
        if key == "1k":
            if not in1k_wnids:
                raise PartDatasetError(f"{in1k_train}: no class folders")
            classes = [{"id": i, "wnid": w, "name": w} for i, w in enumerate(in1k_wnids)]
            data, name = list_images(in1k_train, classes, include, exclude, log), "imagenet1k_train_unlabeled"
        else:
            data, name = list_images(in21k, classes_21k, include, exclude, log), "imagenet21k_unlabeled"
        path = os.path.join(out_dir, f"{name}.json")
        write_part_json(path, data)
        log.add("images listed", len(data["images"]))
        print(log.summary())
        written[name] = path
    return written


def attach_object_masks_file(json_file: str, objects_file: str, out_file: Optional[str] = None) -> str:
    """File version of :func:`attach_object_masks` (writes ``out_file``, default in place)."""
    log = RepairLog("object masks")
    merged = attach_object_masks(read_json(json_file), read_json(objects_file), log)
    write_part_json(out_file or json_file, merged)
    print(log.summary())
    return out_file or json_file


def register_imagenet(root: Optional[str] = None) -> List[str]:
    """Register ``imagenet1k_train_unlabeled`` and ``imagenet21k_unlabeled`` (objects view)."""
    base = dataset_root(root)
    return [
        register_single_view(
            "imagenet1k_train_unlabeled",
            os.path.join(base, "imagenet", "imagenet1k_train_unlabeled.json"),
            os.path.join(base, "imagenet1k", "train"),
            "objects",
            PREPARE_CMD.format(which="1k"),
        ),
        register_single_view(
            "imagenet21k_unlabeled",
            os.path.join(base, "imagenet", "imagenet21k_unlabeled.json"),
            os.path.join(base, "imagenet21k"),
            "objects",
            PREPARE_CMD.format(which="21k"),
        ),
    ]
