#!/usr/bin/env python
"""Prepare PartImageNet (OOD release) as part jsons, and index its Seg release.

    python datasets/prepare_partimagenet.py --raw ~/Downloads/PartImageNet_OOD.zip
    python datasets/prepare_partimagenet.py --seg-raw ~/Downloads/PartImageNet_Seg.zip

Outputs go to ``$DETECTRON2_DATASETS/partimagenet/annotations/partimagenet_{split}.json`` and
``$DETECTRON2_DATASETS/partimagenet_seg/partimagenet_seg_{split}.json`` (see datasets/README.md).
"""
import argparse
import logging
import sys

from part_d2.data.datasets.partimagenet import SPLITS, prepare_partimagenet, prepare_partimagenet_seg


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raw", help="PartImageNet OOD release: its zip or the folder it was extracted to")
    parser.add_argument("--seg-raw", help="PartImageNet Seg release: its zip or the folder it was extracted to")
    parser.add_argument("--root", default=None, help="datasets root (default: $DETECTRON2_DATASETS or ./datasets)")
    parser.add_argument("--splits", nargs="+", default=list(SPLITS), choices=SPLITS)
    args = parser.parse_args(argv)
    if not args.raw and not args.seg_raw:
        parser.error("give --raw and/or --seg-raw")
    return args


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.raw:
        for split, path in prepare_partimagenet(args.raw, args.root, args.splits).items():
            print(f"PartImageNet {split}: wrote {path}")
    if args.seg_raw:
        for split, path in prepare_partimagenet_seg(args.seg_raw, args.root, args.splits).items():
            print(f"PartImageNet-Seg {split}: wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
