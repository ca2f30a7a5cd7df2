#!/usr/bin/env python
"""A synthetic miniature of the OPS paper's Tables 1-3, end to end.

    python projects/OPS/run_miniature.py [--scale cpu|gpu|smoke] [--output DIR] [--iters-scale 1.0]

Protocol (the embedded synthetic dataset): train on seen object classes
(``synthetic_parts_train_*``), fine-tune with unlabeled unseen classes (``synthetic_parts_val_*``,
annotations ignored), test on held-out unseen classes (``synthetic_parts_test_parts``: class-agnostic
AP/AP50 and oracle-label mIoU/mACC). Rows:

- Table 1: class-aware vs class-agnostic training (no object mask);
- Table 2: no object mask / post-aware / pre-aware / pre+post, with perfect and imperfect masks;
- Table 3: on the pre-aware imperfect-mask model (evaluated pre+post), base / base trained longer
  (control) / SS / ST / SS+ST fine-tuning.

Trained models are reused across rows (post-aware rows only re-evaluate). Each training run has its
own directory under ``--output`` (skipped when its ``model_final.pth`` exists) and each evaluation
its json under ``--output/evals`` (skipped when present), so an interrupted run resumes.
"""
import argparse
import logging
import os
import time
from typing import Dict, List, Optional

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils.logger import setup_logger

import part_d2  # noqa: F401  (registers datasets and architectures)
from part_d2.checkpoint import PartCheckpointer
from part_d2.engine.pseudo_labels import (
    PSEUDO_LABEL_FILE,
    generate_pseudo_labels,
    pseudo_label_fingerprint,
    pseudo_labels_done,
)
from part_d2.engine.setup import load_config
from part_d2.engine.trainer import PartTrainer
from part_d2.utils.io import atomic_write_json
from part_d2.utils.provenance import cached_json, weights_id

logger = logging.getLogger("part_d2.ops_miniature")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BASE_CONFIG = os.path.join(ROOT, "configs", "synthetic", "mask2former_R_tiny_agnostic.yaml")

# Per-scale settings: iterations of base training and of fine-tuning, labeled (= unlabeled) images
# per batch, device, training image size, loader workers. Fine-tuning uses 1/10 of the base
# learning rate, as OPS does (1e-4 -> 1e-5).
# CPU timing, 1 thread on 2 shared cores: 0.40-0.59 s/it (3-channel input), 0.50-0.67 s/it
# (pre-aware), 0.8-0.9 s/it (SS, 4 + 4 images), 15-19 s per test evaluation (300 images), the lower
# values at load ~1.5, the higher at load ~5. Total 4 x 1200 + 4 x 400 iterations + 13
# evaluations: ~60 min with one thread at load ~1.5; projected ~35-45 min on 2 idle cores.
# "smoke" is a plumbing check on the 48/12/12-image mini variant of the dataset.
SCALES = {
    "cpu": {"base_iters": 1200, "ft_iters": 400, "ims": 4, "device": "cpu", "image_size": 128, "workers": 0,
            "dataset": "synthetic_parts"},
    "gpu": {"base_iters": 8000, "ft_iters": 2000, "ims": 16, "device": "cuda", "image_size": 160, "workers": 4,
            "dataset": "synthetic_parts"},
    "smoke": {"base_iters": 3, "ft_iters": 2, "ims": 2, "device": "cpu", "image_size": 64, "workers": 0,
              "dataset": "synthetic_parts_mini"},
}
FT_LR_FACTOR = 0.1
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

    def __init__(self, output: str, scale: str, iters_scale: float):
        self.output = os.path.abspath(output)
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
            "OUTPUT_DIR", output_dir, "SEED", "0",
        ]
        return load_config(BASE_CONFIG, common + list(opts))

    def train(self, name: str, opts: List[str], init: str = "", fine_tune: bool = False) -> str:
        """Train run ``name`` (fine-tuning iterations if ``fine_tune``); returns its final weights."""
        out = os.path.join(self.output, name)
        final = os.path.join(out, "model_final.pth")
        if os.path.isfile(final):
            logger.info(f"[skip] {name}: {final} exists")
            return final
        iters = self.settings["ft_iters" if fine_tune else "base_iters"]
        # no evaluation inside training: the rows evaluate each model once, with their own options
        cfg = self.config(list(opts) + ["MODEL.WEIGHTS", init, "DATASETS.TEST", "()"], out, iters)
        if fine_tune:
            cfg.SOLVER.BASE_LR *= FT_LR_FACTOR
        cfg.freeze()
        os.makedirs(out, exist_ok=True)
        start = time.perf_counter()
        trainer = PartTrainer(cfg)
        trainer.resume_or_load(resume=False)
        trainer.train()
        seconds = time.perf_counter() - start
        atomic_write_json(os.path.join(out, "train_time.json"), {"seconds": seconds, "iters": iters})
        logger.info(f"{name}: {iters} iterations in {seconds:.0f} s")
        return final

    def evaluate(self, name: str, weights: str, opts: List[str]) -> Dict:
        """Evaluate ``weights`` on the test split with ``opts``; cached in ``evals/{name}.json``."""
        path = os.path.join(self.output, "evals", f"{name}.json")

        def compute():
            cfg = self.config(list(opts) + ["MODEL.WEIGHTS", weights], os.path.join(self.output, "evals", name), 1)
            cfg.freeze()
            model = PartTrainer.build_model(cfg)
            PartCheckpointer(model, init=cfg.INPUT.OBJECT_MASK.INIT).load(weights)
            return {k: dict(v) for k, v in PartTrainer.test(cfg, model).items()}

        return cached_json(path, {"weights": weights_id(weights), "opts": list(opts), "test_set": self.test_set,
                                  "settings": self.settings}, compute)

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
        model = PartTrainer.build_model(cfg)
        PartCheckpointer(model, init=cfg.INPUT.OBJECT_MASK.INIT).load(weights)
        generate_pseudo_labels(cfg, model, dataset, path, fp=fp)
        return path


def run(mini: Miniature) -> List[Dict]:
    """All trainings and evaluations; returns the table rows."""
    train, unlabeled = mini.train_set, mini.unlabeled_set
    DatasetCatalog.get(f"{train}_parts")
    num_part_classes = len(MetadataCatalog.get(f"{train}_parts").thing_classes)
    agnostic = ["DATASETS.TRAIN", f"('{train}_agnostic',)"]
    rows = []

    def row(table, label, name, weights, opts):
        rows.append({"table": table, "row": label, **flatten(mini.evaluate(name, weights, opts))})

    aware_w = mini.train("aware", [
        "DATASETS.TRAIN", f"('{train}_parts',)", "DATASETS.CLASS_AGNOSTIC", "False",
        "MODEL.SEM_SEG_HEAD.NUM_CLASSES", str(num_part_classes),
    ])
    row("1", "class-aware training", "aware", aware_w, [])
    agn_w = mini.train("agnostic", agnostic)
    row("1", "class-agnostic training", "agnostic", agn_w, [])

    row("2", "none", "agnostic", agn_w, [])
    for source in ("perfect", "imperfect"):
        pre_w = mini.train(f"pre_{source}", agnostic + pre_aware(source))
        row("2", f"post ({source})", f"post_{source}", agn_w, post_aware(source))
        row("2", f"pre ({source})", f"pre_{source}", pre_w, pre_aware(source))
        row("2", f"pre+post ({source})", f"prepost_{source}", pre_w, pre_aware(source) + post_aware(source))

    object_aware = pre_aware("imperfect") + post_aware("imperfect")
    base_w = os.path.join(mini.output, "pre_imperfect", "model_final.pth")
    row("3", "base (pre+post, imperfect)", "prepost_imperfect", base_w, object_aware)
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


def flatten(results: Dict) -> Dict[str, float]:
    seg, sem = results.get("part_segm", {}), results.get("part_sem", {})
    return {"AP": seg.get("AP", float("nan")), "AP50": seg.get("AP50", float("nan")),
            "mIoU": sem.get("mIoU", float("nan")), "mACC": sem.get("mACC", float("nan"))}


def markdown_table(rows: List[Dict]) -> str:
    lines = ["| table | row | AP | AP50 | mIoU | mACC |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['table']} | {r['row']} | {r['AP']:.2f} | {r['AP50']:.2f} | {r['mIoU']:.2f} | {r['mACC']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=sorted(SCALES), default="cpu")
    parser.add_argument("--output", default="output/ops_miniature")
    parser.add_argument("--iters-scale", type=float, default=1.0, help="multiply every run's iterations (smoke tests)")
    args = parser.parse_args(argv)
    setup_logger()
    setup_logger(name="part_d2").setLevel(logging.INFO)
    mini = Miniature(args.output, args.scale, args.iters_scale)
    start = time.perf_counter()
    rows = run(mini)
    table = markdown_table(rows)
    with open(os.path.join(mini.output, "table.md"), "w") as f:
        f.write(table + "\n")
    atomic_write_json(os.path.join(mini.output, "results.json"), {"settings": mini.settings, "rows": rows})
    print(table)
    print(f"\n({time.perf_counter() - start:.0f} s; settings {mini.settings})")
    return rows


if __name__ == "__main__":
    main()
