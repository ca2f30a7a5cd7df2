#!/usr/bin/env python
"""Segment parts in images: overlay PNGs and a COCO-style results json (RLE masks).

    python tools/demo.py --config-file CFG --input img.jpg dir/ 'more/*.png' --output out/ \
        [--confidence-threshold 0.5] MODEL.WEIGHTS model_final.pth

``KEY VALUE`` config overrides come last, as in every part_d2 tool (after an option that takes one
value, so that ``--input`` does not take them); ``--opts KEY VALUE ...`` is a deprecated alias.

Object-aware models read the object mask from the configured source (INPUT.OBJECT_MASK.SOURCE:
"rgba", "stored" or "model"; "perfect"/"imperfect" need dataset annotations and are refused).
"""
import argparse
import logging

import part_d2  # noqa: F401
from part_d2.engine.config_checks import ConfigError
from part_d2.engine.launch import add_lock_argument, exit_on_user_error
from part_d2.engine.predictor import expand_inputs, run_demo
from part_d2.engine.setup import load_config
from part_d2.utils.output_lock import output_lock


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--input", nargs="+", required=True, help="image files, directories or glob patterns")
    parser.add_argument("--output", required=True, help="directory for overlay PNGs and results.json")
    parser.add_argument("--confidence-threshold", type=float, default=None,
                        help="draw parts above this score (default TEST.DEMO_CONFIDENCE)")
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


def demo(args):
    cfg = load_config(args.config_file, args.opts)
    if cfg.INPUT.OBJECT_MASK.SOURCE in ("perfect", "imperfect") and (
        cfg.INPUT.OBJECT_MASK.ENABLED or cfg.TEST.POST_AWARE.ENABLED
    ):
        raise ConfigError("the demo has no ground truth; set INPUT.OBJECT_MASK.SOURCE to rgba, stored or model")
    cfg.freeze()
    files = expand_inputs(args.input)
    if not files:
        raise ConfigError(f"--input {' '.join(args.input)}: no images found")
    if not cfg.MODEL.WEIGHTS and not args.random_weights:
        raise ConfigError("MODEL.WEIGHTS is empty: the model would be randomly initialised; give "
                          "MODEL.WEIGHTS path/to/model.pth (or --random-weights to do it on purpose)")
    with output_lock(args.output, wait=args.wait_for_lock):
        return run_demo(cfg, files, args.output, args.confidence_threshold, random_weights=args.random_weights)


if __name__ == "__main__":
    main()
