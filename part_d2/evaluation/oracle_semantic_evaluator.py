"""OPS's semantic metrics of class-agnostic parts with oracle labels, as a ``DatasetEvaluator``.

Each predicted part takes the class of its highest-overlap ground-truth part, the parts paint a
label map (highest score on top), and a confusion matrix accumulated over the dataset gives mIoU,
fwIoU, mACC and pACC; see :mod:`part_d2.evaluation.semantic_metrics` for the conventions. The
ground truth comes from the ``parts`` view of the evaluated dataset, so that GT part classes exist
even when the model is evaluated on the ``agnostic`` view. :func:`oracle_confusion` scores one
image and is shared with the superpixel baselines (``tools/eval_superpixel_baselines.py``).
"""
import logging
from collections import OrderedDict
from typing import Dict, Optional

import numpy as np
from detectron2.config import configurable
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from detectron2.utils.logger import create_small_table

from part_d2.evaluation.ground_truth import gt_parts, parts_view
from part_d2.evaluation.semantic_metrics import (
    confusion_from_label_maps,
    gt_label_map,
    oracle_label_map,
    semantic_metrics,
)

logger = logging.getLogger(__name__)


def oracle_confusion(
    pred_masks: np.ndarray,
    scores: np.ndarray,
    gt_masks: np.ndarray,
    gt_classes: np.ndarray,
    num_classes: int,
    score_thresh: float = 0.0,
) -> np.ndarray:
    """Confusion matrix of one image's class-agnostic parts with oracle labels.

    Args:
        pred_masks: (P, H, W) bool predicted parts; scores: (P,) float.
        gt_masks: (G, H, W) bool GT parts; gt_classes: (G,) int.
        num_classes: C, the number of part classes.
        score_thresh: parts scoring at most this are ignored (when > 0).
    Returns:
        (C, C + 1) int64 confusion (last column: evaluated pixels without a prediction).
    """
    pred_masks = np.asarray(pred_masks, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    height, width = gt_masks.shape[-2:] if len(gt_masks) else pred_masks.shape[-2:]
    if score_thresh > 0:
        keep = scores > score_thresh
        pred_masks, scores = pred_masks[keep], scores[keep]
    if len(pred_masks) == 0:
        pred_masks = np.zeros((0, height, width), dtype=bool)
    pred_map = oracle_label_map(pred_masks, scores, gt_masks, gt_classes)
    return confusion_from_label_maps(gt_label_map(gt_masks, gt_classes, height, width), pred_map, num_classes)


class OracleSemanticEvaluator(DatasetEvaluator):
    """mIoU, fwIoU, mACC and pACC (percent) of predicted parts with oracle part classes.

    Results: ``OrderedDict(part_sem={"mIoU", "fwIoU", "mACC", "pACC", "IoU-<class>": ...})``.
    """

    @configurable
    def __init__(self, dataset_name: str, *, score_thresh: float = 0.0, distributed: bool = True):
        """
        Args:
            dataset_name: the evaluated dataset; its ``parts`` view supplies GT part classes.
            score_thresh: predicted parts scoring at most this are ignored.
            distributed: sum the confusion matrices of all processes.
        """
        self._dataset_name = dataset_name
        self._gt_name = parts_view(dataset_name)
        self._score_thresh = score_thresh
        self._distributed = distributed
        self._records: Optional[Dict] = None
        self._classes = None
        self._confusion = None

    @classmethod
    def from_config(cls, cfg, dataset_name: str):
        return {"dataset_name": dataset_name, "score_thresh": cfg.TEST.PART_EVAL.ORACLE_SCORE_THRESH}

    def _load_gt(self):
        if self._records is None:
            self._records = {r["image_id"]: r for r in DatasetCatalog.get(self._gt_name)}
            self._classes = list(MetadataCatalog.get(self._gt_name).thing_classes)

    def reset(self):
        self._load_gt()
        self._confusion = np.zeros((len(self._classes), len(self._classes) + 1), dtype=np.int64)

    def process(self, inputs, outputs):
        """
        Args:
            inputs: dicts with ``image_id`` of the GT dataset.
            outputs: dicts whose ``instances`` have ``pred_masks`` (N, H, W) at the original
                resolution (bool, or float foreground where >= 0.5) and ``scores`` (N,).
        """
        for inp, out in zip(inputs, outputs):
            record = self._records.get(inp["image_id"])
            if record is None:
                raise KeyError(f"OracleSemanticEvaluator: image {inp['image_id']!r} is not in {self._gt_name}")
            inst = out["instances"].to("cpu")
            masks = inst.pred_masks.numpy()
            masks = masks if masks.dtype == bool else masks >= 0.5
            gt_masks, gt_classes = gt_parts(record)
            self._confusion += oracle_confusion(
                masks, inst.scores.numpy(), gt_masks, gt_classes, len(self._classes), self._score_thresh
            )

    def evaluate(self):
        """Returns ``OrderedDict(part_sem=metrics)`` on the main process, ``{}`` elsewhere."""
        confusion = self._confusion
        if self._distributed:
            comm.synchronize()
            gathered = comm.gather(confusion, dst=0)
            if not comm.is_main_process():
                return {}
            confusion = np.sum(gathered, axis=0)
        metrics = semantic_metrics(confusion, self._classes)
        logger.info(
            f"Oracle semantic metrics on {self._gt_name}:\n"
            + create_small_table({k: metrics[k] for k in ("mIoU", "fwIoU", "mACC", "pACC")})
        )
        return OrderedDict(part_sem=metrics)
