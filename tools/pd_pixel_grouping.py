#!/usr/bin/env python
"""PartDistillation stage 1a: group each object's pixels into class-agnostic parts.

    python tools/pd_pixel_grouping.py --config-file CFG --dataset pd_objects_objects \
        --output output/pd/pixel_groups MODEL.WEIGHTS model.pth
    python tools/pd_pixel_grouping.py ... --num-jobs 4 --job-id 0   # one of 4 independent jobs

CFG is any detectron2 / part_d2 instance-segmentation model (its backbone gives the features);
keys under PART_DISTILLATION.PIXEL_GROUPING. The input dataset's records need ``objects`` (stage 0
output registered with part_d2.data.shards.register_stage_output, or any part dataset).
Interrupted runs resume; the output is a sharded part json (single class ``part``).
"""
import functools

import part_d2  # noqa: F401  (registers datasets and architectures)
from part_d2.engine.launch import launch_tool
from part_d2.engine.stages import call_with_args, pixel_grouping, stage_argument_parser, stage_lock_name


def main(argv=None):
    args = stage_argument_parser(__doc__).parse_args(argv)
    return launch_tool(functools.partial(call_with_args, pixel_grouping), args, output=lambda a: a.output,
                       lock_name=stage_lock_name(args))


if __name__ == "__main__":
    main()
