#!/usr/bin/env python
"""PartDistillation stage 2: class-specific part ranking with a trained part-proposal model.

    python tools/pd_rank_parts.py --config-file CFG --dataset pd_pixel_groups_agnostic \
        --output output/pd/ranked MODEL.WEIGHTS output/proposals/model_final.pth

CFG is the part-proposal model (PartMask2Former; query embeddings are switched on here). The input
records need ``objects`` with object classes. Writes ``part_centroids.{npy,json}`` (per object
class, PART_DISTILLATION.RANKING.NUM_MODES modes) and a sharded part json whose part classes are
(object class, mode) pairs. Interrupted runs resume.
"""
import part_d2  # noqa: F401  (registers datasets and architectures)
from part_d2.engine.config_checks import check_registered
from part_d2.engine.launch import launch_tool
from part_d2.engine.offline import rank_parts, stage_argument_parser, stage_lock_name
from part_d2.engine.setup import setup


def main(args):
    cfg = setup(args)
    check_registered(args.dataset, "--dataset")
    return rank_parts(cfg, args.dataset, args.output, num_jobs=args.num_jobs, job_id=args.job_id,
                      on_mismatch=args.on_mismatch)


def run(argv=None):
    args = stage_argument_parser(__doc__).parse_args(argv)
    return launch_tool(main, args, output=lambda a: a.output, lock_name=stage_lock_name(args))


if __name__ == "__main__":
    run()
