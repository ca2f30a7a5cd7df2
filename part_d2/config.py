"""The single entry point for part_d2's config keys: :func:`add_part_d2_config`.

Every key part_d2 adds to detectron2's default config is defined here, with its default and a
one-line comment. The keys are grouped by subsystem in private helpers of this file only to keep
each group readable; users call :func:`add_part_d2_config` alone.
"""
import logging

from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg

from part_d2.utils.errors import ConfigError

logger = logging.getLogger(__name__)


# Keys that exist only so that official Mask2Former / detectron2 YAML files load: part_d2 reads them
# only here. Key -> the values part_d2 implements (None: any value, the key changes nothing part_d2
# does); any other value is logged as a warning naming the key by :func:`warn_unimplemented_keys`.
OFFICIAL_YAML_ONLY_KEYS = {
    "INPUT.COLOR_AUG_SSD": (False,),  # Mask2Former's SSD photometric distortion: not implemented
    "INPUT.CROP.SINGLE_CATEGORY_MAX_AREA": (1.0,),  # Mask2Former semantic crops: not implemented
    "INPUT.SIZE_DIVISIBILITY": (-1,),  # Mask2Former semantic padding; part_d2 pads with MASK_FORMER.SIZE_DIVISIBILITY
    "MODEL.RESNETS.STEM_TYPE": ("basic",),  # DeepLab stem: not implemented
    "MODEL.RESNETS.RES5_MULTI_GRID": ([1, 1, 1],),  # DeepLab multi-grid: not implemented
    "MODEL.MASK_FORMER.ENC_LAYERS": (0,),  # MaskFormer v1 transformer encoder: not implemented
    "MODEL.MASK_FORMER.TEST.SEMANTIC_ON": (False,),  # semantic inference: not implemented
    "MODEL.MASK_FORMER.TEST.INSTANCE_ON": (True,),  # instance inference is always on
    "MODEL.MASK_FORMER.TEST.PANOPTIC_ON": (False,),  # panoptic inference: not implemented
    "MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD": None,  # panoptic inference only
    "MODEL.MASK_FORMER.TEST.OVERLAP_THRESHOLD": None,  # panoptic inference only
    "MODEL.MASK_FORMER.TEST.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE": (True,),  # always true for instances
}


def add_part_d2_config(cfg):
    """Add every part_d2 key to a detectron2 config (idempotent)."""
    if "PART_DISTILLATION" in cfg:
        return cfg
    _add_data_config(cfg)
    _add_object_mask_config(cfg)
    _add_eval_config(cfg)
    _add_solver_config(cfg)
    _add_mask2former_config(cfg)
    _add_ops_config(cfg)
    _add_part_distillation_config(cfg)
    _add_pipeline_config(cfg)
    _add_federated_loss_config(cfg)
    _add_segmenter_config(cfg)
    return cfg


def warn_unimplemented_keys(cfg) -> list:
    """Log a warning naming each :data:`OFFICIAL_YAML_ONLY_KEYS` key set to a value part_d2 does
    not implement; returns those keys."""
    bad = []
    for key, implemented in OFFICIAL_YAML_ONLY_KEYS.items():
        node = cfg
        for name in key.split("."):
            node = node[name]
        if implemented is not None and node not in implemented:
            bad.append(key)
            logger.warning(f"{key}={node!r} is not implemented by part_d2 (only {list(implemented)}); ignored")
    return bad


def _yacs_message(e: Exception) -> str:
    return " ".join(str(e.args[0] if e.args else e).split())


def load_part_d2_config(config_file: str = "", opts=(), add_other_configs=()):
    """detectron2's default config + part_d2's keys (+ ``add_other_configs``: functions adding
    another project's keys, e.g. Detic's, called after part_d2's so that their definitions win),
    merged with a YAML file and KEY VALUE pairs.

    Raises:
        ConfigError: naming the file and the key, for an unknown key, a bad value or a missing file.
    """
    cfg = get_cfg()
    add_part_d2_config(cfg)
    for add_config in add_other_configs:
        add_config(cfg)
    if config_file:
        try:
            cfg.merge_from_file(config_file)
        except FileNotFoundError as e:
            raise ConfigError(f"{config_file}: config file not found ({e})") from None
        except (KeyError, AssertionError, ValueError, TypeError) as e:  # unknown key, wrong type
            raise ConfigError(f"{config_file}: {_yacs_message(e)}") from None
    try:
        cfg.merge_from_list(list(opts))
    except (KeyError, AssertionError, ValueError, TypeError) as e:
        where = f"{config_file} or its overrides" if config_file else "command-line overrides"
        raise ConfigError(f"{where}: {_yacs_message(e)}") from None
    warn_unimplemented_keys(cfg)
    return cfg


def _add_data_config(cfg):
    # map every training class to one (views without an _agnostic variant, e.g. _objects); class-agnostic
    # parts are the _agnostic view, and True with a _parts training dataset is an error
    cfg.DATASETS.CLASS_AGNOSTIC = False
    cfg.INPUT.DATASET_MAPPER_NAME = "part_instance_lsj"  # "part_instance_lsj" (LSJ) or "part_instance" (shortest edge)
    cfg.INPUT.IMAGE_SIZE = 512  # LSJ: square output size of FixedSizeCrop
    cfg.INPUT.MIN_SCALE = 0.1  # LSJ: smallest ResizeScale factor
    cfg.INPUT.MAX_SCALE = 2.0  # LSJ: largest ResizeScale factor
    cfg.INPUT.RANDOM_FLIP_LSJ = "horizontal"  # LSJ: "horizontal", "vertical" or "none"
    cfg.INPUT.SIZE_DIVISIBILITY = -1  # official Mask2Former key, see OFFICIAL_YAML_ONLY_KEYS
    cfg.INPUT.COLOR_AUG_SSD = False  # official Mask2Former key (SSD colour jitter), see OFFICIAL_YAML_ONLY_KEYS


def _add_object_mask_config(cfg):
    cfg.INPUT.OBJECT_MASK = CN()
    cfg.INPUT.OBJECT_MASK.ENABLED = False  # feed the object mask as a 4th input channel ("pre-aware")
    # source of object masks: "perfect" (union of the object's parts), "stored" (RLE json),
    # "rgba" (alpha channel of the image file), "imperfect" (perturbed perfect), "model"
    cfg.INPUT.OBJECT_MASK.SOURCE = "perfect"
    cfg.INPUT.OBJECT_MASK.STORED_JSON = ""  # "stored" source: json {file_name or image_id: [RLE, ...]}
    cfg.INPUT.OBJECT_MASK.MODEL_CONFIG = ""  # "model" source: detectron2 config of an instance or foreground model
    cfg.INPUT.OBJECT_MASK.MODEL_WEIGHTS = ""  # "model" source: its weights
    cfg.INPUT.OBJECT_MASK.MODEL_SCORE_THRESH = 0.5  # "model" source: least score of a detection (foreground pixel)
    # "imperfect": largest erosion/dilation kernel side, fraction of sqrt(object area); with the shift
    # below, mean IoU 0.81 with the true object on the synthetic train split (projects/OPS/README.md)
    cfg.INPUT.OBJECT_MASK.IMPERFECT_KERNEL_FRACTION = 0.12
    cfg.INPUT.OBJECT_MASK.IMPERFECT_MAX_SHIFT = 0.03  # "imperfect": largest shift, fraction of the object's box size
    cfg.INPUT.OBJECT_MASK.IMPERFECT_SEED = 0  # "imperfect": seed (combined with the image id)
    cfg.INPUT.OBJECT_MASK.INIT = "zero"  # init of the 4th stem channel: "zero", "mean" or "random"
    cfg.INPUT.OBJECT_MASK.PIXEL_VALUE = 255.0  # value of object pixels in the 4th channel (before normalisation)
    # training: also give a "sem_seg" target, 1 on the object mask (SOURCE), 0 elsewhere (a foreground model)
    cfg.INPUT.OBJECT_MASK.FOREGROUND_TARGET = False
    cfg.TEST.POST_AWARE = CN()
    cfg.TEST.POST_AWARE.ENABLED = False  # crop predicted parts to the object mask ("post-aware")
    # optional rules beyond the paper's crop (part_d2 options; defaults = crop only, as the paper):
    cfg.TEST.POST_AWARE.MIN_AREA_FRACTION = 0.0  # also drop a part keeping less than this fraction of its area
    cfg.TEST.POST_AWARE.RESCORE = False  # also multiply a part's score by its kept area fraction


def _add_eval_config(cfg):
    cfg.TEST.PART_EVAL = CN()
    cfg.TEST.PART_EVAL.MAX_DETS = [1, 10, 100, 200]  # maxDets for AR; AP uses the largest
    cfg.TEST.PART_EVAL.CLASS_AWARE = False  # also report class-aware AP (needs part classes)
    cfg.TEST.LVIS_EVAL = CN()
    cfg.TEST.LVIS_EVAL.MAX_DETS = 300  # LVIS-style evaluation (evaluator_type "lvis"): detections kept per image
    cfg.TEST.DETECTIONS_PER_IMAGE = 200  # at most this many part predictions per image


def _add_solver_config(cfg):
    cfg.SOLVER.OPTIMIZER = "SGD"  # "SGD" or "ADAMW"
    cfg.SOLVER.BACKBONE_MULTIPLIER = 1.0  # learning-rate factor of backbone parameters
    cfg.SOLVER.WEIGHT_DECAY_EMBED = 0.0  # weight decay of embeddings (queries, positional)
    cfg.SOLVER.NUM_WORKERS_EVAL = 0  # dataloader workers at evaluation


def _add_mask2former_config(cfg):
    """Mask2Former keys, named as in the official implementation so its YAML files load."""
    # keys of official YAMLs only (see OFFICIAL_YAML_ONLY_KEYS)
    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 1.0  # Mask2Former semantic crops
    cfg.MODEL.RESNETS.STEM_TYPE = "basic"  # DeepLab stem type
    cfg.MODEL.RESNETS.RES5_MULTI_GRID = [1, 1, 1]  # DeepLab multi-grid
    mf = cfg.MODEL.MASK_FORMER = CN()
    mf.TRANSFORMER_DECODER_NAME = "MultiScaleMaskedTransformerDecoder"  # transformer decoder registry name
    mf.TRANSFORMER_IN_FEATURE = "multi_scale_pixel_decoder"  # decoder input (only this value is supported)
    mf.DEEP_SUPERVISION = True  # losses on every decoder layer's prediction
    mf.NO_OBJECT_WEIGHT = 0.1  # cross-entropy weight of the "no object" class
    mf.CLASS_WEIGHT = 2.0  # weight of the classification loss and matching cost
    mf.MASK_WEIGHT = 5.0  # weight of the sigmoid-BCE mask loss and matching cost
    mf.DICE_WEIGHT = 5.0  # weight of the dice loss and matching cost
    mf.HIDDEN_DIM = 256  # transformer decoder width
    mf.NUM_OBJECT_QUERIES = 100  # number of queries
    mf.NHEADS = 8  # attention heads (decoder and pixel-decoder encoder)
    mf.DROPOUT = 0.0  # dropout of the pixel decoder's deformable encoder
    mf.DIM_FEEDFORWARD = 2048  # FFN width of the transformer decoder
    mf.ENC_LAYERS = 0  # official key (MaskFormer v1 encoder); unused
    mf.DEC_LAYERS = 10  # decoder layers + 1: number of predictions (initial queries included)
    mf.PRE_NORM = False  # pre-LayerNorm decoder layers
    mf.ENFORCE_INPUT_PROJ = False  # 1x1 projection of decoder inputs even when widths match
    mf.SIZE_DIVISIBILITY = 32  # pad images to a multiple of this (<0: the backbone's)
    mf.TRAIN_NUM_POINTS = 112 * 112  # points per mask for matching costs and mask losses
    mf.OVERSAMPLE_RATIO = 3.0  # importance sampling: candidate points per kept point
    mf.IMPORTANCE_SAMPLE_RATIO = 0.75  # importance sampling: fraction of most uncertain points
    mf.POINT_SAMPLING = "importance"  # loss points: "importance" (official) or "uniform"
    mf.TEST = CN()
    mf.TEST.SEMANTIC_ON = False  # official key; part_d2 only does instance inference
    mf.TEST.INSTANCE_ON = True  # official key; instance inference is always on
    mf.TEST.PANOPTIC_ON = False  # official key; unused
    mf.TEST.OBJECT_MASK_THRESHOLD = 0.8  # official key (panoptic); unused
    mf.TEST.OVERLAP_THRESHOLD = 0.8  # official key (panoptic); unused
    mf.TEST.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE = True  # official key; always true for instances
    mf.QUERY_FEATURE_NORMALIZE = False  # L2-normalise mask embeddings before the mask product (PartDistillation)
    mf.TEST.RETURN_QUERY_EMBEDDINGS = False  # add each prediction's decoder embedding to the outputs
    head = cfg.MODEL.SEM_SEG_HEAD
    head.MASK_DIM = 256  # channels of the per-pixel mask embeddings
    head.TRANSFORMER_ENC_LAYERS = 6  # deformable encoder layers of the pixel decoder
    head.PIXEL_DECODER_NAME = "MSDeformAttnPixelDecoder"  # pixel decoder registry name
    head.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES = ["res3", "res4", "res5"]  # encoder levels
    head.DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS = 4  # sampling points per head and level
    head.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS = 8  # heads of the deformable encoder
    swin = cfg.MODEL.SWIN = CN()
    swin.PRETRAIN_IMG_SIZE = 224  # official key; informative only
    swin.PATCH_SIZE = 4  # patch-embedding stride
    swin.EMBED_DIM = 96  # width of stage 1 (T/S: 96, B: 128, L: 192)
    swin.DEPTHS = [2, 2, 6, 2]  # blocks per stage (T: 2-2-6-2, S/B/L: 2-2-18-2)
    swin.NUM_HEADS = [3, 6, 12, 24]  # heads per stage (B: 4-8-16-32, L: 6-12-24-48)
    swin.WINDOW_SIZE = 7  # attention window (12 for the 384-pixel pretrained models)
    swin.MLP_RATIO = 4.0  # MLP width / embedding width
    swin.QKV_BIAS = True  # bias of the qkv projection
    swin.QK_SCALE = None  # attention scale (None: head_dim ** -0.5)
    swin.DROP_RATE = 0.0  # dropout after projections
    swin.ATTN_DROP_RATE = 0.0  # dropout of attention weights
    swin.DROP_PATH_RATE = 0.3  # stochastic depth, linearly increasing to this value
    swin.APE = False  # absolute position embedding
    swin.PATCH_NORM = True  # LayerNorm after patch embedding
    swin.OUT_FEATURES = ["res2", "res3", "res4", "res5"]  # returned stages
    swin.USE_CHECKPOINT = False  # activation checkpointing of the blocks


def _add_ops_config(cfg):
    """OPS: self-supervised fine-tuning and self-training keys."""
    cfg.MODEL.OPS = CN()
    cfg.MODEL.OPS.SS_LOSS = CN()
    cfg.MODEL.OPS.SS_LOSS.ENABLED = False  # add the self-supervised cluster/contrastive loss
    cfg.MODEL.OPS.SS_LOSS.K = 10  # k-means clusters per image (K' = min(K, #object pixels))
    cfg.MODEL.OPS.SS_LOSS.TAU_A = 1.0  # temperature of the affinity (pull) term
    cfg.MODEL.OPS.SS_LOSS.TAU_C = 1.0  # temperature of the centroid contrast (push) term
    cfg.MODEL.OPS.SS_LOSS.WEIGHT_AFFINITY = 0.5  # λ_a, weight of loss_affinity
    cfg.MODEL.OPS.SS_LOSS.WEIGHT_CONTRAST = 10.0  # λ_c, weight of loss_contrast
    cfg.MODEL.OPS.SS_LOSS.HULL_RATIO = 0.1  # keep a cluster only if area / convex-hull area > this
    cfg.MODEL.OPS.SS_LOSS.FORMULATION = "reference"  # "reference" (OPS code) or "paper" (printed equations)
    cfg.MODEL.OPS.SS_LOSS.KMEANS_ITERS = 20  # most k-means iterations per training step
    cfg.MODEL.OPS.SS_LOSS.KMEANS_INIT = "random"  # k-means init: "random" (reference) or "k-means++"
    cfg.MODEL.OPS.SS_LOSS.SEED = -1  # seed of the loss's k-means generator (-1: torch's global RNG)
    cfg.MODEL.OPS.PSEUDO_LABEL = CN()
    cfg.MODEL.OPS.PSEUDO_LABEL.SCORE_THRESH = 0.1  # self-training: keep predicted parts above this score
    cfg.DATASETS.UNLABELED = ()  # datasets of the unlabeled half of each batch (SS loss only)
    cfg.SOLVER.IMS_PER_BATCH_UNLABELED = 16  # unlabeled images per batch (all workers)
    cfg.DATASETS.PART_JSONS = ()  # "name:json_file[:image_root]" part jsons registered as name_{parts,agnostic,objects}
    cfg.TEST.PART_EVAL.ORACLE_SEMANTIC = False  # also report mIoU/fwIoU/mACC with oracle part labels
    cfg.TEST.PART_EVAL.ORACLE_SCORE_THRESH = 0.0  # oracle semantic metrics: ignore parts scoring at most this


def _add_part_distillation_config(cfg):
    """PartDistillation (one root, ``PART_DISTILLATION``): the model of stages 1b/3, object masks,
    pixel grouping, part ranking and evaluation keys."""
    pd = cfg.PART_DISTILLATION = CN()
    pd.NUM_PART_MODES = 8  # part classes (modes) per object class: stage-2 k-means, stage-3 classifier, eval clusters
    pd.FREEZE_BACKBONE = False  # stage 1b/3: no gradient to the backbone
    pd.FREEZE_PIXEL_DECODER = "none"  # "none", "encoder" (its deformable encoder, as the reference) or "all"
    pd.CLASSIFIER = "agnostic"  # "agnostic" (stage 1b proposals) or "per_object" (stage 3: N_obj x NUM_PART_MODES)
    pd.NUM_OBJECT_CLASSES = 0  # "per_object": object classes (0: the training dataset's object_classes)
    pd.SPARSE_CLASSIFIER_GRAD = False  # "per_object": row-sparse classifier gradients + lazy AdamW (not with NCCL)
    pd.TEST_OBJECT_CLASS = "record"  # inference object class: "record" (input's object_category_id) or "stored"
    pd.OBJECT_CLASS_JSON = ""  # "stored": json {file_name | basename | str(image_id): contiguous object class}
    pd.OBJECT_CONDITIONING = "none"  # "none" (reference) or "feature" (learned in/out-of-object feature offsets)
    cfg.DATASETS.MIN_OBJECT_AREA_RATIO = 0.0  # training: drop images whose objects cover <= this image fraction
    cfg.DATASETS.MIN_PART_AREA_RATIO = 0.0  # training: drop parts covering <= this fraction of their object
    cfg.DATASETS.FEW_SHOT_PERCENTAGE = 100  # training: keep this integer percentage of the images (1 = 1%)
    cfg.DATASETS.FEW_SHOT_SEED = 1234  # training: seed of the few-shot image selection
    disc = cfg.TEST.PART_DISCOVERY = CN()
    disc.ENABLED = False  # evaluate with PartDiscoveryEvaluator (AR + mIoU-mapped/clustered) instead
    disc.MAX_DETS = [1, 10, 50, 100, 200]  # detections per image at which AR is reported
    disc.CLUSTER_SEED = 0  # mIoU-clustered: k-means seed (NUM_PART_MODES clusters per object class)
    disc.MASK_WITH_OBJECT = True  # mIoU: clip predicted parts to the ground-truth object mask
    # offline stages 0 (object masks), 1a (pixel grouping), 2 (ranking)
    pd.SHARD_SIZE = 500  # images per output shard of the offline stages (fixed: defines the shards)
    pd.SEED = 0  # seed of the offline stages' k-means (combined with each image's file name)
    om = pd.OBJECT_MASKS = CN()
    om.MODEL = "detectron2"  # stage 0 object model: "detectron2" (any instance model) or "detic"
    om.TOPK = 10  # keep this many detections per image (of the image's own class if any)
    om.SCORE_THRESH = 0.0  # and only those scoring above this
    om.VOCABULARY = []  # class names of the detector's outputs (empty: VOCABULARY_FILE / the dataset's classes)
    om.VOCABULARY_FILE = ""  # Detic: class names, one per line or a json list (empty: the dataset's object classes)
    om.VOCABULARY_EMBEDDINGS = ""  # Detic: (C, D) .npy text embeddings of VOCABULARY (empty: CLIP's text encoder)
    om.CLIP_WEIGHTS = ""  # Detic: CLIP ViT-B/32 weights file for the text encoder (empty: ~/.cache/clip/ViT-B-32.pt)
    pg = pd.PIXEL_GROUPING = CN()
    pg.FEATURE_KEYS = ["res3", "res4"]  # backbone features, resized to the first one's stride and concatenated
    pg.NORMALIZE_FEATURES = False  # L2-normalise pixel features before k-means (reference: False)
    pg.NUM_CLUSTERS = 4  # k-means clusters (parts) per object
    pg.KMEANS_N_INIT = 10  # k-means restarts (scikit-learn's old default, as the reference)
    pg.KMEANS_MAX_ITER = 300  # k-means iterations per restart
    pg.METRIC = "dot"  # assign pixels to centroids by "dot" product (reference config) or "l2" distance
    pg.IMAGE_SIZE = 640  # resize images so that the longer side is this (reference: 640)
    pg.MAX_OBJECTS_PER_IMAGE = 1  # group the first N objects of each image (0: all; reference: the top one)
    crf = pg.CRF = CN()
    crf.ENABLED = True  # refine each object's parts with a dense CRF
    crf.MODE = "image"  # "image": whole image at IMAGE_SIZE (reference); "crop": object crop at full resolution
    crf.ITERATIONS = 10  # mean-field iterations
    crf.GT_PROB = 0.7  # confidence of the initial labels (unary)
    crf.GAUSSIAN_SXY = 3.0  # smoothness kernel: spatial std (px)
    crf.GAUSSIAN_COMPAT = 3.0  # smoothness kernel: weight
    crf.BILATERAL_SXY = 20.0  # appearance kernel: spatial std (px)
    crf.BILATERAL_SRGB = 13.0  # appearance kernel: colour std
    crf.BILATERAL_COMPAT = 10.0  # appearance kernel: weight
    crf.CROP_MARGIN = 0.1  # MODE "crop": crop = object box grown by this fraction of its size on each side
    crf.REFERENCE_RELABEL_BUG = False  # reproduce the reference's relabelling (drops a part without background)
    rk = pd.RANKING = CN()
    rk.KMEANS_N_INIT = 10  # k-means restarts per object class
    rk.KMEANS_MAX_ITER = 300  # k-means iterations per restart
    rk.MIN_AREA_RATIO = 0.05  # keep proposals covering more than this fraction of the object (all if none)
    rk.MIN_SCORE = 0.3  # tau_s: keep proposals whose class probability is above this (all if none)
    rk.NORMALIZE_FEATURES = True  # L2-normalise the decoder query features (reference PROPOSAL_FEATURE_NORM)
    rk.BUCKET_MB = 512  # k-means input held in memory at once (MiB of float32 features; classes in ranges)
    rk.METRIC = "l2"  # mode logits: "l2" -|x-c|^2 (paper), "reference_l2" x.c-|x|^2-|c|^2, "dot" x.c


def _add_pipeline_config(cfg):
    """Offline stages run as hooks of a training run (part_d2/engine/hooks.py)."""
    pl = cfg.PIPELINE = CN()
    pl.GROUPING = CN()  # PartDistillation stage 1a before training
    pl.GROUPING.INPUT = ""  # registered dataset with objects ("": hook off)
    pl.GROUPING.OUTPUT = ""  # output directory (as tools/pd_pixel_grouping.py --output)
    pl.GROUPING.PREFIX = ""  # the output is registered as PREFIX_{parts,agnostic,objects}
    pl.RANKING = CN()  # PartDistillation stage 2 after training, with the trained model
    pl.RANKING.INPUT = ""  # registered dataset with objects ("": hook off)
    pl.RANKING.OUTPUT = ""  # output directory (as tools/pd_rank_parts.py --output)
    pl.RANKING.PREFIX = ""  # the output is registered as PREFIX_{parts,agnostic,objects}
    pl.PSEUDO_LABELS = CN()  # OPS pseudo labels after training, with the trained model
    pl.PSEUDO_LABELS.INPUT = ""  # registered dataset to pseudo-label ("": hook off)
    pl.PSEUDO_LABELS.OUTPUT = ""  # output directory of pseudo_labels.json (as tools/generate_pseudo_labels.py)
    pl.PSEUDO_LABELS.PREFIX = ""  # the output is registered as PREFIX_{parts,agnostic,objects}
    pl.NEXT_CONFIG = ""  # after training, train this config in the same process ("": stop)
    pl.NEXT_OPTS = []  # KEY VALUE overrides of NEXT_CONFIG (MODEL.WEIGHTS defaults to this run's model_final.pth)


def _add_federated_loss_config(cfg):
    """Federated loss of the Fast R-CNN box predictors (keys of detectron2 main, defined only if absent)."""
    if "USE_FED_LOSS" not in cfg.MODEL.ROI_BOX_HEAD:
        cfg.MODEL.ROI_BOX_HEAD.USE_FED_LOSS = False  # sigmoid CE restricted to GT + sampled classes per batch
        cfg.MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE = False  # per-class sigmoid CE instead of softmax CE
        cfg.MODEL.ROI_BOX_HEAD.FED_LOSS_FREQ_WEIGHT_POWER = 0.5  # negatives sampled with prob ~ image_count ** this
        cfg.MODEL.ROI_BOX_HEAD.FED_LOSS_NUM_CLASSES = 50  # classes per batch in the federated loss


def _add_segmenter_config(cfg):
    """``PartSegmenter`` (part_d2/engine/segmenter.py, tools/demo.py): objects of a photo, then their parts."""
    seg = cfg.SEGMENTER = CN()
    # objects: "auto" (the alpha channel of RGBA inputs, else the whole image), "model" (a detectron2
    # instance model, or a foreground model's connected components), "detic" (a Detic checkout),
    # "alpha", "image" (the whole image is one object)
    seg.OBJECT_SOURCE = "auto"
    # parts: "auto" (object_aware for 4-channel models, else proposals), "object_aware" (one pass per
    # object with its mask), "proposals" (one pass per image, clipped per object), "grouping" (k-means)
    seg.PART_SOURCE = "auto"
    seg.OBJECT_CONFIG = ""  # "model"/"detic": config of the object model ("" with "model": this config)
    seg.OBJECT_WEIGHTS = ""  # "model"/"detic": its weights ("" with "model": MODEL.WEIGHTS)
    seg.VOCABULARY = []  # object class names: Detic's vocabulary; "model": keep only these classes ([]: all)
    seg.VOCABULARY_NPY = ""  # "detic": (C, D) CLIP text embeddings of VOCABULARY instead of the CLIP encoder
    seg.DETIC_ROOT = ""  # "detic": the user's Detic checkout (empty: the one holding OBJECT_CONFIG)
    seg.CLIP_WEIGHTS = ""  # "detic": CLIP ViT-B/32 weights file for names without VOCABULARY_NPY
    seg.MAX_OBJECTS = 10  # "model"/"detic": keep at most this many objects per image (highest scores)
    seg.OBJECT_SCORE_THRESHOLD = 0.5  # keep objects scoring at least this (the demos' --confidence-threshold)
    seg.TOPK = 10  # keep at most this many parts per object (highest scores)
    seg.PART_SCORE_THRESHOLD = 0.3  # keep parts scoring at least this
    seg.NON_OVERLAPPING = False  # give each pixel to the highest-scoring part of its object
    seg.CRF = False  # dense-CRF smoothing of each object's parts (PART_DISTILLATION.PIXEL_GROUPING.CRF.* params)
    seg.PART_CENTROIDS = ""  # "proposals": stage-2 output folder (part_centroids.*) naming parts per object class
