#!/usr/bin/env python
"""Prepare Pascal-Part (VOC2010 + official Annotations_Part .mat files) as part jsons.

    python datasets/prepare_pascal_part.py [--crop-margin 0.1]

Reads ``$DETECTRON2_DATASETS/pascal_part/{VOC2010,Annotations_Part}`` and writes, for the
Pascal-Part-58 and -108 taxonomies and the VOC2010 train/val splits, full-scene and object-crop
part jsons plus the crop images (see datasets/README.md).
"""
import argparse
import logging
import sys

from part_d2.data.datasets.pascal_part import DEFAULT_CROP_MARGIN, SPLITS, TAXONOMIES, prepare_pascal_part


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=None, help="datasets root (default: $DETECTRON2_DATASETS or ./datasets)")
    parser.add_argument("--splits", nargs="+", default=list(SPLITS), choices=SPLITS)
    parser.add_argument("--taxonomies", nargs="+", type=int, default=list(TAXONOMIES), choices=TAXONOMIES)
    parser.add_argument("--crop-margin", type=float, default=DEFAULT_CROP_MARGIN,
                        help="crops: grow the object box by this fraction of its width/height on each side")
    parser.add_argument("--min-crop-parts", type=int, default=2, help="crops: objects with at least this many parts")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    written = prepare_pascal_part(args.root, args.splits, args.taxonomies, args.crop_margin, args.min_crop_parts)
    for name, path in written.items():
        print(f"{name}: wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
