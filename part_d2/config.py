"""The single entry point for part_d2's config keys: :func:`add_part_d2_config`.

Every key part_d2 adds to detectron2's default config is defined here, with its default and a
one-line comment. The keys are grouped by subsystem in private helpers of this file only to keep
each group readable; users call :func:`add_part_d2_config` alone.
"""
from detectron2.config import CfgNode as CN


def add_part_d2_config(cfg):
    """Add every part_d2 key to a detectron2 config (idempotent)."""
    if getattr(cfg, "_part_d2_added", False) or "PART_D2" in cfg:
        return cfg
    _add_data_config(cfg)
    _add_object_mask_config(cfg)
    _add_eval_config(cfg)
    _add_solver_config(cfg)
    _add_mask2former_config(cfg)
    _add_ops_config(cfg)
    _add_part_distillation_config(cfg)
    return cfg


def _add_data_config(cfg):
    cfg.PART_D2 = CN()
    cfg.PART_D2.SEED_DATA = 0  # seed of on-demand generated data (synthetic dataset)
    cfg.DATASETS.CLASS_AGNOSTIC = True  # map every part class of the training data to one "part" class
    cfg.DATASETS.MIN_PART_AREA = 0.0  # drop part annotations smaller than this many pixels at load time
    cfg.INPUT.DATASET_MAPPER_NAME = "part_instance_lsj"  # "part_instance_lsj" (LSJ) or "part_instance" (shortest edge)
    cfg.INPUT.IMAGE_SIZE = 512  # LSJ: square output size of FixedSizeCrop
    cfg.INPUT.MIN_SCALE = 0.1  # LSJ: smallest ResizeScale factor
    cfg.INPUT.MAX_SCALE = 2.0  # LSJ: largest ResizeScale factor
    cfg.INPUT.RANDOM_FLIP_LSJ = "horizontal"  # LSJ: "horizontal", "vertical" or "none"
    cfg.INPUT.SIZE_DIVISIBILITY = -1  # pad images to a multiple of this at batching (-1: model's own)
    cfg.INPUT.COLOR_AUG_SSD = False  # photometric distortion as in SSD (Mask2Former's option)


def _add_object_mask_config(cfg):
    cfg.INPUT.OBJECT_MASK = CN()
    cfg.INPUT.OBJECT_MASK.ENABLED = False  # feed the object mask as a 4th input channel ("pre-aware")
    # source of object masks: "perfect" (union of the object's parts), "stored" (RLE json),
    # "rgba" (alpha channel of the image file), "imperfect" (perturbed perfect), "model"
    cfg.INPUT.OBJECT_MASK.SOURCE = "perfect"
    cfg.INPUT.OBJECT_MASK.STORED_JSON = ""  # "stored" source: json {file_name or image_id: [RLE, ...]}
    cfg.INPUT.OBJECT_MASK.MODEL_CONFIG = ""  # "model" source: detectron2 config of an instance model
    cfg.INPUT.OBJECT_MASK.MODEL_WEIGHTS = ""  # "model" source: its weights
    cfg.INPUT.OBJECT_MASK.MODEL_SCORE_THRESH = 0.5  # "model" source: keep detections above this score
    cfg.INPUT.OBJECT_MASK.IMPERFECT_MAX_KERNEL = 15  # "imperfect": largest erosion/dilation kernel (px)
    cfg.INPUT.OBJECT_MASK.IMPERFECT_MAX_SHIFT = 0.05  # "imperfect": largest jitter, fraction of box size
    cfg.INPUT.OBJECT_MASK.IMPERFECT_SEED = 0  # "imperfect": seed (combined with the image id)
    cfg.INPUT.OBJECT_MASK.INIT = "zero"  # init of the 4th stem channel: "zero", "mean" or "random"
    cfg.INPUT.OBJECT_MASK.PIXEL_VALUE = 255.0  # value of object pixels in the 4th channel (before normalisation)
    cfg.TEST.POST_AWARE = CN()
    cfg.TEST.POST_AWARE.ENABLED = False  # crop predicted parts to the object mask ("post-aware")
    cfg.TEST.POST_AWARE.MIN_AREA_FRACTION = 0.5  # drop a part keeping less than this fraction of its area
    cfg.TEST.POST_AWARE.RESCORE = True  # multiply the score by the kept area fraction


def _add_eval_config(cfg):
    cfg.TEST.PART_EVAL = CN()
    cfg.TEST.PART_EVAL.MAX_DETS = [1, 10, 100, 200]  # maxDets for AR; AP uses the largest
    cfg.TEST.PART_EVAL.CLASS_AWARE = False  # also report class-aware AP (needs part classes)
    cfg.TEST.DETECTIONS_PER_IMAGE = 200  # at most this many part predictions per image
    cfg.TEST.DEMO_CONFIDENCE = 0.5  # demo: default score threshold of drawn parts


def _add_solver_config(cfg):
    cfg.SOLVER.OPTIMIZER = "SGD"  # "SGD" or "ADAMW"
    cfg.SOLVER.BACKBONE_MULTIPLIER = 1.0  # learning-rate factor of backbone parameters
    cfg.SOLVER.WEIGHT_DECAY_EMBED = 0.0  # weight decay of embeddings (queries, positional)
    cfg.SOLVER.NUM_WORKERS_EVAL = 0  # dataloader workers at evaluation


def _add_mask2former_config(cfg):
    """Mask2Former keys, named as in the official implementation so its YAML files load."""


def _add_ops_config(cfg):
    """OPS: self-supervised fine-tuning and self-training keys."""


def _add_part_distillation_config(cfg):
    """PartDistillation: object masks, pixel grouping, part ranking and self-training keys."""
