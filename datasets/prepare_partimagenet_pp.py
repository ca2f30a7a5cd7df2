#!/usr/bin/env python
"""Prepare PartImageNet++ as train/val part jsons and LVIS-format jsons.

    python datasets/prepare_partimagenet_pp.py --raw ~/Downloads/PartImageNetPP [--seed 0]

``--raw`` is the release folder (json/, including/, category_name.json, discarded_data.json).
Writes ``$DETECTRON2_DATASETS/pinpp/annotations/pinpp_{train,val}[_lvis].json``; the split is
9:1 per class, seeded (see part_d2/data/datasets/pinpp.py and datasets/README.md).
"""
import argparse
import logging
import sys

from part_d2.data.datasets.pinpp import DEFAULT_SEED, prepare_pinpp


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raw", required=True, help="PartImageNet++ release folder")
    parser.add_argument("--root", default=None, help="datasets root (default: $DETECTRON2_DATASETS or ./datasets)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the per-class 9:1 split")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for name, path in prepare_pinpp(args.raw, args.root, args.seed).items():
        print(f"PartImageNet++ {name}: wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
