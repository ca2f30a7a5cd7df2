"""Helpers shared by the preparation scripts and registrations of the real part datasets."""
import logging
import os
import tempfile
from collections import Counter
from typing import Callable, Dict, Iterable, List, Optional

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog

from part_d2.data.part_json import load_part_json
from part_d2.utils.errors import PartDatasetError
from part_d2.utils.io import read_json

logger = logging.getLogger(__name__)

_METADATA_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "metadata")


def dataset_root(root: Optional[str] = None) -> str:
    """The datasets root: ``root`` if given, else ``$DETECTRON2_DATASETS`` (default ``datasets``)."""
    return root if root is not None else os.environ.get("DETECTRON2_DATASETS", "datasets")


def load_metadata(name: str) -> Dict:
    """Read ``part_d2/data/metadata/{name}.json``."""
    return read_json(os.path.join(_METADATA_DIR, f"{name}.json"))


def atomic_save_image(path: str, image) -> None:
    """Save a PIL image atomically (temporary file in the same folder + rename)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    ext = os.path.splitext(path)[1]
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp_", suffix=ext)
    os.close(fd)
    try:
        image.save(tmp, quality=95) if ext.lower() in (".jpg", ".jpeg") else image.save(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


class RepairLog:
    """Counts of every repair and drop made while preparing a dataset, printed as a summary."""

    def __init__(self, name: str):
        self.name = name
        self.counts: Counter = Counter()

    def add(self, what: str, n: int = 1) -> None:
        self.counts[what] += n

    def summary(self) -> str:
        lines = [f"[{self.name}] summary:"]
        lines += [f"  {what}: {n}" for what, n in sorted(self.counts.items())]
        return "\n".join(lines)

    def log(self) -> None:
        logger.info(self.summary())


def read_lines(path: str) -> List[str]:
    """Non-empty stripped lines of a text file; :class:`PartDatasetError` if it is missing."""
    if not os.path.isfile(path):
        raise PartDatasetError(f"{path}: file not found")
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def random_subset(records: List[Dict], percentage: float, seed: int, key: str = "file_name") -> List[Dict]:
    """A ``percentage`` % subset (few-shot protocols): sort by ``key``, shuffle with ``seed``, keep the head."""
    if not 0 < percentage <= 100:
        raise ValueError(f"percentage must be in (0, 100], got {percentage}")
    ordered = sorted(records, key=lambda r: r[key])
    np.random.RandomState(seed).shuffle(ordered)
    return ordered[: int(len(ordered) * percentage / 100)]


def register_single_view(name: str, json_file: str, image_root: str, view: str, prepare_hint: str, **metadata):
    """Register one dataset ``name`` reading one label view of a part json (no view suffix)."""

    def _load():
        if not os.path.isfile(json_file):
            raise PartDatasetError(f"dataset '{name}': {json_file} not found. Run: {prepare_hint}")
        return load_part_json(json_file, image_root, view)

    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, _load)
    MetadataCatalog.get(name).set(json_file=json_file, image_root=image_root, label_view=view, **metadata)
    return name


def reset_metadata(names: Iterable[str], **updates) -> None:
    """Replace metadata fields that detectron2 does not allow to be re-set (e.g. ``evaluator_type``)."""
    for name in names:
        meta = MetadataCatalog.get(name).as_dict()
        meta.pop("name", None)
        meta.update(updates)
        MetadataCatalog.remove(name)
        MetadataCatalog.get(name).set(**meta)


def checked_segmentation(segm, log: RepairLog, clean_polygons: Callable[[List], List]):
    """A release annotation's segmentation as part_d2 keeps it: polygons through ``clean_polygons``
    (None when none is left), RLE dicts unchanged, anything else None; each None is counted in ``log``."""
    if isinstance(segm, list):
        segm = clean_polygons(segm)
        if not segm:
            log.add("annotations without a valid polygon (dropped)")
            return None
        return segm
    if isinstance(segm, dict) and "counts" in segm:
        return segm
    log.add("annotations without a readable segmentation (dropped)")
    return None
