"""Time part_d2's evaluators side by side with faster-coco-eval, the C++ drop-in for COCOeval.

Two workloads, each timed in alternation (part_d2, faster-coco-eval, part_d2, ...; medians):

- COCO: bench_evaluator's 1000 images x 200 detections, class-agnostic mask AP + AR@1/10/100/200.
  faster-coco-eval's ``COCOeval_faster`` (useCats=0) must give the same precision, recall and score
  arrays bit for bit, but for one known last-bit difference (where a precision curve starts with a lone
  true positive, pycocotools and part_d2 have 1 / (1 + eps) = 1 - 2**-52, faster-coco-eval 1.0), and
  the same 13 summary numbers to 1e-12 points, else the case raises; the differences are reported.
- LVIS: bench_lvis_evaluator's 500 images x 300 categories x 100 detections, federated AP, APr/c/f,
  AR@300; faster-coco-eval with ``lvis_style=True`` and maxDets [300]. Its numbers are not LVISEval's
  (part_d2's are, asserted against LVISEval here): it keeps ground truth and detections with an empty
  mask, which LVISEval drops; the difference is reported, and measured again on the same data
  without empty masks to show that this (and the last-bit difference above) is all that differs.

faster-coco-eval's timing leaves out building its ground-truth ``COCO`` index (as the pycocotools
baseline of bench_evaluator does) and the copies of the inputs it annotates in place; it runs with
its default IoU threads (``rle_iou_max_workers=8``, capped at the CPUs available), part_d2 on one.
pycocotools' COCOeval and lvis 0.5.3's LVISEval are timed once each as the reference. Example::

    OMP_NUM_THREADS=2 python bench/run_all.py --cases fce_evaluator --output output/bench_eval
"""
import copy
import time

import bench_evaluator
import bench_lvis_evaluator
import numpy as np
from common import interleaved_self_timed, ratio_row, scaled

from part_d2.evaluation import EvalParams, evaluate_coco, summarize
from part_d2.evaluation.lvis_eval import evaluate_lvis, summarize_lvis

ITERS = 5
LONE_TP_PRECISION = 1.0 / (1.0 + np.spacing(1))  # pycocotools' precision after one true positive
# part_d2 summary key -> faster-coco-eval ``stats_as_dict`` key
COCO_KEYS = {"AP": "AP_all", "AP50": "AP_50", "AP75": "AP_75", "APs": "AP_small", "APm": "AP_medium",
             "APl": "AP_large", **{f"AR@{m}": f"AR_{m}" for m in bench_evaluator.MAX_DETS},
             "ARs@200": "AR_small", "ARm@200": "AR_medium", "ARl@200": "AR_large"}
LVIS_KEYS = {"AP": "AP_all", "AP50": "AP_50", "AP75": "AP_75", "APs": "AP_small", "APm": "AP_medium",
             "APl": "AP_large", "APr": "APr", "APc": "APc", "APf": "APf", "AR@300": "AR_all",
             "ARs@300": "AR_small", "ARm@300": "AR_medium", "ARl@300": "AR_large"}


def _copy_anns(anns):
    """Copies of annotation dicts (and their segmentation dicts), which faster-coco-eval annotates."""
    return [{**a, "segmentation": dict(a["segmentation"])} for a in anns]


def run_fce(gt, dets, lvis_style: bool):
    """faster-coco-eval on fresh copies; returns ``(COCOeval_faster, seconds)``, without the time of
    building the ground-truth index."""
    from faster_coco_eval import COCO, COCOeval_faster

    coco_gt = COCO(dict(gt, annotations=_copy_anns(gt["annotations"])))
    dets = _copy_anns(dets)
    start = time.perf_counter()
    ev = COCOeval_faster(coco_gt, coco_gt.loadRes(dets), "segm", print_function=lambda *a, **k: None,
                         lvis_style=lvis_style)
    if lvis_style:
        ev.params.maxDets = [300]
    else:
        ev.params.useCats = 0
        ev.params.maxDets = list(bench_evaluator.MAX_DETS)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return ev, time.perf_counter() - start


def differences(ours_arrays, ours_stats, ev, keys) -> dict:
    """How far faster-coco-eval's arrays and summary are from part_d2's (= pycocotools' / LVISEval's).

    Args:
        ours_arrays: {"precision": (T, R, K, A[, M]), "recall": (T, K, A[, M]), ...} of part_d2.
        ours_stats: part_d2's summary in percent.
        ev: faster-coco-eval after summarize(); its arrays have a trailing M axis.
        keys: part_d2 summary key -> faster-coco-eval stats key.
    Returns:
        {"arrays": max abs difference, "last_bit": number of precision entries where faster-coco-eval has
        1.0 and pycocotools' ``tp / (fp + tp + eps)`` with tp = 1, fp = 0 gives 1 - 2**-52, "other": number
        of any other differing entries, "summary": max abs difference of the summary numbers in points,
        "same_missing": whether the -1 / NaN entries coincide}.
    """
    arrays, last_bit, other = 0.0, 0, 0
    for name, ours in ours_arrays.items():
        theirs = np.asarray(ev.eval[name]).reshape(ours.shape)
        differ = ours != theirs
        if name == "precision":
            lone_tp = differ & (theirs == 1.0) & (ours == LONE_TP_PRECISION)
            last_bit += int(lone_tp.sum())
            differ &= ~lone_tp
        other += int(differ.sum())
        arrays = max(arrays, float(np.abs(ours - theirs).max()))
    theirs_stats = ev.stats_as_dict
    ours_v = np.array([ours_stats[k] for k in keys])
    theirs_v = np.array([np.nan if theirs_stats[v] < 0 else 100 * theirs_stats[v] for v in keys.values()])
    same_missing = bool(np.array_equal(np.isnan(ours_v), np.isnan(theirs_v)))
    summary = float(np.nanmax(np.abs(ours_v - theirs_v))) if not np.isnan(ours_v).all() else 0.0
    return {"arrays": arrays, "last_bit": last_bit, "other": other, "summary": summary, "same_missing": same_missing}


def describe(diff: dict) -> str:
    """One-line account of :func:`differences`."""
    if diff["arrays"] == 0 and diff["summary"] == 0 and diff["same_missing"]:
        return "identical arrays and summary (max abs diff 0)"
    return (f"{diff['last_bit']} precision entries 1.0 instead of 1 - 2^-52, {diff['other']} other differing "
            f"entries (max abs diff {diff['arrays']:.2g}); summary max abs diff {diff['summary']:.2g} points"
            + ("" if diff["same_missing"] else ", missing entries differ"))


def _without_empty_masks(gt, dets):
    """The LVIS workload without ground truth or detections whose mask is empty."""
    from pycocotools import mask as mask_util

    keep = [d for d in dets if mask_util.area(d["segmentation"]) > 0]
    return dict(gt, annotations=[a for a in gt["annotations"] if a["area"] > 0]), keep


def coco_case(num_images: int, seed: int, iters: int):
    """Rows of the class-agnostic COCO workload and its details."""
    gt, dets = bench_evaluator.make_data(num_images, 200, 64, seed)
    last = {}

    def ours():
        start = time.perf_counter()
        result = evaluate_coco(gt, dets, EvalParams(use_cats=False, max_dets=bench_evaluator.MAX_DETS))
        last["ours"] = (result, summarize(result))
        return time.perf_counter() - start

    def fce():
        last["fce"], seconds = run_fce(gt, dets, lvis_style=False)
        return seconds

    times = interleaved_self_timed({"part_d2": ours, "fce": fce}, iters)
    result, stats = last["ours"]
    diff = differences({"precision": result.precision, "recall": result.recall, "scores": result.scores},
                       stats, last["fce"], COCO_KEYS)
    if diff["other"] or diff["summary"] > 1e-12 or not diff["same_missing"]:
        raise AssertionError(f"part_d2 and faster-coco-eval differ on the COCO workload: {diff}")
    ref = bench_evaluator.compare(copy.deepcopy(gt), copy.deepcopy(dets))  # asserts part_d2 == pycocotools
    label = f"{num_images} images x 200 detections, class-agnostic AP + AR@200"
    rows = [
        ratio_row(f"{label}, vs faster-coco-eval (medians of {iters}, alternating)", "s", times["fce"],
                  times["part_d2"], 1.0, f"faster-coco-eval vs part_d2 (precision, recall, scores, 13 summary "
                  f"numbers): {describe(diff)}; AP {stats['AP']:.3f}, AR@200 {stats['AR@200']:.3f}"),
        ratio_row(f"{label}, vs pycocotools COCOeval (one run; part_d2: the median above)", "s",
                  ref["pycocotools_s"], times["part_d2"], 1.0, "identical to pycocotools (atol 1e-9)"),
    ]
    return rows, {"times": times, "pycocotools_s": ref["pycocotools_s"], "stats": stats, "fce_diff": diff}


def lvis_case(num_images: int, num_cats: int, seed: int, iters: int):
    """Rows of the federated LVIS workload and its details."""
    gt, dets = bench_lvis_evaluator.make_data(num_images, num_cats, 100, 128, seed)
    last = {}

    def ours():
        start = time.perf_counter()
        result = evaluate_lvis(gt, dets, "segm", 300)
        last["ours"] = (result, summarize_lvis(result))
        return time.perf_counter() - start

    def fce():
        last["fce"], seconds = run_fce(gt, dets, lvis_style=True)
        return seconds

    times = interleaved_self_timed({"part_d2": ours, "fce": fce}, iters)
    result, stats = last["ours"]
    arrays = {"precision": result.precision, "recall": result.recall}
    diff = differences(arrays, stats, last["fce"], LVIS_KEYS)
    clean_diff = differences(arrays, stats, run_fce(*_without_empty_masks(gt, dets), lvis_style=True)[0],
                             LVIS_KEYS)
    ref = bench_lvis_evaluator.compare(gt, dets)  # part_d2 vs LVISEval
    empty = (sum(a["area"] == 0 for a in gt["annotations"]), len(dets) - len(_without_empty_masks(gt, dets)[1]))
    label = f"{num_images} images x {num_cats} categories x 100 detections, AP + APr/c/f + AR@300"
    quality = (f"part_d2 identical to LVISEval (max abs diff {ref['max_abs_diff']:.1e}); faster-coco-eval vs "
               f"part_d2: {describe(diff)}; it keeps the {empty[0]} ground truth and {empty[1]} detections with "
               f"an empty mask that LVISEval drops; without them: {describe(clean_diff)}")
    rows = [
        ratio_row(f"{label}, vs faster-coco-eval lvis_style (medians of {iters}, alternating)", "s",
                  times["fce"], times["part_d2"], 1.0, quality, quality_ok=ref["identical"]),
        ratio_row(f"{label}, vs lvis 0.5.3 LVISEval (one run; part_d2: the median above)", "s", ref["lvis_s"],
                  times["part_d2"], 1.0, "identical to LVISEval", quality_ok=ref["identical"]),
    ]
    details = {"times": times, "lvis_s": ref["lvis_s"], "stats": stats, "fce_diff": diff,
               "fce_diff_without_empty_masks": clean_diff, "empty_gt": int(empty[0]), "empty_dets": int(empty[1])}
    return rows, details


def run(scale: float = 1.0, device: str = "cpu", seed: int = 0, iters: int = ITERS) -> dict:
    """Benchmark-suite entry (CPU only; ``device`` is recorded): ``1000 * scale`` images for COCO,
    ``500 * scale`` images x ``300 * scale`` categories for LVIS."""
    import faster_coco_eval

    coco_images = scaled(1000, scale)
    lvis_images, lvis_cats = scaled(500, scale), scaled(300, scale, minimum=10)
    coco_rows, coco_details = coco_case(coco_images, seed, iters)
    lvis_rows, lvis_details = lvis_case(lvis_images, lvis_cats, seed, iters)
    return {
        "case": "fce_evaluator",
        "title": "Evaluators vs faster-coco-eval (COCO class-agnostic; LVIS-style federated)",
        "params": {"coco_images": coco_images, "lvis_images": lvis_images, "lvis_categories": lvis_cats,
                   "iters": iters, "faster_coco_eval": faster_coco_eval.__version__, "device": "cpu", "seed": seed},
        "rows": coco_rows + lvis_rows,
        "details": {"coco": coco_details, "lvis": lvis_details},
        "notes": [
            "faster-coco-eval timed from loadRes to summarize (its ground-truth COCO index and the input copies "
            "left out), with its default IoU threads; part_d2 from the input dicts to its summary, one thread",
            "LVIS: faster-coco-eval's maxDets=300 applies per image and category, LVISEval's per image; with 100 "
            "detections per image both keep all",
        ],
    }
