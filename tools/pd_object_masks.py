#!/usr/bin/env python
"""PartDistillation stage 0: object masks of an object model over an image set.

    python tools/pd_object_masks.py --config-file CFG --dataset imagenet_1k_train \
        --output output/pd/objects MODEL.WEIGHTS model.pth
    python tools/pd_object_masks.py --detic --config-file Detic/configs/Detic_...yaml \
        --dataset D --output OUT MODEL.WEIGHTS detic.pth \
        PART_DISTILLATION.OBJECT_MASKS.VOCABULARY "['dog', 'cat']" \
        PART_DISTILLATION.OBJECT_MASKS.VOCABULARY_EMBEDDINGS vocab_clip.npy

Keeps the top-k detections of each image's own class (else of any class), see
PART_DISTILLATION.OBJECT_MASKS. Output: a sharded part json with ``objects`` (register it with
part_d2.data.shards.register_stage_output) and ``object_masks.json`` for
``INPUT.OBJECT_MASK.SOURCE stored``. Interrupted runs resume.
"""
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import default_setup

import part_d2  # noqa: F401  (registers datasets and architectures)
from part_d2.data.object_mask_models import build_object_mask_model, load_detic_config
from part_d2.engine.config_checks import check_registered
from part_d2.engine.launch import launch_tool
from part_d2.engine.offline import model_provenance, run_object_masks, stage_argument_parser, stage_lock_name
from part_d2.engine.setup import load_config, setup_logging


def main(args):
    cfg = load_detic_config(args.config_file, args.opts) if args.detic else load_config(args.config_file, args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    setup_logging(cfg)
    check_registered(args.dataset, "--dataset")
    records = DatasetCatalog.get(args.dataset)
    classes = list(getattr(MetadataCatalog.get(args.dataset), "object_classes", []))
    model = build_object_mask_model(cfg, classes)
    provenance = model_provenance(cfg, ("MODEL", "INPUT", "PART_DISTILLATION.OBJECT_MASKS"))
    return run_object_masks(model, records, args.output, cfg.PART_DISTILLATION.SHARD_SIZE, args.num_jobs,
                            args.job_id, args.dataset, provenance, args.on_mismatch)


def run(argv=None):
    parser = stage_argument_parser(__doc__)
    parser.add_argument("--detic", action="store_true", help="the config is a Detic config (needs Detic)")
    args = parser.parse_args(argv)
    return launch_tool(main, args, output=lambda a: a.output, lock_name=stage_lock_name(args))


if __name__ == "__main__":
    run()
