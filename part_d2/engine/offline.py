"""Driver of PartDistillation's offline stages: deterministic sharding over jobs and ranks,
skip-if-done resume, progress bars, and the stages themselves.

- stage 0 :func:`run_object_masks`: object masks of an object model -> part json with ``objects``;
- stage 1a :func:`run_pixel_grouping`: class-agnostic part segments -> part json (class ``part``);
- stage 2 :func:`run_part_ranking`: proposals + query features -> per-class part modes
  (``part_centroids.*``) -> part json whose classes are (object class, mode) pairs.

A stage reads the records of a registered dataset in their order and writes fixed shards of
``PART_DISTILLATION.SHARD_SIZE`` images (:mod:`part_d2.data.shards`). Shard ``s`` goes to
worker ``s mod W`` (W = jobs x ranks); a worker skips shards that exist. Randomness is seeded per
image from its file name, and each image is processed alone, so the output does not depend on the
number of workers or on interruptions. The manifest is written last, once every shard exists; a
rerun of a finished stage leaves its files untouched (after checking the size and sha256 of each
file against the manifest) and logs so. A run records its fingerprint (input records, model
weights by content, seed, the stage's config) in ``provenance.json`` before its first shard and in
every shard: an output directory written by a different run is an error rather than mixed in
(or, with ``--on-mismatch new-folder``, the run goes to ``OUTPUT-<fingerprint>``). Output
ids are: image ``i + 1`` (``i``: position in the input), object ``(i + 1) * 10^4 + j``, part
``object_id * 10^3 + p``.
"""
import logging
import os
import zlib
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import tqdm
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils import comm

from part_d2.data.dataset_mapper import PartDatasetMapper
from part_d2.data.image_io import read_image_checked
from part_d2.data.part_json import AGNOSTIC_CLASS, class_id, image_entry, instance_entry, part_json
from part_d2.data.shards import (
    MANIFEST,
    ShardStore,
    assigned_shards,
    object_masks_of,
    write_manifest,
)
from part_d2.modeling.build import load_part_model
from part_d2.modeling.part_ranking import (
    METRICS,
    PartCentroids,
    cluster_part_modes_streaming,
    label_segments,
    mode_names,
    object_proposals,
)
from part_d2.structures.masks import mask_to_bbox, mask_to_rle, segmentation_to_mask, segmentation_to_rle
from part_d2.utils.errors import PartDatasetError
from part_d2.utils.io import atomic_write_json, atomic_write_npy, read_json
from part_d2.utils.provenance import (
    ProvenanceError,
    check_fingerprint,
    file_record,
    fingerprint,
    model_provenance,
    records_id,
    verify_file,
    weights_id,
)

logger = logging.getLogger(__name__)
OBJECT_ID_BASE = 10**4
PART_ID_BASE = 10**3


# ---------------------------------------------------------------------------------------------
# provenance
PROVENANCE = "provenance.json"
ON_MISMATCH = ("error", "new-folder")


def claim_output(output: str, stage: str, records: Sequence[Dict], provenance: Optional[Dict],
                 on_mismatch: str = "error", **params) -> Tuple[str, str]:
    """Check (or record, in ``OUTPUT/provenance.json``) the fingerprint of this run of a stage.

    The fingerprint covers the input records, ``params`` of the stage and ``provenance`` (the
    model weights by content and the relevant config, see :func:`model_provenance`); not the
    number of jobs or processes.

    Returns:
        (output folder, fingerprint): the folder is ``output``, or ``output-<fingerprint>`` when
        ``output`` holds another run's result and ``on_mismatch`` is "new-folder".
    Raises:
        ProvenanceError: ``output`` holds another run's result (or shards of unknown origin).
    """
    ingredients = dict(stage=stage, input=records_id(records), params=params, **(provenance or {}))
    fp = fingerprint(**ingredients)
    path = os.path.join(output, PROVENANCE)
    hint = f"give a new --output or delete {output}, or pass --on-mismatch new-folder"
    try:
        if os.path.isfile(path):
            check_fingerprint(path, read_json(path).get("fingerprint"), fp, hint)
        elif any(os.path.isdir(os.path.join(output, d)) and os.listdir(os.path.join(output, d))
                 for d in ("shards", "proposals")):
            raise ProvenanceError(f"{output}: holds shards without {PROVENANCE} (another run or version); {hint}")
    except ProvenanceError:
        if on_mismatch != "new-folder":
            raise
        new = f"{output.rstrip(os.sep)}-{fp[:8]}"
        logger.warning(f"{output} holds another run's result; writing this run into {new}")
        return claim_output(new, stage, records, provenance, "error", **params)
    comm.synchronize()
    if comm.is_main_process() and not os.path.isfile(path):
        atomic_write_json(path, {"fingerprint": fp, "ingredients": ingredients})
    comm.synchronize()
    return output, fp


def _file_records(root: str) -> Dict[str, Dict]:
    """``{relative path: {size, sha256}}`` of a stage's result files (not the manifest, provenance,
    locks or temporary files)."""
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            rel = os.path.relpath(os.path.join(d, f), root)
            if rel in (MANIFEST, PROVENANCE) or f.startswith(".lock") or ".tmp" in f:
                continue
            out[rel] = file_record(os.path.join(d, f))
    return dict(sorted(out.items()))


def image_seed(seed: int, key: str) -> int:
    """A 63-bit seed from a base seed and an image key (its file name)."""
    return int(np.random.SeedSequence([int(seed), zlib.crc32(key.encode("utf-8"))]).generate_state(2, np.uint64)[0]
               >> np.uint64(1))


def read_rgb(record: Dict) -> np.ndarray:
    return read_image_checked(record["file_name"], "RGB")


def run_shards(store: ShardStore, records: Sequence[Dict], process: Callable[[int, Dict], Dict],
               build_shard: Callable[[int, List[Dict]], Dict], num_jobs: int = 1, job_id: int = 0,
               desc: str = "") -> List[int]:
    """Compute and write this worker's missing shards.

    Args:
        process: ``(index, record) -> result`` for one image.
        build_shard: ``(shard, results) -> json object`` written as the shard file.
    Returns:
        The shards written by this call.
    """
    todo = _todo(store, num_jobs, job_id)
    total = sum(len(store.item_range(s)) for s in todo)
    with tqdm.tqdm(total=total, desc=desc, disable=comm.get_local_rank() != 0 or total == 0) as bar:
        for s in todo:
            store.clear_partial(s)
            results = []
            for i in store.item_range(s):
                results.append(process(i, records[i]))
                bar.update(1)
            store.write_json(s, build_shard(s, results))
    return todo


def _todo(store: ShardStore, num_jobs: int, job_id: int) -> List[int]:
    """This worker's shards that do not exist yet; logs when some or all of them exist."""
    mine = assigned_shards(store.num_shards, num_jobs, job_id, comm.get_rank(), comm.get_world_size())
    todo = [s for s in mine if not store.is_done(s)]
    if mine and not todo:
        logger.info(f"{os.path.join(store.root, store.subdir)}: all {len(mine)} shard(s) of this worker exist, "
                    "nothing to compute")
    elif len(todo) < len(mine):
        logger.info(f"{os.path.join(store.root, store.subdir)}: resuming, {len(mine) - len(todo)} of {len(mine)} "
                    "shard(s) of this worker already exist")
    return todo


def finish_stage(store: ShardStore, manifest: Dict, extra: Optional[Callable[[], None]] = None) -> bool:
    """On the main process, once every shard exists, write the ``extra`` outputs and then the
    manifest (the mark of a complete stage); nothing is rewritten when an equal manifest exists.

    Returns:
        Whether the stage is complete (all processes agree after a barrier).
    Raises:
        PartDatasetError: the directory holds the manifest of a different run.
    """
    comm.synchronize()
    missing = store.missing()
    if missing:
        logger.info(f"{store.root}: {len(missing)} of {store.num_shards} shards still missing "
                    "(other jobs running?); rerun once they are done to finish the stage")
        return False
    manifest = dict(manifest, num_images=store.num_items, shard_size=store.shard_size, num_shards=store.num_shards)
    if comm.is_main_process():
        path = os.path.join(store.root, MANIFEST)
        old = read_json(path) if os.path.isfile(path) else None
        if old is None:
            for s in range(store.num_shards):  # a shard truncated, edited or of another run: error naming it
                stored = store.read_json(s).get("info", {}).get("fingerprint")
                if manifest.get("fingerprint") and stored != manifest["fingerprint"]:
                    raise ProvenanceError(f"{store.path(s)}: written by another run (fingerprint {stored}, this run "
                                          f"{manifest['fingerprint']}); delete it and rerun the stage to recompute it")
            if extra is not None:
                extra()
            write_manifest(store.root, dict(manifest, files=_file_records(store.root)))
            logger.info(f"{store.root}: stage complete ({store.num_shards} shards, {store.num_items} images)")
        else:
            files = old.pop("files", {})
            if old != manifest:
                keys = sorted(k for k in set(old) | set(manifest) if old.get(k) != manifest.get(k))
                raise PartDatasetError(f"{path}: this output directory holds another run's result "
                                       f"({', '.join(keys)} differ); give a new --output or delete the directory")
            for rel, record in files.items():
                problem = verify_file(os.path.join(store.root, rel), record)
                if problem:
                    raise PartDatasetError(f"{os.path.join(store.root, rel)}: {problem}; delete it and rerun the "
                                           "stage to recompute it")
            logger.info(f"{store.root}: stage already complete, nothing rewritten")
    comm.synchronize()
    return True


def _image(index: int, record: Dict, object_class: Optional[int]) -> Dict:
    """The part-json image of the ``index``-th input record (id ``index + 1``)."""
    extra = {} if record.get("image_id") is None else {"source_image_id": record["image_id"]}
    known = object_class is not None and object_class >= 0
    return image_entry(index + 1, record["file_name"], record["height"], record["width"],
                       class_id(object_class) if known else None, **extra)


def _shard_builder(store: ShardStore, part_classes, object_classes, stage: str, fp: str = ""):
    def build(shard: int, results: List[Dict]) -> Dict:
        images, anns, objects = [], [], []
        for r in results:
            images.append(r["image"])
            anns += r.get("annotations", [])
            objects += r.get("objects", [])
        info = dict({"stage": stage, "shard": shard}, **({"fingerprint": fp} if fp else {}))
        return part_json(images, anns, part_classes, objects, object_classes, info)
    return build


def _record_objects(record: Dict, max_objects: int) -> List[Dict]:
    objs = list(record.get("objects", []))
    return objs[:max_objects] if max_objects > 0 else objs


def _object_class(record: Dict, obj: Dict) -> int:
    """Class of an object for ranking: the image's class when known (as the reference), else the object's."""
    c = record.get("object_category_id", -1)
    return int(c) if c is not None and c >= 0 else int(obj["category_id"])


# ---------------------------------------------------------------------------------------------
# stage 0
def run_object_masks(model, records: Sequence[Dict], output: str, *, shard_size: int, num_jobs: int = 1,
                     job_id: int = 0, source: str = "", provenance: Optional[Dict] = None,
                     on_mismatch: str = "error") -> bool:
    """Store each image's selected detections as part-json ``objects`` (no parts).

    Args:
        model: :class:`part_d2.data.object_mask_models.ObjectMaskModel` (or any callable
            ``(record, image_rgb) -> [object dict]`` with ``class_names``).
    Returns:
        Whether the stage is complete. A complete output also has ``object_masks.json``
        (``{file_name: [RLE, ...]}``, for ``INPUT.OBJECT_MASK.SOURCE stored``).
    """
    names = list(model.class_names)
    output, fp = claim_output(output, "object_masks", records, provenance, on_mismatch, shard_size=shard_size,
                              object_classes=names)
    store = ShardStore(output, len(records), shard_size)

    def process(i, record):
        objs = model(record, read_rgb(record))
        own = model.own_class(record) if hasattr(model, "own_class") else None
        entries = []
        for j, o in enumerate(objs):
            o = dict(o)
            seg = o.pop("segmentation")
            cat = o.pop("category_id")
            entries.append(instance_entry((i + 1) * OBJECT_ID_BASE + j, i + 1, class_id(cat), seg, **o))
        return {"image": _image(i, record, own), "objects": entries}

    run_shards(store, records, process, _shard_builder(store, [], names, "object_masks", fp), num_jobs, job_id,
               "object masks")

    def write_object_masks():
        atomic_write_json(os.path.join(output, "object_masks.json"), object_masks_of(store))

    return finish_stage(store, {"stage": "object_masks", "source": source, "part_classes": [],
                                "object_classes": names, "fingerprint": fp}, write_object_masks)


# ---------------------------------------------------------------------------------------------
# stage 1a
GROUPING_KEYS = ("MODEL.BACKBONE", "MODEL.RESNETS", "MODEL.SWIN", "MODEL.PIXEL_MEAN", "MODEL.PIXEL_STD",
                 "INPUT.FORMAT", "PART_DISTILLATION.PIXEL_GROUPING")


def grouping_provenance(cfg) -> Dict:
    """What determines stage 1a's output besides its input records, seed and parameters: the
    backbone (config and ``MODEL.WEIGHTS`` by content) and the grouping keys; not the rest of the
    model, so the stage tool and the training hook record the same fingerprint."""
    out = model_provenance(cfg, GROUPING_KEYS)
    out["MODEL.WEIGHTS"] = weights_id(cfg.MODEL.WEIGHTS)
    return out


def run_pixel_grouping(
    grouper,
    records: Sequence[Dict],
    output: str,
    *,
    shard_size: int,
    object_classes: Sequence[str],
    seed: int = 0,
    max_objects: int = 1,
    num_jobs: int = 1,
    job_id: int = 0,
    source: str = "",
    provenance: Optional[Dict] = None,
    on_mismatch: str = "error",
) -> bool:
    """Group the pixels of each record's first ``max_objects`` objects (0: all) into parts.

    Args:
        grouper: :class:`part_d2.modeling.pixel_grouping.PixelGrouper` (or a callable with its
            signature).
        object_classes: names of the records' object classes.
    """
    output, fp = claim_output(output, "pixel_grouping", records, provenance, on_mismatch, shard_size=shard_size,
                              object_classes=list(object_classes), seed=seed, max_objects=max_objects)
    store = ShardStore(output, len(records), shard_size)
    skipped = {"objects without pixels at feature resolution": 0}

    def process(i, record):
        h, w = int(record["height"]), int(record["width"])
        objs = _record_objects(record, max_objects)
        masks = np.stack([segmentation_to_mask(o["segmentation"], h, w) for o in objs]) if objs \
            else np.zeros((0, h, w), bool)
        parts = grouper(read_rgb(record), masks, image_seed(seed, record["file_name"])) if objs else []
        objects, anns = [], []
        for j, (o, m, p) in enumerate(zip(objs, masks, parts)):
            oid = (i + 1) * OBJECT_ID_BASE + j
            rle = segmentation_to_rle(o["segmentation"], h, w)
            objects.append(instance_entry(oid, i + 1, class_id(o["category_id"]), rle, bbox=mask_to_bbox(m)))
            if p is None:
                skipped["objects without pixels at feature resolution"] += 1
                continue
            anns += [instance_entry(oid * PART_ID_BASE + k, i + 1, class_id(0), pm, object_id=oid)
                     for k, pm in enumerate(p) if pm.any()]
        return {"image": _image(i, record, record.get("object_category_id")), "objects": objects,
                "annotations": anns}

    run_shards(store, records, process, _shard_builder(store, [AGNOSTIC_CLASS], object_classes, "pixel_grouping", fp),
               num_jobs, job_id, "pixel grouping")
    for what, n in skipped.items():
        if n:
            logger.warning(f"pixel grouping: {n} {what} (kept without parts)")
    return finish_stage(store, {"stage": "pixel_grouping", "source": source, "part_classes": [AGNOSTIC_CLASS],
                                "object_classes": list(object_classes), "fingerprint": fp})


# ---------------------------------------------------------------------------------------------
# stage 2
def run_part_ranking(predict: Callable[[Dict], object], records: Sequence[Dict], output: str, *, shard_size: int,
                     object_classes: Sequence[str], num_modes: int = 8, min_area_ratio: float = 0.05,
                     min_score: float = 0.3, normalize: bool = True, metric: str = "l2", n_init: int = 10,
                     max_iter: int = 300, seed: int = 0, num_jobs: int = 1, job_id: int = 0,
                     source: str = "", device: str = "cpu", provenance: Optional[Dict] = None,
                     on_mismatch: str = "error", bucket_mb: float = 512) -> bool:
    """Rank part proposals into (object class, mode) classes; see :mod:`part_d2.modeling.part_ranking`.

    Pass 1 writes ``proposals/shard-*.json`` (every object's disjoint, filtered proposals as RLEs
    with scores) and ``proposals/shard-*.npy`` (their query features). Once all exist, the main
    process clusters them into ``part_centroids.{npy,json}``, reading the shards one at a time and
    holding at most ``bucket_mb`` MiB of features at once
    (:func:`part_d2.modeling.part_ranking.cluster_part_modes_streaming`); pass 2 labels the stored proposals
    into ``shards/``. Each step is skipped when its files exist.

    Args:
        predict: ``record -> Instances`` (CPU) with ``mask_probs`` at the record's resolution,
            ``class_scores`` and ``query_embeddings`` (:func:`build_proposal_predictor`).
        metric: mode logits, see :func:`part_d2.modeling.part_ranking.ranking_logits`.
    """
    if metric not in METRICS:
        raise ValueError(f"PART_DISTILLATION.RANKING.METRIC={metric!r}; expected one of {METRICS}")
    output, fp = claim_output(output, "part_ranking", records, provenance, on_mismatch, shard_size=shard_size,
                              object_classes=list(object_classes), num_modes=num_modes, min_area_ratio=min_area_ratio,
                              min_score=min_score, normalize=normalize, metric=metric, n_init=n_init,
                              max_iter=max_iter, seed=seed)
    proposals = ShardStore(output, len(records), shard_size, subdir="proposals")

    def process_proposals(i, record):
        inst = predict(record)
        if not inst.has("query_embeddings"):
            raise ValueError("part ranking needs query_embeddings in the predictions "
                             "(MODEL.MASK_FORMER.TEST.RETURN_QUERY_EMBEDDINGS True)")
        h, w = int(record["height"]), int(record["width"])
        objs, feats = [], []
        for j, o in enumerate(record.get("objects", [])):
            segs, scores, _, f = object_proposals(inst, segmentation_to_mask(o["segmentation"], h, w),
                                                  min_area_ratio, min_score)
            objs.append({"object": j, "class": _object_class(record, o),
                         "segmentation": segmentation_to_rle(o["segmentation"], h, w),
                         "proposals": [mask_to_rle(s) for s in segs], "scores": [float(s) for s in scores]})
            feats.append(np.asarray(f, np.float32))
        return {"image": _image(i, record, record.get("object_category_id")), "objects": objs, "features": feats}

    def build_proposals(shard, results):
        feats = [f for r in results for f in r.pop("features")]
        dim = next((f.shape[1] for f in feats if len(f)), 0)
        rows = [f for f in feats if len(f)]
        atomic_write_npy(
            proposals.path(shard, ".npy"), np.concatenate(rows) if rows else np.zeros((0, dim), np.float32)
        )
        return {"images": results, "fingerprint": fp}

    run_shards(proposals, records, process_proposals, build_proposals, num_jobs, job_id, "ranking: proposals")
    comm.synchronize()
    if proposals.missing():
        logger.info(f"{output}: proposal shards still missing; rerun once all jobs are done")
        return False
    if comm.is_main_process() and not os.path.isfile(os.path.join(output, "part_centroids.json")):
        def chunks():  # one proposal shard at a time: its features (memory-mapped) and their object classes
            for s in range(proposals.num_shards):
                rows = [o["class"] for r in proposals.read_json(s)["images"] for o in r["objects"] for _ in o["scores"]]
                if rows:
                    yield np.load(proposals.path(s, ".npy"), mmap_mode="r"), np.asarray(rows, np.int64)

        cluster_part_modes_streaming(chunks, object_classes, num_modes, os.path.join(output, "ranking_buckets.tmp"),
                                     n_init, max_iter, seed, normalize, device=device,
                                     budget_bytes=int(bucket_mb * 2**20)).save(output)
    comm.synchronize()
    centroids = PartCentroids.load(output)
    store = ShardStore(output, len(records), shard_size)

    def label(shard: int) -> Dict:
        data = proposals.read_json(shard)
        feats = np.load(proposals.path(shard, ".npy"))
        images, anns, objects, row = [], [], [], 0
        for r in data["images"]:
            image = r["image"]
            images.append(image)
            h, w = image["height"], image["width"]
            for o in r["objects"]:
                oid = image["id"] * OBJECT_ID_BASE + o["object"]
                objects.append(instance_entry(oid, image["id"], class_id(o["class"]), o["segmentation"],
                                              bbox=mask_to_bbox(segmentation_to_mask(o["segmentation"], h, w))))
                n = len(o["scores"])
                if n == 0:
                    continue
                segs = np.stack([segmentation_to_mask(p, h, w) for p in o["proposals"]])
                probs = centroids.probabilities(feats[row: row + n], o["class"], metric)
                row += n
                masks, modes, scores = label_segments(segs, np.asarray(o["scores"]), probs)
                anns += [instance_entry(oid * PART_ID_BASE + p, image["id"], class_id(o["class"] * num_modes + m),
                                        mk, object_id=oid, score=float(sc))
                         for p, (mk, m, sc) in enumerate(zip(masks, modes, scores))]
        return part_json(images, anns, mode_names(object_classes, num_modes), objects, object_classes,
                         {"stage": "part_ranking", "shard": shard, "fingerprint": fp})

    todo = _todo(store, num_jobs, job_id)
    for s in tqdm.tqdm(todo, desc="ranking: labels", disable=comm.get_local_rank() != 0 or not todo):
        store.clear_partial(s)
        store.write_json(s, label(s))
    return finish_stage(store, {"stage": "part_ranking", "source": source,
                                "part_classes": mode_names(object_classes, num_modes),
                                "object_classes": list(object_classes), "num_modes": num_modes,
                                "metric": metric, "fingerprint": fp})


def build_proposal_predictor(cfg, model=None):
    """``record -> Instances`` (CPU, with query_embeddings, mask_probs and class_scores) of the
    part-proposal model of ``cfg``."""
    if model is None:
        model = load_part_model(cfg)
    model = getattr(model, "module", model)
    model.return_query_embeddings = True
    model.return_mask_probs = True
    mapper = PartDatasetMapper(cfg, False)

    @torch.no_grad()
    def predict(record):
        was_training = model.training
        model.eval()
        out = model([mapper(dict(record))])[0]["instances"].to("cpu")
        model.train(was_training)
        return out

    return predict


def rank_parts(cfg, dataset: str, output: str, model=None, num_jobs: int = 1, job_id: int = 0,
               on_mismatch: str = "error") -> bool:
    """Stage 2 on a registered dataset with the proposal model of ``cfg`` (or ``model``; its
    weights then enter the fingerprint only through ``MODEL.WEIGHTS``)."""
    rk, pd = cfg.PART_DISTILLATION.RANKING, cfg.PART_DISTILLATION
    records = DatasetCatalog.get(dataset)
    classes = list(getattr(MetadataCatalog.get(dataset), "object_classes", []))
    return run_part_ranking(
        build_proposal_predictor(cfg, model), records, output, shard_size=pd.SHARD_SIZE, object_classes=classes,
        num_modes=pd.NUM_PART_MODES, min_area_ratio=rk.MIN_AREA_RATIO, min_score=rk.MIN_SCORE,
        normalize=rk.NORMALIZE_FEATURES, metric=rk.METRIC, n_init=rk.KMEANS_N_INIT, max_iter=rk.KMEANS_MAX_ITER,
        seed=pd.SEED, num_jobs=num_jobs, job_id=job_id, source=dataset, device=cfg.MODEL.DEVICE,
        provenance=model_provenance(cfg), on_mismatch=on_mismatch, bucket_mb=rk.BUCKET_MB)
