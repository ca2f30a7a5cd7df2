#!/usr/bin/env python
"""Train or evaluate a part_d2 model, with detectron2's command-line conventions.

    python tools/train_net.py --config-file configs/synthetic/cascade_mask_rcnn_R_tiny_agnostic.yaml
    python tools/train_net.py --config-file CFG --eval-only MODEL.WEIGHTS output/model_final.pth
    python tools/train_net.py --config-file CFG --num-gpus 2   # 2 processes (GPUs, or CPU with gloo)
    python tools/train_net.py --config-file CFG --resume       # continue from the last checkpoint

With ``PIPELINE.*`` keys one run also executes offline stages as hooks (stage 1a before training,
stage 2 or OPS pseudo labels after it) and continues with ``PIPELINE.NEXT_CONFIG``
(:mod:`part_d2.engine.hooks`).
"""
import os

from detectron2.engine import default_argument_parser
from detectron2.evaluation import verify_results
from detectron2.utils import comm

import part_d2  # noqa: F401  (registers datasets and architectures)
from part_d2.checkpoint import PartCheckpointer
from part_d2.engine import PartTrainer, launch_tool
from part_d2.engine.config_checks import ConfigError, check_datasets
from part_d2.engine.launch import add_lock_argument
from part_d2.engine.setup import load_config, setup
from part_d2.engine.trainer import train_pipeline


def main(args):
    cfg = setup(args)
    check_datasets(cfg, ("DATASETS.TEST",) if args.eval_only else ("DATASETS.TRAIN", "DATASETS.TEST",
                                                                    "DATASETS.UNLABELED"))
    if args.eval_only:
        resuming = args.resume and os.path.isfile(os.path.join(cfg.OUTPUT_DIR, "last_checkpoint"))
        if not cfg.MODEL.WEIGHTS and not args.random_weights and not resuming:
            raise ConfigError("--eval-only with an empty MODEL.WEIGHTS would evaluate a randomly initialised model; "
                              "give MODEL.WEIGHTS path/to/model.pth (or --random-weights to do it on purpose)")
        model = PartTrainer.build_model(cfg)
        PartCheckpointer(model, save_dir=cfg.OUTPUT_DIR, init=cfg.INPUT.OBJECT_MASK.INIT).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        res = PartTrainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, res)
        return res
    return train_pipeline(cfg, args)


def build_parser():
    parser = default_argument_parser()
    parser.add_argument("--random-weights", action="store_true",
                        help="with --eval-only: allow an empty MODEL.WEIGHTS (random initialisation)")
    add_lock_argument(parser)
    return parser


def output_dir(args) -> str:
    return load_config(args.config_file, args.opts).OUTPUT_DIR


def run(argv=None):
    return launch_tool(main, build_parser().parse_args(argv), output=output_dir)


if __name__ == "__main__":
    run()
