"""Evaluation of unsupervised part discovery (PartDistillation): proposal AR and part mIoU.

**AR** (class-agnostic mask average recall, IoU 0.5:0.95, at 1/10/50/100/200 detections per image)
with pycocotools' semantics through :mod:`part_d2.evaluation.coco_eval`, against two ground truths:
the annotated parts (``AR@m``) and the *per-object merged* parts (``merged_AR@m``), where all
parts of one class inside one object become one mask (e.g. four legs -> one "leg"), as the
reference's ``USE_MERGED_GT``. (The reference computes AR with detectron2's box-proposal recall
loop on masks; part_d2 uses the COCO protocol of its other evaluators.)

**Part mIoU** of discovered part classes, computed per object class as in the reference:

1. Every image is reduced to a pixel-count table ``T[p, g]``: pixels owned by prediction ``p``
   (the highest-scoring prediction covering the pixel, see
   :func:`part_d2.evaluation.semantic_metrics.pred_label_map`; row P = owned by none) and of
   ground-truth part class ``g`` (column C = background). With ``mask_with_object`` predictions
   are clipped to the ground-truth object mask first (the reference's
   ``APPLY_MASKING_WITH_OBJECT_MASK``).
2. Each prediction gets a discovered label in ``[0, K)``: its predicted part class
   (**mIoU-mapped**, the per-object-class classifier of stage 3, ``pred_classes``), or its k-means
   cluster (**mIoU-clustered**: the L2-normalised ``query_embeddings`` of the predictions that own
   pixels, clustered per ground-truth object class into K = 8 clusters with
   :func:`part_d2.clustering.kmeans.kmeans`; for class-agnostic proposal models).
3. Per object class, the label-vs-GT confusion is accumulated over the dataset and every label is
   mapped to the GT part class it overlaps most (majority vote; a label overlapping no GT part is
   mapped to background, where the reference would pick class 0).
4. With the mapped labels, a (C + 1) x (C + 1) confusion per object class (background included:
   predictions on background pixels are false positives). IoU_c = TP / (GT + Pred - TP).
   **C-mIoU**: per object class, the sum of IoU_c over part classes present in its GT divided by
   the number of part classes present in its GT or predictions (the reference's ``mIoU``), then
   the mean over object classes. **A-mIoU**: the mean of IoU_c over all (object class, part class)
   pairs present in the GT.

The labels are mapped on the evaluated set itself (the reference maps on a separate "match"
split); the ground-truth object class of an image is its ``object_category_id`` (else its first
object's class); images without one are left out of the mIoU with a logged count.
"""
import logging
from collections import OrderedDict, defaultdict
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils.logger import create_small_table

from part_d2.clustering.kmeans import kmeans
from part_d2.evaluation.coco_eval import EvalParams, evaluate_coco, summarize
from part_d2.evaluation.distributed import gather_on_main
from part_d2.evaluation.ground_truth import AGNOSTIC_ID, coco_gt, gt_object_mask, gt_parts, parts_view
from part_d2.evaluation.semantic_metrics import class_totals, gt_label_map, iou_per_class, miou, pred_label_map
from part_d2.structures.masks import (
    masks_to_rles,
)

logger = logging.getLogger(__name__)


def average_recall(gt: Dict, results: List[Dict], max_dets: Sequence[int], img_ids=None) -> Dict[str, float]:
    """Class-agnostic mask ``AR@m`` (percent) of COCO results for each m in ``max_dets``."""
    params = EvalParams(use_cats=False, max_dets=tuple(max_dets))
    summary = summarize(evaluate_coco(gt, [dict(r, category_id=AGNOSTIC_ID) for r in results], params, img_ids))
    return {f"AR@{m}": summary[f"AR@{m}"] for m in params.max_dets}


# ---------------------------------------------------------------- mIoU
def ownership_table(
    pred_masks: np.ndarray,
    scores: np.ndarray,
    gt_masks: np.ndarray,
    gt_classes: np.ndarray,
    num_classes: int,
    object_mask: Optional[np.ndarray] = None,
) -> np.ndarray:
    """Pixel counts of one image by owning prediction and GT part class.

    Args:
        pred_masks: (P, H, W) bool; scores: (P,) float; gt_masks: (G, H, W) bool; gt_classes: (G,).
        num_classes: C, the number of GT part classes.
        object_mask: optional (H, W) bool; predictions are clipped to it.
    Returns:
        (P + 1, C + 1) int64: [p, g] pixels owned by prediction p (row P: by none) of GT class g
        (column C: background).
    """
    pred_masks = np.asarray(pred_masks, dtype=bool)
    height, width = pred_masks.shape[-2:] if pred_masks.ndim == 3 else np.asarray(gt_masks).shape[-2:]
    num_p = len(pred_masks)
    owner = pred_label_map(pred_masks, np.arange(num_p), np.asarray(scores), height, width)
    if object_mask is not None:
        owner = np.where(np.asarray(object_mask, dtype=bool), owner, -1)
    gt = gt_label_map(gt_masks, gt_classes, height, width)
    owner = np.where(owner >= 0, owner, num_p)
    gt = np.where(gt >= 0, gt, num_classes)
    counts = np.bincount((owner * (num_classes + 1) + gt).ravel(), minlength=(num_p + 1) * (num_classes + 1))
    return counts.reshape(num_p + 1, num_classes + 1)


def label_confusion(tables: Sequence[np.ndarray], labels: Sequence[np.ndarray], num_labels: int) -> np.ndarray:
    """Discovered-label vs GT confusion of a set of images.

    Args:
        tables: per image (P_i + 1, C + 1) from :func:`ownership_table`.
        labels: per image (P_i,) int in [0, K), -1 for "no label" (counted as owned by none).
    Returns:
        (K + 1, C + 1) int64; row K: pixels owned by no labelled prediction.
    """
    num_cols = tables[0].shape[1]
    conf = np.zeros((num_labels + 1, num_cols), dtype=np.int64)
    for table, lab in zip(tables, labels):
        lab = np.asarray(lab, dtype=np.int64)
        np.add.at(conf, np.where(lab >= 0, lab, num_labels), table[:-1])
        conf[num_labels] += table[-1]
    return conf


def majority_vote(conf: np.ndarray) -> np.ndarray:
    """GT part class of each discovered label: the one it overlaps most (ties: the lowest class).

    Args:
        conf: (K + 1, C + 1) from :func:`label_confusion`.
    Returns:
        (K,) int64 in [0, C), or C (background) for labels overlapping no GT part.
    """
    fg = conf[:-1, :-1]
    background = conf.shape[1] - 1
    return np.where(fg.sum(1) > 0, fg.argmax(1), background).astype(np.int64)


def mapped_confusion(conf: np.ndarray, mapping: np.ndarray) -> np.ndarray:
    """(C + 1, C + 1) GT x predicted-class confusion after mapping labels to classes.

    Args:
        conf: (K + 1, C + 1) label confusion; mapping: (K,) classes in [0, C] (C: background).
    Returns:
        [g, c]: pixels of GT class g (C: background) predicted as class c (C: none).
    """
    num = conf.shape[1]
    out = np.zeros((num, num), dtype=np.int64)
    targets = np.concatenate([np.asarray(mapping, dtype=np.int64), [num - 1]])
    np.add.at(out.T, targets, conf)
    return out


def discovery_miou(confusions: Dict[int, np.ndarray]) -> Dict[str, float]:
    """C-mIoU and A-mIoU (percent) of per-object-class (C + 1, C + 1) confusions (see module doc)."""
    class_mious, all_ious = [], []
    for conf in confusions.values():
        _, gt, pred = class_totals(conf)
        if not ((gt + pred) > 0).any():
            continue
        class_mious.append(miou(conf))
        all_ious.extend(iou_per_class(conf)[gt > 0].tolist())
    return {
        "C-mIoU": 100 * float(np.mean(class_mious)) if class_mious else float("nan"),
        "A-mIoU": 100 * float(np.mean(all_ious)) if all_ious else float("nan"),
    }


def evaluate_labels(
    entries: List[Dict], label_key: str, num_labels: int
) -> Tuple[Dict[str, float], Dict[int, np.ndarray]]:
    """Majority-vote mapping and C-/A-mIoU of one labelling of the predictions.

    Args:
        entries: per image ``object_class``, ``table`` and ``label_key`` labels (P,).
    Returns:
        the metrics and the mapping (K,) of each object class.
    """
    by_class = defaultdict(list)
    for e in entries:
        by_class[e["object_class"]].append(e)
    confusions, mappings = {}, {}
    for obj, group in sorted(by_class.items()):
        conf = label_confusion([e["table"] for e in group], [e[label_key] for e in group], num_labels)
        mappings[obj] = majority_vote(conf)
        confusions[obj] = mapped_confusion(conf, mappings[obj])
    return discovery_miou(confusions), mappings


def cluster_labels(entries: List[Dict], num_clusters: int, seed: int) -> List[np.ndarray]:
    """k-means cluster of each prediction's embedding, per object class, over the predictions
    owning at least one pixel (others get -1).

    Args:
        entries: per image ``object_class``, ``table`` (P + 1, C + 1), ``embeddings`` (P, D).
    Returns:
        per image (P,) int64 labels in [0, num_clusters) or -1.
    """
    labels = [np.full(len(e["embeddings"]), -1, dtype=np.int64) for e in entries]
    by_class = defaultdict(list)
    for i, e in enumerate(entries):
        by_class[e["object_class"]].append(i)
    for obj, idx in sorted(by_class.items()):
        visible = [np.flatnonzero(entries[i]["table"][:-1].sum(1) > 0) for i in idx]
        feats = [entries[i]["embeddings"][v] for i, v in zip(idx, visible)]
        if sum(len(f) for f in feats) == 0:
            continue
        x = torch.as_tensor(np.concatenate(feats), dtype=torch.float32)
        assigned, _, _ = kmeans(x, num_clusters, seed=seed, metric="cosine", n_init=3)
        for i, v, part in zip(idx, visible, torch.split(assigned, [len(f) for f in feats])):
            labels[i][v] = part.numpy()
    return labels


# ---------------------------------------------------------------- evaluator
def _object_class(record: Dict) -> int:
    c = record.get("object_category_id", -1)
    if c is not None and c >= 0:
        return int(c)
    objects = record.get("objects", [])
    return int(objects[0]["category_id"]) if objects else -1


class PartDiscoveryEvaluator(DatasetEvaluator):
    """AR (plain and merged GT), mIoU-mapped and mIoU-clustered (C-/A-mIoU) of part predictions;
    see the module docstring. mIoU-mapped needs ``pred_object_classes`` on the instances (the
    per-object-class model), mIoU-clustered needs ``query_embeddings``
    (``MODEL.MASK_FORMER.TEST.RETURN_QUERY_EMBEDDINGS True``); each is skipped otherwise."""

    @configurable
    def __init__(
        self,
        dataset_name: str,
        max_dets: Sequence[int] = (1, 10, 50, 100, 200),
        num_clusters: int = 8,
        cluster_seed: int = 0,
        mask_with_object: bool = True,
        num_part_modes: int = 8,
        distributed: bool = True,
    ):
        """
        Args:
            dataset_name: a registered dataset with part annotations (any label view of a part json).
            max_dets: detections per image at which AR is reported.
            num_clusters: K of mIoU-clustered.
            cluster_seed: seed of its k-means.
            mask_with_object: clip predictions to the GT object mask for the mIoU.
            num_part_modes: K of mIoU-mapped (part classes per object class of the model).
            distributed: gather the per-image results on the main process.
        """
        self._dataset_name = dataset_name
        self._max_dets = tuple(sorted(int(m) for m in max_dets))
        self._num_clusters = num_clusters
        self._cluster_seed = cluster_seed
        self._mask_with_object = mask_with_object
        self._num_part_modes = num_part_modes
        self._distributed = distributed
        self._records: Optional[Dict] = None
        self._num_classes = 0
        self._entries: List[Dict] = []

    @classmethod
    def from_config(cls, cfg, dataset_name: str):
        d = cfg.TEST.PART_DISCOVERY
        return {
            "dataset_name": dataset_name,
            "max_dets": tuple(d.MAX_DETS),
            "num_clusters": cfg.PART_DISTILLATION.NUM_PART_MODES,
            "cluster_seed": d.CLUSTER_SEED,
            "mask_with_object": d.MASK_WITH_OBJECT,
            "num_part_modes": cfg.PART_DISTILLATION.NUM_PART_MODES,
        }

    def reset(self):
        self._entries = []

    def _gt(self) -> Dict:
        if self._records is None:
            records = DatasetCatalog.get(parts_view(self._dataset_name))
            self._records = {r["image_id"]: r for r in records}
            classes = MetadataCatalog.get(self._dataset_name).get("part_classes")
            found = max((a["category_id"] for r in records for a in r.get("annotations", [])), default=-1) + 1
            self._num_classes = max(len(classes) if classes else 0, found)
        return self._records

    def process(self, inputs, outputs):
        """Per image: COCO results (RLE) for AR, the ownership table, labels and embeddings."""
        records = self._gt()
        for inp, out in zip(inputs, outputs):
            rec = records.get(inp["image_id"])
            if rec is None:
                raise ValueError(f"PartDiscoveryEvaluator: image {inp['image_id']!r} is not in {self._dataset_name}")
            inst = out["instances"].to("cpu")
            masks = inst.pred_masks.numpy()
            masks = masks if masks.dtype == bool else masks >= 0.5
            scores = inst.scores.numpy()
            gt_masks, gt_classes = gt_parts(rec)
            obj = gt_object_mask(rec, gt_masks)
            entry = {
                "image_id": inp["image_id"],
                "object_class": _object_class(rec),
                "results": [
                    {"image_id": inp["image_id"], "category_id": AGNOSTIC_ID, "score": float(s), "segmentation": r}
                    for r, s in zip(masks_to_rles(masks), scores.tolist())
                ],
                "table": ownership_table(
                    masks, scores, gt_masks, gt_classes, self._num_classes, obj if self._mask_with_object else None
                ),
            }
            if inst.has("pred_object_classes"):
                entry["modes"] = inst.pred_classes.numpy().astype(np.int64)
            if inst.has("query_embeddings"):
                entry["embeddings"] = inst.query_embeddings.float().numpy()
            self._entries.append(entry)

    def evaluate(self):
        """``OrderedDict(part_discovery={metric: percent})`` on the main process."""
        entries = gather_on_main(self._entries, self._distributed)
        if entries is None:  # not the main process
            return {}
        if not entries:
            logger.warning("PartDiscoveryEvaluator: no predictions were processed; nothing to evaluate")
            return {}
        records = self._gt()
        evaluated = [records[e["image_id"]] for e in entries]
        img_ids = [e["image_id"] for e in entries]
        results = [r for e in entries for r in e["results"]]
        metrics = OrderedDict(average_recall(coco_gt(evaluated, agnostic=True), results, self._max_dets, img_ids))
        merged = average_recall(coco_gt(evaluated, agnostic=True, merged=True), results, self._max_dets, img_ids)
        metrics.update({f"merged_{k}": v for k, v in merged.items()})
        with_class = [e for e in entries if e["object_class"] >= 0]
        if len(with_class) < len(entries):
            logger.warning(
                f"PartDiscoveryEvaluator: {len(entries) - len(with_class)} images without an object class "
                "left out of the mIoU"
            )
        if with_class and all("modes" in e for e in with_class):
            scores, _ = evaluate_labels(with_class, "modes", self._num_part_modes)
            metrics.update({f"mapped_{k}": v for k, v in scores.items()})
        if with_class and all("embeddings" in e for e in with_class):
            for e, lab in zip(with_class, cluster_labels(with_class, self._num_clusters, self._cluster_seed)):
                e["clusters"] = lab
            scores, _ = evaluate_labels(with_class, "clusters", self._num_clusters)
            metrics.update({f"clustered_{k}": v for k, v in scores.items()})
        logger.info(f"Part discovery results on {self._dataset_name}:\n" + create_small_table(metrics))
        return OrderedDict(part_discovery=dict(metrics))
