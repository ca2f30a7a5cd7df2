"""Time part_d2's COCO evaluation against pycocotools' COCOeval on the same random data.

Class-agnostic mask AP and AR@{1,10,100,200}; both results are asserted equal before the
timings are printed and written as JSON. Example::

    OMP_NUM_THREADS=1 python bench/bench_evaluator.py --images 1000 --dets 200 --output bench.json
"""
import argparse
import contextlib
import copy
import io
import json
import time

import numpy as np
from common import ratio_row
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from part_d2.evaluation import EvalParams, evaluate_coco, summarize
from part_d2.structures.masks import masks_to_rles

MAX_DETS = (1, 10, 100, 200)


def random_rects(rng, num, height, width):
    """(num, H, W) bool masks of random axis-aligned rectangles."""
    y = np.sort(rng.integers(0, height + 1, size=(num, 2)), axis=1)
    x = np.sort(rng.integers(0, width + 1, size=(num, 2)), axis=1)
    y[:, 1] = np.maximum(y[:, 1], y[:, 0] + 1)
    x[:, 1] = np.maximum(x[:, 1], x[:, 0] + 1)
    rows, cols = np.arange(height), np.arange(width)
    in_y = (rows[None] >= y[:, :1]) & (rows[None] < y[:, 1:])
    in_x = (cols[None] >= x[:, :1]) & (cols[None] < x[:, 1:])
    return in_y[:, :, None] & in_x[:, None, :]


def make_data(num_images: int, dets_per_image: int, size: int, seed: int):
    """COCO ground truth (up to 15 parts per image, 5% crowd) and detections near or off them."""
    rng = np.random.default_rng(seed)
    images, anns, dets = [], [], []
    for img_id in range(1, num_images + 1):
        images.append({"id": img_id, "height": size, "width": size})
        gt = random_rects(rng, int(rng.integers(0, 16)), size, size)
        for mask, rle in zip(gt, masks_to_rles(gt)):
            anns.append({"id": len(anns) + 1, "image_id": img_id, "category_id": 1, "segmentation": rle,
                         "area": float(mask.sum()), "iscrowd": int(rng.random() < 0.05)})
        masks = random_rects(rng, dets_per_image, size, size)
        if len(gt):
            near = rng.random(dets_per_image) < 0.3
            shift = rng.integers(-2, 3, size=(int(near.sum()), 2))
            src = gt[rng.integers(len(gt), size=int(near.sum()))]
            masks[near] = [np.roll(m, tuple(s), axis=(0, 1)) for m, s in zip(src, shift)]
        scores = rng.random(dets_per_image).round(2)
        dets += [{"image_id": img_id, "category_id": 1, "score": float(s), "segmentation": r}
                 for s, r in zip(scores, masks_to_rles(masks))]
    return {"images": images, "annotations": anns, "categories": [{"id": 1}]}, dets


def run_pycocotools(gt, dets):
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        start = time.perf_counter()
        coco_eval = COCOeval(coco_gt, coco_gt.loadRes(dets), "segm")
        coco_eval.params.useCats = 0
        coco_eval.params.maxDets = list(MAX_DETS)
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval, time.perf_counter() - start


def compare(gt, dets):
    """Evaluate with both implementations, assert identical numbers.

    Returns:
        dict: pycocotools and part_d2 seconds, part_d2's summary (AP, AR@k) and pycocotools' stats.
    """
    ref, ref_time = run_pycocotools(copy.deepcopy(gt), copy.deepcopy(dets))
    start = time.perf_counter()
    ours = evaluate_coco(gt, dets, EvalParams(use_cats=False, max_dets=MAX_DETS))
    stats = summarize(ours)
    ours_time = time.perf_counter() - start

    np.testing.assert_allclose(ours.precision, ref.eval["precision"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(ours.recall, ref.eval["recall"], rtol=0, atol=1e-9)
    for key, idx in (("AR@1", 6), ("AR@10", 7), ("AR@100", 8)):
        assert abs(stats[key] - 100 * ref.stats[idx]) < 1e-9, key
    return {"pycocotools_s": ref_time, "part_d2_s": ours_time, "stats": stats,
            "pycocotools_stats": [float(v) for v in ref.stats]}


def run(scale: float = 1.0, device: str = "cpu", seed: int = 0, dets_per_image: int = 200, size: int = 64) -> dict:
    """Benchmark-suite entry (CPU only; ``device`` is recorded): ``1000 * scale`` images."""
    num_images = max(1, int(round(1000 * scale)))
    gt, dets = make_data(num_images, dets_per_image, size, seed)
    result = compare(gt, dets)
    stats = result["stats"]
    quality = (f"precision/recall arrays and AR@1/10/100 identical to pycocotools (atol 1e-9); "
               f"AP {stats['AP']:.3f}, AR@200 {stats['AR@200']:.3f}")
    row = ratio_row(f"{num_images} images x {dets_per_image} detections, class-agnostic AP + AR@200", "s",
                    result["pycocotools_s"], result["part_d2_s"], 1.0, quality)
    return {
        "case": "evaluator",
        "title": "Evaluator (class-agnostic AP + AR@200)",
        "params": {"images": num_images, "detections_per_image": dets_per_image, "image_size": size,
                   "device": "cpu", "seed": seed},
        "rows": [row],
        "details": {"stats": stats, "pycocotools_stats": result["pycocotools_stats"]},
        "notes": ["baseline = pycocotools COCOeval (useCats=0, maxDets 1/10/100/200): evaluate + accumulate + "
                  "summarize; a mismatch raises instead of reporting"],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--dets", type=int, default=200, help="detections per image")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="bench_evaluator.json", help="JSON file of the timings")
    args = parser.parse_args()

    gt, dets = make_data(args.images, args.dets, args.size, args.seed)
    result = compare(gt, dets)
    report = {
        "images": args.images,
        "detections_per_image": args.dets,
        "image_size": args.size,
        "pycocotools_s": result["pycocotools_s"],
        "part_d2_s": result["part_d2_s"],
        "ratio": result["part_d2_s"] / result["pycocotools_s"],
        "AP": result["stats"]["AP"],
        "AR@200": result["stats"]["AR@200"],
    }
    print(json.dumps(report, indent=2))
    with open(args.output, "w") as f:
        json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
