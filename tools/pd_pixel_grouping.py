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
from detectron2.data import DatasetCatalog, MetadataCatalog

import part_d2  # noqa: F401  (registers datasets and architectures)
from part_d2.engine.config_checks import check_registered
from part_d2.engine.launch import launch_tool
from part_d2.engine.offline import grouping_provenance, run_pixel_grouping, stage_argument_parser, stage_lock_name
from part_d2.engine.setup import setup
from part_d2.modeling.pixel_grouping import PixelGrouper


def main(args):
    cfg = setup(args)
    check_registered(args.dataset, "--dataset")
    records = DatasetCatalog.get(args.dataset)
    classes = list(getattr(MetadataCatalog.get(args.dataset), "object_classes", []))
    pd = cfg.PART_DISTILLATION
    return run_pixel_grouping(PixelGrouper(cfg), records, args.output, pd.SHARD_SIZE, classes, pd.SEED,
                              pd.PIXEL_GROUPING.MAX_OBJECTS_PER_IMAGE, args.num_jobs, args.job_id, args.dataset,
                              grouping_provenance(cfg), args.on_mismatch)


def run(argv=None):
    args = stage_argument_parser(__doc__).parse_args(argv)
    return launch_tool(main, args, output=lambda a: a.output, lock_name=stage_lock_name(args))


if __name__ == "__main__":
    run()
