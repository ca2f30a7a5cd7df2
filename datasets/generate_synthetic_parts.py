#!/usr/bin/env python
"""Generate part_d2's synthetic part dataset, print a summary and write a preview collage.

    python datasets/generate_synthetic_parts.py                      # defaults, skipped if current
    python datasets/generate_synthetic_parts.py --num-train 200 --multi-object-prob 0.3 --force

Writes ``ROOT/images/{split}/*.png``, ``ROOT/annotations/{split}.json``, ``ROOT/DONE`` and
``ROOT/preview.png``; ROOT defaults to ``$DETECTRON2_DATASETS/synthetic_parts``.
"""
import argparse
import logging
import os
import sys
import time

from part_d2.data.synthetic import (
    DEFAULT_IMAGE_SIZE,
    DEFAULT_NUM_IMAGES,
    default_root,
    ensure_synthetic_parts,
    generate_synthetic_parts,
)
from part_d2.data.synthetic.report import make_preview, summarize


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--root", default=None, help="dataset directory (default: $DETECTRON2_DATASETS/synthetic_parts)"
    )
    parser.add_argument("--seed", type=int, default=0)
    for split in ("train", "val", "test"):
        parser.add_argument(f"--num-{split}", type=int, default=DEFAULT_NUM_IMAGES[split], help=f"{split} images")
    parser.add_argument("--image-size", type=int, default=DEFAULT_IMAGE_SIZE, help="side of the square images")
    parser.add_argument("--multi-object-prob", type=float, default=0.0, help="probability of 2-3 objects per image")
    parser.add_argument("--workers", type=int, default=2, help="rendering processes (output does not depend on it)")
    parser.add_argument("--force", action="store_true", help="regenerate even if the data is current")
    parser.add_argument("--preview-images", type=int, default=16, help="images in preview.png (0: no preview)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    root = args.root or default_root()
    kwargs = dict(
        seed=args.seed,
        num_images={"train": args.num_train, "val": args.num_val, "test": args.num_test},
        image_size=args.image_size,
        multi_object_prob=args.multi_object_prob,
        num_workers=args.workers,
    )
    start = time.perf_counter()
    if args.force:
        generate_synthetic_parts(root, **kwargs)
    else:
        ensure_synthetic_parts(root, **kwargs)
    print(f"synthetic part dataset in {root} ready in {time.perf_counter() - start:.1f} s")
    for split, s in summarize(root).items():
        print(
            f"  {split:5s}: {s['images']:5d} images {s['objects']:6d} objects {s['parts']:7d} parts "
            f"{len(s['classes']):3d} classes: {', '.join(s['classes'])}"
        )
    if args.preview_images > 0:
        print(f"preview: {make_preview(root, os.path.join(root, 'preview.png'), args.preview_images)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
