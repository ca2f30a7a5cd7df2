#!/usr/bin/env python
"""Train or evaluate PartDistillation's models: part proposals (stage 1b) and self-training with
per-object-class part classifiers (stage 3).

    python projects/PartDistillation/train_net.py --config-file CFG \
        --stage-output pd_groups=output/pd/pixel_groups [KEY VALUE ...]
    python projects/PartDistillation/train_net.py --config-file CFG --eval-only MODEL.WEIGHTS W

Same conventions as ``tools/train_net.py``, plus: ``--stage-output PREFIX=DIR`` (repeatable)
registers a finished offline stage output as ``PREFIX_{parts,agnostic,objects}``; the training
records pass the area filters and the few-shot selection of ``DATASETS.MIN_*_AREA_RATIO`` /
``DATASETS.FEW_SHOT_*`` (:mod:`part_d2.data.few_shot`); with ``TEST.PART_DISCOVERY.ENABLED``
evaluation reports AR and C-/A-mIoU (:mod:`part_d2.evaluation.part_discovery`).
"""
import logging
import sys

from detectron2.data import build_detection_train_loader, get_detection_dataset_dicts
from detectron2.engine import default_argument_parser
from detectron2.evaluation import DatasetEvaluators

import part_d2  # noqa: F401  (registers datasets and architectures)
import part_d2.modeling.mask2former.part_classifier  # noqa: F401  (registers PartDistillationMask2Former)
from part_d2.checkpoint import PartCheckpointer
from part_d2.data.dataset_mapper import PartDatasetMapper
from part_d2.data.few_shot import select_training_records
from part_d2.data.image_io import ImageReadError
from part_d2.data.part_json import PartDatasetError
from part_d2.engine import PartTrainer, launch
from part_d2.engine.setup import ConfigError, setup
from part_d2.engine.sharded_store import register_stage_output
from part_d2.evaluation.part_discovery import PartDiscoveryEvaluator


class PartDistillationTrainer(PartTrainer):
    """:class:`PartTrainer` with PartDistillation's training-record selection and evaluator."""

    @classmethod
    def build_train_loader(cls, cfg):
        records = get_detection_dataset_dicts(cfg.DATASETS.TRAIN, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS)
        return build_detection_train_loader(
            cfg, dataset=select_training_records(cfg, records), mapper=PartDatasetMapper(cfg, True)
        )

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        if cfg.TEST.PART_DISCOVERY.ENABLED:
            return DatasetEvaluators([PartDiscoveryEvaluator(cfg, dataset_name)])
        return super().build_evaluator(cfg, dataset_name, output_folder)


def register_stage_outputs(specs) -> None:
    """Register ``PREFIX=DIR`` offline stage outputs."""
    for spec in specs:
        prefix, sep, root = spec.partition("=")
        if not sep or not prefix or not root:
            raise ConfigError(f"--stage-output {spec!r}: expected PREFIX=DIR")
        register_stage_output(prefix, root)


def main(args):
    register_stage_outputs(args.stage_output)
    cfg = setup(args)
    if args.eval_only:
        model = PartDistillationTrainer.build_model(cfg)
        PartCheckpointer(model, save_dir=cfg.OUTPUT_DIR, init=cfg.INPUT.OBJECT_MASK.INIT).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        return PartDistillationTrainer.test(cfg, model)
    trainer = PartDistillationTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def run(argv=None):
    parser = default_argument_parser()
    parser.add_argument("--stage-output", action="append", default=[], metavar="PREFIX=DIR",
                        help="register a finished offline stage output as PREFIX_{parts,agnostic,objects}")
    args = parser.parse_args(argv)
    try:
        return launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
                      dist_url=args.dist_url, args=(args,))
    except (ConfigError, PartDatasetError, ImageReadError) as e:
        logging.getLogger("part_d2").error(str(e))
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    run()
