#!/usr/bin/env python
"""The whole PartDistillation pipeline on the embedded synthetic dataset, on CPU.

    python projects/PartDistillation/run_synthetic.py [--scale cpu|smoke] [--output DIR] [--iters-scale 1.0]

Protocol: part labels of the seen classes are never used by PartDistillation; it learns from an
unlabeled pool of images of the held-out test classes (a second synthetic draw, seed 1, so no
test image is seen) and is evaluated on ``synthetic_parts_test`` next to a supervised baseline
trained with part labels of the seen classes (``synthetic_parts_train``).

Stages (each skipped when its output exists, so an interrupted run resumes):

- objects: a tiny Mask2Former trained on the seen classes' object instances (the stand-in for the
  COCO instance-segmentation model); stage 0 (Detic) is replaced by the pool's ground-truth object
  masks and classes;
- 1a: ``tools/pd_pixel_grouping.py`` with the objects model's backbone on the pool;
- 1b: part proposals (``configs/synthetic/pd_proposals_R_tiny.yaml``) from the 1a segments;
- 2: ``tools/pd_rank_parts.py``: class-specific pseudo labels with the proposal model;
- 3: self-training with per-object-class classifiers (``configs/synthetic/pd_distill_R_tiny.yaml``);
- baseline: supervised class-agnostic Mask2Former on the seen classes' parts, with the proposal
  model's 50 queries.

Printed: AR@{1,10,50,100,200} (plain and per-object merged GT), mIoU-clustered (proposal and
baseline query embeddings) and mIoU-mapped (stage 3), all on the unseen test classes. A model
returns at most (queries x classes) detections: 50 for the baseline and the proposals, and 200 of
50 x 8 for stage 3 (where a query's mask may appear with several part classes), so AR@k stops
growing beyond that. 3x3 collages of the stage-2 parts of each
object class are written to ``OUTPUT/collages``.
"""
import argparse
import importlib.util
import logging
import os
import time

from detectron2.utils.logger import setup_logger

import part_d2  # noqa: F401  (registers datasets and architectures)
from part_d2.checkpoint import PartCheckpointer
from part_d2.data.builtin import register_synthetic_parts
from part_d2.data.shards import register_stage_output
from part_d2.engine.setup import load_config
from part_d2.engine.trainer import PartTrainer
from part_d2.utils.provenance import cached_json, weights_id

logger = logging.getLogger("part_d2.pd_synthetic")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = os.path.join(ROOT, "configs", "synthetic")
TEST = "synthetic_parts_test_agnostic"
POOL = "synthetic_pd_pool"
SCALES = {
    "cpu": {"objects": 1200, "baseline": 1200, "proposals": 600, "distill": 600, "pool": 300, "test": TEST},
    # plumbing check: a few iterations, the 12 test images of the mini variant
    "smoke": {"objects": 4, "baseline": 4, "proposals": 4, "distill": 4, "pool": 6,
              "test": "synthetic_parts_mini_test_agnostic"},
}
METRICS = ("AR@1", "AR@10", "AR@50", "AR@100", "AR@200", "merged_AR@10", "merged_AR@200",
           "clustered_C-mIoU", "clustered_A-mIoU", "mapped_C-mIoU", "mapped_A-mIoU")
MAX_DETS = (1, 10, 50, 100, 200)
BASELINE_OPTS = ["MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", "50"]  # as many queries as the proposal model


def iteration_opts(iters: int, output: str):
    return ["SOLVER.MAX_ITER", str(iters), "SOLVER.STEPS", f"({max(1, int(0.75 * iters))},)",
            "OUTPUT_DIR", output, "MODEL.DEVICE", "cpu", "DATASETS.TEST", "()"]


def train(config: str, iters: int, output: str, opts=()) -> str:
    """Train ``config`` into ``output`` (skipped when ``model_final.pth`` exists); returns it."""
    weights = os.path.join(output, "model_final.pth")
    if os.path.isfile(weights):
        logger.info(f"{weights} exists; skipping training")
        return weights
    cfg = load_config(os.path.join(CONFIGS, config), list(opts) + iteration_opts(iters, output))
    cfg.freeze()
    trainer = PartTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    return weights


def evaluate(name: str, config: str, weights: str, output: str, opts=(), test: str = TEST) -> dict:
    """PartDiscoveryEvaluator metrics of a model on the test classes (cached in ``output``)."""
    path = os.path.join(output, "evals", f"{name}.json")

    def compute():
        cfg = load_config(os.path.join(CONFIGS, config), list(opts) + [
            "MODEL.WEIGHTS", weights, "MODEL.DEVICE", "cpu", "DATASETS.TEST", f"('{test}',)",
            "TEST.PART_DISCOVERY.ENABLED", "True", "MODEL.MASK_FORMER.TEST.RETURN_QUERY_EMBEDDINGS", "True",
            "TEST.DETECTIONS_PER_IMAGE", str(max(MAX_DETS)), "TEST.PART_DISCOVERY.MAX_DETS", str(list(MAX_DETS)),
        ])
        cfg.freeze()
        model = PartTrainer.build_model(cfg)
        PartCheckpointer(model).load(weights)
        return PartTrainer.test(cfg, model)["part_discovery"]  # one test dataset: not keyed by its name

    return cached_json(path, {"weights": weights_id(weights), "config": config, "opts": list(opts), "test": test,
                              "max_dets": list(MAX_DETS)}, compute)


def run_stage_tool(tool: str, argv) -> None:
    """Run ``tools/<tool>.py`` in this process (so datasets registered here are visible)."""
    spec = importlib.util.spec_from_file_location(tool, os.path.join(ROOT, "tools", f"{tool}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.run(list(argv))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=sorted(SCALES), default="cpu")
    parser.add_argument("--output", default="output/pd_synthetic")
    parser.add_argument("--iters-scale", type=float, default=1.0,
                        help="multiply every training run's iterations (the pool size is kept)")
    args = parser.parse_args(argv)
    setup_logger()
    out = args.output
    scale = {k: (v if k in ("pool", "test") else max(1, round(v * args.iters_scale)))
             for k, v in SCALES[args.scale].items()}
    start = time.time()
    register_synthetic_parts(prefix=POOL, seed=1, num_images={"train": 0, "val": 0, "test": scale["pool"]})
    pool = f"{POOL}_test_objects"

    objects = train("pd_objects_R_tiny.yaml", scale["objects"], os.path.join(out, "objects"))
    groups_dir = os.path.join(out, "pixel_groups")
    run_stage_tool(
        "pd_pixel_grouping",
        [
            "--config-file",
            os.path.join(CONFIGS, "pd_objects_R_tiny.yaml"),
            "--dataset",
            pool,
            "--output",
            groups_dir,
            "MODEL.WEIGHTS",
            objects,
            "MODEL.DEVICE",
            "cpu",
            "OUTPUT_DIR",
            os.path.join(out, "logs", "pixel_grouping"),
            "PART_DISTILLATION.PIXEL_GROUPING.IMAGE_SIZE",
            "160",
        ],
    )
    register_stage_output("pd_groups", groups_dir)
    proposals = train("pd_proposals_R_tiny.yaml", scale["proposals"], os.path.join(out, "proposals"),
                      ["MODEL.WEIGHTS", objects])
    ranked_dir = os.path.join(out, "ranked")
    run_stage_tool("pd_rank_parts", [
        "--config-file", os.path.join(CONFIGS, "pd_proposals_R_tiny.yaml"), "--dataset", "pd_groups_agnostic",
        "--output", ranked_dir, "MODEL.WEIGHTS", proposals, "MODEL.DEVICE", "cpu",
        "OUTPUT_DIR", os.path.join(out, "logs", "ranking"),
    ])
    register_stage_output("pd_ranked", ranked_dir)
    run_stage_tool("pd_collages", ["--input", ranked_dir, "--output", os.path.join(out, "collages")])  # cheap: redone
    distill = train("pd_distill_R_tiny.yaml", scale["distill"], os.path.join(out, "distill"),
                    ["MODEL.WEIGHTS", proposals])
    baseline = train("mask2former_R_tiny_agnostic.yaml", scale["baseline"], os.path.join(out, "baseline"),
                     BASELINE_OPTS + ["DATASETS.TRAIN", "('synthetic_parts_train_agnostic',)", "TEST.EVAL_PERIOD", "0"])

    test = scale["test"]
    rows = {
        "supervised (seen classes)": evaluate("baseline", "mask2former_R_tiny_agnostic.yaml", baseline, out,
                                              BASELINE_OPTS, test),
        "PD stage 1b proposals": evaluate("proposals", "pd_proposals_R_tiny.yaml", proposals, out, test=test),
        "PD stage 3 distilled": evaluate("distill", "pd_distill_R_tiny.yaml", distill, out, test=test),
    }
    header = f"{'model':28s}" + "".join(f"{m:>17s}" for m in METRICS)
    lines = [header] + [
        f"{name:28s}" + "".join(f"{r[m]:17.2f}" if m in r else f"{'-':>17s}" for m in METRICS)
        for name, r in rows.items()
    ]
    print(f"\nPartDistillation on synthetic unseen test classes ({args.scale}, iterations x{args.iters_scale}, "
          f"{time.time() - start:.0f} s)")
    print("\n".join(lines))
    with open(os.path.join(out, "results.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return rows


if __name__ == "__main__":
    main()
