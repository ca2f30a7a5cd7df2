#!/usr/bin/env python
"""PartDistillation stage 2: class-specific part ranking with a trained part-proposal model.

    python tools/pd_rank_parts.py --config-file CFG --dataset pd_pixel_groups_agnostic \
        --output output/pd/ranked MODEL.WEIGHTS output/proposals/model_final.pth

CFG is the part-proposal model (PartMask2Former; query embeddings are switched on here). The input
records need ``objects`` with object classes. Writes ``part_centroids.{npy,json}`` (per object
class, PART_DISTILLATION.NUM_PART_MODES modes) and a sharded part json whose part classes are
(object class, mode) pairs. Interrupted runs resume.
"""
import functools

import part_d2  # noqa: F401  (registers datasets and architectures)
from part_d2.engine.launch import launch_tool
from part_d2.engine.stages import call_with_args, rank_parts, stage_argument_parser, stage_lock_name


def main(argv=None):
    args = stage_argument_parser(__doc__).parse_args(argv)
    return launch_tool(functools.partial(call_with_args, rank_parts), args, output=lambda a: a.output,
                       lock_name=stage_lock_name(args))


if __name__ == "__main__":
    main()
