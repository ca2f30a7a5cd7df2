"""COCO-style AP/AR with pycocotools' ``COCOeval`` semantics, vectorised with numpy.

:func:`evaluate_coco` reproduces ``COCOeval.evaluate`` + ``accumulate`` for ``iouType`` "segm" and
"bbox" (per-category or class-agnostic) and returns the same precision/recall arrays; only the
IoU itself is delegated to ``pycocotools.mask.iou``. The semantics kept on purpose:

- images: every image of the ground truth (or ``img_ids``); categories: every category listed in
  the ground truth, so categories and area ranges without ground truth get -1;
- ``iscrowd`` ground truth is ignored, and its IoU is intersection / detection area;
- ground truth whose ``area`` field is outside an area range is ignored for that range, and so
  is an unmatched detection whose area (mask area for "segm", box area for "bbox") is outside it;
- per image (and category), detections are sorted by descending score with a stable sort
  (class-agnostic: ties keep category order, then input order) and cut to ``max(max_dets)``;
- greedy matching in that order: the best-IoU ground truth above the threshold, non-ignored
  ground truth first, the later one on equal IoU; crowd ground truth may match many times;
- precision is made monotone from the right and read at 101 recall thresholds, 0 past the last
  recall reached.

The ``ignore`` field of ground truth is not used (pycocotools overwrites it with ``iscrowd``).
Detections of images or categories absent from the ground truth are dropped like pycocotools
does for categories; detections of unknown images raise, as in ``COCO.loadRes``.
"""
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pycocotools.mask as mask_util

from part_d2.structures.masks import segmentation_to_rle

AREA_RANGES = ((0.0, 1e5**2), (0.0, 32.0**2), (32.0**2, 96.0**2), (96.0**2, 1e5**2))
AREA_LABELS = ("all", "small", "medium", "large")
_AREA_CHUNK = 255
_SMALL_DET_LABELS = {"small": "s", "medium": "m", "large": "l"}


def _iou_thresholds() -> np.ndarray:
    return np.linspace(0.5, 0.95, 10)


def _recall_thresholds() -> np.ndarray:
    return np.linspace(0.0, 1.0, 101)


@dataclass(frozen=True)
class EvalParams:
    """Evaluation settings; the defaults are pycocotools' except ``max_dets``.

    Attributes:
        iou_type: "segm" or "bbox".
        use_cats: per-category evaluation (True) or class-agnostic (pycocotools ``useCats=0``).
        max_dets: detections per image at which recall is reported; AP uses the largest.
        iou_thrs: (T,) IoU thresholds.
        rec_thrs: (R,) recall thresholds of the interpolated precision.
        area_rngs: A (min, max) area ranges, bounds included.
        area_labels: A names of the area ranges; "all", "small", "medium", "large" are summarised.
    """

    iou_type: str = "segm"
    use_cats: bool = True
    max_dets: Tuple[int, ...] = (1, 10, 100, 200)
    iou_thrs: np.ndarray = field(default_factory=_iou_thresholds)
    rec_thrs: np.ndarray = field(default_factory=_recall_thresholds)
    area_rngs: Tuple[Tuple[float, float], ...] = AREA_RANGES
    area_labels: Tuple[str, ...] = AREA_LABELS

    def __post_init__(self):
        if self.iou_type not in ("segm", "bbox"):
            raise ValueError(f"iou_type must be 'segm' or 'bbox', got {self.iou_type!r}")
        if len(self.max_dets) == 0 or min(self.max_dets) < 1:
            raise ValueError(f"max_dets must be positive integers, got {self.max_dets}")
        if len(self.area_rngs) != len(self.area_labels):
            raise ValueError("area_rngs and area_labels must have the same length")
        object.__setattr__(self, "max_dets", tuple(sorted(int(m) for m in self.max_dets)))


@dataclass
class CocoEvalResult:
    """Accumulated evaluation, laid out like pycocotools' ``COCOeval.eval``.

    Attributes:
        params: the settings used.
        img_ids: the I evaluated image ids, sorted.
        cat_ids: the K evaluated category ids, sorted (``[-1]`` when class-agnostic).
        precision: (T, R, K, A, M) float, -1 where there is no non-ignored ground truth.
        recall: (T, K, A, M) float, -1 likewise.
        scores: (T, R, K, A, M) float, detection score at each recall threshold.
    """

    params: EvalParams
    img_ids: List
    cat_ids: List
    precision: np.ndarray
    recall: np.ndarray
    scores: np.ndarray


@dataclass
class _Table:
    """Ground truth or detections of the evaluated images/categories as flat arrays.

    Entries are ordered by group (image, then category when ``use_cats``) and, inside a group,
    in pycocotools' order; ``starts`` (I*K' + 1,) holds the group boundaries.
    """

    regions: List  # RLEs or XYWH boxes
    area: np.ndarray  # (N,) float
    crowd: np.ndarray  # (N,) bool
    score: np.ndarray  # (N,) float
    starts: np.ndarray  # (num_groups + 1,) int


def evaluate_coco(
    gt: Dict, detections: Sequence[Dict], params: Optional[EvalParams] = None, img_ids=None
) -> CocoEvalResult:
    """Evaluate detections against COCO ground truth exactly like pycocotools' COCOeval.

    Args:
        gt: COCO dataset dict with "images" (``id``, ``height``, ``width``), "categories"
            (``id``) and "annotations" (``image_id``, ``category_id``, ``area``, ``iscrowd``,
            ``segmentation`` as polygons or RLE for "segm", ``bbox`` XYWH for "bbox").
        detections: COCO results: ``image_id``, ``category_id``, ``score`` and a compressed RLE
            ``segmentation`` ("segm") or ``bbox`` ("bbox").
        params: evaluation settings (default :class:`EvalParams`).
        img_ids: evaluate only these images (default: every ground-truth image).
    Returns:
        the accumulated :class:`CocoEvalResult`.
    """
    params = params or EvalParams()
    images = {img["id"]: img for img in gt["images"]}
    img_ids = sorted(set(images) if img_ids is None else set(img_ids))
    unknown = [i for i in img_ids if i not in images]
    if unknown:
        raise ValueError(f"{len(unknown)} image id(s) to evaluate are not in the ground truth, e.g. {unknown[0]!r}")
    cat_ids = sorted({c["id"] for c in gt["categories"]})
    det_images = {d["image_id"] for d in detections}
    if not det_images <= set(images):
        missing = sorted(det_images - set(images), key=str)
        raise ValueError(f"detections of {len(missing)} image(s) unknown to the ground truth, e.g. {missing[0]!r}")

    gts = _build_table(gt["annotations"], images, img_ids, cat_ids, params, is_gt=True)
    dts = _build_table(detections, images, img_ids, cat_ids, params, is_gt=False)
    num_k = len(cat_ids) if params.use_cats else 1
    gt_ignore = _gt_ignore(gts, params)  # (A, G)
    det_tp, det_fp = _evaluate_groups(gts, dts, gt_ignore, params)
    group_k = np.tile(np.arange(num_k), len(img_ids))  # category index of each group
    gt_k = np.repeat(group_k, np.diff(gts.starts))
    det_k = np.repeat(group_k, np.diff(dts.starts))
    det_img = np.repeat(np.repeat(np.arange(len(img_ids)), num_k), np.diff(dts.starts))
    det_rank = np.arange(len(dts.score)) - np.repeat(dts.starts[:-1], np.diff(dts.starts))
    num_pos = np.stack([np.bincount(gt_k[~ig], minlength=num_k) for ig in gt_ignore], axis=1)  # (K, A)
    precision, recall, scores = _accumulate(
        det_tp, det_fp, dts.score, det_k, det_img, det_rank, num_pos, params
    )
    return CocoEvalResult(
        params=params,
        img_ids=img_ids,
        cat_ids=cat_ids if params.use_cats else [-1],
        precision=precision,
        recall=recall,
        scores=scores,
    )


def _build_table(anns, images, img_ids, cat_ids, params: EvalParams, is_gt: bool) -> _Table:
    """Keep the annotations of evaluated images and categories, in pycocotools' group order.

    Detections are sorted by descending score inside their group and cut to ``max(max_dets)``.
    """
    img_index = {i: n for n, i in enumerate(img_ids)}
    cat_index = {c: n for n, c in enumerate(cat_ids)}
    kind = "annotation" if is_gt else "detection"
    try:
        kept = [
            n for n, a in enumerate(anns) if a["image_id"] in img_index and a["category_id"] in cat_index
        ]
    except KeyError as e:
        raise ValueError(f"a {kind} has no {e.args[0]!r} field") from None
    img_idx = np.array([img_index[anns[n]["image_id"]] for n in kept], dtype=np.int64)
    cat_idx = np.array([cat_index[anns[n]["category_id"]] for n in kept], dtype=np.int64)
    neg_score = np.zeros(len(kept)) if is_gt else -np.array([float(anns[n]["score"]) for n in kept])
    num_k = len(cat_ids) if params.use_cats else 1
    group = img_idx * num_k + (cat_idx if params.use_cats else 0)
    order = np.lexsort((np.arange(len(kept)), cat_idx, neg_score, group))
    counts = np.bincount(group, minlength=len(img_ids) * num_k)
    starts = np.concatenate([[0], np.cumsum(counts)])
    if not is_gt:
        rank = np.arange(len(order)) - np.repeat(starts[:-1], counts)
        order = order[rank < params.max_dets[-1]]
        counts = np.minimum(counts, params.max_dets[-1])
        starts = np.concatenate([[0], np.cumsum(counts)])
    sel = [anns[kept[n]] for n in order]
    regions = [_region(a, images[a["image_id"]], params.iou_type, kind) for a in sel]
    if is_gt:
        area = np.array([_field(a, "area", kind) for a in sel], dtype=np.float64)
        crowd = np.array([bool(a.get("iscrowd", 0)) for a in sel], dtype=bool)
    else:
        area = _region_areas(regions, params.iou_type)
        crowd = np.zeros(len(sel), dtype=bool)
    return _Table(regions, area, crowd, -neg_score[order], starts)


def _field(ann: Dict, key: str, kind: str):
    if key not in ann:
        raise ValueError(f"{kind} of image {ann.get('image_id')!r} has no {key!r} field")
    return ann[key]


def _region(ann: Dict, img: Dict, iou_type: str, kind: str):
    """The region compared by IoU: a compressed RLE ("segm") or an XYWH box ("bbox")."""
    if iou_type == "bbox":
        return [float(v) for v in _field(ann, "bbox", kind)]
    segm = _field(ann, "segmentation", kind)
    is_compressed = isinstance(segm, dict) and isinstance(segm.get("counts"), (str, bytes))
    rle = segm if is_compressed else segmentation_to_rle(segm, img["height"], img["width"])
    if list(rle["size"]) != [img["height"], img["width"]]:
        raise ValueError(
            f"{kind} of image {ann['image_id']!r} has a mask of size {rle['size']}, "
            f"the image is {img['height']}x{img['width']}"
        )
    return rle


def _region_areas(regions: List, iou_type: str) -> np.ndarray:
    """(N,) float areas of detections: mask pixels ("segm") or box width * height ("bbox")."""
    if not regions:
        return np.zeros(0)
    if iou_type == "bbox":
        boxes = np.asarray(regions, dtype=np.float64)
        return boxes[:, 2] * boxes[:, 3]
    # pycocotools 2.0.11's area() overflows on more than 255 RLEs per call with numpy 2
    chunks = [mask_util.area(regions[i : i + _AREA_CHUNK]) for i in range(0, len(regions), _AREA_CHUNK)]
    return np.concatenate(chunks).astype(np.float64)


def _gt_ignore(gts: _Table, params: EvalParams) -> np.ndarray:
    """(A, G) bool: crowd ground truth, or ``area`` outside each area range."""
    rngs = np.asarray(params.area_rngs, dtype=np.float64)
    outside = (gts.area[None] < rngs[:, :1]) | (gts.area[None] > rngs[:, 1:])
    return outside | gts.crowd[None]


def _evaluate_groups(
    gts: _Table, dts: _Table, gt_ignore: np.ndarray, params: EvalParams
) -> Tuple[np.ndarray, np.ndarray]:
    """Match every group's detections to its ground truth.

    Args:
        gt_ignore: (A, G) bool ignore flags of ``gts`` per area range.
    Returns:
        det_tp, det_fp: (D, A, T) bool, true and false positives (ignored detections are
        neither) of every kept detection.
    """
    rngs = np.asarray(params.area_rngs, dtype=np.float64)
    det_outside = (dts.area[None] < rngs[:, :1]) | (dts.area[None] > rngs[:, 1:])  # (A, D)
    num_a, num_t = len(rngs), len(params.iou_thrs)
    matched = np.zeros((num_a, num_t, len(dts.score)), dtype=bool)
    matched_ignored = np.zeros_like(matched)
    for g in range(len(gts.starts) - 1):
        g0, g1 = gts.starts[g], gts.starts[g + 1]
        d0, d1 = dts.starts[g], dts.starts[g + 1]
        if g1 == g0 or d1 == d0:
            continue
        ious = np.asarray(
            mask_util.iou(dts.regions[d0:d1], gts.regions[g0:g1], gts.crowd[g0:g1].astype(np.uint8)),
            dtype=np.float64,
        )
        match = greedy_match(ious, gt_ignore[:, g0:g1], gts.crowd[g0:g1], params.iou_thrs)
        found = match >= 0
        matched[:, :, d0:d1] = found
        ig = np.take_along_axis(gt_ignore[:, g0:g1][:, None, :], np.maximum(match, 0), axis=2)
        matched_ignored[:, :, d0:d1] = found & ig
    det_ignore = matched_ignored | (~matched & det_outside[:, None, :])
    det_tp = matched & ~det_ignore
    det_fp = ~matched & ~det_ignore
    return det_tp.transpose(2, 0, 1), det_fp.transpose(2, 0, 1)


def greedy_match(
    ious: np.ndarray, gt_ignore: np.ndarray, gt_crowd: np.ndarray, iou_thrs: np.ndarray
) -> np.ndarray:
    """pycocotools' greedy matching of one image (and category), for all area ranges at once.

    Detections, taken in row order (descending score), each match the available ground truth
    of highest IoU >= the threshold (capped at 1 - 1e-10), preferring non-ignored ground truth
    and, on equal IoU, the later column. Matched non-crowd ground truth becomes unavailable.

    Args:
        ious: (D, G) float IoU of detections (sorted by score) with ground truth.
        gt_ignore: (A, G) bool ignore flag of each ground truth per area range.
        gt_crowd: (G,) bool crowd flag (a crowd can be matched any number of times).
        iou_thrs: (T,) float IoU thresholds.
    Returns:
        (A, T, D) int64: column of the matched ground truth, -1 if unmatched.
    """
    num_a, num_t = gt_ignore.shape[0], len(iou_thrs)
    num_d, num_g = ious.shape
    thrs = np.minimum(np.asarray(iou_thrs, dtype=np.float64), 1 - 1e-10)
    match = np.full((num_a, num_t, num_d), -1, dtype=np.int64)
    if num_d == 0 or num_g == 0:
        return match
    hits = ious[:, None, :] >= thrs[None, :, None]  # (D, T, G)
    # exact preference key: any non-ignored GT beats every ignored one, then higher IoU
    _, iou_rank = np.unique(ious, return_inverse=True)
    iou_rank = iou_rank.reshape(num_d, num_g)
    key = iou_rank[None] + (iou_rank.max() + 1) * (~gt_ignore[:, None, :])  # (A, D, G)
    free = np.ones((num_a * num_t, num_g), dtype=bool)
    flat_at = np.arange(num_a * num_t)
    for d in np.flatnonzero(hits.any(axis=(1, 2))):
        ok = hits[d][None] & free.reshape(num_a, num_t, num_g)
        score = np.where(ok, key[:, d, None, :], -1).reshape(num_a * num_t, num_g)
        best = num_g - 1 - np.argmax(score[:, ::-1], axis=1)  # last of equal keys
        found = score[flat_at, best] >= 0
        match[:, :, d] = np.where(found, best, -1).reshape(num_a, num_t)
        used = found & ~gt_crowd[best]
        free[flat_at[used], best[used]] = False
    return match


def _accumulate(det_tp, det_fp, det_score, det_k, det_img, det_rank, num_pos, params: EvalParams):
    """Precision/recall curves per category, area range and max detections.

    Args:
        det_tp, det_fp: (D, A, T) bool.
        det_score, det_k, det_img, det_rank: (D,) score, category index, image index and rank
            of each detection inside its group.
        num_pos: (K, A) int number of non-ignored ground truth.
    Returns:
        precision (T, R, K, A, M), recall (T, K, A, M), scores (T, R, K, A, M).
    """
    num_t, num_r = len(params.iou_thrs), len(params.rec_thrs)
    num_k, num_a = num_pos.shape
    num_m = len(params.max_dets)
    precision = -np.ones((num_t, num_r, num_k, num_a, num_m))
    recall = -np.ones((num_t, num_k, num_a, num_m))
    scores = -np.ones((num_t, num_r, num_k, num_a, num_m))
    order = np.lexsort((det_rank, det_img, -det_score, det_k))
    bounds = np.searchsorted(det_k[order], np.arange(num_k + 1), side="left")
    for k in range(num_k):
        areas = np.flatnonzero(num_pos[k] > 0)
        if len(areas) == 0:
            continue
        seg = order[bounds[k] : bounds[k + 1]]
        for m, max_det in enumerate(params.max_dets):
            sel = seg[det_rank[seg] < max_det]
            q, s, rc = _precision_at_recalls(
                det_tp[sel][:, areas], det_fp[sel][:, areas], det_score[sel], num_pos[k, areas], params.rec_thrs
            )
            precision[:, :, k, areas, m] = q.transpose(1, 2, 0)
            scores[:, :, k, areas, m] = s.transpose(1, 2, 0)
            recall[:, k, areas, m] = rc.T
    return precision, recall, scores


def _precision_at_recalls(tp, fp, score, num_pos, rec_thrs):
    """Interpolated precision of one category for several area ranges.

    Args:
        tp, fp: (N, A, T) bool, detections sorted by descending score.
        score: (N,) float sorted scores.
        num_pos: (A,) int > 0 non-ignored ground truth.
        rec_thrs: (R,) float.
    Returns:
        precision (A, T, R), score (A, T, R) at each recall threshold, and final recall (A, T).
    """
    num_n = tp.shape[0]
    tp_sum = np.cumsum(tp, axis=0).astype(np.float64).transpose(1, 2, 0)  # (A, T, N)
    fp_sum = np.cumsum(fp, axis=0).astype(np.float64).transpose(1, 2, 0)
    rc = tp_sum / num_pos[:, None, None]
    pr = tp_sum / (fp_sum + tp_sum + np.spacing(1))
    pr = np.maximum.accumulate(pr[:, :, ::-1], axis=2)[:, :, ::-1]
    q = np.zeros(rc.shape[:2] + (len(rec_thrs),))
    s = np.zeros_like(q)
    final = rc[:, :, -1] if num_n else np.zeros(rc.shape[:2])
    if num_n == 0:
        return q, s, final
    for a in range(rc.shape[0]):
        for t in range(rc.shape[1]):
            inds = np.searchsorted(rc[a, t], rec_thrs, side="left")
            valid = inds < num_n
            q[a, t, valid] = pr[a, t, inds[valid]]
            s[a, t, valid] = score[inds[valid]]
    return q, s, final


def _mean_valid(values: np.ndarray) -> float:
    """pycocotools' summary: mean over entries > -1, or -1 if there is none."""
    valid = values[values > -1]
    return float(np.mean(valid)) if valid.size else -1.0


def _percent(value: float) -> float:
    return value * 100 if value >= 0 else float("nan")


def summarize(result: CocoEvalResult) -> Dict[str, float]:
    """detectron2-style summary in percent (NaN where pycocotools reports -1).

    Keys: AP, AP50, AP75, APs, APm, APl at the largest ``max_dets``; ``AR@{m}`` for each
    ``max_dets`` m; ARs, ARm, ARl at the largest (``ARs@{max}``...).
    """
    p = result.params
    area = {label: n for n, label in enumerate(p.area_labels)}
    last = len(p.max_dets) - 1
    prec, rec = result.precision, result.recall
    out = {"AP": _percent(_mean_valid(prec[:, :, :, area["all"], last]))}
    for thr in (0.5, 0.75):
        t = np.flatnonzero(np.isclose(p.iou_thrs, thr))
        out[f"AP{round(thr * 100)}"] = _percent(_mean_valid(prec[t][:, :, :, area["all"], last]))
    for label, short in _SMALL_DET_LABELS.items():
        if label in area:
            out[f"AP{short}"] = _percent(_mean_valid(prec[:, :, :, area[label], last]))
    for m, max_det in enumerate(p.max_dets):
        out[f"AR@{max_det}"] = _percent(_mean_valid(rec[:, :, area["all"], m]))
    for label, short in _SMALL_DET_LABELS.items():
        if label in area:
            out[f"AR{short}@{p.max_dets[-1]}"] = _percent(_mean_valid(rec[:, :, area[label], last]))
    return out


def per_category_ap(result: CocoEvalResult) -> Dict:
    """AP in percent of each category (area "all", largest ``max_dets``), keyed by category id."""
    prec = result.precision[:, :, :, result.params.area_labels.index("all"), -1]
    return {c: _percent(_mean_valid(prec[:, :, k])) for k, c in enumerate(result.cat_ids)}
