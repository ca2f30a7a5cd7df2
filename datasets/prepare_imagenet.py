#!/usr/bin/env python
"""Prepare the unlabeled ImageNet-1K / -21K image lists used by PartDistillation.

    python datasets/prepare_imagenet.py --which 1k 21k [--include wnids.txt] [--exclude wnids.txt]
    python datasets/prepare_imagenet.py --attach-objects masks.json --into imagenet/imagenet1k_train_unlabeled.json

Reads ``$DETECTRON2_DATASETS/imagenet1k/train/`` and ``$DETECTRON2_DATASETS/imagenet21k/``
(``words.txt``, ``synsets.dat``, class folders) and writes ``$DETECTRON2_DATASETS/imagenet/``.
``--attach-objects`` merges stored object masks ({file_name or image_id: [RLE, ...]}) into a list.
"""
import argparse
import logging
import os
import sys

from part_d2.data.datasets.imagenet import attach_object_masks_file, prepare_imagenet
from part_d2.data.datasets.utils import dataset_root


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=None, help="datasets root (default: $DETECTRON2_DATASETS or ./datasets)")
    parser.add_argument("--which", nargs="+", default=["1k"], choices=["1k", "21k"])
    parser.add_argument("--include", help="text file of wnids: list only these classes' images")
    parser.add_argument("--exclude", help="text file of wnids: leave these classes' images out")
    parser.add_argument("--attach-objects", help="json of stored object masks to merge into --into")
    parser.add_argument("--into", help="image-list json (relative to the datasets root) receiving the masks")
    args = parser.parse_args(argv)
    if bool(args.attach_objects) != bool(args.into):
        parser.error("--attach-objects and --into go together")
    return args


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.attach_objects:
        path = attach_object_masks_file(os.path.join(dataset_root(args.root), args.into), args.attach_objects)
        print(f"object masks merged into {path}")
        return
    for name, path in prepare_imagenet(args.root, args.which, args.include, args.exclude).items():
        print(f"ImageNet {name}: wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
