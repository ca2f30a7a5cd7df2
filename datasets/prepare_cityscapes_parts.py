#!/usr/bin/env python
"""Prepare Cityscapes-Panoptic-Parts as part jsons (+ few-shot train subsets, seed 1234).

    python datasets/prepare_cityscapes_parts.py [--few-shot 1 5 10]

Reads ``$DETECTRON2_DATASETS/cityscapes/{leftImg8bit,gtFinePanopticParts}`` and writes
``$DETECTRON2_DATASETS/cityscapes_parts/cityscapes_parts_{split}.json`` (see datasets/README.md).
"""
import argparse
import logging
import sys

from part_d2.data.datasets.cityscapes_parts import SPLITS, prepare_cityscapes_parts


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=None, help="datasets root (default: $DETECTRON2_DATASETS or ./datasets)")
    parser.add_argument("--splits", nargs="+", default=list(SPLITS), choices=SPLITS)
    parser.add_argument("--few-shot", nargs="*", type=float, default=[1, 5, 10],
                        help="also write train subsets with these percentages of the images")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for name, path in prepare_cityscapes_parts(args.root, args.splits, args.few_shot).items():
        print(f"Cityscapes-Panoptic-Parts {name}: wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
