"""``PartSegmenter``: the parts of every object in a photo, from one config.

An image (path or array) goes through an *object source* (``SEGMENTER.OBJECT_SOURCE``) and a
*part source* (``SEGMENTER.PART_SOURCE``); the result is a list of :class:`SegObject`, each with
its :class:`SegPart` list::

    seg = PartSegmenter(cfg)
    for obj in seg("photo.jpg", vocabulary=["bicycle"], topk=5, non_overlapping=True):
        print(obj.name, obj.score, [(p.name, p.score) for p in obj.parts])

Object sources: ``"model"`` (a detectron2 instance model: ``SEGMENTER.OBJECT_CONFIG`` +
``OBJECT_WEIGHTS``, by default this config's model; a foreground model gives the connected
components of its foreground, :func:`part_d2.data.object_masks.foreground_instances`),
``"detic"`` (a Detic checkout, per-call vocabulary, through
``part_d2.data.object_mask_models.build_detic_object_model``), ``"alpha"`` (the alpha channel),
``"image"`` (the whole image), ``"auto"`` (alpha for RGBA inputs, else the whole image); user
masks or boxes through :meth:`PartSegmenter.objects_from`.

Part sources (the part model is this config's ``MODEL``):

- ``"object_aware"``: OPS; one pass per object with that object's mask (the 4th input channel of a
  pre-aware model), parts cropped to the object (post-aware crop,
  :func:`part_d2.modeling.postprocessing.filter_parts_by_object` with ``TEST.POST_AWARE.MIN_AREA_FRACTION``
  and ``RESCORE``);
- ``"proposals"``: PartDistillation's part-proposal (stage 1b) or distilled (stage 3) model; one
  pass per image (per object class for stage 3), proposals cropped per object. With
  ``SEGMENTER.PART_CENTROIDS`` (stage 2's ``part_centroids.*``) the proposals of an object of a
  known class are ranked into class-specific parts ``"{object}:{mode}"`` as stage 2 does
  (:mod:`part_d2.modeling.part_ranking`); a stage-3 model names its parts the same way. An object
  whose class the model does not know keeps class-agnostic parts (named by index; logged once);
- ``"grouping"``: PartDistillation's pixel grouping (:class:`part_d2.modeling.pixel_grouping.PixelGrouper`)
  of the model's backbone features, ``k`` clusters per object; a part's score is its fraction
  of the object's area (grouping gives no confidence);
- ``"auto"``: ``object_aware`` for models with the object mask as input channel, else ``proposals``.

Options (per call, defaults ``SEGMENTER.*``), applied per object in this order: parts scoring
below ``part_score_threshold`` are dropped, the ``topk`` best are kept, then ``non_overlapping``
gives each pixel to the highest-scoring part covering it, then ``crf`` smooths the (then
non-overlapping) parts with a dense CRF (``PART_DISTILLATION.PIXEL_GROUPING.CRF.*``): boundaries
move, parts keep their name, index and score, a part that the CRF empties is dropped and no part
is added; parts stay inside their object. Objects scoring below ``object_score_threshold`` are
dropped (sources with scores: "model", "detic").
"""
import logging
import os
from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.structures import Instances

from part_d2.data.dataset_mapper import PartDatasetMapper, build_part_augmentations
from part_d2.data.image_io import ImageReadError, has_alpha_channel, read_alpha_channel, read_image_checked
from part_d2.data.object_mask_models import (
    build_detic_object_model,
    build_object_mask_model,
    normalize_class_name,
    select_detections,
)
from part_d2.data.object_masks import model_instances
from part_d2.engine.setup import load_config
from part_d2.modeling.build import load_part_model
from part_d2.modeling.dense_crf import refine_parts_with_crf
from part_d2.modeling.part_ranking import PartCentroids, label_segments, mode_names, object_proposals
from part_d2.modeling.pixel_grouping import PixelGrouper, crf_options, select_backbone
from part_d2.modeling.postprocessing import filter_parts_by_object
from part_d2.structures.masks import mask_to_bbox, mask_to_rle
from part_d2.utils.errors import ConfigError
from part_d2.utils.visualization import add_legend, draw_parts, part_colors

logger = logging.getLogger(__name__)

OBJECT_SOURCES = ("auto", "model", "detic", "alpha", "image")
PART_SOURCES = ("auto", "object_aware", "proposals", "grouping")
OPTIONS = ("topk", "part_score_threshold", "object_score_threshold", "non_overlapping", "crf", "k")
ImageLike = Union[str, np.ndarray]


@dataclass
class SegPart:
    """One part: ``mask`` (H, W) bool, ``score``, ``name`` ("" when unknown), ``index`` (part
    class, part mode, cluster or query index)."""

    mask: np.ndarray
    score: float
    name: str = ""
    index: int = 0


@dataclass
class SegObject:
    """One object: ``object_id`` (0..N-1 in its result), ``mask`` (H, W) bool, ``score``, ``name``
    ("" when unknown), ``box`` [x0, y0, x1, y1] (x1, y1 exclusive) and its ``parts``."""

    object_id: int
    mask: np.ndarray
    score: float = 1.0
    name: str = ""
    box: List[float] = field(default_factory=list)
    parts: List[SegPart] = field(default_factory=list)


def mask_box(mask: np.ndarray) -> List[float]:
    """[x0, y0, x1, y1] (x1, y1 exclusive) of a (H, W) bool mask; zeros when empty."""
    x, y, w, h = mask_to_bbox(mask)
    return [x, y, x + w, y + h]


def load_image(image: ImageLike) -> Tuple[np.ndarray, Optional[np.ndarray], str]:
    """(H, W, 3) uint8 RGB, the (H, W) bool alpha mask or None, and a name for messages.

    Args:
        image: a file path, or an (H, W, 3) / (H, W, 4) uint8 RGB(A) array.
    Raises:
        ImageReadError: an unreadable file or an array of another shape or type.
    """
    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        alpha = read_alpha_channel(path) if has_alpha_channel(path) else None
        return read_image_checked(path, "RGB"), alpha, path
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ImageReadError(f"image array of shape {arr.shape} and type {arr.dtype}: expected (H, W, 3) or "
                             "(H, W, 4) uint8 RGB(A)")
    alpha = arr[:, :, 3] > 0 if arr.shape[2] == 4 else None
    return np.ascontiguousarray(arr[:, :, :3]), alpha, "<array>"


class _DetectronObjectModel:
    """A detectron2 predictor in the Detic adapter's contract: ``model(image_bgr) -> Instances``."""

    def __init__(self, object_mask_model):
        self.predictor = object_mask_model.predictor
        self.class_names = list(object_mask_model.class_names)

    def __call__(self, image_bgr: np.ndarray) -> Instances:
        return model_instances(self.predictor(image_bgr))


def build_object_model(cfg, part_cfg):
    """The "model" source's detector from ``cfg`` (with its ``MODEL.WEIGHTS``)."""
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.DEVICE = part_cfg.MODEL.DEVICE
    cfg.PART_DISTILLATION.OBJECT_MASKS.MODEL = "detectron2"
    cfg.freeze()
    return _DetectronObjectModel(build_object_mask_model(cfg))


def build_detic_model(cfg):
    """The "detic" source's detector (:func:`part_d2.data.object_mask_models.build_detic_object_model`;
    the checkout is ``SEGMENTER.DETIC_ROOT``, else the one holding ``OBJECT_CONFIG``)."""
    s = cfg.SEGMENTER
    for key, value in (("OBJECT_CONFIG", s.OBJECT_CONFIG), ("OBJECT_WEIGHTS", s.OBJECT_WEIGHTS)):
        if not value:
            raise ConfigError(f"SEGMENTER.OBJECT_SOURCE detic needs SEGMENTER.{key}")
    return build_detic_object_model(s.DETIC_ROOT, s.OBJECT_CONFIG, s.OBJECT_WEIGHTS,
                                    vocabulary=list(s.VOCABULARY) or None, vocabulary_npy=s.VOCABULARY_NPY,
                                    clip_weights=s.CLIP_WEIGHTS, device=cfg.MODEL.DEVICE,
                                    detections_per_image=s.MAX_OBJECTS)


def _object_class_names(cfg, centroids: Optional[PartCentroids]) -> List[str]:
    """Object classes of a part model's per-object-class parts: the centroids', else the
    ``object_classes`` metadata of its first training dataset (empty when unknown)."""
    if centroids is not None:
        return list(centroids.class_names)
    train = cfg.DATASETS.TRAIN[0] if cfg.DATASETS.TRAIN else ""
    return list(MetadataCatalog.get(train).get("object_classes", [])) if train else []


class PartSegmenter:
    """Objects of an image and their parts (module docstring)."""

    @configurable
    def __init__(
        self,
        *,
        object_source: str,
        part_source: str,
        object_model=None,
        part_model: Optional[torch.nn.Module] = None,
        mapper: Optional[PartDatasetMapper] = None,
        grouper: Optional[PixelGrouper] = None,
        input_format: str = "BGR",
        part_class_names: Sequence[str] = (),
        object_class_names: Sequence[str] = (),
        centroids: Optional[PartCentroids] = None,
        ranking: Optional[Dict] = None,
        crop: Optional[Dict] = None,
        crf: Optional[Dict] = None,
        vocabulary: Sequence[str] = (),
        vocabulary_npy: str = "",
        max_objects: int = 10,
        options: Optional[Dict] = None,
    ):
        """
        Args:
            object_source, part_source: one of :data:`OBJECT_SOURCES` / :data:`PART_SOURCES`
                ("auto" part source already resolved).
            object_model: "model"/"detic": ``object_model(image_bgr) -> Instances`` (``pred_masks``,
                ``scores``, ``pred_classes``) with ``class_names`` and, for Detic,
                ``set_vocabulary(names, npy)``.
            part_model, mapper: "object_aware"/"proposals": the part model (eval mode) and its
                test-time mapper (:meth:`PartDatasetMapper.map_image`).
            grouper: "grouping": the pixel grouper (its own CRF off).
            input_format: the part model's channel order ("BGR" or "RGB").
            part_class_names: part class names of a class-aware part model (empty: unnamed).
            object_class_names: object classes of a per-object-class (stage 3) model or of ``centroids``.
            centroids: stage-2 part centroids ("proposals" ranking) or None.
            ranking: ``min_area_ratio``, ``min_score``, ``metric`` of the ranking.
            crop: ``min_area_fraction``, ``rescore`` of the post-aware crop.
            crf: keyword arguments of :func:`refine_parts_with_crf`.
            vocabulary, vocabulary_npy: default object vocabulary ("detic": the detector's; "model": a filter).
            max_objects: most objects per image kept from a detector.
            options: defaults of :data:`OPTIONS`.
        """
        if object_source not in OBJECT_SOURCES:
            raise ConfigError(f"SEGMENTER.OBJECT_SOURCE={object_source!r}; expected one of {OBJECT_SOURCES}")
        if part_source not in PART_SOURCES[1:]:
            raise ConfigError(f"SEGMENTER.PART_SOURCE={part_source!r}; expected one of {PART_SOURCES}")
        if object_source in ("model", "detic") and object_model is None:
            raise ValueError(f"object source {object_source!r} needs an object model")
        self.object_source, self.part_source = object_source, part_source
        self.object_model, self.part_model, self.mapper, self.grouper = object_model, part_model, mapper, grouper
        self.input_format = input_format
        self.part_class_names = list(part_class_names)
        self.object_class_names = list(object_class_names)
        self._object_index = {normalize_class_name(n): i for i, n in enumerate(self.object_class_names)}
        self.centroids = centroids
        self.ranking = ranking or {"min_area_ratio": 0.05, "min_score": 0.3, "metric": "l2"}
        self.crop = crop or {"min_area_fraction": 0.0, "rescore": False}
        self.crf_kwargs = crf or {}
        self.vocabulary, self.vocabulary_npy = list(vocabulary), vocabulary_npy
        self._detic_vocabulary = (tuple(self.vocabulary), vocabulary_npy)
        self.max_objects = max_objects
        self.options = dict(options or {})
        self._warned = set()
        self.per_object_classifier = getattr(part_model, "part_classifier", None) is not None

    @classmethod
    def from_config(cls, cfg, object_model=None, random_weights: bool = False):
        """
        Args:
            object_model: a detector in the Detic adapter's contract, used instead of building
                the "model"/"detic" source's (tests, shared models).
            random_weights: allow an empty ``MODEL.WEIGHTS`` (or ``SEGMENTER.OBJECT_WEIGHTS`` of an
                ``OBJECT_CONFIG``): randomly initialised models, for tests.
        """
        s = cfg.SEGMENTER
        if not random_weights:
            for key, value in (("MODEL.WEIGHTS", cfg.MODEL.WEIGHTS), ("SEGMENTER.OBJECT_WEIGHTS", s.OBJECT_WEIGHTS)):
                if not value and (key == "MODEL.WEIGHTS" or (s.OBJECT_SOURCE == "model" and s.OBJECT_CONFIG)):
                    raise ConfigError(f"{key} is empty: the model would be randomly initialised; give {key} "
                                      "path/to/model.pth (or --random-weights to do it on purpose)")
        part_source = s.PART_SOURCE
        if part_source == "auto":
            part_source = "object_aware" if cfg.INPUT.OBJECT_MASK.ENABLED else "proposals"
        ret = {"object_source": s.OBJECT_SOURCE, "part_source": part_source, "input_format": cfg.INPUT.FORMAT,
               "vocabulary": list(s.VOCABULARY), "vocabulary_npy": s.VOCABULARY_NPY, "max_objects": s.MAX_OBJECTS,
               "crop": {"min_area_fraction": cfg.TEST.POST_AWARE.MIN_AREA_FRACTION,
                        "rescore": cfg.TEST.POST_AWARE.RESCORE},
               "crf": crf_options(cfg),
               "options": {"topk": s.TOPK, "part_score_threshold": s.PART_SCORE_THRESHOLD,
                           "object_score_threshold": s.OBJECT_SCORE_THRESHOLD, "non_overlapping": s.NON_OVERLAPPING,
                           "crf": s.CRF, "k": cfg.PART_DISTILLATION.PIXEL_GROUPING.NUM_CLUSTERS}}
        if s.OBJECT_SOURCE not in OBJECT_SOURCES:
            raise ConfigError(f"SEGMENTER.OBJECT_SOURCE={s.OBJECT_SOURCE!r}; expected one of {OBJECT_SOURCES}")
        if part_source not in PART_SOURCES:
            raise ConfigError(f"SEGMENTER.PART_SOURCE={part_source!r}; expected one of {PART_SOURCES}")
        if object_model is None and s.OBJECT_SOURCE == "detic":
            object_model = build_detic_model(cfg)
        elif object_model is None and s.OBJECT_SOURCE == "model":
            obj_cfg = cfg if not s.OBJECT_CONFIG else load_config(s.OBJECT_CONFIG)
            if s.OBJECT_WEIGHTS or s.OBJECT_CONFIG:
                obj_cfg = obj_cfg.clone()
                obj_cfg.defrost()
                obj_cfg.MODEL.WEIGHTS = s.OBJECT_WEIGHTS
            object_model = build_object_model(obj_cfg, cfg)
        ret["object_model"] = object_model
        if part_source == "grouping":
            pg = cfg.PART_DISTILLATION.PIXEL_GROUPING
            shared = getattr(object_model, "predictor", None)
            same = s.OBJECT_SOURCE == "model" and not s.OBJECT_CONFIG and not s.OBJECT_WEIGHTS and shared is not None
            model = shared.model if same else load_part_model(cfg)
            ret["grouper"] = PixelGrouper(cfg, backbone=select_backbone(model.eval(), pg.FEATURE_KEYS))
            ret["grouper"].crf = None  # the segmenter's own CRF step (option "crf")
            return ret
        model = load_part_model(cfg).eval()
        if hasattr(model, "post_aware"):
            model.post_aware = None  # the segmenter crops per object itself
        centroids = PartCentroids.load(s.PART_CENTROIDS) if s.PART_CENTROIDS else None
        if centroids is not None:
            if not hasattr(model, "return_mask_probs"):
                raise ConfigError(f"SEGMENTER.PART_CENTROIDS: part ranking needs a Mask2Former part model, "
                                  f"not {cfg.MODEL.META_ARCHITECTURE}")
            model.return_mask_probs = model.return_query_embeddings = True
        rk = cfg.PART_DISTILLATION.RANKING
        train = cfg.DATASETS.TRAIN[0] if cfg.DATASETS.TRAIN else ""
        parts = list(MetadataCatalog.get(train).get("thing_classes", [])) if train else []
        ret.update(part_model=model, centroids=centroids,
                   mapper=PartDatasetMapper(False, augmentations=build_part_augmentations(cfg, False),
                                            image_format=cfg.INPUT.FORMAT,
                                            object_mask_channel=cfg.INPUT.OBJECT_MASK.ENABLED,
                                            object_mask_value=cfg.INPUT.OBJECT_MASK.PIXEL_VALUE),
                   part_class_names=parts if len(parts) > 1 else [],
                   object_class_names=_object_class_names(cfg, centroids),
                   ranking={"min_area_ratio": rk.MIN_AREA_RATIO, "min_score": rk.MIN_SCORE, "metric": rk.METRIC})
        return ret

    # ------------------------------------------------------------------ options
    def resolve_options(self, overrides: Dict) -> Dict:
        """The defaults updated by the per-call ``overrides`` (None values keep the default)."""
        unknown = sorted(set(overrides) - set(OPTIONS))
        if unknown:
            raise TypeError(f"unknown PartSegmenter options {unknown}; expected some of {list(OPTIONS)}")
        opts = dict(self.options)
        opts.update({k: v for k, v in overrides.items() if v is not None})
        for key in ("part_score_threshold", "object_score_threshold"):
            if not 0 <= opts[key] <= 1:
                raise ConfigError(f"{key}={opts[key]!r}: must be a score in [0, 1]")
        for key in ("topk", "k"):
            if int(opts[key]) < 1:
                raise ConfigError(f"{key}={opts[key]!r}: must be an integer >= 1")
        return opts

    def _warn_once(self, key, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning(message)

    # ------------------------------------------------------------------ objects
    def detect_objects(self, image: ImageLike, vocabulary: Optional[Sequence[str]] = None,
                       object_score_threshold: Optional[float] = None) -> List[SegObject]:
        """Objects of ``image`` from the configured object source (their ``parts`` empty).

        Args:
            vocabulary: object class names for this call ("detic": the detector's vocabulary;
                "model": keep only these classes); None: ``SEGMENTER.VOCABULARY``.
        """
        rgb, alpha, name = load_image(image)
        thresh = self.resolve_options({"object_score_threshold": object_score_threshold})["object_score_threshold"]
        source = self.object_source
        if source == "auto":
            source = "alpha" if alpha is not None else "image"
        if source == "alpha":
            if alpha is None:
                raise ImageReadError(f"{name}: no alpha channel for the 'alpha' object source")
            return self.objects_from(rgb, masks=alpha[None])
        if source == "image":
            return self.objects_from(rgb, whole_image=True)
        names = list(self.vocabulary if vocabulary is None else vocabulary)
        wanted_vocabulary = (tuple(names), self.vocabulary_npy if vocabulary is None else "")
        if source == "detic" and wanted_vocabulary != self._detic_vocabulary:
            self.object_model.set_vocabulary(names or None, wanted_vocabulary[1])
            self._detic_vocabulary = wanted_vocabulary
        inst = self.object_model(np.ascontiguousarray(rgb[:, :, ::-1])).to("cpu")
        class_names = list(self.object_model.class_names)
        scores = inst.scores.numpy()
        classes = inst.pred_classes.numpy()
        keep = select_detections(scores, classes, None, len(scores), -np.inf)
        if source == "model" and names:
            wanted = {normalize_class_name(n) for n in names}
            keep = keep[[normalize_class_name(class_names[int(classes[i])]) in wanted for i in keep]]
        keep = keep[scores[keep] >= thresh][: self.max_objects]
        masks = inst.pred_masks.numpy().astype(bool)
        objects = []
        for i in keep:
            if masks[i].any():
                objects.append(SegObject(len(objects), masks[i], float(scores[i]), class_names[int(classes[i])],
                                         mask_box(masks[i])))
        return objects

    def objects_from(self, image: ImageLike, masks: Optional[np.ndarray] = None,
                     boxes: Optional[Sequence[Sequence[float]]] = None, alpha: bool = False,
                     whole_image: bool = False, names: Optional[Sequence[str]] = None) -> List[SegObject]:
        """User-given objects (score 1): ``masks`` (N, H, W) bool, ``boxes`` [[x0, y0, x1, y1], ...]
        (an object is its box's pixels), the image's alpha channel, or the whole image.
        Empty masks are dropped."""
        rgb, alpha_mask, name = load_image(image)
        h, w = rgb.shape[:2]
        given = []
        if masks is not None:
            masks = np.asarray(masks, bool)
            if masks.ndim == 2:
                masks = masks[None]
            if masks.shape[1:] != (h, w):
                raise ValueError(f"{name}: object masks of shape {masks.shape[1:]} for an image of {(h, w)}")
            given += list(masks)
        for x0, y0, x1, y1 in boxes if boxes is not None else []:
            m = np.zeros((h, w), bool)
            m[max(0, int(np.floor(y0))): int(np.ceil(y1)), max(0, int(np.floor(x0))): int(np.ceil(x1))] = True
            given.append(m)
        if alpha:
            if alpha_mask is None:
                raise ImageReadError(f"{name}: no alpha channel for the 'alpha' object source")
            given.append(alpha_mask)
        if whole_image:
            given.append(np.ones((h, w), bool))
        names = list(names) if names is not None else [""] * len(given)
        objects = []
        for m, n in zip(given, names):
            if m.any():
                objects.append(SegObject(len(objects), m, 1.0, n, mask_box(m)))
        return objects

    # ------------------------------------------------------------------ parts
    def __call__(self, image: ImageLike, vocabulary: Optional[Sequence[str]] = None, **options) -> List[SegObject]:
        """:meth:`detect_objects` then :meth:`segment_parts` (options: :data:`OPTIONS`)."""
        opts = self.resolve_options(options)
        objects = self.detect_objects(image, vocabulary, opts["object_score_threshold"])
        return self.segment_parts(image, objects, **options)

    def segment_parts(self, image: ImageLike, objects: Sequence[SegObject], **options) -> List[SegObject]:
        """Copies of ``objects`` with their ``parts`` (options: :data:`OPTIONS`)."""
        opts = self.resolve_options(options)
        rgb, _, _ = load_image(image)
        objects = list(objects)
        if not objects:
            return []
        if self.part_source == "grouping":
            raw = self._grouping_parts(rgb, objects, int(opts["k"]))
        elif self.part_source == "object_aware":
            raw = [self._model_parts(rgb, [o], o.mask)[0] for o in objects]
        else:
            raw = self._model_parts(rgb, objects, None)
        return [replace(o, parts=self._finish(rgb, o, parts, opts)) for o, parts in zip(objects, raw)]

    def _finish(self, rgb: np.ndarray, obj: SegObject, parts: List[SegPart], opts: Dict) -> List[SegPart]:
        """Threshold, top-k, non-overlap and CRF of one object's parts (module docstring)."""
        parts = [p for p in parts if p.score >= opts["part_score_threshold"] and p.mask.any()]
        parts = sorted(parts, key=lambda p: -p.score)[: int(opts["topk"])]
        if opts["non_overlapping"] or opts["crf"]:
            taken = np.zeros(obj.mask.shape, bool)
            disjoint = []
            for p in parts:
                m = p.mask & ~taken
                taken |= m
                if m.any():
                    disjoint.append(replace(p, mask=m))
            parts = disjoint
        if opts["crf"] and parts:
            refined = refine_parts_with_crf(rgb, obj.mask, np.stack([p.mask for p in parts]), keep_empty=True,
                                            **self.crf_kwargs)
            parts = [replace(p, mask=m & obj.mask) for p, m in zip(parts, refined) if (m & obj.mask).any()]
        return parts

    def _grouping_parts(self, rgb: np.ndarray, objects: List[SegObject], k: int) -> List[List[SegPart]]:
        self.grouper.num_clusters = k
        groups = self.grouper(rgb, np.stack([o.mask for o in objects]))
        out = []
        for o, g in zip(objects, groups):
            area = float(o.mask.sum())
            out.append([] if g is None else [SegPart(m, float(m.sum()) / area, "", i) for i, m in enumerate(g)])
        return out

    def _object_class(self, obj: SegObject) -> Optional[int]:
        """The part model's object-class index of ``obj`` (by name), or None."""
        c = self._object_index.get(normalize_class_name(obj.name)) if obj.name else None
        if c is None and (self.per_object_classifier or self.centroids is not None):
            self._warn_once(("class", obj.name), (
                f"object class {obj.name!r} is not among the part model's object classes "
                f"({len(self.object_class_names)} known: SEGMENTER.PART_CENTROIDS or the training set's "
                "object_classes): "
                "its parts are class-agnostic, named by index"
                + (" and scored with object class 0's classifier" if self.per_object_classifier else "")))
        return c

    @torch.no_grad()
    def _predict(self, rgb: np.ndarray, object_mask: Optional[np.ndarray], object_class: Optional[int]) -> Instances:
        h, w = rgb.shape[:2]
        record = {"height": h, "width": w, "image_id": 0, "file_name": ""}
        if self.per_object_classifier:
            record["object_category_id"] = 0 if object_class is None else object_class
        image = rgb[:, :, ::-1] if self.input_format == "BGR" else rgb
        inputs = self.mapper.map_image(record, np.ascontiguousarray(image), object_mask)
        return self.part_model([inputs])[0]["instances"].to("cpu")

    def _model_parts(self, rgb: np.ndarray, objects: List[SegObject], object_mask: Optional[np.ndarray]
                     ) -> List[List[SegPart]]:
        """Parts of ``objects`` from model passes: one per distinct object class (one in all for
        a part model without per-object-class classifier), with ``object_mask`` as its input."""
        classes = [self._object_class(o) if (self.per_object_classifier or self.centroids is not None) else None
                   for o in objects]
        cache: Dict = {}
        out = []
        for obj, c in zip(objects, classes):
            key = c if self.per_object_classifier else None
            if key not in cache:
                cache[key] = self._predict(rgb, object_mask, key)
            out.append(self._object_parts(cache[key], obj, c))
        return out

    def _object_parts(self, inst: Instances, obj: SegObject, object_class: Optional[int]) -> List[SegPart]:
        """One object's parts from a pass's predictions: ranked into modes (centroids, known
        class), else cropped to the object."""
        if self.centroids is not None and object_class is not None:
            segs, scores, _, feats = object_proposals(inst, obj.mask, self.ranking["min_area_ratio"],
                                                      self.ranking["min_score"])
            if len(segs) == 0:
                return []
            probs = self.centroids.probabilities(feats, object_class, self.ranking["metric"])
            masks, modes, scores = label_segments(segs, scores, probs)
            names = mode_names(self.centroids.class_names, self.centroids.num_modes)
            return [SegPart(m, float(s), names[object_class * self.centroids.num_modes + int(mode)], int(mode))
                    for m, mode, s in zip(masks, modes, scores)]
        inst = filter_parts_by_object(inst, torch.from_numpy(obj.mask), **self.crop)
        masks = inst.pred_masks.numpy().astype(bool)
        scores = inst.scores.numpy()
        classes = inst.pred_classes.numpy()
        queries = inst.query_indices.numpy() if inst.has("query_indices") else np.arange(len(inst))
        parts = []
        for m, s, c, q in zip(masks, scores, classes, queries):
            if self.per_object_classifier and object_class is not None:
                k = self.part_model.part_classifier.num_part_classes
                name, index = mode_names([self.object_class_names[object_class]], k)[int(c)], int(c)
            elif self.part_class_names and not self.per_object_classifier:
                name, index = self.part_class_names[int(c)], int(c)
            else:
                name, index = "", int(q)
            parts.append(SegPart(m, float(s), name, index))
        return parts


# ---------------------------------------------------------------------- outputs
def to_json(result: Sequence[SegObject], file_name: str, image_size: Tuple[int, int]) -> Dict:
    """The demo's per-image json: objects and parts with COCO RLE masks (``counts`` str) and
    XYWH boxes; ``object_id`` links a part to its object, ``category_id`` is the part's index.

    Args:
        image_size: (H, W).
    """
    h, w = image_size
    objects, parts = [], []
    for o in result:
        objects.append({"object_id": o.object_id, "name": o.name, "score": float(o.score),
                        "bbox": mask_to_bbox(o.mask), "segmentation": mask_to_rle(o.mask)})
        for p in o.parts:
            parts.append({"object_id": o.object_id, "name": p.name, "index": int(p.index), "score": float(p.score),
                          "bbox": mask_to_bbox(p.mask), "segmentation": mask_to_rle(p.mask),
                          "category_id": int(p.index)})
    return {"file_name": file_name, "height": int(h), "width": int(w), "objects": objects, "parts": parts}


def part_label(part: SegPart) -> str:
    return part.name or f"part {part.index}"


def draw(image_rgb: np.ndarray, result: Sequence[SegObject]) -> np.ndarray:
    """Overlay of all parts (large first, small on top; object contours in white) with a legend
    panel on the right: each object (name or id, score) and its parts' colours, names or indices,
    and scores.

    Returns:
        (H', W + 220, 3) uint8 RGB.
    """
    parts = [(o, p) for o in result for p in o.parts]
    colors = part_colors(len(parts))
    order = np.argsort([-p.mask.sum() for _, p in parts], kind="stable")
    masks = np.stack([parts[i][1].mask for i in order]) if parts else np.zeros((0,) + image_rgb.shape[:2], bool)
    objects = np.stack([o.mask for o in result]) if len(result) else None
    overlay = draw_parts(image_rgb, masks, None, objects)
    # draw_parts colours masks in drawing order; give the legend the same colours
    drawn_color = {int(i): colors[j] for j, i in enumerate(order)}
    entries, n = [], 0
    for o in result:
        entries.append((f"object {o.object_id}{' ' + o.name if o.name else ''} {o.score:.2f}", None))
        for p in o.parts:
            entries.append((f"{part_label(p)} {p.score:.2f}", drawn_color[n]))
            n += 1
    return add_legend(overlay, entries)
