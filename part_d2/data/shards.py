"""Sharded, resumable storage of the offline stages' outputs (PartDistillation stages 0, 1a, 2).

An output directory holds::

    provenance.json            # written first: the run's fingerprint (input, weights, seed, config)
    manifest.json              # written last: stage, classes, numbers of images and shards, the
                               # fingerprint, and size + sha256 of every result file
    shards/shard-00000.json    # a part json (see part_d2.data.part_json) of images [0, S)
    shards/shard-00001.json    # ... of images [S, 2S), S = PART_DISTILLATION.SHARD_SIZE
    (stage-specific side files, e.g. features/shard-00000.npy)

Shard ``i`` always holds the same images (positions ``[i*S, (i+1)*S)`` of the input dataset), so
its content does not depend on which job or rank computed it. Every file is written to a temporary
name and renamed into place, so a file that exists is complete: a killed run resumes by skipping
existing shards (after removing the temporary files the kill left), and its output is
byte-identical to an uninterrupted run's. Shards are plain part
jsons; :func:`register_stage_output` registers the output as detectron2 datasets.
"""
import glob
import logging
import os
from typing import Dict, List, Optional, Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog

from part_d2.data.part_json import AGNOSTIC_CLASS, LABEL_VIEWS, load_part_json, parse_part_json_spec, register_part_json
from part_d2.utils.errors import PartDatasetError
from part_d2.utils.io import atomic_write_json, read_json

logger = logging.getLogger(__name__)
MANIFEST = "manifest.json"


def assigned_shards(
    num_shards: int, num_jobs: int = 1, job_id: int = 0, rank: int = 0, world_size: int = 1
) -> List[int]:
    """Shards that worker (job ``job_id``, rank ``rank``) computes: round-robin over all workers."""
    if not 0 <= job_id < num_jobs:
        raise ValueError(f"job id {job_id} is not in [0, {num_jobs})")
    workers = num_jobs * world_size
    me = job_id * world_size + rank
    return [s for s in range(num_shards) if s % workers == me]


class ShardStore:
    """Fixed-size shards of ``num_items`` items under ``root/subdir``.

    Args:
        root: output directory of a stage.
        num_items: number of items (images) of the input.
        shard_size: items per shard (the last shard may hold fewer).
        subdir: folder of the shard files; ``ext``: their extension.
    """

    def __init__(self, root: str, num_items: int, shard_size: int, subdir: str = "shards", ext: str = ".json"):
        if shard_size < 1:
            raise ValueError(f"shard size must be >= 1, got {shard_size}")
        self.root, self.num_items, self.shard_size = root, int(num_items), int(shard_size)
        self.subdir, self.ext = subdir, ext
        self.num_shards = (self.num_items + self.shard_size - 1) // self.shard_size

    def item_range(self, shard: int) -> range:
        return range(shard * self.shard_size, min((shard + 1) * self.shard_size, self.num_items))

    def path(self, shard: int, ext: Optional[str] = None) -> str:
        return os.path.join(self.root, self.subdir, f"shard-{shard:05d}{ext or self.ext}")

    def is_done(self, shard: int) -> bool:
        return os.path.isfile(self.path(shard))

    def missing(self) -> List[int]:
        return [s for s in range(self.num_shards) if not self.is_done(s)]

    def clear_partial(self, shard: int) -> int:
        """Remove the temporary files an interrupted write of ``shard`` left; returns their number.

        Only the worker assigned to ``shard`` writes its files, so it may call this before computing it.
        """
        folder = glob.escape(os.path.join(self.root, self.subdir))
        stale = glob.glob(os.path.join(folder, f"shard-{shard:05d}.*.tmp*"))
        for path in stale:
            os.remove(path)
        return len(stale)

    def write_json(self, shard: int, obj) -> None:
        atomic_write_json(self.path(shard), obj)

    def read_json(self, shard: int) -> Dict:
        return read_json(self.path(shard))


def write_manifest(root: str, manifest: Dict) -> None:
    atomic_write_json(os.path.join(root, MANIFEST), manifest)


def read_manifest(root: str) -> Dict:
    path = os.path.join(root, MANIFEST)
    if not os.path.isfile(path):
        raise PartDatasetError(f"{path} not found: the stage writing {root} has not finished (rerun it to resume)")
    return read_json(path)


def shard_store_of(root: str) -> ShardStore:
    """The store of a finished stage output (from its manifest)."""
    m = read_manifest(root)
    return ShardStore(root, m["num_images"], m["shard_size"])


def load_stage_output(root: str, view: str = "parts") -> List[Dict]:
    """All records of a finished stage output, in input order, as :func:`load_part_json` gives them."""
    store = shard_store_of(root)
    missing = store.missing()
    if missing:
        raise PartDatasetError(f"{root}: {len(missing)} shard(s) missing (first: {store.path(missing[0])}); "
                               "rerun the stage to complete it")
    files = read_manifest(root).get("files", {})
    records = []
    for s in range(store.num_shards):
        path = store.path(s)
        record = files.get(os.path.relpath(path, root))
        if record is not None and os.path.getsize(path) != record["size"]:
            raise PartDatasetError(f"{path}: {os.path.getsize(path)} bytes, the manifest says {record['size']} "
                                   "(modified after the stage finished); delete it and rerun the stage to recompute it")
        records += load_part_json(path, "", view)
    return records


def load_object_masks(root: str) -> Dict[str, List[Dict]]:
    """``{file_name: [RLE, ...]}`` of the objects stored in a stage output (the format of the
    ``stored`` object-mask source, ``INPUT.OBJECT_MASK.STORED_JSON``)."""
    return object_masks_of(shard_store_of(root))


def object_masks_of(store: ShardStore) -> Dict[str, List[Dict]]:
    """:func:`load_object_masks` of the (existing) shards of ``store``."""
    out: Dict[str, List[Dict]] = {}
    for s in range(store.num_shards):
        data = store.read_json(s)
        names = {img["id"]: img["file_name"] for img in data["images"]}
        for name in names.values():
            out[name] = []
        for obj in data.get("objects", []):
            out[names[obj["image_id"]]].append(obj["segmentation"])
    return out


def register_stage_output(prefix: str, root: str, views: Sequence[str] = LABEL_VIEWS) -> List[str]:
    """Register ``{prefix}_{view}`` datasets reading a stage output's shards (loaded lazily).

    The classes come from the manifest, so the output must be finished when the data is loaded.
    """
    names = []
    for view in views:
        name = f"{prefix}_{view}"
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        DatasetCatalog.register(name, lambda view=view, name=name: _load_registered(name, root, view))
        MetadataCatalog.get(name).set(stage_output=root, image_root="", evaluator_type="part", label_view=view)
        if os.path.isfile(os.path.join(root, MANIFEST)):
            _set_classes(name, root, view)
        names.append(name)
    return names


def _set_classes(name: str, root: str, view: str) -> None:
    manifest = read_manifest(root)
    parts, objects = manifest["part_classes"], manifest["object_classes"]
    thing = {"parts": parts, "agnostic": [AGNOSTIC_CLASS], "objects": objects}[view]
    meta = MetadataCatalog.get(name)
    if not hasattr(meta, "thing_classes"):
        meta.set(thing_classes=list(thing), part_classes=list(parts), object_classes=list(objects))


def _load_registered(name: str, root: str, view: str) -> List[Dict]:
    _set_classes(name, root, view)
    return load_stage_output(root, view)


def register_config_part_jsons(cfg) -> List[str]:
    """Register every ``DATASETS.PART_JSONS`` entry as ``name_{parts,agnostic,objects}``
    (idempotent; called by :func:`part_d2.engine.setup.load_config`); returns the names."""
    names = []
    for spec in cfg.DATASETS.PART_JSONS:
        entry = parse_part_json_spec(spec)
        if os.path.isdir(entry["json_file"]):
            names += register_stage_output(entry["name"], entry["json_file"])
        else:
            names += register_part_json(entry["name"], entry["json_file"], entry["image_root"])
    return names
