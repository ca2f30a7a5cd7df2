#!/usr/bin/env python
"""OPS self-training: write pseudo part labels of a trained model on an (unlabeled) dataset.

    python tools/generate_pseudo_labels.py --config-file CFG --dataset synthetic_parts_val_agnostic \
        --output output/pseudo [--score-thresh 0.1] MODEL.WEIGHTS output/base/model_final.pth

Writes ``OUTPUT/pseudo_labels.json`` (part_d2 part json, single category ``part``, the source's
objects kept) and prints the config overrides that train on it, e.g.
``DATASETS.PART_JSONS ("pseudo:OUTPUT/pseudo_labels.json",) DATASETS.TRAIN ("labeled", "pseudo_agnostic")``.
Runs on ``--num-gpus`` processes (GPUs, or CPU processes with gloo).
"""
import logging
import os

from detectron2.engine import default_argument_parser
from detectron2.utils import comm

import part_d2  # noqa: F401  (registers datasets and architectures)
from part_d2.checkpoint import PartCheckpointer
from part_d2.engine import PartTrainer, launch_tool
from part_d2.engine.config_checks import check_registered, check_threshold
from part_d2.engine.launch import add_lock_argument
from part_d2.engine.pseudo_labels import (
    PSEUDO_LABEL_FILE,
    generate_pseudo_labels,
    pseudo_label_fingerprint,
    pseudo_labels_done,
)
from part_d2.engine.setup import setup
from part_d2.utils.provenance import ProvenanceError

logger = logging.getLogger("part_d2.pseudo_labels")


def main(args):
    cfg = setup(args)
    check_registered(args.dataset, "--dataset")
    thresh = cfg.MODEL.OPS.PSEUDO_LABEL.SCORE_THRESH if args.score_thresh is None else args.score_thresh
    check_threshold(thresh, "--score-thresh")
    fp = pseudo_label_fingerprint(cfg, args.dataset, thresh)
    output_file = os.path.join(args.output, PSEUDO_LABEL_FILE)
    try:
        done = pseudo_labels_done(output_file, fp)
    except ProvenanceError:
        if args.on_mismatch != "new-folder":
            raise
        output_file = os.path.join(f"{args.output.rstrip(os.sep)}-{fp[:8]}", PSEUDO_LABEL_FILE)
        logger.warning(f"{args.output} holds pseudo labels of another run; writing this run's to {output_file}")
        done = pseudo_labels_done(output_file, fp)
    if done:
        logger.info(f"{output_file} already holds these pseudo labels; nothing rewritten")
        return output_file
    model = PartTrainer.build_model(cfg)
    PartCheckpointer(model, init=cfg.INPUT.OBJECT_MASK.INIT).load(cfg.MODEL.WEIGHTS)
    data = generate_pseudo_labels(cfg, model, args.dataset, output_file, thresh, fp=fp)
    if comm.is_main_process():
        name = args.name or f"{args.dataset}_pseudo"
        print(f"{len(data['annotations'])} pseudo-labeled parts on {len(data['images'])} images -> {output_file}")
        print(f'train with: DATASETS.PART_JSONS "(\'{name}:{output_file}\',)" and {name}_agnostic in DATASETS.TRAIN')
    return output_file


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


def run(argv=None):
    return launch_tool(main, build_parser().parse_args(argv), output=lambda a: a.output)


if __name__ == "__main__":
    run()
