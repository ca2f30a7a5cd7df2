#!/usr/bin/env python
"""The main job on the embedded synthetic dataset, end to end on a CPU:

generate the data → train OPS's object-aware tiny Mask2Former on the seen object classes (the object
mask as a 4th input channel) → evaluate class-agnostic part mask AP/AR on unseen classes, given
their object masks → write demo overlays (inputs: the test images with their object mask as alpha,
OPS's on-disk format, in ``OUTPUT/demo_inputs``) and a collage.

    python tools/quickstart.py [--output output/quickstart] [--seed 0] [--num-gpus N] [KEY VALUE ...]

Rerunning continues from the last checkpoint (a finished training is not repeated).
"""
import argparse
import logging
import os
import time

import cv2
import numpy as np
from detectron2.data import DatasetCatalog
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

import part_d2  # noqa: F401
from part_d2.data.image_io import read_image_checked
from part_d2.data.object_masks import build_object_mask_source
from part_d2.engine import launch_tool, runs
from part_d2.engine.config_checks import check_datasets
from part_d2.engine.launch import add_lock_argument
from part_d2.engine.predictor import overlay_names, run_demo
from part_d2.engine.setup import load_config
from part_d2.utils.io import atomic_write_json
from part_d2.utils.visualization import collage, write_png

CONFIG = "configs/synthetic/quickstart_ops_tiny.yaml"


def demo_inputs(cfg, records, folder: str):
    """The images of ``records`` as the demo's inputs: with the config's object mask
    (``INPUT.OBJECT_MASK.SOURCE``) as alpha channel when the model takes one, written as RGBA PNGs
    into ``folder``; else the image files themselves."""
    source = build_object_mask_source(cfg) if cfg.INPUT.OBJECT_MASK.ENABLED else None
    if source is None:
        return [r["file_name"] for r in records]
    os.makedirs(folder, exist_ok=True)
    files = []
    for r in records:
        image = read_image_checked(r["file_name"], "BGR")
        alpha = source(r, image if cfg.INPUT.FORMAT == "BGR" else image[:, :, ::-1]).astype(np.uint8) * 255
        files.append(os.path.join(folder, os.path.splitext(os.path.basename(r["file_name"]))[0] + ".png"))
        cv2.imwrite(files[-1], np.dstack([image, alpha]))
    return files


def quickstart(args):
    cfg = load_config(args.config_file, ["OUTPUT_DIR", args.output, "SEED", str(args.seed)] + args.opts)
    check_datasets(cfg)
    cfg.freeze()
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank())
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="part_d2")
    log = logging.getLogger("part_d2.quickstart")
    t0 = time.time()
    for name in cfg.DATASETS.TRAIN + cfg.DATASETS.TEST:
        log.info(f"dataset {name}: {len(DatasetCatalog.get(name))} images")
    t_data = time.time() - t0
    results = runs.train(cfg, resume=True)  # evaluates DATASETS.TEST when training ends
    if results is None:  # trained before
        results = runs.evaluate(cfg, weights=runs.final_weights(cfg.OUTPUT_DIR))
    t_train = time.time() - t0 - t_data
    if not comm.is_main_process():
        return
    test_set = cfg.DATASETS.TEST[0]
    files = demo_inputs(cfg, DatasetCatalog.get(test_set)[: args.demo_images],
                        os.path.join(cfg.OUTPUT_DIR, "demo_inputs"))
    demo_cfg = cfg.clone()
    demo_cfg.defrost()
    demo_cfg.MODEL.WEIGHTS = runs.final_weights(cfg.OUTPUT_DIR)
    demo_cfg.freeze()
    demo_dir = os.path.join(cfg.OUTPUT_DIR, "demo")
    run_demo(demo_cfg, files, demo_dir)
    overlays = [
        read_image_checked(os.path.join(demo_dir, name), "RGB") for name in overlay_names(files)
    ]
    write_png(os.path.join(cfg.OUTPUT_DIR, "demo_collage.png"), collage(overlays, cols=4))

    metrics = results[next(iter(results))] if len(results) == 1 else results
    object_masks = cfg.INPUT.OBJECT_MASK.SOURCE if cfg.INPUT.OBJECT_MASK.ENABLED else None
    summary = {"test_set": test_set, "object_masks": object_masks, "metrics": metrics,
               "seconds": {"data": round(t_data, 1), "train_and_eval": round(t_train, 1),
                           "total": round(time.time() - t0, 1)},
               "demo": demo_dir, "collage": os.path.join(cfg.OUTPUT_DIR, "demo_collage.png")}
    atomic_write_json(os.path.join(cfg.OUTPUT_DIR, "quickstart_summary.json"), summary)
    print("\n=== part_d2 quickstart: class-agnostic part segmentation on unseen synthetic object classes ===")
    given = f", given object masks (INPUT.OBJECT_MASK.SOURCE {object_masks})" if object_masks else ""
    print(f"test set: {test_set}{given}")
    for k, v in metrics.items():
        print(f"  {k:>8s}: {v:6.2f}")
    print(f"demo overlays: {demo_dir}/  collage: {summary['collage']}")
    print(f"time: {summary['seconds']}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", default=CONFIG)
    parser.add_argument("--output", default="output/quickstart")
    parser.add_argument("--demo-images", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0, help="SEED: initialisation and data order (-1: random)")
    parser.add_argument("--num-gpus", type=int, default=1, help="processes (GPUs, or CPU processes with gloo)")
    add_lock_argument(parser)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    a = parser.parse_args(argv)
    a.num_machines, a.machine_rank, a.dist_url = 1, 0, "auto"
    return launch_tool(quickstart, a, output=lambda args: args.output)


if __name__ == "__main__":
    main()
