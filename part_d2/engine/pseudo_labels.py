"""OPS self-training: pseudo part labels from a trained model, and config-registered part jsons.

:func:`generate_pseudo_labels` runs a model over a registered dataset and keeps the predicted
parts scoring above a threshold; :func:`pseudo_label_json` turns them into a part_d2 part json
(single category ``part``, the source records' ``objects`` kept so object-mask sources still
work). Pseudo-labeled data joins training through config alone
(``DATASETS.PART_JSONS``, see :func:`part_d2.data.shards.register_config_part_jsons`), e.g.
``DATASETS.PART_JSONS ("pseudo:out/pseudo_labels.json",) DATASETS.TRAIN ("labeled_agnostic", "pseudo_agnostic")``.
"""
import itertools
import logging
import os
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import tqdm
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils import comm

from part_d2.data.build import build_part_test_loader
from part_d2.data.part_json import (
    AGNOSTIC_CLASS,
    category_entries,
    class_id,
    image_entry,
    instance_entry,
    part_json,
    write_part_json,
)
from part_d2.structures.masks import mask_to_bbox, masks_to_rles, rle_area, segmentation_to_mask
from part_d2.utils.io import read_json
from part_d2.utils.provenance import check_fingerprint, fingerprint, model_provenance, records_id

logger = logging.getLogger(__name__)

PSEUDO_LABEL_FILE = "pseudo_labels.json"


def _relative_file_name(file_name: str, image_root: str) -> str:
    if image_root and os.path.abspath(file_name).startswith(os.path.abspath(image_root) + os.sep):
        return os.path.relpath(os.path.abspath(file_name), os.path.abspath(image_root))
    return os.path.abspath(file_name)


def _object_entries(record: Dict, start_id: int) -> List[Dict]:
    """The record's objects as part-json objects (RLE segmentations, ids from ``start_id``)."""
    h, w = record["height"], record["width"]
    return [instance_entry(start_id + i, record["image_id"], class_id(obj["category_id"]),
                           segmentation_to_mask(obj["segmentation"], h, w), iscrowd=int(obj.get("iscrowd", 0)))
            for i, obj in enumerate(record.get("objects", []))]


def pseudo_label_json(
    records: Sequence[Dict],
    predictions: Dict,
    score_thresh: float,
    image_root: str = "",
    object_classes: Sequence[str] = (),
    source: str = "",
    weights: str = "",
    fingerprint: str = "",
) -> Dict:
    """A part_d2 part json of thresholded predictions.

    Args:
        records: dataset dicts (``image_id``, ``file_name``, ``height``, ``width``, optional
            ``objects`` with contiguous ``category_id``).
        predictions: ``{image_id: encode_parts(masks, scores)}``; images without an entry get
            no parts.
        score_thresh: keep parts with ``score > score_thresh``.
        image_root: file names are written relative to it when they lie below it.
        object_classes: names of the objects' contiguous categories.
        source: informative name of the source dataset.
        fingerprint: of the run (model weights by content, dataset, threshold, config), stored
            in ``info`` (see :func:`pseudo_labels_done`).
    Returns:
        the json dict: one category ``part`` (id 1), annotations with ``score``, the objects and
        object categories of the records, ``info.image_root`` and ``info.score_thresh``.
    """
    images, annotations, objects = [], [], []
    for rec in records:
        obj_class = rec.get("object_category_id", -1)
        images.append(image_entry(rec["image_id"], _relative_file_name(rec["file_name"], image_root), rec["height"],
                                  rec["width"], class_id(obj_class) if obj_class >= 0 else None))
        objects += _object_entries(rec, start_id=len(objects) + 1)
        pred = predictions.get(rec["image_id"])
        if pred is None:
            continue
        for part in pred:
            if part["score"] > score_thresh:
                annotations.append(
                    dict(part, id=len(annotations) + 1, image_id=rec["image_id"], category_id=class_id(0))
                )
    info = {"description": f"pseudo part labels of {source}", "image_root": image_root,
            "score_thresh": score_thresh, "source": source, "weights": weights,
            **({"fingerprint": fingerprint} if fingerprint else {})}
    return part_json(images, annotations, category_entries([AGNOSTIC_CLASS], AGNOSTIC_CLASS), objects,
                     category_entries(list(object_classes), list(object_classes)), info)


def encode_parts(masks: np.ndarray, scores: np.ndarray) -> List[Dict]:
    """Compact part annotations of one image's predictions; empty masks are dropped.

    Args:
        masks: (N, H, W) bool; scores: (N,) float.
    Returns:
        N' dicts with ``segmentation`` (RLE), ``area``, ``bbox`` (XYWH), ``iscrowd`` 0 and ``score``.
    """
    masks = np.asarray(masks, dtype=bool)
    keep = masks.any(axis=(1, 2))
    masks, scores = masks[keep], np.asarray(scores, dtype=np.float64)[keep]
    return [
        {"segmentation": rle, "area": rle_area(rle), "bbox": mask_to_bbox(mask), "iscrowd": 0, "score": float(score)}
        for rle, mask, score in zip(masks_to_rles(masks), masks, scores)
    ]


@torch.no_grad()
def predict_dataset(model, data_loader, score_thresh: float) -> Dict:
    """Predictions of this process's share of a test loader, above ``score_thresh``.

    Returns:
        ``{image_id: encode_parts(masks, scores)}`` (RLEs, so that gathering stays small).
    """
    predictions = {}
    training = model.training
    model.eval()
    try:
        for inputs in tqdm.tqdm(data_loader, desc="pseudo labels", disable=not comm.is_main_process()):
            for inp, out in zip(inputs, model(inputs)):
                inst = out["instances"].to("cpu")
                keep = inst.scores > score_thresh
                masks = inst.pred_masks[keep]
                masks = masks if masks.dtype == torch.bool else masks >= 0.5
                predictions[inp["image_id"]] = encode_parts(masks.numpy(), inst.scores[keep].numpy())
    finally:
        model.train(training)
    return predictions


def pseudo_label_fingerprint(cfg, dataset_name: str, score_thresh: float) -> str:
    """What determines a pseudo-label json: the dataset's records, the threshold, the model config
    and its weights by content (:func:`part_d2.utils.provenance.model_provenance`)."""
    return fingerprint(dataset=dataset_name, input=records_id(DatasetCatalog.get(dataset_name)),
                       score_thresh=score_thresh, **model_provenance(cfg, ("MODEL", "INPUT", "TEST")))


def pseudo_labels_done(output_file: str, fp: str) -> bool:
    """Whether ``output_file`` already holds the pseudo labels of fingerprint ``fp``.

    Raises:
        ProvenanceError: it holds pseudo labels of another run (other weights, dataset, threshold
            or config), which a rerun must not silently keep or overwrite.
    """
    if not os.path.isfile(output_file):
        return False
    stored = read_json(output_file).get("info", {}).get("fingerprint", "(none)")
    check_fingerprint(output_file, stored, fp, "give another --output, delete the file, or pass "
                      "--on-mismatch new-folder")
    return True


def generate_pseudo_labels(
    cfg, model, dataset_name: str, output_file: str, score_thresh: Optional[float] = None, data_loader=None,
    fp: str = "",
) -> Optional[Dict]:
    """Run ``model`` over ``dataset_name`` on every process and write the pseudo-label json.

    Args:
        score_thresh: keep parts scoring above it (default ``MODEL.OPS.PSEUDO_LABEL.SCORE_THRESH``).
        data_loader: test loader of the dataset (default: :func:`part_d2.data.build.build_part_test_loader`).
        fp: fingerprint stored in the json (default: :func:`pseudo_label_fingerprint`).
    Returns:
        the json dict on the main process (written atomically to ``output_file``), None elsewhere.
    """
    thresh = cfg.MODEL.OPS.PSEUDO_LABEL.SCORE_THRESH if score_thresh is None else score_thresh
    loader = data_loader if data_loader is not None else build_part_test_loader(cfg, dataset_name)
    predictions = predict_dataset(model, loader, thresh)
    gathered = comm.gather(predictions, dst=0)
    if not comm.is_main_process():
        return None
    merged = dict(itertools.chain.from_iterable(p.items() for p in gathered))
    meta = MetadataCatalog.get(dataset_name)
    records = DatasetCatalog.get(dataset_name)
    data = pseudo_label_json(
        records, merged, thresh, image_root=meta.get("image_root", ""),
        object_classes=meta.get("object_classes", []), source=dataset_name, weights=cfg.MODEL.WEIGHTS,
        fingerprint=fp or pseudo_label_fingerprint(cfg, dataset_name, thresh),
    )
    write_part_json(output_file, data)
    logger.info(
        f"Wrote {len(data['annotations'])} pseudo-labeled parts (score > {thresh}) of "
        f"{len(data['images'])} images of {dataset_name} to {output_file}"
    )
    return data
