#!/usr/bin/env python
"""The whole PartDistillation pipeline on the embedded synthetic dataset, on CPU.

    python projects/PartDistillation/run_synthetic.py [--scale cpu|gpu|smoke] [--output DIR] [--seeds 0 1 2]

Protocol: part labels of the seen classes are never used by PartDistillation; it learns from an
unlabeled pool of images of the held-out test classes (a second synthetic draw, seed 1, so no
test image is seen) and is evaluated on ``synthetic_parts_test`` next to a supervised baseline
trained with part labels of the seen classes (``synthetic_parts_train``).

Stages (each skipped when its output exists, so an interrupted run resumes):

- objects: a tiny Mask2Former trained on the seen classes' object instances (the stand-in for the
  COCO instance-segmentation model); stage 0 (Detic) is replaced by the pool's ground-truth object
  masks and classes;
- 1a: pixel grouping (:func:`part_d2.engine.stages.pixel_grouping`, as ``tools/pd_pixel_grouping.py``)
  with the objects model's backbone on the pool;
- 1b: part proposals (``configs/synthetic/pd_proposals_R_tiny.yaml``) from the 1a segments;
- 2: part ranking (:func:`part_d2.engine.stages.rank_parts`, as ``tools/pd_rank_parts.py``): class-specific
  pseudo labels with the proposal model;
- 3: self-training with per-object-class classifiers (``configs/synthetic/pd_distill_R_tiny.yaml``);
- baseline: supervised class-agnostic Mask2Former on the seen classes' parts with the proposal
  model's 50 queries, initialised from the same objects model and trained for as many iterations
  as PartDistillation after it (stage 1b + stage 3), as the paper initialises its baselines from
  the instance model.

Every model is evaluated with the same detection cap (``--det-cap``, default 50 = the queries of
the baseline and the proposals; stage 3 could return up to 50 x 8 (query, part class) pairs):
AR@{1,10,cap} (plain and per-object merged GT), mIoU-clustered (query embeddings) and mIoU-mapped
(stage 3), on the unseen test classes. 3x3 collages of the stage-2 parts of each object class are
written to ``OUTPUT/seed<S>/collages``; the table to ``OUTPUT/results.md``, each seed's values to
``results.json`` and their plot to ``results.png``.

With several ``--seeds`` (training and k-means seeds; the data are fixed) the table gives mean
+- sample standard deviation over seeds, and a "stage 3 vs baseline" line marks the metrics whose
gap of means exceeds the sum of the two standard deviations (the only ones a claim may cite).
"""
import argparse
import logging
import os
import time

from detectron2.utils.logger import setup_logger

import part_d2  # noqa: F401  (registers datasets and architectures)
from part_d2.data.builtin import register_synthetic_parts
from part_d2.data.shards import register_stage_output
from part_d2.engine import runs, stages
from part_d2.engine.collages import make_collages
from part_d2.engine.setup import load_config
from part_d2.evaluation.seeds import compare, mean_sd, plot_seeds
from part_d2.utils.io import atomic_write_bytes, atomic_write_json
from part_d2.utils.provenance import weights_id

logger = logging.getLogger("part_d2.pd_synthetic")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = os.path.join(ROOT, "configs", "synthetic")
TEST = "synthetic_parts_test_agnostic"
POOL = "synthetic_pd_pool"
SCALES = {
    "cpu": {"objects": 1200, "baseline": 1200, "proposals": 600, "distill": 600, "pool": 300, "test": TEST,
            "device": "cpu"},
    # the cpu recipe on a GPU (same iterations and data, so its metrics compare with the cpu ones)
    "gpu": {"objects": 1200, "baseline": 1200, "proposals": 600, "distill": 600, "pool": 300, "test": TEST,
            "device": "cuda"},
    # plumbing check: a few iterations, the 12 test images of the mini variant
    "smoke": {"objects": 4, "baseline": 4, "proposals": 4, "distill": 4, "pool": 6,
              "test": "synthetic_parts_mini_test_agnostic", "device": "cpu"},
}
BASELINE_OPTS = ["MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", "50"]  # as many queries as the proposal model
BASELINE = "supervised (seen classes)"
DISTILLED = "PD stage 3 distilled"


def metric_names(cap: int):
    return ("AR@1", "AR@10", f"AR@{cap}", "merged_AR@10", f"merged_AR@{cap}", "clustered_C-mIoU", "clustered_A-mIoU",
            "mapped_C-mIoU", "mapped_A-mIoU")


def iteration_opts(iters: int, output: str, seed: int, device: str = "cpu"):
    return ["SOLVER.MAX_ITER", str(iters), "SOLVER.STEPS", f"({max(1, int(0.75 * iters))},)",
            "OUTPUT_DIR", output, "MODEL.DEVICE", device, "DATASETS.TEST", "()", "SEED", str(seed)]


def train(config: str, iters: int, output: str, opts=(), seed: int = 0, device: str = "cpu") -> str:
    """Train ``config`` into ``output`` with ``SEED`` ``seed`` on ``device`` (skipped when
    ``model_final.pth`` exists); returns it."""
    cfg = load_config(os.path.join(CONFIGS, config), list(opts) + iteration_opts(iters, output, seed, device))
    cfg.freeze()
    runs.train(cfg)
    return runs.final_weights(output)


def evaluate(name: str, config: str, weights: str, output: str, opts=(), test: str = TEST, cap: int = 50,
             device: str = "cpu") -> dict:
    """PartDiscoveryEvaluator metrics of a model on the test classes (cached in ``output``)."""
    cfg = load_config(os.path.join(CONFIGS, config), list(opts) + [
        "MODEL.WEIGHTS", weights, "MODEL.DEVICE", device, "DATASETS.TEST", f"('{test}',)",
        "TEST.PART_DISCOVERY.ENABLED", "True", "MODEL.MASK_FORMER.TEST.RETURN_QUERY_EMBEDDINGS", "True",
        "TEST.DETECTIONS_PER_IMAGE", str(cap), "TEST.PART_DISCOVERY.MAX_DETS", str([1, 10, cap]),
    ])
    cfg.freeze()
    ingredients = {"weights": weights_id(weights), "config": config, "opts": list(opts), "test": test,
                   "max_dets": [1, 10, cap]}
    # one test dataset: the results are not keyed by its name
    return runs.evaluate(cfg, cache=os.path.join(output, "evals", f"{name}.json"),
                         ingredients=ingredients)["part_discovery"]


def run_seed(out: str, scale: dict, seed: int, pool: str, cap: int) -> dict:
    """Every stage and evaluation of one seed in ``out``; returns {model: metrics}."""
    dev = scale["device"]
    seed_opts = ["PART_DISTILLATION.SEED", str(seed), "MODEL.DEVICE", dev]
    objects = train("pd_objects_R_tiny.yaml", scale["objects"], os.path.join(out, "objects"), seed=seed, device=dev)
    groups_dir = os.path.join(out, "pixel_groups")
    # the stages do nothing for a complete output of the same fingerprint (and refuse another one)
    stages.pixel_grouping(
        config_file=os.path.join(CONFIGS, "pd_objects_R_tiny.yaml"), dataset=pool, output=groups_dir,
        opts=["MODEL.WEIGHTS", objects, "OUTPUT_DIR", os.path.join(out, "logs", "pixel_grouping"), *seed_opts])
    register_stage_output("pd_groups", groups_dir)
    proposals = train("pd_proposals_R_tiny.yaml", scale["proposals"], os.path.join(out, "proposals"),
                      ["MODEL.WEIGHTS", objects], seed, dev)
    ranked_dir = os.path.join(out, "ranked")
    stages.rank_parts(
        config_file=os.path.join(CONFIGS, "pd_proposals_R_tiny.yaml"), dataset="pd_groups_agnostic",
        output=ranked_dir,
        opts=["MODEL.WEIGHTS", proposals, "OUTPUT_DIR", os.path.join(out, "logs", "ranking"), *seed_opts])
    register_stage_output("pd_ranked", ranked_dir)
    make_collages(input=ranked_dir, output=os.path.join(out, "collages"))  # cheap: redone
    distill = train("pd_distill_R_tiny.yaml", scale["distill"], os.path.join(out, "distill"),
                    ["MODEL.WEIGHTS", proposals], seed, dev)
    # same start (the objects model) and as many iterations as PartDistillation after it
    baseline = train("mask2former_R_tiny_agnostic.yaml", scale["proposals"] + scale["distill"],
                     os.path.join(out, "baseline"),
                     BASELINE_OPTS + ["MODEL.WEIGHTS", objects, "DATASETS.TRAIN", "('synthetic_parts_train_agnostic',)",
                                      "TEST.EVAL_PERIOD", "0"], seed, dev)
    test = scale["test"]
    return {
        BASELINE: evaluate("baseline", "mask2former_R_tiny_agnostic.yaml", baseline, out, BASELINE_OPTS, test, cap,
                           dev),
        "PD stage 1b proposals": evaluate("proposals", "pd_proposals_R_tiny.yaml", proposals, out, test=test, cap=cap,
                                          device=dev),
        DISTILLED: evaluate("distill", "pd_distill_R_tiny.yaml", distill, out, test=test, cap=cap, device=dev),
    }


def summarize(per_seed, metrics):
    """{model: {metric: (mean, sd)}} over seeds (sd None for one seed)."""
    out = {}
    for name in per_seed[0]:
        out[name] = {}
        for m in metrics:
            values = [rows[name][m] for rows in per_seed if m in rows[name]]
            if values:
                out[name][m] = mean_sd(values)
    return out


def table(summary, metrics, seeds) -> str:
    """Markdown table of mean +- sd, and the metrics where stage 3 and the baseline differ by more
    than the sum of their standard deviations (needs >= 3 seeds)."""
    lines = ["| model | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
    for name, stats in summary.items():
        cells = [(f"{stats[m][0]:.2f} +- {stats[m][1]:.2f}" if len(seeds) > 1 else f"{stats[m][0]:.2f}")
                 if m in stats else "-" for m in metrics]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if len(seeds) >= 3:
        gaps = []
        for m in metrics:
            if m in summary[BASELINE] and m in summary[DISTILLED]:
                gaps.append(f"{m}: {compare(summary[DISTILLED][m], summary[BASELINE][m])}")
        lines.append("")
        lines.append(f"stage 3 vs baseline over seeds {list(seeds)}: " + "; ".join(gaps))
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=sorted(SCALES), default="cpu")
    parser.add_argument("--output", default="output/pd_synthetic")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="training / k-means seeds (>= 3 for claims)")
    parser.add_argument("--det-cap", type=int, default=50, help="detections per image of every model")
    parser.add_argument("--iters-scale", type=float, default=1.0,
                        help="multiply every training run's iterations (the pool size is kept)")
    args = parser.parse_args(argv)
    setup_logger()
    scale = {k: (v if k in ("pool", "test", "device") else max(1, round(v * args.iters_scale)))
             for k, v in SCALES[args.scale].items()}
    start = time.time()
    register_synthetic_parts(prefix=POOL, seed=1, num_images={"train": 0, "val": 0, "test": scale["pool"]})
    pool = f"{POOL}_test_objects"
    per_seed = [run_seed(os.path.join(args.output, f"seed{s}"), scale, s, pool, args.det_cap) for s in args.seeds]
    metrics = metric_names(args.det_cap)
    summary = summarize(per_seed, metrics)
    text = table(summary, metrics, args.seeds)
    print(f"\nPartDistillation on synthetic unseen test classes ({args.scale}, iterations x{args.iters_scale}, "
          f"seeds {args.seeds}, {args.det_cap} detections, {time.time() - start:.0f} s)")
    print(text)
    atomic_write_bytes(os.path.join(args.output, "results.md"), (text + "\n").encode())
    values = {m: {name: [rows[name][m] for rows in per_seed] for name in per_seed[0] if m in per_seed[0][name]}
              for m in metrics}
    atomic_write_json(os.path.join(args.output, "results.json"), {"seeds": list(args.seeds), "values": values})
    plot_seeds({m: v for m, v in values.items() if v}, os.path.join(args.output, "results.png"),
               f"PartDistillation, synthetic unseen classes, seeds {list(args.seeds)} "
               "(bar: mean, whisker: sd, dots: seeds)")
    return {name: {m: v[0] for m, v in stats.items()} for name, stats in summary.items()}


if __name__ == "__main__":
    main()
