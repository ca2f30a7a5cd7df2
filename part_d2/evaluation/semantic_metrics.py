"""OPS semantic metrics of class-agnostic part predictions with oracle part labels.

Class-agnostic part masks carry no class, so OPS scores them as a semantic segmentation by giving
each predicted part the class of its highest-overlap ground-truth part (an "oracle" label), then
computing mIoU, fwIoU and mACC from a confusion matrix accumulated over the dataset. The same
functions score the superpixel baselines of :mod:`part_d2.evaluation.superpixel_baselines`.

Conventions (ours; OPS's released code has no such evaluation):

- **Evaluated pixels**: the pixels covered by a ground-truth part. Pixels outside every GT part
  (background and unannotated object regions) are ignored, so predictions outside the object are
  not penalised (post-aware filtering is evaluated separately by the instance metrics). Where GT
  parts overlap, the later one in the list wins.
- **Predicted label map**: every predicted part paints its oracle class; where parts overlap, the
  higher-scoring part wins (ties: the earlier part). A predicted part that overlaps no GT part gets
  no class and paints nothing. Evaluated pixels that no part paints count as missed: they are an
  error of their GT class (a false negative) but not a false positive of any class.
- **Metrics** (as detectron2's ``SemSegEvaluator``): IoU_c = TP / (TP + FP + FN); mIoU averages
  the IoU of classes present in the GT over the classes present in the GT or the predictions;
  fwIoU weights IoU_c by the GT frequency of class c; mACC averages TP / GT over classes present
  in the GT; pACC = sum(TP) / #evaluated pixels.

Confusion matrices have shape (C, C + 1): rows are GT classes, columns predicted classes plus a
last "missed" column. The IoU functions also take PartDistillation's (C + 1, C + 1) matrices whose
last row is the background (:mod:`part_d2.evaluation.part_discovery`): one IoU implementation.
"""
from typing import Dict, Optional

import numpy as np

IGNORE = -1


def oracle_assign(pred_masks: np.ndarray, gt_masks: np.ndarray, gt_classes: np.ndarray) -> np.ndarray:
    """Oracle class of each predicted part: the class of its highest-overlap GT part.

    Args:
        pred_masks: (P, H, W) bool predicted parts.
        gt_masks: (G, H, W) bool ground-truth parts.
        gt_classes: (G,) int their classes.
    Returns:
        (P,) int64 class per predicted part; -1 where the part overlaps no GT part. Ties between GT
        parts of equal overlap go to the first one.
    """
    pred = np.asarray(pred_masks, dtype=bool)
    gt = np.asarray(gt_masks, dtype=bool)
    pred = pred.reshape(len(pred), int(np.prod(pred.shape[1:])))
    gt = gt.reshape(len(gt), int(np.prod(gt.shape[1:])))
    if len(pred) == 0:
        return np.zeros(0, dtype=np.int64)
    if len(gt) == 0:
        return np.full(len(pred), IGNORE, dtype=np.int64)
    overlap = pred.astype(np.int64) @ gt.T.astype(np.int64)
    best = overlap.argmax(axis=1)
    classes = np.asarray(gt_classes, dtype=np.int64)[best]
    return np.where(overlap.max(axis=1) > 0, classes, IGNORE)


def gt_label_map(gt_masks: np.ndarray, gt_classes: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W) int64 GT class per pixel, -1 outside every GT part (later parts win overlaps)."""
    out = np.full((height, width), IGNORE, dtype=np.int64)
    for mask, cls in zip(gt_masks, gt_classes):
        out[np.asarray(mask, dtype=bool)] = cls
    return out


def pred_label_map(
    pred_masks: np.ndarray, pred_classes: np.ndarray, scores: np.ndarray, height: int, width: int
) -> np.ndarray:
    """(H, W) int64 predicted class per pixel, -1 where no classed part covers it.

    Parts are painted from the lowest to the highest score, so the highest-scoring part covering
    a pixel decides it (stable order: among equal scores the earlier part wins). Parts of class -1
    paint nothing.
    """
    out = np.full((height, width), IGNORE, dtype=np.int64)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")[::-1]
    for i in order:
        if pred_classes[i] >= 0:
            out[np.asarray(pred_masks[i], dtype=bool)] = pred_classes[i]
    return out


def oracle_label_map(
    pred_masks: np.ndarray, scores: np.ndarray, gt_masks: np.ndarray, gt_classes: np.ndarray
) -> np.ndarray:
    """Predicted label map of class-agnostic parts with oracle classes.

    Args:
        pred_masks: (P, H, W) bool; scores: (P,) float; gt_masks: (G, H, W) bool; gt_classes: (G,).
    Returns:
        (H, W) int64, -1 where no classed part covers the pixel.
    """
    height, width = np.asarray(pred_masks).shape[-2:]
    classes = oracle_assign(pred_masks, gt_masks, gt_classes)
    return pred_label_map(pred_masks, classes, scores, height, width)


def confusion_from_label_maps(gt_map: np.ndarray, pred_map: np.ndarray, num_classes: int) -> np.ndarray:
    """Confusion matrix of one image.

    Args:
        gt_map: (H, W) int GT classes, -1 for ignored pixels.
        pred_map: (H, W) int predicted classes, -1 for pixels without a prediction.
        num_classes: C.
    Returns:
        (C, C + 1) int64; entry [g, p] counts evaluated pixels of GT class g predicted p, column C
        counts evaluated pixels without a prediction.
    """
    gt_map, pred_map = np.asarray(gt_map), np.asarray(pred_map)
    if gt_map.shape != pred_map.shape:
        raise ValueError(f"label maps differ in shape: {gt_map.shape} vs {pred_map.shape}")
    if gt_map.max(initial=-1) >= num_classes or pred_map.max(initial=-1) >= num_classes:
        raise ValueError(f"label map has a class id >= num_classes={num_classes}")
    sel = gt_map >= 0
    gt = gt_map[sel].astype(np.int64)
    pred = pred_map[sel].astype(np.int64)
    pred = np.where(pred >= 0, pred, num_classes)
    counts = np.bincount(gt * (num_classes + 1) + pred, minlength=num_classes * (num_classes + 1))
    return counts.reshape(num_classes, num_classes + 1)


def class_totals(conf: np.ndarray):
    """TP, GT and predicted pixels per class of a confusion with C + 1 columns (last: no prediction).

    Args:
        conf: (C, C + 1) (rows: GT classes), or (C + 1, C + 1) whose last row holds the background
            pixels (their predictions count as false positives), as PartDistillation's mIoU.
    Returns:
        tp, gt, pred: (C,) float64 each.
    """
    conf = np.asarray(conf, dtype=np.float64)
    c = conf.shape[1] - 1
    tp = np.diag(conf[:c, :c])
    gt = conf[:c].sum(axis=1)
    pred = conf[:, :c].sum(axis=0)
    return tp, gt, pred


def iou_per_class(conf: np.ndarray) -> np.ndarray:
    """(C,) IoU of each class; NaN for classes absent from both GT and predictions."""
    tp, gt, pred = class_totals(conf)
    union = gt + pred - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def miou(conf: np.ndarray) -> float:
    """Mean IoU (fraction): sum of IoU over GT-present classes / #classes in GT or predictions."""
    tp, gt, pred = class_totals(conf)
    present = (gt + pred) > 0
    if not present.any():
        return float("nan")
    iou = iou_per_class(conf)
    return float(np.sum(iou[gt > 0]) / present.sum())


def fwiou(conf: np.ndarray) -> float:
    """Frequency-weighted IoU (fraction): sum over classes of (GT pixels / all) * IoU."""
    tp, gt, _ = class_totals(conf)
    if gt.sum() == 0:
        return float("nan")
    iou = iou_per_class(conf)
    present = gt > 0
    return float(np.sum(gt[present] / gt.sum() * iou[present]))


def macc(conf: np.ndarray) -> float:
    """Mean class accuracy (fraction): mean over GT-present classes of TP / GT pixels."""
    tp, gt, _ = class_totals(conf)
    present = gt > 0
    if not present.any():
        return float("nan")
    return float(np.mean(tp[present] / gt[present]))


def pacc(conf: np.ndarray) -> float:
    """Pixel accuracy (fraction): correctly classed evaluated pixels / evaluated pixels."""
    tp, gt, _ = class_totals(conf)
    return float(tp.sum() / gt.sum()) if gt.sum() > 0 else float("nan")


def semantic_metrics(conf: np.ndarray, class_names: Optional[list] = None) -> Dict[str, float]:
    """detectron2-style result dict in percent: mIoU, fwIoU, mACC, pACC and IoU-<class>."""
    results = {
        "mIoU": 100 * miou(conf),
        "fwIoU": 100 * fwiou(conf),
        "mACC": 100 * macc(conf),
        "pACC": 100 * pacc(conf),
    }
    names = class_names or [str(i) for i in range(len(conf))]
    for name, iou in zip(names, iou_per_class(conf)):
        results[f"IoU-{name}"] = 100 * float(iou)
    return results
