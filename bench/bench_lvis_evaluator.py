"""Time part_d2's LVIS-style evaluation against lvis 0.5.3's LVISEval on the same random data.

Federated mask AP (AP, APr/c/f, AR@300) of 500 images x 300 categories with negative and
not-exhaustive categories; both results are asserted identical before the timings are reported.
On numpy >= 1.24 ``np.float`` (removed there, used by LVISEval) is put back for the baseline.
Example::

    OMP_NUM_THREADS=2 python bench/run_all.py --cases lvis_evaluator
"""
import copy
import json
import logging
import os
import tempfile
import time

import numpy as np
from bench_evaluator import random_rects
from common import ratio_row, scaled

from part_d2.evaluation.lvis_eval import evaluate_lvis, summarize_lvis
from part_d2.structures.masks import masks_to_rles

FREQUENCIES = ("r", "c", "f")


def make_data(num_images: int, num_cats: int, dets_per_image: int, size: int, seed: int):
    """LVIS ground truth (1-6 positive categories per image, 1-3 parts each, up to 10 negative
    categories, 30% of the positives not exhaustive) and detections near the ground truth or
    random in positive, negative and unrelated categories."""
    rng = np.random.default_rng(seed)
    categories = [{"id": c, "frequency": FREQUENCIES[rng.integers(3)]} for c in range(1, num_cats + 1)]
    images, anns, dets = [], [], []
    for img_id in range(1, num_images + 1):
        present = rng.choice(np.arange(1, num_cats + 1), size=int(rng.integers(1, 7)), replace=False)
        absent = np.setdiff1d(np.arange(1, num_cats + 1), present)
        neg = rng.choice(absent, size=min(int(rng.integers(0, 11)), len(absent)), replace=False)
        nel = present[rng.random(len(present)) < 0.3]
        images.append({"id": img_id, "height": size, "width": size, "neg_category_ids": sorted(neg.tolist()),
                       "not_exhaustive_category_ids": sorted(nel.tolist())})
        gt_cats = np.repeat(present, rng.integers(1, 4, size=len(present)))
        gt = random_rects(rng, len(gt_cats), size, size)
        for mask, rle, c in zip(gt, masks_to_rles(gt), gt_cats):
            anns.append({"id": len(anns) + 1, "image_id": img_id, "category_id": int(c), "segmentation": rle,
                         "area": float(mask.sum())})
        masks = random_rects(rng, dets_per_image, size, size)
        det_cats = rng.choice(np.concatenate([present, present, neg, absent[:5]]), size=dets_per_image)
        near = rng.random(dets_per_image) < 0.3
        src = rng.integers(len(gt), size=int(near.sum()))
        shift = rng.integers(-2, 3, size=(int(near.sum()), 2))
        masks[near] = [np.roll(gt[s], tuple(d), axis=(0, 1)) for s, d in zip(src, shift)]
        det_cats[near] = gt_cats[src]
        scores = rng.random(dets_per_image).round(2)
        dets += [{"image_id": img_id, "category_id": int(c), "score": float(s), "segmentation": r}
                 for c, s, r in zip(det_cats, scores, masks_to_rles(masks))]
    return {"images": images, "categories": categories, "annotations": anns}, dets


def run_lvis_eval(gt, dets, max_dets: int):
    """lvis 0.5.3's LVISResults + LVISEval.run(); returns (LVISEval, seconds)."""
    import lvis

    if not hasattr(np, "float"):
        np.float = float  # removed in numpy 1.24, used by LVISEval.accumulate
    logging.getLogger("lvis").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "gt.json")
        with open(path, "w") as f:
            json.dump(gt, f)
        lvis_gt = lvis.LVIS(path)
        start = time.perf_counter()
        ev = lvis.LVISEval(lvis_gt, lvis.LVISResults(lvis_gt, dets, max_dets=max_dets), "segm")
        ev.run()
    return ev, time.perf_counter() - start


def compare(gt, dets, max_dets: int = 300):
    """Evaluate with both implementations; returns timings, summary and the max abs difference."""
    ref, ref_time = run_lvis_eval(gt, copy.deepcopy(dets), max_dets)
    start = time.perf_counter()
    ours = evaluate_lvis(gt, dets, "segm", max_dets)
    stats = summarize_lvis(ours)
    ours_time = time.perf_counter() - start
    theirs = np.array([np.nan if v == -1 else float(v) * 100 for v in ref.results.values()])
    diff = max(np.abs(ours.precision - ref.eval["precision"]).max(), np.abs(ours.recall - ref.eval["recall"]).max(),
               np.nanmax(np.abs(np.array(list(stats.values())) - theirs)))
    same_nan = np.array_equal(np.isnan(theirs), np.isnan(list(stats.values())))
    return {"lvis_s": ref_time, "part_d2_s": ours_time, "stats": stats, "max_abs_diff": float(diff),
            "identical": bool(diff == 0 and same_nan)}


def run(scale: float = 1.0, device: str = "cpu", seed: int = 0, size: int = 128) -> dict:
    """Benchmark-suite entry (CPU only; ``device`` is recorded): ``500 * scale`` images, ``300 * scale``
    categories, 100 detections per image."""
    num_images, num_cats = scaled(500, scale), scaled(300, scale, minimum=10)
    gt, dets = make_data(num_images, num_cats, 100, size, seed)
    result = compare(gt, dets)
    stats = result["stats"]
    quality = (f"precision/recall arrays and all 13 summary numbers identical to LVISEval (max abs diff "
               f"{result['max_abs_diff']:.1e}); AP {stats['AP']:.3f}, APr {stats['APr']:.3f}")
    row = ratio_row(f"{num_images} images x {num_cats} categories x 100 detections, AP + APr/c/f + AR@300", "s",
                    result["lvis_s"], result["part_d2_s"], 1.0, quality, quality_ok=result["identical"])
    return {
        "case": "lvis_evaluator",
        "title": "LVIS-style evaluator (federated AP, APr/c/f, AR@300)",
        "params": {"images": num_images, "categories": num_cats, "detections_per_image": 100, "image_size": size,
                   "device": "cpu", "seed": seed},
        "rows": [row],
        "details": {"stats": stats, "max_abs_diff": result["max_abs_diff"]},
        "notes": ["baseline = lvis 0.5.3 LVISResults(max_dets=300) + LVISEval.run() (segm); part_d2 = "
                  "evaluate_lvis + summarize_lvis"],
    }
