#!/usr/bin/env python
"""Segment parts in images: overlay PNGs and a COCO-style results json (RLE masks).

    python tools/demo.py --config-file CFG --input img.jpg dir/ 'more/*.png' --output out/ \
        [--confidence-threshold 0.5] --opts MODEL.WEIGHTS model_final.pth

Object-aware models read the object mask from the configured source (INPUT.OBJECT_MASK.SOURCE:
"rgba", "stored" or "model"; "perfect"/"imperfect" need dataset annotations and are refused).
"""
import argparse
import logging
import sys

import part_d2  # noqa: F401
from part_d2.engine.predictor import expand_inputs, run_demo
from part_d2.engine.setup import ConfigError, load_config


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--input", nargs="+", required=True, help="image files, directories or glob patterns")
    parser.add_argument("--output", required=True, help="directory for overlay PNGs and results.json")
    parser.add_argument("--confidence-threshold", type=float, default=None,
                        help="draw parts above this score (default TEST.DEMO_CONFIDENCE)")
    parser.add_argument("--opts", default=[], nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(name)s] %(message)s")

    try:
        cfg = load_config(args.config_file, args.opts)
    except ConfigError as e:
        sys.exit(f"error: {e}")
    if cfg.INPUT.OBJECT_MASK.SOURCE in ("perfect", "imperfect") and (
        cfg.INPUT.OBJECT_MASK.ENABLED or cfg.TEST.POST_AWARE.ENABLED
    ):
        sys.exit("error: the demo has no ground truth; set INPUT.OBJECT_MASK.SOURCE to rgba, stored or model")
    cfg.freeze()
    thresh = cfg.TEST.DEMO_CONFIDENCE if args.confidence_threshold is None else args.confidence_threshold
    files = expand_inputs(args.input)
    if not files:
        sys.exit(f"error: no images found in {args.input}")
    run_demo(cfg, files, args.output, thresh)


if __name__ == "__main__":
    main()
