#!/usr/bin/env python
"""OPS's bottom-up baselines (SLIC, Normalized Cut, Felzenszwalb) inside the object mask, scored
with oracle part labels (mIoU, fwIoU, mACC, pACC) exactly as the models' parts are.

    python tools/eval_superpixel_baselines.py --dataset synthetic_parts_test_parts \
        [--baselines slic ncut felzenszwalb] [--max-images N] [--output results.json] \
        [--config-file CFG] INPUT.OBJECT_MASK.SOURCE imperfect

The object mask comes from the configured object-mask source (``INPUT.OBJECT_MASK.SOURCE``,
default ``perfect``); the dataset must have part classes (a ``_parts`` view, or an ``_agnostic``
one whose ``_parts`` sibling is registered).
"""
import argparse
import logging
import os
from typing import Dict, Sequence

import numpy as np
import tqdm
from detectron2.data import DatasetCatalog, MetadataCatalog

import part_d2  # noqa: F401  (registers datasets)
from part_d2.data.image_io import read_image_checked
from part_d2.data.object_masks import build_object_mask_source
from part_d2.engine.config_checks import ConfigError, check_registered
from part_d2.engine.launch import exit_on_user_error
from part_d2.engine.setup import load_config
from part_d2.evaluation.oracle_semantic_evaluator import oracle_confusion, parts_view_name, record_gt
from part_d2.evaluation.semantic_metrics import semantic_metrics
from part_d2.evaluation.superpixel_baselines import BASELINES, baseline_parts
from part_d2.utils.io import atomic_write_json

logger = logging.getLogger("part_d2.tools.eval_superpixel_baselines")


def evaluate_baselines(cfg, dataset_name: str, baselines: Sequence[str], max_images: int = 0) -> Dict[str, Dict]:
    """Score each baseline on the first ``max_images`` images (all when 0) of a part dataset.

    Returns:
        ``{baseline: semantic_metrics(...)}`` (percent), plus ``"num_images"`` per baseline.
    """
    check_registered(dataset_name, "--dataset")
    if max_images < 0:
        raise ConfigError(f"--max-images {max_images}: must be >= 0")
    try:
        gt_name = parts_view_name(dataset_name)
    except ValueError as e:
        raise ConfigError(f"--dataset {e}") from None
    records = DatasetCatalog.get(gt_name)
    records = records[:max_images] if max_images > 0 else records
    classes = list(MetadataCatalog.get(gt_name).thing_classes)
    source_cfg = cfg.clone()
    source_cfg.INPUT.OBJECT_MASK.ENABLED = True
    source = build_object_mask_source(source_cfg)
    confusion = {b: np.zeros((len(classes), len(classes) + 1), dtype=np.int64) for b in baselines}
    for record in tqdm.tqdm(records, desc="baselines"):
        image = read_image_checked(record["file_name"], "RGB")
        object_mask = source(record, image)
        gt_masks, gt_classes = record_gt(record)
        for b in baselines:
            parts = baseline_parts(b, image, object_mask)
            scores = np.ones(len(parts))
            confusion[b] += oracle_confusion(parts, scores, gt_masks, gt_classes, len(classes))
    results = {}
    for b in baselines:
        results[b] = dict(semantic_metrics(confusion[b], classes), num_images=len(records))
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="registered part dataset (with part classes)")
    parser.add_argument("--baselines", nargs="+", default=list(BASELINES), choices=BASELINES)
    parser.add_argument("--max-images", type=int, default=0, help="evaluate only the first N images (0: all)")
    parser.add_argument("--output", default="", help="write the results json here")
    parser.add_argument("--config-file", default="", help="config for the object-mask source (optional)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    with exit_on_user_error():
        cfg = load_config(args.config_file, args.opts)
        results = evaluate_baselines(cfg, args.dataset, args.baselines, args.max_images)
    print(f"| baseline | mIoU | fwIoU | mACC | pACC |  ({args.dataset}, object mask: {cfg.INPUT.OBJECT_MASK.SOURCE})")
    print("|---|---|---|---|---|")
    for b, m in results.items():
        print(f"| {b} | {m['mIoU']:.2f} | {m['fwIoU']:.2f} | {m['mACC']:.2f} | {m['pACC']:.2f} |")
    if args.output:
        atomic_write_json(os.path.abspath(args.output), results)
    return results


if __name__ == "__main__":
    main()
