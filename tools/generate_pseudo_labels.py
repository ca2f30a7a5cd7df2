#!/usr/bin/env python
"""OPS self-training: write pseudo part labels of a trained model on an (unlabeled) dataset.

    python tools/generate_pseudo_labels.py --config-file CFG --dataset synthetic_parts_val_agnostic \
        --output output/pseudo [--score-thresh 0.1] MODEL.WEIGHTS output/base/model_final.pth

Writes ``OUTPUT/pseudo_labels.json`` (part_d2 part json, single category ``part``, the source's
objects kept) and prints the config overrides that train on it, e.g.
``DATASETS.PART_JSONS ("pseudo:OUTPUT/pseudo_labels.json",) DATASETS.TRAIN ("labeled", "pseudo_agnostic")``.
Runs on ``--num-gpus`` processes (GPUs, or CPU processes with gloo).
"""
import functools

from detectron2.engine import default_argument_parser

import part_d2  # noqa: F401  (registers datasets and architectures)
from part_d2.engine.launch import add_lock_argument, launch_tool
from part_d2.engine.stages import call_with_args, pseudo_labels


def build_parser():
    parser = default_argument_parser()
    parser.add_argument("--dataset", required=True, help="registered dataset to pseudo-label")
    parser.add_argument("--output", required=True, help="output directory (pseudo_labels.json)")
    parser.add_argument("--score-thresh", type=float, default=None,
                        help="keep parts scoring above this (default MODEL.OPS.PSEUDO_LABEL.SCORE_THRESH)")
    parser.add_argument("--name", default="", help="dataset name printed for DATASETS.PART_JSONS")
    parser.add_argument("--on-mismatch", choices=("error", "new-folder"), default="error",
                        help="when --output holds pseudo labels of another run: 'error' (default) or 'new-folder' "
                             "(write into OUTPUT-<fingerprint>)")
    add_lock_argument(parser)
    return parser


def main(argv=None):
    return launch_tool(functools.partial(call_with_args, pseudo_labels), build_parser().parse_args(argv),
                       output=lambda a: a.output)


run = main  # the entry's former name


if __name__ == "__main__":
    main()
