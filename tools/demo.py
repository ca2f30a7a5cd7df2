#!/usr/bin/env python
"""Segment the objects of images and their parts: an overlay PNG with a legend and a json per
image (COCO RLE masks; ``object_id`` links each part to its object), plus results.json.

    python tools/demo.py --config-file CFG --input img.jpg dir/ 'more/*.png' --output out/ \
        [--object-source auto|model|detic|alpha|image] [--part-source auto|object_aware|proposals|grouping] \
        [--vocabulary bicycle,dog | --vocabulary names.txt] [--confidence-threshold 0.5] \
        [--part-score-threshold 0.3] [--topk 10] [--non-overlapping] [--crf] [--k 4] MODEL.WEIGHTS model_final.pth

The config's MODEL is the part model (for ``--part-source grouping``: the instance model whose
backbone features are grouped). Objects come from ``SEGMENTER.OBJECT_SOURCE``: by default the alpha
channel of RGBA images (OPS's input format) or else the whole image; ``model`` uses a detectron2
instance model (``SEGMENTER.OBJECT_CONFIG``/``OBJECT_WEIGHTS``, by default this config's model) and
``detic`` a Detic checkout (``SEGMENTER.DETIC_ROOT``, ``OBJECT_CONFIG``, ``OBJECT_WEIGHTS``). See
part_d2/engine/segmenter.py for the sources and options.

``KEY VALUE`` config overrides come last, as in every part_d2 tool (after an option that takes one
value, so that ``--input`` does not take them); ``--opts KEY VALUE ...`` is a deprecated alias.
"""
import argparse
import logging
import os

import part_d2  # noqa: F401
from part_d2.data.object_mask_models import read_vocabulary_file
from part_d2.engine.config_checks import ConfigError, check_threshold
from part_d2.engine.launch import add_lock_argument, exit_on_user_error
from part_d2.engine.predictor import expand_inputs, run_demo
from part_d2.engine.segmenter import OBJECT_SOURCES, PART_SOURCES
from part_d2.engine.setup import load_config
from part_d2.utils.output_lock import output_lock


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--input", nargs="+", required=True, help="image files, directories or glob patterns")
    parser.add_argument("--output", required=True, help="directory for the overlays and jsons")
    parser.add_argument("--object-source", choices=OBJECT_SOURCES, help="SEGMENTER.OBJECT_SOURCE")
    parser.add_argument("--part-source", choices=PART_SOURCES, help="SEGMENTER.PART_SOURCE")
    parser.add_argument("--vocabulary", help="object class names, comma-separated, or a file (one per line or a "
                                             "json list): Detic's vocabulary; with a detectron2 model, a filter")
    parser.add_argument("--confidence-threshold", type=float, help="object score threshold "
                        "(default SEGMENTER.OBJECT_SCORE_THRESHOLD)")
    parser.add_argument("--part-score-threshold", type=float, help="default SEGMENTER.PART_SCORE_THRESHOLD")
    parser.add_argument("--topk", type=int, help="parts per object (default SEGMENTER.TOPK)")
    parser.add_argument("--non-overlapping", action="store_true", default=None,
                        help="each pixel to the highest-scoring part of its object")
    parser.add_argument("--crf", action="store_true", default=None, help="dense-CRF smoothing of the parts")
    parser.add_argument("--k", type=int, help="pixel-grouping clusters per object "
                        "(default PART_DISTILLATION.PIXEL_GROUPING.NUM_CLUSTERS)")
    parser.add_argument("--random-weights", action="store_true",
                        help="allow an empty MODEL.WEIGHTS (a randomly initialised model, for testing only)")
    add_lock_argument(parser)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    parser.add_argument("--opts", dest="deprecated_opts", default=[], nargs=argparse.REMAINDER,
                        help="deprecated alias: give the KEY VALUE overrides last, without --opts")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(name)s] %(message)s")
    if args.deprecated_opts:
        logging.getLogger("part_d2.demo").warning("--opts is deprecated: give KEY VALUE overrides last, without it")
    args.opts = list(args.opts) + list(args.deprecated_opts)
    with exit_on_user_error():
        return demo(args)


def vocabulary_argument(value):
    """``--vocabulary``: a file of names, or comma-separated names; None when not given."""
    if value is None:
        return None
    if os.path.isfile(value):
        return read_vocabulary_file(value)
    names = [n.strip() for n in value.split(",") if n.strip()]
    if not names:
        raise ConfigError(f"--vocabulary {value!r}: no class name")
    return names


def demo(args):
    shortcuts = []
    if args.object_source:
        shortcuts += ["SEGMENTER.OBJECT_SOURCE", args.object_source]
    if args.part_source:
        shortcuts += ["SEGMENTER.PART_SOURCE", args.part_source]
    cfg = load_config(args.config_file, shortcuts + args.opts)
    cfg.freeze()
    for flag in ("confidence_threshold", "part_score_threshold"):
        if getattr(args, flag) is not None:
            check_threshold(getattr(args, flag), "--" + flag.replace("_", "-"))
    for flag in ("topk", "k"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise ConfigError(f"--{flag} {getattr(args, flag)}: must be an integer >= 1")
    vocabulary = vocabulary_argument(args.vocabulary)
    files = expand_inputs(args.input)
    if not files:
        raise ConfigError(f"--input {' '.join(args.input)}: no images found")
    options = {"topk": args.topk, "part_score_threshold": args.part_score_threshold,
               "object_score_threshold": args.confidence_threshold, "non_overlapping": args.non_overlapping,
               "crf": args.crf, "k": args.k}
    with output_lock(args.output, wait=args.wait_for_lock):
        return run_demo(cfg, files, args.output, options, vocabulary, random_weights=args.random_weights)


if __name__ == "__main__":
    main()
