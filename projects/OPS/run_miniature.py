#!/usr/bin/env python
"""A synthetic miniature of the OPS paper's Tables 1-3, end to end.

    python projects/OPS/run_miniature.py [--scale cpu|gpu|smoke] [--seeds 0 1 2] [--output DIR] [--iters-scale 1.0]

Protocol (the embedded synthetic dataset): train on seen object classes
(``synthetic_parts_train_*``), fine-tune with unlabeled unseen classes (``synthetic_parts_val_*``,
annotations ignored), test on held-out unseen classes (``synthetic_parts_test_parts``: class-agnostic
AP/AP50 and oracle-label mIoU/mACC). Rows:

- Table 1: class-aware vs class-agnostic training (no object mask);
- Table 2: no object mask / post-aware / pre-aware / pre+post, with perfect and imperfect masks
  (post-aware = parts cropped to the object mask, the paper's operation);
- Table 3: on the pre-aware imperfect-mask model, evaluated pre-aware only as the paper's OPS rows
  are: base / base trained longer (control) / SS / ST / SS+ST fine-tuning.

Every row is run for each seed of ``--seeds`` (``SEED``: initialisation, data order, k-means) and
reported as mean ± sd; one of the paper's orderings is called reproduced only when the gap between
the two rows' means exceeds the sum of their sds. The simulated imperfect masks' mean IoU with the
true objects (test split) is reported beside the table.

``--tables`` runs a subset (e.g. ``--tables 3`` trains only the pre-aware imperfect-mask base model
and its fine-tunings), to fit a time budget.

The table is written to ``--output/table.md`` (and plotted, with each seed's value, in
``table.png``) and with per-seed values to ``results.json``.

Trained models are reused across rows (post-aware rows only re-evaluate). Each training run has its
own directory under ``--output/seed<S>`` (skipped when its ``model_final.pth`` exists) and each
evaluation its json under ``--output/seed<S>/evals`` (skipped when present), so an interrupted run
resumes where it stopped.
"""
import argparse
import logging
import os
import statistics
import time
from typing import Dict, List, Optional, Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils.logger import setup_logger

import part_d2  # noqa: F401  (registers datasets and architectures)
from part_d2.data.object_masks import build_object_mask_source, mask_iou, union_of_objects
from part_d2.engine import runs
from part_d2.engine.pseudo_labels import (
    PSEUDO_LABEL_FILE,
    generate_pseudo_labels,
    pseudo_label_fingerprint,
    pseudo_labels_done,
)
from part_d2.engine.setup import load_config
from part_d2.evaluation.seeds import HIGHER, LOWER, compare, mean_sd, plot_seeds
from part_d2.modeling.build import load_part_model
from part_d2.utils.io import atomic_write_json
from part_d2.utils.provenance import weights_id

logger = logging.getLogger("part_d2.ops_miniature")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BASE_CONFIG = os.path.join(ROOT, "configs", "synthetic", "mask2former_R_tiny_agnostic.yaml")

# Per-scale settings: iterations of base training and of fine-tuning, labeled (= unlabeled) images
# per batch, device, training image size, loader workers, default seeds. Fine-tuning uses 1/100 of
# the base learning rate, as the paper's fine-tuning does (1e-4 -> 1e-6).
# CPU timing, 1 thread on 2 shared cores: 0.40-0.59 s/it (3-channel input), 0.50-0.67 s/it
# (pre-aware), 0.8-0.9 s/it (SS, 4 + 4 images), 15-19 s per test evaluation (300 images), the lower
# values at load ~1.5, the higher at load ~5. Per seed 4 x 1200 + 4 x 400 iterations + 13
# evaluations: ~41 min measured on 2 idle cores (OMP_NUM_THREADS=2), so ~2 h for three seeds.
# "smoke" is a plumbing check on the 48/12/12-image mini variant of the dataset (one seed).
SCALES = {
    "cpu": {"base_iters": 1200, "ft_iters": 400, "ims": 4, "device": "cpu", "image_size": 128, "workers": 0,
            "dataset": "synthetic_parts", "seeds": (0, 1, 2)},
    "gpu": {"base_iters": 8000, "ft_iters": 2000, "ims": 16, "device": "cuda", "image_size": 160, "workers": 4,
            "dataset": "synthetic_parts", "seeds": (0, 1, 2)},
    "smoke": {"base_iters": 3, "ft_iters": 2, "ims": 2, "device": "cpu", "image_size": 64, "workers": 0,
              "dataset": "synthetic_parts_mini", "seeds": (0,)},
}
FT_LR_FACTOR = 0.01
METRICS = ("AP", "AP50", "mIoU", "mACC")
FOUR_CHANNELS = [
    "MODEL.PIXEL_MEAN",
    "[123.675, 116.28, 103.53, 127.5]",
    "MODEL.PIXEL_STD",
    "[58.395, 57.12, 57.375, 127.5]",
]


def pre_aware(source: str) -> List[str]:
    return ["INPUT.OBJECT_MASK.ENABLED", "True", "INPUT.OBJECT_MASK.SOURCE", source] + FOUR_CHANNELS


def post_aware(source: str) -> List[str]:
    return ["TEST.POST_AWARE.ENABLED", "True", "INPUT.OBJECT_MASK.SOURCE", source]


class Miniature:
    """Runs trainings and evaluations of the miniature, skipping finished ones."""

    def __init__(self, output: str, scale: str, iters_scale: float, seed: int = 0):
        self.seed = seed
        self.output = os.path.join(os.path.abspath(output), f"seed{seed}")
        self.settings = dict(SCALES[scale])
        for key in ("base_iters", "ft_iters"):
            self.settings[key] = max(1, int(round(self.settings[key] * iters_scale)))
        os.makedirs(os.path.join(self.output, "evals"), exist_ok=True)
        prefix = self.settings["dataset"]
        # train on seen classes, fine-tune on unlabeled unseen classes, test on held-out unseen classes
        self.train_set, self.unlabeled_set, self.test_set = (f"{prefix}_{split}" for split in ("train", "val", "test"))

    def config(self, opts: List[str], output_dir: str, iters: int):
        s = self.settings
        common = [
            "MODEL.DEVICE", s["device"], "SOLVER.IMS_PER_BATCH", str(s["ims"]),
            "SOLVER.IMS_PER_BATCH_UNLABELED", str(s["ims"]), "SOLVER.MAX_ITER", str(iters),
            "SOLVER.STEPS", f"({int(0.8 * iters)},)", "SOLVER.CHECKPOINT_PERIOD", str(10 * iters),
            "SOLVER.WARMUP_ITERS", str(min(10, iters)), "INPUT.IMAGE_SIZE", str(s["image_size"]),
            "DATALOADER.NUM_WORKERS", str(s["workers"]), "TEST.EVAL_PERIOD", "0",
            "DATASETS.TEST", f"('{self.test_set}_parts',)", "TEST.PART_EVAL.ORACLE_SEMANTIC", "True",
            "OUTPUT_DIR", output_dir, "SEED", str(self.seed),
        ]
        return load_config(BASE_CONFIG, common + list(opts))

    def train(self, name: str, opts: List[str], init: str = "", fine_tune: bool = False) -> str:
        """Train run ``name`` (fine-tuning iterations if ``fine_tune``); returns its final weights."""
        out = os.path.join(self.output, name)
        iters = self.settings["ft_iters" if fine_tune else "base_iters"]
        # no evaluation inside training: the rows evaluate each model once, with their own options
        cfg = self.config(list(opts) + ["MODEL.WEIGHTS", init, "DATASETS.TEST", "()"], out, iters)
        if fine_tune:
            cfg.SOLVER.BASE_LR *= FT_LR_FACTOR
        cfg.freeze()
        start = time.perf_counter()
        if runs.train(cfg) is not None:
            seconds = time.perf_counter() - start
            atomic_write_json(os.path.join(out, "train_time.json"), {"seconds": seconds, "iters": iters})
            logger.info(f"{name}: {iters} iterations in {seconds:.0f} s")
        return runs.final_weights(out)

    def evaluate(self, name: str, weights: str, opts: List[str]) -> Dict:
        """Evaluate ``weights`` on the test split with ``opts``; cached in ``evals/{name}.json``."""
        cfg = self.config(list(opts) + ["MODEL.WEIGHTS", weights], os.path.join(self.output, "evals", name), 1)
        cfg.freeze()
        return runs.evaluate(cfg, cache=os.path.join(self.output, "evals", f"{name}.json"),
                             ingredients={"weights": weights_id(weights), "opts": list(opts),
                                          "test_set": self.test_set, "settings": self.settings})

    def pseudo_labels(self, weights: str, opts: List[str]) -> str:
        """Pseudo labels of ``weights`` (with ``opts``) on the unlabeled split; returns the json."""
        out = os.path.join(self.output, "pseudo_labels")
        path = os.path.join(out, PSEUDO_LABEL_FILE)
        cfg = self.config(list(opts) + ["MODEL.WEIGHTS", weights], out, 1)
        cfg.freeze()
        dataset = f"{self.unlabeled_set}_agnostic"
        fp = pseudo_label_fingerprint(cfg, dataset, cfg.MODEL.OPS.PSEUDO_LABEL.SCORE_THRESH)
        if pseudo_labels_done(path, fp):  # an error when it holds another run's labels
            return path
        generate_pseudo_labels(cfg, load_part_model(cfg), dataset, path, fp=fp)
        return path


def run(mini: Miniature, tables: Sequence[str] = ("1", "2", "3")) -> List[Dict]:
    """The trainings and evaluations of ``tables``; returns their rows."""
    train, unlabeled = mini.train_set, mini.unlabeled_set
    DatasetCatalog.get(f"{train}_parts")
    num_part_classes = len(MetadataCatalog.get(f"{train}_parts").thing_classes)
    agnostic = ["DATASETS.TRAIN", f"('{train}_agnostic',)"]
    rows = []

    def row(table, label, name, weights, opts):
        rows.append({"table": table, "row": label, **flatten(mini.evaluate(name, weights, opts))})

    if "1" in tables:
        aware_w = mini.train("aware", [
            "DATASETS.TRAIN", f"('{train}_parts',)", "DATASETS.CLASS_AGNOSTIC", "False",
            "MODEL.SEM_SEG_HEAD.NUM_CLASSES", str(num_part_classes),
        ])
        row("1", "class-aware training", "aware", aware_w, [])
        row("1", "class-agnostic training", "agnostic", mini.train("agnostic", agnostic), [])

    if "2" in tables:
        agn_w = mini.train("agnostic", agnostic)
        row("2", "none", "agnostic", agn_w, [])
        for source in ("perfect", "imperfect"):
            pre_w = mini.train(f"pre_{source}", agnostic + pre_aware(source))
            row("2", f"post ({source})", f"post_{source}", agn_w, post_aware(source))
            row("2", f"pre ({source})", f"pre_{source}", pre_w, pre_aware(source))
            row("2", f"pre+post ({source})", f"prepost_{source}", pre_w, pre_aware(source) + post_aware(source))
    if "3" not in tables:
        return rows

    # Table 3 as the paper's OPS rows: pre-aware (imperfect masks), no post-aware filtering
    object_aware = pre_aware("imperfect")
    base_w = mini.train("pre_imperfect", agnostic + object_aware)
    row("3", "base (pre, imperfect)", "pre_imperfect", base_w, object_aware)
    longer_w = mini.train("base_longer", agnostic + object_aware, init=base_w, fine_tune=True)
    row("3", "base, trained longer (control)", "base_longer", longer_w, object_aware)
    ss = ["MODEL.META_ARCHITECTURE", "SelfSupervisedPartMask2Former", "MODEL.OPS.SS_LOSS.ENABLED", "True",
          "DATASETS.UNLABELED", f"('{unlabeled}_agnostic',)"]
    ss_w = mini.train("ss", agnostic + object_aware + ss, init=base_w, fine_tune=True)
    row("3", "+ SS", "ss", ss_w, object_aware)
    pseudo = mini.pseudo_labels(base_w, object_aware)
    st = ["DATASETS.PART_JSONS", f"('ops_pseudo:{pseudo}',)",
          "DATASETS.TRAIN", f"('{train}_agnostic', 'ops_pseudo_agnostic')"]
    st_w = mini.train("st", object_aware + st, init=base_w, fine_tune=True)
    row("3", "+ ST", "st", st_w, object_aware)
    ss_st_w = mini.train("ss_st", object_aware + st + ss, init=base_w, fine_tune=True)
    row("3", "+ SS + ST", "ss_st", ss_st_w, object_aware)
    return rows


def imperfect_mask_iou(mini: Miniature) -> Dict[str, float]:
    """Mean (and sd, min) IoU of the simulated imperfect object masks with the true objects (test split)."""
    cfg = mini.config(pre_aware("imperfect"), os.path.join(mini.output, "evals"), 1)
    source = build_object_mask_source(cfg)
    records = [r for r in DatasetCatalog.get(f"{mini.test_set}_parts") if r.get("objects")]
    ious = [mask_iou(source(r, None), union_of_objects(r)) for r in records]
    return {"mean": statistics.fmean(ious), "sd": statistics.pstdev(ious), "min": min(ious),
            "below_0.5": sum(i < 0.5 for i in ious) / len(ious), "images": len(ious)}


def flatten(results: Dict) -> Dict[str, float]:
    seg, sem = results.get("part_segm", {}), results.get("part_sem", {})
    return {"AP": seg.get("AP", float("nan")), "AP50": seg.get("AP50", float("nan")),
            "mIoU": sem.get("mIoU", float("nan")), "mACC": sem.get("mACC", float("nan"))}


def aggregate(per_seed: List[List[Dict]]) -> List[Dict]:
    """Rows with each metric's mean, sample sd (None for one seed) and per-seed values."""
    out = []
    for rows in zip(*per_seed):
        agg = {"table": rows[0]["table"], "row": rows[0]["row"], "seeds": len(rows)}
        for m in METRICS:
            values = [r[m] for r in rows]
            agg[m], agg[f"{m}_sd"] = mean_sd(values)
            agg[f"{m}_values"] = values
        out.append(agg)
    return out


# The paper's orderings: (description, better row, worse row); checked on AP.
ORDERINGS = [
    ("Table 1: class-agnostic > class-aware", "class-agnostic training", "class-aware training"),
    ("Table 2: pre > none (perfect)", "pre (perfect)", "none"),
    ("Table 2: pre > none (imperfect)", "pre (imperfect)", "none"),
    ("Table 2: post > none (perfect)", "post (perfect)", "none"),
    ("Table 2: post > none (imperfect)", "post (imperfect)", "none"),
    ("Table 2: pre+post >= pre (perfect)", "pre+post (perfect)", "pre (perfect)"),
    ("Table 2: pre+post >= pre (imperfect)", "pre+post (imperfect)", "pre (imperfect)"),
    ("Table 3: + SS > base", "+ SS", "base (pre, imperfect)"),
    ("Table 3: + ST > base", "+ ST", "base (pre, imperfect)"),
    ("Table 3: + SS + ST > + SS", "+ SS + ST", "+ SS"),
    ("Table 3: + SS + ST > + ST", "+ SS + ST", "+ ST"),
    ("Table 3 control: + SS > base trained longer", "+ SS", "base, trained longer (control)"),
    ("Table 3 control: + ST > base trained longer", "+ ST", "base, trained longer (control)"),
]


def check_orderings(rows: List[Dict], metric: str = "AP") -> List[Dict]:
    """Each ordering's gap (mean difference) and spread (sum of the two sds), judged by
    :func:`part_d2.evaluation.seeds.compare`: ``reproduced`` when gap > spread, ``reversed`` when
    -gap > spread, else ``within spread`` (or ``one seed: not testable``)."""
    by_label = {r["row"]: r for r in rows}
    out = []
    for text, better, worse in ORDERINGS:
        if better not in by_label or worse not in by_label:
            continue  # a table that was not run
        a, b = by_label[better], by_label[worse]
        gap = a[metric] - b[metric]
        spread = None if a[f"{metric}_sd"] is None else a[f"{metric}_sd"] + b[f"{metric}_sd"]
        verdict = compare((a[metric], a[f"{metric}_sd"]), (b[metric], b[f"{metric}_sd"]))
        verdict = {HIGHER: "reproduced", LOWER: "reversed"}.get(verdict, verdict)
        out.append({"ordering": text, "metric": metric, "gap": gap, "spread": spread, "verdict": verdict})
    return out


# Table 3's fine-tunings start from the same base model in each seed, so their per-seed differences
# are paired: (row, reference row).
PAIRS = [
    ("+ SS", "base (pre, imperfect)"), ("+ ST", "base (pre, imperfect)"), ("+ SS + ST", "base (pre, imperfect)"),
    ("base, trained longer (control)", "base (pre, imperfect)"),
    ("+ SS", "base, trained longer (control)"), ("+ ST", "base, trained longer (control)"),
    ("+ SS + ST", "base, trained longer (control)"),
]


def paired_differences(rows: List[Dict]) -> List[Dict]:
    """Per-seed differences of each :data:`PAIRS` pair on every metric, their mean and sd, and the
    verdict of the same rule against zero (``higher`` when mean > sd, ``lower`` when -mean > sd)."""
    by_label = {r["row"]: r for r in rows}
    out = []
    for row, reference in PAIRS:
        if row not in by_label or reference not in by_label:
            continue
        for m in METRICS:
            diffs = [a - b for a, b in zip(by_label[row][f"{m}_values"], by_label[reference][f"{m}_values"])]
            mean, sd = mean_sd(diffs)
            out.append({"row": row, "reference": reference, "metric": m, "differences": diffs, "mean": mean,
                        "sd": sd, "verdict": compare((mean, sd), (0.0, 0.0))})
    return out


def _cell(r: Dict, m: str) -> str:
    sd = r[f"{m}_sd"]
    return f"{r[m]:.2f}" if sd is None else f"{r[m]:.2f} ± {sd:.2f}"


def markdown_table(rows: List[Dict]) -> str:
    lines = ["| table | row | AP | AP50 | mIoU | mACC |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['table']} | {r['row']} | " + " | ".join(_cell(r, m) for m in METRICS) + " |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=sorted(SCALES), default="cpu")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="seeds, one full set of runs each (default: the scale's, 0 1 2 except smoke)")
    parser.add_argument("--tables", nargs="+", choices=("1", "2", "3"), default=["1", "2", "3"],
                        help="run only these tables (each needs its own trainings; finished runs are reused)")
    parser.add_argument("--output", default="output/ops_miniature")
    parser.add_argument("--iters-scale", type=float, default=1.0, help="multiply every run's iterations (smoke tests)")
    args = parser.parse_args(argv)
    setup_logger()
    setup_logger(name="part_d2").setLevel(logging.INFO)
    seeds: Sequence[int] = args.seeds if args.seeds else SCALES[args.scale]["seeds"]
    start = time.perf_counter()
    per_seed, minis = [], []
    for seed in seeds:
        mini = Miniature(args.output, args.scale, args.iters_scale, seed)
        minis.append(mini)
        per_seed.append(run(mini, args.tables))
    rows = aggregate(per_seed)
    orderings = check_orderings(rows)
    paired = paired_differences(rows)
    iou = imperfect_mask_iou(minis[0])
    table = markdown_table(rows)
    output = os.path.abspath(args.output)
    with open(os.path.join(output, "table.md"), "w") as f:
        f.write(table + "\n")
    plot_seeds({m: {f"T{r['table']} {r['row']}": r[f"{m}_values"] for r in rows} for m in METRICS},
               os.path.join(output, "table.png"),
               f"OPS miniature, seeds {list(seeds)} (bar: mean, whisker: sd, dots: seeds)")
    settings = {k: v for k, v in minis[0].settings.items() if k != "seeds"}
    atomic_write_json(os.path.join(output, "results.json"), {
        "settings": settings, "seeds": list(seeds), "rows": rows, "orderings": orderings,
        "paired_differences": paired,
        "imperfect_mask_iou": iou})
    print(table)
    print(f"\nImperfect object masks vs the true objects ({iou['images']} test images): mean IoU "
          f"{iou['mean']:.3f} ± {iou['sd']:.3f}, min {iou['min']:.3f}, {100 * iou['below_0.5']:.1f}% below 0.5")
    print(f"\nThe paper's orderings on AP over seeds {list(seeds)} (reproduced: gap > sd sum):")
    for o in orderings:
        spread = "n/a" if o["spread"] is None else f"{o['spread']:.2f}"
        print(f"- {o['ordering']}: gap {o['gap']:+.2f}, spread {spread} -> {o['verdict']}")
    if paired:
        print("\nTable 3 paired per seed (each fine-tuning starts from that seed's base model): "
              "row - reference, mean ± sd of the differences (higher/lower: |mean| > sd)")
        for p in paired:
            sd = "n/a" if p["sd"] is None else f"{p['sd']:.2f}"
            print(f"- {p['row']} - {p['reference']}, {p['metric']}: "
                  f"{', '.join(f'{d:+.2f}' for d in p['differences'])} -> {p['mean']:+.2f} ± {sd}: {p['verdict']}")
    print(f"\n({time.perf_counter() - start:.0f} s; settings {settings})")
    return rows


if __name__ == "__main__":
    main()
