#!/usr/bin/env python
"""OPS's bottom-up baselines (SLIC, Normalized Cut, Felzenszwalb) inside the object mask, scored
with oracle part labels (mIoU, fwIoU, mACC, pACC) exactly as the models' parts are, with the mean
number of segments per object mask beside them.

    python tools/eval_superpixel_baselines.py --dataset synthetic_parts_test_parts \
        [--baselines slic ncut felzenszwalb] [--max-images N] [--output results.json] \
        [--tune-dataset synthetic_parts_train_parts [--tune-images 50] [--target-segments S]] \
        [--config-file CFG] INPUT.OBJECT_MASK.SOURCE imperfect

The oracle metrics reward over-segmentation (more segments, each labelled by its best GT part),
so baselines are only comparable at matched segment counts. ``--tune-dataset`` (seen classes)
picks, per baseline, the value of its segment-count parameter (``PARAM_GRIDS`` in
``part_d2/evaluation/superpixel_baselines.py``) whose mean segments per object on the first
``--tune-images`` images is closest to ``--target-segments`` (default: the mean number of GT parts
per object mask of the tuning images); the evaluation then uses those values. Without it, each
baseline uses its defaults.

The object mask comes from the configured object-mask source (``INPUT.OBJECT_MASK.SOURCE``,
default ``perfect``); the datasets must have part classes (a ``_parts`` view, or an ``_agnostic``
one whose ``_parts`` sibling is registered). Results are deterministic; NCut's fallbacks (see the
module above) are counted in ``ncut_fallbacks``.
"""
import argparse
import logging
import os
from collections import Counter
from typing import Dict, List, Optional, Sequence

import numpy as np
import tqdm
from detectron2.data import DatasetCatalog, MetadataCatalog

import part_d2  # noqa: F401  (registers datasets)
from part_d2.data.image_io import read_image_checked
from part_d2.data.object_masks import build_object_mask_source
from part_d2.data.part_json import PartDatasetError
from part_d2.engine.config_checks import ConfigError, check_registered
from part_d2.engine.launch import exit_on_user_error
from part_d2.engine.setup import load_config
from part_d2.evaluation.ground_truth import gt_parts, parts_view
from part_d2.evaluation.oracle_semantic_evaluator import oracle_confusion
from part_d2.evaluation.semantic_metrics import semantic_metrics
from part_d2.evaluation.superpixel_baselines import BASELINES, PARAM_GRIDS, baseline_parts, closest_to_target
from part_d2.utils.io import atomic_write_json

logger = logging.getLogger("part_d2.tools.eval_superpixel_baselines")


def _samples(cfg, dataset_name: str, max_images: int):
    """(records, part classes, object-mask source) of a part dataset's first ``max_images`` images."""
    check_registered(dataset_name, "--dataset")
    if max_images < 0:
        raise ConfigError(f"--max-images {max_images}: must be >= 0")
    try:
        gt_name = parts_view(dataset_name)
    except ValueError as e:
        raise ConfigError(f"--dataset {e}") from None
    records = DatasetCatalog.get(gt_name)
    records = records[:max_images] if max_images > 0 else records
    source_cfg = cfg.clone()
    source_cfg.INPUT.OBJECT_MASK.ENABLED = True
    return records, list(MetadataCatalog.get(gt_name).thing_classes), build_object_mask_source(source_cfg)


def _images(records: List[Dict], source):
    for record in records:
        image = read_image_checked(record["file_name"], "RGB")
        yield record, image, source(record, image)


def tune_parameters(
    cfg, dataset_name: str, baselines: Sequence[str], max_images: int = 50, target: float = 0.0
) -> Dict[str, Dict]:
    """Per baseline, the ``PARAM_GRIDS`` value whose mean segments per object is closest to ``target``.

    Args:
        dataset_name: tuning dataset (seen classes).
        target: segments per object to match; 0: the mean GT parts per object mask.
    Returns:
        ``{baseline: {"params": {name: value}, "segments_per_object": s, "target": t}}``.
    """
    records, _, source = _samples(cfg, dataset_name, max_images)
    samples = [(image, mask) for record, image, mask in _images(records, source) if mask.any()]
    if not samples:
        raise PartDatasetError(f"dataset '{dataset_name}': no image with an object mask to tune on")
    if target <= 0:
        target = float(np.mean([len(gt_parts(r)[1]) for r in records if r.get("annotations")]))
    tuned = {}
    for b in baselines:
        name, grid = PARAM_GRIDS[b]
        mean_segments = {}
        for value in grid:
            counts = [len(baseline_parts(b, image, mask, **{name: value})) for image, mask in samples]
            mean_segments[value] = float(np.mean(counts))
        best = closest_to_target(mean_segments, target)
        tuned[b] = {"params": {name: best}, "segments_per_object": mean_segments[best], "target": target}
        logger.info(f"{b}: {name}={best} gives {mean_segments[best]:.2f} segments per object (target {target:.2f})")
    return tuned


def evaluate_baselines(
    cfg, dataset_name: str, baselines: Sequence[str], max_images: int = 0, params: Optional[Dict] = None
) -> Dict[str, Dict]:
    """Score each baseline on the first ``max_images`` images (all when 0) of a part dataset.

    Args:
        params: optional ``{baseline: {parameter: value}}`` (e.g. from :func:`tune_parameters`).
    Returns:
        ``{baseline: semantic_metrics(...)}`` (percent) plus ``num_images``,
        ``segments_per_object`` (mean over images with a non-empty object mask), ``params`` and,
        for NCut, ``ncut_fallbacks``.
    """
    params = params or {}
    records, classes, source = _samples(cfg, dataset_name, max_images)
    confusion = {b: np.zeros((len(classes), len(classes) + 1), dtype=np.int64) for b in baselines}
    segments = {b: [] for b in baselines}
    stats = Counter()
    for record, image, object_mask in tqdm.tqdm(_images(records, source), total=len(records), desc="baselines"):
        gt_masks, gt_classes = gt_parts(record)
        for b in baselines:
            parts = baseline_parts(b, image, object_mask, stats=stats, **params.get(b, {}))
            if object_mask.any():
                segments[b].append(len(parts))
            confusion[b] += oracle_confusion(parts, np.ones(len(parts)), gt_masks, gt_classes, len(classes))
    if stats["ncut_fallbacks"]:
        logger.warning(f"NCut: scikit-image's cut failed on {stats['ncut_fallbacks']} images (dense cut used)")
    results = {}
    for b in baselines:
        results[b] = dict(
            semantic_metrics(confusion[b], classes),
            num_images=len(records),
            segments_per_object=float(np.mean(segments[b])) if segments[b] else 0.0,
            params=dict(params.get(b, {})),
        )
        if b == "ncut":
            results[b]["ncut_fallbacks"] = int(stats["ncut_fallbacks"])
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="registered part dataset (with part classes)")
    parser.add_argument("--baselines", nargs="+", default=list(BASELINES), choices=BASELINES)
    parser.add_argument("--max-images", type=int, default=0, help="evaluate only the first N images (0: all)")
    parser.add_argument("--output", default="", help="write the results json here")
    parser.add_argument("--tune-dataset", default="", help="seen-class dataset to tune segment counts on")
    parser.add_argument("--tune-images", type=int, default=50, help="images of --tune-dataset used (0: all)")
    parser.add_argument("--target-segments", type=float, default=0.0,
                        help="segments per object to match (0: mean GT parts per object of --tune-dataset)")
    parser.add_argument("--config-file", default="", help="config for the object-mask source (optional)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    with exit_on_user_error():
        cfg = load_config(args.config_file, args.opts)
        params = {}
        if args.tune_dataset:
            tuned = tune_parameters(cfg, args.tune_dataset, args.baselines, args.tune_images, args.target_segments)
            params = {b: t["params"] for b, t in tuned.items()}
        results = evaluate_baselines(cfg, args.dataset, args.baselines, args.max_images, params)
    print(f"| baseline | parameters | segments / object | mIoU | fwIoU | mACC | pACC |  "
          f"({args.dataset}, object mask: {cfg.INPUT.OBJECT_MASK.SOURCE})")
    print("|---|---|---|---|---|---|---|")
    for b, m in results.items():
        p = ", ".join(f"{k}={v}" for k, v in m["params"].items()) or "defaults"
        print(f"| {b} | {p} | {m['segments_per_object']:.2f} | {m['mIoU']:.2f} | {m['fwIoU']:.2f} "
              f"| {m['mACC']:.2f} | {m['pACC']:.2f} |")
    if args.output:
        atomic_write_json(os.path.abspath(args.output), results)
    return results


if __name__ == "__main__":
    main()
