#!/usr/bin/env python
"""Convert a PartDistillation stage-3 checkpoint between part_d2's and the reference's layout.

    python tools/convert_pd_checkpoint.py --to reference output/pd/distill/model_final.pth ref_layout.pth
    python tools/convert_pd_checkpoint.py --to part_d2 reference_stage3.pth part_d2_layout.pth

The reference (facebookresearch/PartDistillation) keeps the class head as one float64
``sem_seg_head.predictor.class_embed`` of N_obj x P + 1 rows (shared no-object row last);
part_d2 splits it into ``part_classifier.{weight,bias}`` and ``part_classifier.no_object.*``
(float32). Every other entry is copied unchanged. ``PartCheckpointer`` also loads the reference
layout directly, so ``--to part_d2`` is only needed to store the converted file.
"""
import argparse
import sys

import torch

from part_d2.checkpoint import CheckpointMismatchError, from_reference_layout, to_reference_layout


def convert(src: str, dst: str, to: str) -> int:
    """Convert ``src`` into ``dst``; returns the number of entries written."""
    loaded = torch.load(src, map_location="cpu", weights_only=True)
    state = loaded.get("model", loaded) if isinstance(loaded, dict) else loaded
    state = to_reference_layout(state) if to == "reference" else from_reference_layout(state)
    torch.save({"model": state}, dst)
    return len(state)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--to", required=True, choices=("reference", "part_d2"), help="layout of the output")
    parser.add_argument("input", help="checkpoint (.pth, a state dict or {'model': state dict})")
    parser.add_argument("output", help="converted checkpoint ({'model': state dict})")
    args = parser.parse_args(argv)
    try:
        n = convert(args.input, args.output, args.to)
    except (OSError, CheckpointMismatchError) as e:
        print(f"error: {args.input}: {e}", file=sys.stderr)
        return 1
    print(f"{args.output}: {n} entries in the {args.to} layout")
    return 0


if __name__ == "__main__":
    sys.exit(main())
