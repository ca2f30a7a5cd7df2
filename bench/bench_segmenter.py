#!/usr/bin/env python
"""Seconds per image of ``PartSegmenter`` (one ``seg(image)`` call: objects, then their parts) on
CPU with randomly initialised R50 models (the time does not depend on the weights' values, only on
the number of objects, fixed here by ``--objects`` and an object threshold of 0).

    OMP_NUM_THREADS=2 python bench/bench_segmenter.py [--size 640] [--objects 10] [--repeats 3] [--threads 2]

Pairs: the official-layout Mask2Former R50 COCO instance model as object model with (a) the R50
class-agnostic Mask2Former part model (``proposals``) and (b) pixel grouping of the object model's
own features (``grouping``, k = 4, with and without the CRF). Inputs are resized by each config's
test-time resize (COCO model: shorter side 800; part model: 400). Prints one json line per pair.
"""
import argparse
import json
import time

import numpy as np
import torch

import part_d2  # noqa: F401
from part_d2.engine.segmenter import PartSegmenter
from part_d2.engine.setup import load_config

OBJECTS = "configs/mask2former/maskformer2_R50_coco_instance.yaml"
PAIRS = {
    "proposals": ("configs/mask2former/maskformer2_R50_part_agnostic.yaml",
                  ["SEGMENTER.OBJECT_CONFIG", OBJECTS]),
    "grouping": (OBJECTS, ["SEGMENTER.PART_SOURCE", "grouping"]),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=640, help="longer side of the test image (4:3)")
    parser.add_argument("--objects", type=int, default=10, help="objects per image (SEGMENTER.MAX_OBJECTS)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per pair (after one warm-up)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--pairs", default="proposals,grouping")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (args.size * 3 // 4, args.size, 3), dtype=np.uint8)
    rows = []
    for name in args.pairs.split(","):
        config, opts = PAIRS[name]
        torch.manual_seed(0)
        cfg = load_config(config, opts + ["MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu", "SEGMENTER.OBJECT_SOURCE",
                                          "model", "SEGMENTER.MAX_OBJECTS", str(args.objects)])
        seg = PartSegmenter(cfg, random_weights=True)
        for crf in ([False, True] if name == "grouping" else [False]):
            res = seg(image, object_score_threshold=0.0, part_score_threshold=0.0, crf=crf)  # warm-up
            times = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                res = seg(image, object_score_threshold=0.0, part_score_threshold=0.0, crf=crf)
                times.append(time.perf_counter() - t)
            row = {"pair": name, "crf": crf, "image": list(image.shape[:2]), "objects": len(res),
                   "parts": sum(len(o.parts) for o in res), "threads": args.threads,
                   "seconds_median": round(float(np.median(times)), 2), "seconds": [round(t, 2) for t in times]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


if __name__ == "__main__":
    main()
