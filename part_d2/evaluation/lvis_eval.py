"""LVIS-style (federated) AP with the semantics of ``lvis`` 0.5.3's ``LVISEval``, on numpy 1 and 2.

:func:`evaluate_lvis` gives the same precision/recall arrays as ``LVISResults`` +
``LVISEval.evaluate`` + ``accumulate`` (lvis-api ``lvis/results.py``, ``lvis/eval.py``) and
:func:`summarize_lvis` the same summary (AP, AP50, AP75, APs/m/l, APr/c/f, AR@max_dets,
ARs/m/l@max_dets). It reuses :mod:`part_d2.evaluation.coco_eval`'s matching and accumulation,
which are pycocotools' and coincide with LVISEval's for non-crowd ground truth. The semantics kept:

- detections are cut to the ``max_dets`` best scoring of each image over all categories (ties:
  input order) before anything else; detections of unknown images raise;
- images: every ground-truth image (or ``img_ids``); categories: every ground-truth category,
  grouped into rare/common/frequent by their ``frequency`` field ("r", "c", "f");
- ground truth and detections with ``area`` <= 0 (detections: mask area for "segm", box area for
  "bbox") are dropped; ``iscrowd`` is not used, ground truth with a true ``ignore`` field is ignored;
- federated: a detection of category c in image i is kept only if c has ground truth in i or is in
  i's ``neg_category_ids``; an unmatched detection of a category in i's
  ``not_exhaustive_category_ids`` is ignored (not a false positive), as is an unmatched detection
  outside an area range;
- greedy matching, precision interpolation and recall thresholds as pycocotools; categories and
  area ranges without non-ignored ground truth get -1.

One difference on purpose: LVISEval stores matched ground-truth ``id``\\ s and so takes a match to a
ground truth whose id is 0 for no match; here matches do not depend on annotation ids. And for
"segm" a detection's area is its mask area even when it carries a ``bbox`` (``LVISResults`` then
takes the box area; detectron2's LVISEvaluator removes the boxes for mask AP for that reason).
"""
import json
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.utils.file_io import PathManager
from detectron2.utils.logger import create_small_table

from part_d2.evaluation.coco_eval import (
    EvalParams,
    _accumulate,
    _evaluate_groups,
    _mean_valid,
    _percent,
    _region,
    _region_areas,
    _Table,
)
from part_d2.evaluation.distributed import gather_on_main
from part_d2.evaluation.part_evaluator import PREDICTIONS_FILE, PartEvaluator

logger = logging.getLogger(__name__)

FREQUENCIES = ("r", "c", "f")
_AREA_SHORT = {"small": "s", "medium": "m", "large": "l"}


@dataclass
class LvisEvalResult:
    """Accumulated LVIS-style evaluation, laid out like ``LVISEval.eval``.

    Attributes:
        params: the settings used (``max_dets`` holds the one per-image limit).
        img_ids: the I evaluated image ids, sorted.
        cat_ids: the K category ids, sorted.
        frequency: (K,) "r", "c" or "f" of each category.
        precision: (T, R, K, A) float, -1 where there is no non-ignored ground truth.
        recall: (T, K, A) float, -1 likewise.
    """

    params: EvalParams
    img_ids: List
    cat_ids: List
    frequency: List[str]
    precision: np.ndarray
    recall: np.ndarray


def evaluate_lvis(
    gt: Dict, detections: Sequence[Dict], iou_type: str = "segm", max_dets: int = 300, img_ids=None
) -> LvisEvalResult:
    """Evaluate detections against federated (LVIS) ground truth exactly like ``LVISEval``.

    Args:
        gt: LVIS dataset dict: "images" (``id``, ``height``, ``width``, ``neg_category_ids``,
            ``not_exhaustive_category_ids``), "categories" (``id``, ``frequency``) and
            "annotations" (``image_id``, ``category_id``, ``area``, ``segmentation`` for "segm"
            or ``bbox`` XYWH for "bbox", optional ``ignore``).
        detections: results with ``image_id``, ``category_id``, ``score`` and a compressed RLE
            ``segmentation`` ("segm") or ``bbox`` ("bbox").
        iou_type: "segm" or "bbox".
        max_dets: detections kept per image (LVIS: 300).
        img_ids: evaluate only these images (default: every ground-truth image).
    Returns:
        the accumulated :class:`LvisEvalResult`.
    """
    params = EvalParams(iou_type=iou_type, use_cats=True, max_dets=(max_dets,))
    images = {img["id"]: img for img in gt["images"]}
    img_ids = sorted(set(images) if img_ids is None else set(img_ids))
    unknown = [i for i in img_ids if i not in images]
    if unknown:
        raise ValueError(f"{len(unknown)} image id(s) to evaluate are not in the ground truth, e.g. {unknown[0]!r}")
    neg, not_exhaustive = {}, {}
    for i in img_ids:
        for key, out in (("neg_category_ids", neg), ("not_exhaustive_category_ids", not_exhaustive)):
            if key not in images[i]:
                raise ValueError(f"image {i!r} of the LVIS ground truth has no {key!r} field")
            out[i] = set(images[i][key])
    cats = sorted(gt["categories"], key=lambda c: c["id"])
    frequency = [c.get("frequency") for c in cats]
    bad = [c["id"] for c, f in zip(cats, frequency) if f not in FREQUENCIES]
    if bad:
        raise ValueError(f"{len(bad)} LVIS categories have no 'frequency' in {FREQUENCIES}, e.g. id {bad[0]!r}")
    cat_ids = [c["id"] for c in cats]
    img_index = {i: n for n, i in enumerate(img_ids)}
    cat_index = {c: n for n, c in enumerate(cat_ids)}

    try:
        gt_anns = [
            a for a in gt["annotations"]
            if a["image_id"] in img_index and a["category_id"] in cat_index and 0 < a["area"] < float("inf")
        ]
    except KeyError as e:
        raise ValueError(f"an annotation of the LVIS ground truth has no {e.args[0]!r} field") from None
    positive = {(a["image_id"], a["category_id"]) for a in gt_anns}
    try:
        det_anns = [
            d for d in _top_per_image(detections, images, max_dets)
            if d["image_id"] in img_index and d["category_id"] in cat_index
            and ((d["image_id"], d["category_id"]) in positive or d["category_id"] in neg[d["image_id"]])
        ]
    except KeyError as e:
        raise ValueError(f"a detection has no {e.args[0]!r} field") from None
    det_regions = [_region(d, images[d["image_id"]], iou_type, "detection") for d in det_anns]
    det_area = _region_areas(det_regions, iou_type)
    nonempty = np.flatnonzero(det_area > 0)
    det_anns = [det_anns[n] for n in nonempty]
    det_regions = [det_regions[n] for n in nonempty]

    gt_group = _group_of(gt_anns, img_index, cat_index, len(cat_ids))
    det_group = _group_of(det_anns, img_index, cat_index, len(cat_ids))
    groups, inverse = np.unique(np.concatenate([gt_group, det_group]), return_inverse=True)
    gt_group, det_group = inverse[: len(gt_group)], inverse[len(gt_group):]
    det_score = np.array([float(d["score"]) for d in det_anns], dtype=np.float64)
    gt_order = np.argsort(gt_group, kind="stable")
    det_order = np.lexsort((np.arange(len(det_anns)), -det_score, det_group))
    gts = _Table(
        regions=[_region(gt_anns[n], images[gt_anns[n]["image_id"]], iou_type, "annotation") for n in gt_order],
        area=np.array([float(gt_anns[n]["area"]) for n in gt_order], dtype=np.float64),
        crowd=np.zeros(len(gt_order), dtype=bool),
        score=np.zeros(len(gt_order)),
        starts=_starts(gt_group, len(groups)),
    )
    dts = _Table(
        regions=[det_regions[n] for n in det_order],
        area=det_area[nonempty][det_order],
        crowd=np.zeros(len(det_order), dtype=bool),
        score=det_score[det_order],
        starts=_starts(det_group, len(groups)),
    )
    rngs = np.asarray(params.area_rngs, dtype=np.float64)
    gt_flag = np.array([bool(gt_anns[n].get("ignore", 0)) for n in gt_order], dtype=bool)
    gt_ignore = (gts.area[None] < rngs[:, :1]) | (gts.area[None] > rngs[:, 1:]) | gt_flag[None]  # (A, G)
    det_tp, det_fp = _evaluate_groups(gts, dts, gt_ignore, params)  # (D, A, T)
    det_nel = np.array(
        [det_anns[n]["category_id"] in not_exhaustive[det_anns[n]["image_id"]] for n in det_order], dtype=bool
    )
    det_fp &= ~det_nel[:, None, None]

    group_img, group_k = np.divmod(groups, len(cat_ids))
    det_k = np.repeat(group_k, np.diff(dts.starts))
    det_img = np.repeat(group_img, np.diff(dts.starts))
    det_rank = np.arange(len(dts.score)) - np.repeat(dts.starts[:-1], np.diff(dts.starts))
    gt_k = np.repeat(group_k, np.diff(gts.starts))
    num_pos = np.stack([np.bincount(gt_k[~ig], minlength=len(cat_ids)) for ig in gt_ignore], axis=1)  # (K, A)
    precision, recall, _ = _accumulate(det_tp, det_fp, dts.score, det_k, det_img, det_rank, num_pos, params)
    return LvisEvalResult(
        params=params,
        img_ids=img_ids,
        cat_ids=cat_ids,
        frequency=frequency,
        precision=precision[..., 0],
        recall=recall[..., 0],
    )


def _top_per_image(detections: Sequence[Dict], images: Dict, max_dets: int) -> List[Dict]:
    """The ``max_dets`` highest scoring detections of each image, ties in input order."""
    try:
        img = [d["image_id"] for d in detections]
        score = np.array([float(d["score"]) for d in detections], dtype=np.float64)
    except KeyError as e:
        raise ValueError(f"a detection has no {e.args[0]!r} field") from None
    missing = sorted(set(img) - set(images), key=str)
    if missing:
        raise ValueError(f"detections of {len(missing)} image(s) unknown to the ground truth, e.g. {missing[0]!r}")
    index: Dict = {}
    img_key = np.array([index.setdefault(i, len(index)) for i in img], dtype=np.int64)
    order = np.lexsort((np.arange(len(img)), -score, img_key))
    counts = np.bincount(img_key[order], minlength=1)
    rank = np.arange(len(order)) - np.repeat(np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
    keep = np.sort(order[rank < max_dets])
    return [detections[n] for n in keep]


def _group_of(anns: List[Dict], img_index: Dict, cat_index: Dict, num_k: int) -> np.ndarray:
    """(N,) int64 group key image index * K + category index."""
    return np.array(
        [img_index[a["image_id"]] * num_k + cat_index[a["category_id"]] for a in anns], dtype=np.int64
    )


def _starts(group: np.ndarray, num_groups: int) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(np.bincount(group, minlength=num_groups))]).astype(np.int64)


def summarize_lvis(result: LvisEvalResult) -> Dict[str, float]:
    """LVISEval's summary in percent (NaN where LVISEval reports -1).

    Keys: AP, AP50, AP75, APs, APm, APl, APr, APc, APf and ``AR@{max_dets}``,
    ``ARs@{max_dets}``, ``ARm@{max_dets}``, ``ARl@{max_dets}``.
    """
    p = result.params
    area = {label: n for n, label in enumerate(p.area_labels)}
    prec, rec = result.precision, result.recall
    a_all = area["all"]
    out = {"AP": _percent(_mean_valid(prec[:, :, :, a_all]))}
    for thr in (0.5, 0.75):
        t = np.flatnonzero(np.isclose(p.iou_thrs, thr))
        out[f"AP{round(thr * 100)}"] = _percent(_mean_valid(prec[t][:, :, :, a_all]))
    for label, short in _AREA_SHORT.items():
        out[f"AP{short}"] = _percent(_mean_valid(prec[:, :, :, area[label]]))
    freq = np.asarray(result.frequency)
    for f in FREQUENCIES:
        out[f"AP{f}"] = _percent(_mean_valid(prec[:, :, np.flatnonzero(freq == f), a_all]))
    max_dets = p.max_dets[-1]
    out[f"AR@{max_dets}"] = _percent(_mean_valid(rec[:, :, a_all]))
    for label, short in _AREA_SHORT.items():
        out[f"AR{short}@{max_dets}"] = _percent(_mean_valid(rec[:, :, area[label]]))
    return out


class LvisEvaluator(PartEvaluator):
    """LVIS-style (federated) mask AP of a dataset with an LVIS json, without the ``lvis`` package.

    Predictions are collected as by :class:`PartEvaluator` (contiguous category ids); the
    contiguous id k is the k-th category of the LVIS json (metadata ``json_file``) by id, as the
    part json loaders number them. Images evaluated are those processed. Reports
    ``OrderedDict(segm={AP, AP50, ..., APr, APc, APf, AR@max_dets, ...})`` in percent.
    """

    @configurable
    def __init__(self, dataset_name: str, output_dir: Optional[str] = None, max_dets: int = 300,
                 distributed: bool = True):
        """
        Args:
            dataset_name: a dataset whose metadata ``json_file`` is an LVIS json.
            output_dir: where ``part_predictions.json`` is written.
            max_dets: detections kept per image.
            distributed: gather predictions from all processes and evaluate on the main one.
        """
        super().__init__(dataset_name, output_dir=output_dir, distributed=distributed)
        self._lvis_max_dets = int(max_dets)

    @classmethod
    def from_config(cls, cfg, dataset_name: str, output_dir: Optional[str] = None):
        return {"dataset_name": dataset_name, "output_dir": output_dir, "max_dets": cfg.TEST.LVIS_EVAL.MAX_DETS}

    def evaluate(self):
        predictions = gather_on_main(self._predictions, self._distributed)
        if predictions is None:  # not the main process
            return {}
        if not predictions:
            logger.warning("LvisEvaluator: no predictions were processed; nothing to evaluate")
            return {}
        results = [r for p in predictions for r in p["results"]]
        if self._output_dir:
            PathManager.mkdirs(self._output_dir)
            with PathManager.open(os.path.join(self._output_dir, PREDICTIONS_FILE), "w") as f:
                json.dump(results, f)
        json_file = MetadataCatalog.get(self._dataset_name).get("json_file")
        if not json_file:
            raise ValueError(f"LvisEvaluator: dataset {self._dataset_name} has no metadata json_file (an LVIS json)")
        with PathManager.open(json_file) as f:
            gt = json.load(f)
        cat_ids = sorted(c["id"] for c in gt["categories"])
        num_classes = len(MetadataCatalog.get(self._dataset_name).get("thing_classes", cat_ids))
        if num_classes != len(cat_ids):
            raise ValueError(f"{json_file}: {len(cat_ids)} categories, dataset {self._dataset_name} has {num_classes}")
        results = [dict(r, category_id=cat_ids[r["category_id"]]) for r in results]
        img_ids = {p["image_id"] for p in predictions}
        if len(img_ids) < len(gt["images"]):
            logger.warning(f"LvisEvaluator: evaluating {len(img_ids)} of the {len(gt['images'])} images")
        metrics = summarize_lvis(evaluate_lvis(gt, results, "segm", self._lvis_max_dets, img_ids=img_ids))
        logger.info(f"LVIS-style mask AP on {self._dataset_name}:\n" + create_small_table(metrics))
        return OrderedDict(segm=metrics)

