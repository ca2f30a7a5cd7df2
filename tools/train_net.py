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
import functools

from detectron2.engine import default_argument_parser

import part_d2  # noqa: F401  (registers datasets and architectures)
from part_d2.engine.launch import add_lock_argument, launch_tool
from part_d2.engine.setup import load_config
from part_d2.engine.stages import call_with_args, train_net


def build_parser():
    parser = default_argument_parser()
    parser.add_argument("--random-weights", action="store_true",
                        help="with --eval-only: allow an empty MODEL.WEIGHTS (random initialisation)")
    add_lock_argument(parser)
    return parser


def output_dir(args) -> str:
    return load_config(args.config_file, args.opts).OUTPUT_DIR


def main(argv=None):
    return launch_tool(functools.partial(call_with_args, train_net), build_parser().parse_args(argv), output=output_dir)


run = main  # the entry's former name


if __name__ == "__main__":
    main()
