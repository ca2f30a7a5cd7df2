"""Object models of PartDistillation stage 0: any detectron2 instance model, or Detic with a
custom vocabulary, wrapped to give each image's object instances.

Selection (as the reference's "max-gt-label" mode): keep the ``topk`` highest-scoring detections of
the image's own class (the record's ``object_category_id`` class name, looked up in the
vocabulary) if there is any, else the ``topk`` highest-scoring detections of any class; then drop
those scoring at most ``score_thresh``.

Detic's vocabulary (:func:`vocabulary_names`) is ``OBJECT_MASKS.VOCABULARY``, else the names in
``OBJECT_MASKS.VOCABULARY_FILE``, else the input dataset's object classes (the reference labels
ImageNet-21K with its own class names). Detic keeps ``TEST.DETECTIONS_PER_IMAGE`` detections per
image, set to the reference's 1000 by :func:`load_detic_config` (``sh_files/detic/run.sh`` of
facebookresearch/PartDistillation; Detic's own configs say 300) unless the command line overrides it.

Detic (a user's clone, made importable with the compatibility patches of :mod:`part_d2.compat.detic`)
is imported only when asked for. :class:`DeticObjectModel` is the one Detic path: stage 0 wraps it
in :class:`ObjectMaskModel`, and :func:`build_detic_object_model` builds it for the part segmenter.
"""
import logging
import os
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import DefaultPredictor
from detectron2.structures import Instances

from part_d2.compat.detic import (
    DeticModules,
    find_detic_root,
    import_detic,
    resolve_checkout_path,
    resolve_checkout_paths,
)
from part_d2.config import load_part_d2_config
from part_d2.data.object_masks import model_instances
from part_d2.structures.masks import mask_to_bbox, mask_to_rle, rle_area
from part_d2.utils.errors import ConfigError, MissingDependencyError, PartDatasetError
from part_d2.utils.safe_checkpoint import verify_weights_file

logger = logging.getLogger(__name__)

def normalize_class_name(name: str) -> str:
    return " ".join(name.lower().replace("_", " ").split())


def select_detections(scores: np.ndarray, classes: np.ndarray, own_class: Optional[int], topk: int,
                      score_thresh: float = 0.0) -> np.ndarray:
    """Indices of the kept detections, by decreasing score (stable).

    Args:
        scores: (N,) float; classes: (N,) int vocabulary indices.
        own_class: the image's class index in the vocabulary, or None.
    """
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    if own_class is not None:
        own = order[np.asarray(classes)[order] == own_class]
        if len(own):
            order = own
    order = order[:topk]
    return order[np.asarray(scores)[order] > score_thresh]


class ObjectMaskModel:
    """``model(record, image_rgb) -> [object dict]`` from a detectron2-style predictor.

    Args:
        predictor: callable (H, W, 3) uint8 image in ``input_format`` -> ``{"instances": Instances}``
            (a detectron2 predictor; a foreground model's ``{"sem_seg": ...}``: its components,
            :func:`part_d2.data.object_masks.model_instances`) or ``Instances`` (a
            :class:`DeticObjectModel`), with ``pred_masks``, ``scores``, ``pred_classes``.
        class_names: the vocabulary (names of ``pred_classes``).
        record_class_names: names of the records' ``object_category_id`` (the dataset's object classes).
    """

    def __init__(self, predictor: Callable, class_names: Sequence[str], record_class_names: Sequence[str] = (),
                 topk: int = 10, score_thresh: float = 0.0, input_format: str = "BGR"):
        self.predictor, self.class_names = predictor, list(class_names)
        self.record_class_names = list(record_class_names)
        self.topk, self.score_thresh, self.input_format = topk, score_thresh, input_format
        self._index = {normalize_class_name(n): i for i, n in enumerate(self.class_names)}

    def own_class(self, record: Dict) -> Optional[int]:
        """Vocabulary index of the record's object class, or None (unknown or not in the vocabulary)."""
        c = record.get("object_category_id", -1)
        if c is None or c < 0 or c >= len(self.record_class_names):
            return None
        return self._index.get(normalize_class_name(self.record_class_names[c]))

    def __call__(self, record: Dict, image_rgb: np.ndarray) -> List[Dict]:
        """Objects ``{"segmentation": RLE, "bbox": XYWH, "area", "score", "category_id": vocabulary
        index, "class_name"}`` at the image's resolution, by decreasing score."""
        image = image_rgb[:, :, ::-1] if self.input_format == "BGR" else image_rgb
        out = self.predictor(np.ascontiguousarray(image))
        inst = (out if isinstance(out, Instances) else model_instances(out)).to("cpu")
        scores = inst.scores.numpy()
        classes = inst.pred_classes.numpy()
        keep = select_detections(scores, classes, self.own_class(record), self.topk, self.score_thresh)
        masks = inst.pred_masks.numpy().astype(bool)
        objects = []
        for i in keep:
            rle = mask_to_rle(masks[i])
            if rle_area(rle) == 0:
                continue
            objects.append({"segmentation": rle, "bbox": mask_to_bbox(masks[i]), "area": rle_area(rle),
                            "score": float(scores[i]), "category_id": int(classes[i]),
                            "class_name": self.class_names[int(classes[i])]})
        return objects


def set_detic_vocabulary(model, zs_weight) -> None:
    """Replace the zero-shot classifier of every cascade stage of a Detic model (as Detic's
    ``detic.modeling.utils.reset_cls_test``).

    Args:
        zs_weight: (D, C) text embeddings; a zero background column is appended and, where the
            model normalises its classifier, columns are L2-normalised.
    """
    import torch

    predictors = model.roi_heads.box_predictor
    predictors = list(predictors) if isinstance(predictors, torch.nn.ModuleList) else [predictors]
    weight = torch.cat([zs_weight, zs_weight.new_zeros((zs_weight.shape[0], 1))], dim=1)
    if predictors[0].cls_score.norm_weight:
        weight = torch.nn.functional.normalize(weight, p=2, dim=0)
    weight = weight.to(next(model.parameters()).device)
    model.roi_heads.num_classes = zs_weight.shape[1]
    for p in predictors:
        # a Parameter (config "rand") or a buffer (a .npy config): replaced by a buffer, which moves with the model
        del p.cls_score.zs_weight
        p.cls_score.register_buffer("zs_weight", weight, persistent=False)


DETIC_DETECTIONS_PER_IMAGE = 1000


def read_vocabulary_file(path: str) -> List[str]:
    """Class names of a vocabulary file: a json list, or text with one name per line."""
    import json

    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise PartDatasetError(f"{path}: cannot read the vocabulary file ({e.strerror})") from None
    if path.endswith(".json"):
        names = json.loads(text)
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise PartDatasetError(f"{path}: expected a json list of class names")
    else:
        names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise PartDatasetError(f"{path}: the vocabulary file lists no class name")
    return names


def vocabulary_names(om, record_class_names: Sequence[str] = ()) -> List[str]:
    """Detic's vocabulary: ``VOCABULARY``, else ``VOCABULARY_FILE``, else the dataset's object classes.

    Args:
        om: the ``PART_DISTILLATION.OBJECT_MASKS`` config node.
    """
    if om.VOCABULARY:
        return list(om.VOCABULARY)
    if om.VOCABULARY_FILE:
        return read_vocabulary_file(om.VOCABULARY_FILE)
    if record_class_names:
        return list(record_class_names)
    raise PartDatasetError("Detic needs a vocabulary: PART_DISTILLATION.OBJECT_MASKS.VOCABULARY, VOCABULARY_FILE, "
                           "or an input dataset with object_classes metadata")


def build_object_mask_model(cfg, record_class_names: Sequence[str] = ()) -> ObjectMaskModel:
    """The stage-0 model of ``cfg`` (``PART_DISTILLATION.OBJECT_MASKS``; the model from
    ``MODEL.*``; for Detic, a config loaded with :func:`load_detic_config`)."""

    om = cfg.PART_DISTILLATION.OBJECT_MASKS
    if om.MODEL not in ("detectron2", "detic"):
        raise ValueError(f"PART_DISTILLATION.OBJECT_MASKS.MODEL={om.MODEL!r}; expected 'detectron2' or 'detic'")
    if om.MODEL == "detic":
        detic = DeticObjectModel(cfg, import_detic(), om.CLIP_WEIGHTS)
        detic.set_vocabulary(vocabulary_names(om, record_class_names), om.VOCABULARY_EMBEDDINGS)
        return ObjectMaskModel(detic, detic.class_names, record_class_names, om.TOPK, om.SCORE_THRESH, "BGR")
    verify_weights_file(cfg.MODEL.WEIGHTS)  # a bad file: one-line error, not detectron2's traceback
    predictor = DefaultPredictor(cfg)  # loads MODEL.WEIGHTS; takes BGR images
    names = list(om.VOCABULARY)
    if not names and om.VOCABULARY_FILE:
        names = read_vocabulary_file(om.VOCABULARY_FILE)
    elif not names:
        train = cfg.DATASETS.TRAIN[0] if cfg.DATASETS.TRAIN else ""
        if train and not MetadataCatalog.get(train).get("thing_classes"):
            DatasetCatalog.get(train)  # part_d2 datasets set their classes when loaded
        names = list(MetadataCatalog.get(train).get("thing_classes", [])) if train else []
        if not names:
            raise PartDatasetError("no class names of the object model's outputs: set PART_DISTILLATION.OBJECT_MASKS."
                                   "VOCABULARY / VOCABULARY_FILE, or DATASETS.TRAIN to its training dataset")
    return ObjectMaskModel(predictor, names, record_class_names, om.TOPK, om.SCORE_THRESH, "BGR")


def detic_checkout(config_file: str, detic_root: str = "") -> DeticModules:
    """Detic imported from ``detic_root``, else from the checkout holding ``config_file``, else from
    wherever it is importable (PYTHONPATH)."""
    return import_detic(detic_root or find_detic_root(config_file))


def load_detic_config(config_file: str, opts=(), detic_root: str = ""):
    """detectron2 + part_d2 + CenterNet2 + Detic keys, merged with a Detic YAML, then inference
    settings (the reference's ``TEST.DETECTIONS_PER_IMAGE`` 1000, the vocabulary set after the
    build, no backbone pretraining download), then the overrides ``opts``; the checkout's relative paths
    resolved (:func:`part_d2.compat.detic.resolve_checkout_paths`).

    Detic is imported with :func:`detic_checkout`. A relative ``config_file`` missing from the working
    directory is looked up in the checkout.
    """
    if len(opts) % 2:
        raise ConfigError(f"overrides of {config_file}: expected KEY VALUE pairs, got {len(opts)} items {list(opts)}")
    detic = detic_checkout(config_file, detic_root)
    config_file = resolve_checkout_path(config_file, detic.root)
    inference = ["TEST.DETECTIONS_PER_IMAGE", str(DETIC_DETECTIONS_PER_IMAGE),
                 "MODEL.ROI_BOX_HEAD.ZEROSHOT_WEIGHT_PATH", "rand",  # the vocabulary is set after the build
                 "MODEL.ROI_HEADS.ONE_CLASS_PER_PROPOSAL", "True",
                 "MODEL.TIMM.PRETRAINED", "False",  # MODEL.WEIGHTS holds the backbone: no ImageNet-21k download
                 "PART_DISTILLATION.OBJECT_MASKS.MODEL", "detic"]
    cfg = load_part_d2_config(config_file, inference + list(opts), (detic.add_centernet_config, detic.add_detic_config))
    for key, value in resolve_checkout_paths(cfg, detic.root).items():
        logger.info(f"Detic config {key}: {value} (relative to the checkout {detic.root})")
    return cfg


CLIP_DEFAULT_WEIGHTS = os.path.join("~", ".cache", "clip", "ViT-B-32.pt")  # where CLIP's clip.load downloads
CLIP_PROMPT = "a "  # Detic's class-name prompt (its datasets/metadata/*_clip_a+cname.npy files)


def read_clip_text_weights(path: str) -> Dict:
    """State dict of a CLIP ViT-B/32 weights file: OpenAI's released TorchScript archive
    (``ViT-B-32.pt``) or a ``torch.save``-d state dict (of the whole model or its text encoder)."""
    import torch

    if not path:
        path = os.path.expanduser(CLIP_DEFAULT_WEIGHTS)
    if not os.path.isfile(path):
        raise MissingDependencyError(
            f"{path}: CLIP ViT-B/32 weights not found (needed for a vocabulary given as names): download "
            "ViT-B-32.pt as openai/CLIP's clip.load('ViT-B/32') does and give its path, or give the vocabulary's "
            "text embeddings as a (C, 512) .npy")
    try:
        return torch.jit.load(path, map_location="cpu").state_dict()
    except (RuntimeError, ValueError):  # not TorchScript: a state dict
        pass
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - any unreadable file is the same user error
        raise PartDatasetError(f"{path}: not CLIP weights (neither a TorchScript archive nor a torch state dict)") \
            from None
    if not isinstance(state, dict):
        raise PartDatasetError(f"{path}: not CLIP weights (no state dict in it)")
    return state


def load_clip_text_encoder(build_text_encoder: Callable, clip_weights: str = ""):
    """Detic's CLIP text encoder (``build_text_encoder(pretrain=False)``) with the text-encoder
    weights of ``clip_weights`` (empty: CLIP's download location), in float32, eval mode."""
    import torch

    encoder = build_text_encoder(pretrain=False)
    state = read_clip_text_weights(clip_weights)
    wanted = encoder.state_dict()
    missing = [k for k in wanted if k not in state or tuple(state[k].shape) != tuple(wanted[k].shape)]
    if missing:
        raise PartDatasetError(f"{clip_weights or CLIP_DEFAULT_WEIGHTS}: not CLIP ViT-B/32 weights ({missing[0]} "
                               f"and {len(missing) - 1} more text-encoder tensors missing or of another shape)")
    encoder.load_state_dict({k: state[k].to(torch.float32) for k in wanted})
    return encoder.float().eval()


def read_vocabulary_npy(path: str, num_classes: Optional[int] = None) -> np.ndarray:
    """(C, D) float32 text embeddings of a ``.npy`` file (e.g. Detic's
    ``datasets/metadata/lvis_v1_clip_a+cname.npy``); ``num_classes``: the C it must have."""
    try:
        emb = np.load(path)
    except (OSError, ValueError) as e:
        raise PartDatasetError(f"{path}: cannot read the vocabulary embeddings ({str(e).splitlines()[0]})") from None
    if emb.ndim != 2 or (num_classes is not None and emb.shape[0] != num_classes):
        want = f"({num_classes}, D)" if num_classes is not None else "(C, D)"
        raise PartDatasetError(f"{path}: expected {want} vocabulary embeddings, got shape {tuple(emb.shape)}")
    return emb.astype(np.float32)


class DeticObjectModel:
    """Detic with a vocabulary that can change between calls (the "detic" object source).

    ``model(image_bgr)``: (H, W, 3) uint8 BGR -> detectron2 ``Instances`` on the CPU at the image's
    size with ``pred_masks`` (N, H, W) bool, ``scores`` (N,), ``pred_classes`` (N,) indices into
    :attr:`class_names`, ``pred_boxes``.

    Args:
        cfg: a Detic config (:func:`load_detic_config`) with ``MODEL.WEIGHTS`` (empty: random weights).
        detic: the imported checkout (:func:`part_d2.compat.detic.import_detic`).
        clip_weights: CLIP ViT-B/32 weights for vocabularies given as names (empty: CLIP's download location).
    """

    def __init__(self, cfg, detic: DeticModules, clip_weights: str = ""):
        verify_weights_file(cfg.MODEL.WEIGHTS)  # a bad file: one-line error, not detectron2's traceback
        self.predictor = DefaultPredictor(cfg)  # loads MODEL.WEIGHTS; takes BGR images
        self._build_text_encoder, self.clip_weights = detic.build_text_encoder, clip_weights
        self._text_encoder = None  # built at the first vocabulary given as names
        self.class_names: List[str] = []

    def text_embeddings(self, names: Sequence[str]):
        """(D, C) float32 tensor: CLIP text embeddings of ``CLIP_PROMPT + name``."""
        import torch

        if self._text_encoder is None:
            self._text_encoder = load_clip_text_encoder(self._build_text_encoder, self.clip_weights)
        with torch.no_grad():
            return self._text_encoder([CLIP_PROMPT + n for n in names]).float().t().contiguous().cpu()

    def set_vocabulary(self, names: Optional[Sequence[str]] = None, npy: str = "") -> None:
        """Detect ``names`` (embedded with CLIP), or the classes of ``npy`` ((C, D) text embeddings;
        with ``names``, C = len(names); without, the classes are unnamed: "")."""
        import torch

        if npy:
            emb = read_vocabulary_npy(npy, len(names) if names else None)
            zs_weight = torch.from_numpy(emb).t().contiguous()
            names = list(names) if names else [""] * emb.shape[0]
        elif names:
            zs_weight = self.text_embeddings(names)
        else:
            raise PartDatasetError("Detic needs a vocabulary: class names or a (C, D) .npy of their text embeddings")
        set_detic_vocabulary(self.predictor.model, zs_weight)
        self.class_names = list(names)

    def __call__(self, image_bgr: np.ndarray) -> Instances:
        return self.predictor(image_bgr)["instances"].to("cpu")


def build_detic_object_model(detic_root: str, config_file: str, weights: str,
                             vocabulary: Optional[Sequence[str]] = None, vocabulary_npy: str = "",
                             clip_weights: str = "", device: str = "cpu",
                             detections_per_image: int = DETIC_DETECTIONS_PER_IMAGE,
                             opts: Sequence[str] = ()) -> DeticObjectModel:
    """Detic of the checkout ``detic_root`` (see :func:`load_detic_config`) from ``config_file``
    (a path, or relative to the checkout) and ``weights`` (empty: random), with a vocabulary of
    names and/or a ``.npy`` (see :meth:`DeticObjectModel.set_vocabulary`; none: set it later)."""
    cfg = load_detic_config(config_file, list(opts), detic_root)
    cfg.MODEL.WEIGHTS = weights
    cfg.MODEL.DEVICE = device
    cfg.TEST.DETECTIONS_PER_IMAGE = detections_per_image
    model = DeticObjectModel(cfg, detic_checkout(config_file, detic_root), clip_weights)
    if vocabulary or vocabulary_npy:
        model.set_vocabulary(vocabulary, vocabulary_npy)
    return model
