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

Detic is imported only when asked for; see :func:`import_detic` for its installation.
"""
import logging
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import DefaultPredictor

from part_d2.config import add_part_d2_config
from part_d2.structures.masks import mask_to_bbox, mask_to_rle, rle_area
from part_d2.utils.errors import PartDatasetError
from part_d2.utils.safe_checkpoint import verify_weights_file

logger = logging.getLogger(__name__)

DETIC_INSTALL_HINT = (
    "Detic is not importable. Install it from source: `git clone --recursive "
    "https://github.com/facebookresearch/Detic` (the --recursive brings its third_party/CenterNet2 "
    "submodule), `pip install -r Detic/requirements.txt`, then add both `Detic` and "
    "`Detic/third_party/CenterNet2` to PYTHONPATH."
)


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
            with ``pred_masks``, ``scores``, ``pred_classes``.
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
        inst = self.predictor(np.ascontiguousarray(image))["instances"].to("cpu")
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


def import_detic():
    """Import Detic's config helpers and text encoder, or raise ImportError with install steps."""
    try:
        from centernet.config import add_centernet_config
        from detic.config import add_detic_config
        from detic.modeling.text.text_encoder import build_text_encoder
    except ImportError as e:
        raise ImportError(f"{DETIC_INSTALL_HINT} ({e})") from None
    return add_centernet_config, add_detic_config, build_text_encoder


def vocabulary_embeddings(class_names: Sequence[str], npy_file: str = "", prompt: str = "a "):
    """(D, C) float32 L2-normalisable text embeddings of the vocabulary.

    From ``npy_file`` ((C, D), e.g. Detic's ``datasets/metadata/*_clip_a+cname.npy``) when given;
    else computed with Detic's CLIP text encoder (needs its weights locally).
    """
    import torch

    if npy_file:
        emb = np.load(npy_file)
        if emb.ndim != 2 or emb.shape[0] != len(class_names):
            raise ValueError(f"{npy_file}: expected ({len(class_names)}, D) embeddings, got shape {emb.shape}")
        return torch.as_tensor(emb, dtype=torch.float32).t().contiguous()
    _, _, build_text_encoder = import_detic()
    encoder = build_text_encoder(pretrain=True).eval()
    with torch.no_grad():
        return encoder([prompt + n for n in class_names]).detach().float().t().contiguous().cpu()


def set_detic_vocabulary(model, zs_weight) -> None:
    """Replace the zero-shot classifier of every cascade stage of a Detic model.

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
        p.cls_score.zs_weight = weight


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
        import_detic()
    verify_weights_file(cfg.MODEL.WEIGHTS)  # a bad file: one-line error, not detectron2's traceback
    predictor = DefaultPredictor(cfg)  # loads MODEL.WEIGHTS; takes BGR images
    names = list(om.VOCABULARY)
    if om.MODEL == "detic":
        names = vocabulary_names(om, record_class_names)
        set_detic_vocabulary(predictor.model, vocabulary_embeddings(names, om.VOCABULARY_EMBEDDINGS))
    elif not names and om.VOCABULARY_FILE:
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


def load_detic_config(config_file: str, opts=()):
    """detectron2 + part_d2 + CenterNet2 + Detic keys, merged with a Detic YAML, then the reference's
    ``TEST.DETECTIONS_PER_IMAGE`` 1000, then the overrides ``opts``."""
    add_centernet_config, add_detic_config, _ = import_detic()
    cfg = get_cfg()
    add_centernet_config(cfg)
    add_detic_config(cfg)
    add_part_d2_config(cfg)
    cfg.merge_from_file(config_file)
    cfg.TEST.DETECTIONS_PER_IMAGE = DETIC_DETECTIONS_PER_IMAGE
    cfg.MODEL.ROI_BOX_HEAD.ZEROSHOT_WEIGHT_PATH = "rand"
    cfg.MODEL.ROI_HEADS.ONE_CLASS_PER_PROPOSAL = True
    cfg.PART_DISTILLATION.OBJECT_MASKS.MODEL = "detic"
    cfg.merge_from_list(list(opts))
    return cfg
