"""Cityscapes-Panoptic-Parts as part instances (5 object classes with parts, 23 part classes).

Layout under the datasets root::

    cityscapes/leftImg8bit/{train,val}/<city>/<stem>_leftImg8bit.png
    cityscapes/gtFinePanopticParts/{train,val}/<city>/<stem>_gtFinePanopticParts.tif
    cityscapes_parts/cityscapes_parts_{split}.json            # part json
    cityscapes_parts/cityscapes_parts_train_{p}pct.json       # few-shot subsets

Label format (panoptic-parts): each pixel holds a uid ``sid`` (<= 99), ``sid * 1000 + iid``
(5 digits) or ``sid * 100000 + iid * 100 + pid`` (7 digits). The ``panoptic-parts`` package
(2.0rc6) refuses to import on Python >= 3.10 (it compares version strings as floats), so uids
are decoded here by :func:`decode_uids`. Objects are the (sid, iid) instances of the 5 classes;
their parts are the pixels of each pid > 0 (pid 0 = unlabeled part).
"""
import logging
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image
from tqdm import tqdm

from part_d2.data.part_json import instance_entry, part_json, register_part_json, write_part_json
from part_d2.utils.errors import PartDatasetError

from .utils import RepairLog, dataset_root, load_metadata, random_subset

logger = logging.getLogger(__name__)

SPLITS = ("train", "val")
PREPARE_CMD = "python datasets/prepare_cityscapes_parts.py"


def decode_uids(uids: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split panoptic-parts uids into semantic, instance and part ids (-1 where absent).

    Args:
        uids: (H, W) integer array.
    Returns:
        (sids, iids, pids), each (H, W) int64.
    """
    u = uids.astype(np.int64)
    sem_only, inst_level = u <= 99, (u > 99) & (u <= 99_999)
    sids = np.where(sem_only, u, np.where(inst_level, u // 1000, u // 100_000))
    iids = np.where(sem_only, -1, np.where(inst_level, u % 1000, (u // 100) % 1000))
    pids = np.where(sem_only | inst_level, -1, u % 100)
    return sids, iids, pids


class CityscapesPartsSpec:
    """Classes of the dataset from ``part_d2/data/metadata/cityscapes_parts.json``."""

    def __init__(self):
        meta = load_metadata("cityscapes_parts")
        self.meta = meta
        self.object_categories = [{"id": i, "name": o["name"], "supercategory": o["name"], "sid": o["sid"]}
                                  for i, o in enumerate(meta["object_classes"])]
        self.categories, self.part_id = [], {}
        for obj in meta["object_classes"]:
            for pid, part in enumerate(meta["parts_per_object"][obj["name"]], start=1):
                cid = len(self.categories) + 1
                self.categories.append({"id": cid, "name": f"{obj['name']}-{part}", "supercategory": obj["name"]})
                self.part_id[(obj["sid"], pid)] = cid
        self.object_of_sid = {o["sid"]: o["id"] for o in self.object_categories}


def convert_label_map(uids: np.ndarray, image_id: int, spec: CityscapesPartsSpec, out: Dict, log: RepairLog) -> None:
    """Append the objects and part instances of one uid map to ``out`` (a part json being built)."""
    sids, iids, pids = decode_uids(uids)
    for sid, obj_cat in spec.object_of_sid.items():
        sel = (sids == sid) & (iids >= 0)
        for iid in np.unique(iids[sel]):
            obj_mask = sel & (iids == iid)
            obj_id = image_id * 1000 + int(iid)
            out["objects"].append(instance_entry(obj_id, image_id, obj_cat, obj_mask))
            found = False
            for pid in np.unique(pids[obj_mask]):
                if pid <= 0:
                    continue
                if (sid, int(pid)) not in spec.part_id:
                    log.add("pixels with part ids outside the class's parts (ignored)")
                    continue
                out["annotations"].append(instance_entry(
                    len(out["annotations"]) + 1, image_id, spec.part_id[(sid, int(pid))], obj_mask & (pids == pid),
                    object_id=obj_id))
                found = True
            if not found:
                log.add("objects without part labels (kept as objects)")


def prepare_cityscapes_parts(root: Optional[str] = None, splits: Sequence[str] = SPLITS,
                             few_shot: Sequence[float] = ()) -> Dict[str, str]:
    """Write ``cityscapes_parts_{split}.json`` and the few-shot train subsets; returns paths."""
    base = dataset_root(root)
    spec = CityscapesPartsSpec()
    written = {}
    for split in splits:
        log = RepairLog(f"Cityscapes-Panoptic-Parts {split}")
        label_dir = os.path.join(base, "cityscapes", "gtFinePanopticParts", split)
        if not os.path.isdir(label_dir):
            raise PartDatasetError(f"{label_dir}: folder not found")
        out = part_json([], [], spec.categories, [], spec.object_categories,
                        {"description": f"Cityscapes-Panoptic-Parts {split}, prepared by part_d2"})
        files = sorted(os.path.join(c, f) for c in os.listdir(label_dir) if os.path.isdir(os.path.join(label_dir, c))
                       for f in os.listdir(os.path.join(label_dir, c)) if f.endswith("_gtFinePanopticParts.tif"))
        for rel in tqdm(files, desc=f"Cityscapes parts {split}"):
            stem = os.path.basename(rel)[: -len("_gtFinePanopticParts.tif")]
            image_rel = os.path.join(split, os.path.dirname(rel), f"{stem}_leftImg8bit.png")
            if not os.path.isfile(os.path.join(base, "cityscapes", "leftImg8bit", image_rel)):
                log.add("label maps without a leftImg8bit image (kept)")
            uids = np.asarray(Image.open(os.path.join(label_dir, rel)))
            image_id = len(out["images"]) + 1
            out["images"].append(
                {"id": image_id, "file_name": image_rel, "height": uids.shape[0], "width": uids.shape[1]}
            )
            convert_label_map(uids, image_id, spec, out, log)
        path = os.path.join(base, "cityscapes_parts", f"cityscapes_parts_{split}.json")
        write_part_json(path, out)
        written[split] = path
        if split == "train":
            for pct in few_shot:
                written[f"train_{_pct_name(pct)}"] = _write_subset(out, pct, spec.meta["few_shot_seed"], base)
        log.add("images written", len(out["images"]))
        log.add("objects written", len(out["objects"]))
        log.add("part instances written", len(out["annotations"]))
        print(log.summary())
    return written


def _pct_name(pct: float) -> str:
    return f"{pct:g}pct"


def _write_subset(data: Dict, pct: float, seed: int, base: str) -> str:
    """The few-shot subset: ``pct`` % of the train images (sorted by file name, shuffled with ``seed``)."""
    keep = {img["id"] for img in random_subset(data["images"], pct, seed)}
    subset = dict(data, images=[i for i in data["images"] if i["id"] in keep],
                  annotations=[a for a in data["annotations"] if a["image_id"] in keep],
                  objects=[o for o in data["objects"] if o["image_id"] in keep])
    path = os.path.join(base, "cityscapes_parts", f"cityscapes_parts_train_{_pct_name(pct)}.json")
    write_part_json(path, subset)
    return path


def register_cityscapes_parts(root: Optional[str] = None) -> List[str]:
    """Register ``cityscapes_parts_{train,val}_{views}`` and ``cityscapes_parts_train_{p}pct_{views}``."""
    base = dataset_root(root)
    spec = CityscapesPartsSpec()
    kwargs = dict(part_classes=[c["name"] for c in spec.categories],
                  object_classes=[c["name"] for c in spec.object_categories])
    image_root = os.path.join(base, "cityscapes", "leftImg8bit")
    names = []
    prefixes = [f"cityscapes_parts_{s}" for s in SPLITS]
    prefixes += [f"cityscapes_parts_train_{_pct_name(p)}" for p in spec.meta["few_shot_percentages"]]
    for prefix in prefixes:
        hint = PREPARE_CMD if "pct" not in prefix else f"{PREPARE_CMD} --few-shot {prefix.split('_')[-1][:-3]}"
        names += register_part_json(prefix, os.path.join(base, "cityscapes_parts", f"{prefix}.json"), image_root,
                                    prepare_hint=hint, **kwargs)
    return names
