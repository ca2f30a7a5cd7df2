#!/usr/bin/env python
"""The main job on the embedded synthetic dataset, end to end on a CPU, with the OPS recipe:

generate the data → train a tiny class-agnostic *object* Mask2Former on the seen classes' objects →
train the tiny object-aware part Mask2Former on the seen classes (their ground-truth object mask as
a 4th input channel) → evaluate class-agnostic part mask AP/AR on unseen classes, with the object
model's masks as the object masks (pre-aware; and pre-aware + post-aware crop) → write demo overlays
and a collage.

    python tools/quickstart.py [--output output/quickstart] [--dataset synthetic_parts] [KEY VALUE ...]

``KEY VALUE`` overrides apply to both models. Rerunning continues from the last checkpoint; a
finished training or evaluation is not repeated.
"""
import argparse
import logging
import os
import time

from detectron2.data import DatasetCatalog
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

import part_d2  # noqa: F401
from part_d2.data.image_io import read_image_checked
from part_d2.engine import launch_tool, runs
from part_d2.engine.config_checks import check_datasets
from part_d2.engine.launch import add_lock_argument
from part_d2.engine.predictor import overlay_names, run_demo
from part_d2.engine.setup import load_config
from part_d2.utils.io import atomic_write_json
from part_d2.utils.provenance import weights_id
from part_d2.utils.visualization import collage, write_png

OBJECTS_CONFIG = "configs/synthetic/quickstart_objects.yaml"
PARTS_CONFIG = "configs/synthetic/quickstart_parts.yaml"
# the test-time uses of the object model's masks: 4th input channel (pre-aware), and also cropping
# the predicted parts to the mask (post-aware)
SETTINGS = {"pre": [], "pre+post": ["TEST.POST_AWARE.ENABLED", "True"]}
DEMO_SETTING = "pre+post"


def build_configs(args):
    """The frozen configs (objects training, parts training, parts test) of ``args``."""
    p = args.dataset
    objects_dir = os.path.join(args.output, "objects")
    objects = load_config(OBJECTS_CONFIG, ["OUTPUT_DIR", objects_dir, "DATASETS.TRAIN", f"('{p}_train_objects',)"]
                          + args.opts)
    parts_opts = ["OUTPUT_DIR", os.path.join(args.output, "parts"), "DATASETS.TRAIN", f"('{p}_train_agnostic',)",
                  "DATASETS.TEST", f"('{p}_test_agnostic',)",
                  "INPUT.OBJECT_MASK.MODEL_CONFIG", os.path.join(objects_dir, "config.yaml"),
                  "INPUT.OBJECT_MASK.MODEL_WEIGHTS", runs.final_weights(objects_dir)] + args.opts
    # trained with the seen classes' ground-truth object masks, as OPS trains; no test inside training
    parts_train = load_config(PARTS_CONFIG, parts_opts + ["INPUT.OBJECT_MASK.SOURCE", "perfect", "DATASETS.TEST", "()"])
    parts_test = load_config(PARTS_CONFIG, parts_opts)
    for cfg in (objects, parts_train, parts_test):
        check_datasets(cfg)
        cfg.freeze()
    return objects, parts_train, parts_test


def with_opts(cfg, opts):
    out = cfg.clone()
    out.defrost()
    out.merge_from_list(opts)
    out.freeze()
    return out


def timed_train(cfg):
    """Train ``cfg`` unless done; returns {"iterations", "seconds", "s_per_iter"} of this call's
    training (None when it was trained before)."""
    start = time.perf_counter()
    if runs.train(cfg, resume=True) is None:
        return None
    seconds = time.perf_counter() - start
    return {"iterations": cfg.SOLVER.MAX_ITER, "seconds": round(seconds, 1),
            "s_per_iter": round(seconds / cfg.SOLVER.MAX_ITER, 3)}


def write_demo(cfg, files, demo_dir):
    """Part overlays of ``files`` in ``demo_dir`` (the predictor API's demo loop); their paths."""
    run_demo(cfg, files, demo_dir)
    return [os.path.join(demo_dir, name) for name in overlay_names(files)]


def quickstart(args):
    objects_cfg, parts_train_cfg, parts_cfg = build_configs(args)
    os.makedirs(args.output, exist_ok=True)
    setup_logger(args.output, distributed_rank=comm.get_rank())
    setup_logger(args.output, distributed_rank=comm.get_rank(), name="part_d2")
    log = logging.getLogger("part_d2.quickstart")
    t0 = time.time()
    for name in objects_cfg.DATASETS.TRAIN + parts_train_cfg.DATASETS.TRAIN + parts_cfg.DATASETS.TEST:
        log.info(f"dataset {name}: {len(DatasetCatalog.get(name))} images")
    seconds = {"data": time.time() - t0}
    training = {"objects": timed_train(objects_cfg), "parts": timed_train(parts_train_cfg)}
    seconds["train"] = time.time() - t0 - seconds["data"]
    parts_weights = runs.final_weights(parts_train_cfg.OUTPUT_DIR)
    objects_weights = runs.final_weights(objects_cfg.OUTPUT_DIR)
    metrics = {}
    for setting, opts in SETTINGS.items():
        cfg = with_opts(parts_cfg, opts)
        ingredients = {"parts": weights_id(parts_weights), "objects": weights_id(objects_weights),
                       "test_set": cfg.DATASETS.TEST[0], "opts": opts}
        results = runs.evaluate(cfg, weights=parts_weights, ingredients=ingredients,
                                cache=os.path.join(args.output, "evals", f"{setting.replace('+', '_')}.json"))
        metrics[setting] = results[next(iter(results))] if len(results) == 1 else results
    seconds["eval"] = time.time() - t0 - seconds["data"] - seconds["train"]
    if not comm.is_main_process():
        return
    test_set = parts_cfg.DATASETS.TEST[0]
    files = [r["file_name"] for r in DatasetCatalog.get(test_set)[: args.demo_images]]
    demo_dir = os.path.join(args.output, "demo")
    demo_cfg = with_opts(parts_cfg, SETTINGS[DEMO_SETTING] + ["MODEL.WEIGHTS", parts_weights])
    overlays = [read_image_checked(path, "RGB") for path in write_demo(demo_cfg, files, demo_dir)]
    write_png(os.path.join(args.output, "demo_collage.png"), collage(overlays, cols=4))
    seconds["total"] = time.time() - t0
    summary = {"test_set": test_set, "metrics": metrics, "training": training,
               "seconds": {k: round(v, 1) for k, v in seconds.items()},
               "demo": demo_dir, "demo_setting": DEMO_SETTING,
               "collage": os.path.join(args.output, "demo_collage.png")}
    atomic_write_json(os.path.join(args.output, "quickstart_summary.json"), summary)
    print("\n=== part_d2 quickstart: class-agnostic part segmentation on unseen synthetic object classes ===")
    print(f"test set: {test_set}; object masks from the object model (pre: 4th input channel; "
          "pre+post: also crop the parts to them)")
    keys = list(next(iter(metrics.values())))
    print(f"  {'':>8s}" + "".join(f"{s:>10s}" for s in metrics))
    for k in keys:
        print(f"  {k:>8s}" + "".join(f"{m.get(k, float('nan')):10.2f}" for m in metrics.values()))
    print(f"demo overlays ({DEMO_SETTING}): {demo_dir}/  collage: {summary['collage']}")
    print(f"time (s): {summary['seconds']}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="output/quickstart")
    parser.add_argument("--dataset", default="synthetic_parts",
                        help="registered synthetic dataset prefix (its _train_objects, _train_agnostic and "
                             "_test_agnostic views); synthetic_parts_mini for a smoke run")
    parser.add_argument("--demo-images", type=int, default=8)
    parser.add_argument("--num-gpus", type=int, default=1, help="processes (GPUs, or CPU processes with gloo)")
    add_lock_argument(parser)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides (both models)")
    a = parser.parse_args(argv)
    a.num_machines, a.machine_rank, a.dist_url = 1, 0, "auto"
    return launch_tool(quickstart, a, output=lambda args: args.output)


if __name__ == "__main__":
    main()
