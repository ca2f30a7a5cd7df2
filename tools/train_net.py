#!/usr/bin/env python
"""Train or evaluate a part_d2 model, with detectron2's command-line conventions.

    python tools/train_net.py --config-file configs/synthetic/cascade_mask_rcnn_R_tiny_agnostic.yaml
    python tools/train_net.py --config-file CFG --eval-only MODEL.WEIGHTS output/model_final.pth
    python tools/train_net.py --config-file CFG --num-gpus 2   # 2 processes (GPUs, or CPU with gloo)
    python tools/train_net.py --config-file CFG --resume       # continue from the last checkpoint
"""
import logging
import sys

from detectron2.engine import default_argument_parser
from detectron2.evaluation import verify_results
from detectron2.utils import comm

import part_d2  # noqa: F401  (registers datasets and architectures)
from part_d2.checkpoint import PartCheckpointer
from part_d2.data.image_io import ImageReadError
from part_d2.data.part_json import PartDatasetError
from part_d2.engine import PartTrainer, launch
from part_d2.engine.setup import ConfigError, setup


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = PartTrainer.build_model(cfg)
        PartCheckpointer(model, save_dir=cfg.OUTPUT_DIR, init=cfg.INPUT.OBJECT_MASK.INIT).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        res = PartTrainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, res)
        return res
    trainer = PartTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def run(argv=None):
    args = default_argument_parser().parse_args(argv)
    try:
        return launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
                      dist_url=args.dist_url, args=(args,))
    except (ConfigError, PartDatasetError, ImageReadError) as e:
        logging.getLogger("part_d2").error(str(e))
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    run()
