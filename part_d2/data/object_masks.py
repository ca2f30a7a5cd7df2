"""Object-mask sources: the one interface through which OPS and PartDistillation get object masks.

A source maps a dataset record (and its decoded image) to a (H, W) bool mask of the object(s) in
the image at the record's original resolution. Sources:

- ``perfect``: the union of the record's ground-truth objects (each the union of its parts);
- ``imperfect``: ``perfect`` perturbed by a seeded erosion/dilation and a shift, both proportional
  to the object's size, fixed per image (a simulated object detector; :func:`perturb_mask`);
- ``stored``: RLEs from a json ``{file_name | basename | str(image_id): [RLE, ...]}``;
- ``rgba``: the alpha channel of the image file (OPS's on-disk format);
- ``model``: any detectron2 instance model (config + weights), the union of its masks scoring at
  least a threshold; or a foreground model (``sem_seg`` output, class 1 = object), its objects
  being the connected components of its pixels of object probability >= the threshold
  (:func:`foreground_instances`).
"""
import logging
import os
import zlib
from typing import Callable, Dict, Optional

import cv2
import numpy as np
import torch
from detectron2.engine import DefaultPredictor
from detectron2.structures import BitMasks, Instances

from part_d2.config import load_part_d2_config
from part_d2.data.image_io import ImageReadError, read_alpha_channel
from part_d2.data.validation import rle_problem, valid_size
from part_d2.structures.masks import segmentation_to_mask
from part_d2.utils.errors import PartDatasetError
from part_d2.utils.io import read_json
from part_d2.utils.safe_checkpoint import verify_weights_file

logger = logging.getLogger(__name__)

OBJECT_MASK_SOURCES: Dict[str, Callable] = {}
MIN_FOREGROUND_AREA_FRACTION = 0.002  # a foreground model's components smaller than this (of the image) are dropped


def _register(name):
    def deco(cls):
        OBJECT_MASK_SOURCES[name] = cls
        return cls

    return deco


class ObjectMaskSource:
    """Base class: ``source(record, image) -> (H, W) bool`` at the record's resolution."""

    def __call__(self, record: Dict, image: np.ndarray) -> np.ndarray:
        raise NotImplementedError


def union_of_objects(record: Dict) -> np.ndarray:
    """Union of the record's ``objects`` segmentations as a (H, W) bool mask."""
    h, w = record["height"], record["width"]
    mask = np.zeros((h, w), dtype=bool)
    for obj in record.get("objects", []):
        mask |= segmentation_to_mask(obj["segmentation"], h, w)
    return mask


@_register("perfect")
class PerfectObjectMasks(ObjectMaskSource):
    def __call__(self, record, image):
        if not record.get("objects"):
            raise PartDatasetError(
                f"{record['file_name']}: the 'perfect' object-mask source needs ground-truth objects, "
                "but this record has none"
            )
        return union_of_objects(record)


def perturb_mask(mask: np.ndarray, rng: np.random.Generator, max_kernel: float, max_shift: float) -> np.ndarray:
    """Erode or dilate a (H, W) bool mask with a random elliptic kernel, then shift it, both in
    proportion to the mask's size, so that the damage (the IoU with ``mask``) does not depend on
    the object's size in pixels.

    The kernel side is ``round(u * sqrt(area))`` with ``u ~ U[0, max_kernel]`` (nothing when below
    2 px), erosion or dilation with probability 1/2 (an erosion that would empty the mask is not
    applied); the shift is ``U[-max_shift, max_shift]`` times the mask's box width / height.
    """
    out = mask.astype(np.uint8)
    size = int(round(rng.uniform(0.0, max_kernel) * np.sqrt(mask.sum())))
    erode = rng.random() < 0.5
    if size >= 2:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
        out = cv2.erode(out, kernel) if erode else cv2.dilate(out, kernel)
    if out.sum() == 0:
        out = mask.astype(np.uint8)
    ys, xs = np.nonzero(mask)
    if len(xs):
        dx = int(round(rng.uniform(-max_shift, max_shift) * (xs.max() - xs.min() + 1)))
        dy = int(round(rng.uniform(-max_shift, max_shift) * (ys.max() - ys.min() + 1)))
        m = np.float32([[1, 0, dx], [0, 1, dy]])
        out = cv2.warpAffine(out, m, (mask.shape[1], mask.shape[0]), flags=cv2.INTER_NEAREST)
    return out.astype(bool)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two (H, W) bool masks (1.0 when both are empty)."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


@_register("imperfect")
class ImperfectObjectMasks(ObjectMaskSource):
    """Simulated detector masks: perfect masks perturbed deterministically per image.

    ``max_kernel``: largest erosion/dilation kernel side as a fraction of sqrt(object area);
    ``max_shift``: largest shift as a fraction of the object's box size (see :func:`perturb_mask`).
    """

    def __init__(self, max_kernel: float = 0.12, max_shift: float = 0.03, seed: int = 0):
        self.max_kernel, self.max_shift, self.seed = max_kernel, max_shift, seed

    def __call__(self, record, image):
        key = zlib.crc32(str(record.get("image_id", record["file_name"])).encode())
        rng = np.random.default_rng([self.seed, key])
        return perturb_mask(PerfectObjectMasks()(record, image), rng, self.max_kernel, self.max_shift)


@_register("stored")
class StoredObjectMasks(ObjectMaskSource):
    """Masks from a json mapping an image key to a list of RLEs (union taken)."""

    def __init__(self, json_file: str):
        if not json_file:
            raise PartDatasetError("INPUT.OBJECT_MASK.STORED_JSON must name a json file for the 'stored' source")
        self.json_file = json_file
        self.masks = read_json(json_file)
        if not isinstance(self.masks, dict):
            raise PartDatasetError(f"{json_file}: expected a json object mapping image keys to RLE lists")

    def __call__(self, record, image):
        keys = (record["file_name"], os.path.basename(record["file_name"]), str(record.get("image_id")))
        rles = next((self.masks[k] for k in keys if k in self.masks), None)
        if rles is None:
            raise PartDatasetError(f"{self.json_file}: no object mask for image {record['file_name']}")
        h, w = record["height"], record["width"]
        mask = np.zeros((h, w), dtype=bool)
        for rle in rles:
            if not isinstance(rle, dict) or "counts" not in rle or not valid_size(rle):
                raise PartDatasetError(f"{self.json_file}: object mask of {record['file_name']} is not an RLE "
                                       "({'size': [H, W], 'counts': ...})")
            if list(rle["size"]) != [h, w]:
                raise PartDatasetError(
                    f"{self.json_file}: object mask of {record['file_name']} is {rle['size'][1]}x{rle['size'][0]} "
                    f"(WxH) but the image is {w}x{h}"
                )
            problem = rle_problem(rle, h, w)
            if problem:
                raise PartDatasetError(f"{self.json_file}: object mask of {record['file_name']}: "
                                       f"{problem.replace(' (dropped)', '')}")
            mask |= segmentation_to_mask(rle, h, w)
        return mask


@_register("rgba")
class AlphaObjectMasks(ObjectMaskSource):
    def __call__(self, record, image):
        mask = read_alpha_channel(record["file_name"])
        if mask.shape != image.shape[:2]:
            raise ImageReadError(f"{record['file_name']}: alpha channel size differs from the image")
        return mask


@_register("model")
class ModelObjectMasks(ObjectMaskSource):
    """The union of the objects of a detectron2 instance or foreground model scoring at least
    ``score_thresh`` (:func:`model_instances`).

    ``input_format``: channel order of the images this source is given (the part model's
    ``INPUT.FORMAT``); they are handed to the predictor in BGR, the order ``DefaultPredictor`` expects
    (it converts to the object model's own ``INPUT.FORMAT``).
    """

    def __init__(self, config_file: str, weights: str, score_thresh: float = 0.5, predictor=None,
                 input_format: str = "BGR"):
        self.config_file, self.weights, self.score_thresh = config_file, weights, score_thresh
        self._predictor = predictor
        self.input_format = input_format

    @property
    def predictor(self):
        if self._predictor is None:
            cfg = load_part_d2_config(self.config_file, ["MODEL.WEIGHTS", self.weights])
            cfg.freeze()
            verify_weights_file(cfg.MODEL.WEIGHTS)
            self._predictor = DefaultPredictor(cfg)  # BGR image array in, detectron2 outputs out
        return self._predictor

    def __call__(self, record, image):
        bgr = image[:, :, ::-1] if self.input_format == "RGB" else image
        inst = model_instances(self.predictor(bgr), self.score_thresh).to("cpu")
        keep = inst.scores >= self.score_thresh
        masks = inst.pred_masks[keep].numpy()
        return masks.any(axis=0) if len(masks) else np.zeros(image.shape[:2], dtype=bool)


def foreground_instances(sem_seg: torch.Tensor, score_thresh: float = 0.5,
                         min_area_fraction: float = MIN_FOREGROUND_AREA_FRACTION) -> Instances:
    """The objects of a foreground model: the 8-connected components of its pixels whose object
    probability is at least ``score_thresh``, except those smaller than ``min_area_fraction`` of the image.

    Args:
        sem_seg: (2, H, W) logits, class 1 = object.
    Returns:
        (H, W) Instances, by decreasing score: ``pred_masks`` (N, H, W) bool, ``scores`` (N,) the
        component's mean object probability, ``pred_classes`` (N,) zeros, ``pred_boxes`` (N, 4) XYXY.
    """
    prob = sem_seg.float().softmax(dim=0)[1].cpu()
    h, w = prob.shape
    count, labels, stats, _ = cv2.connectedComponentsWithStats((prob >= score_thresh).numpy().astype(np.uint8),
                                                               connectivity=8)
    labels = torch.from_numpy(labels).long()
    areas = torch.from_numpy(stats[:, cv2.CC_STAT_AREA]).double()
    kept = torch.arange(1, count)[areas[1:] >= min_area_fraction * h * w]  # components only, no (count, H, W)
    sums = torch.bincount(labels.flatten(), weights=prob.flatten().double(), minlength=count)
    scores = (sums[kept] / areas[kept]).float()
    masks = labels[None] == kept[:, None, None]
    order = torch.argsort(scores, descending=True)
    inst = Instances((h, w), pred_masks=masks[order], scores=scores[order],
                     pred_classes=torch.zeros(len(order), dtype=torch.int64))
    inst.pred_boxes = BitMasks(inst.pred_masks).get_bounding_boxes()
    return inst


def model_instances(outputs: Dict, score_thresh: float = 0.5) -> Instances:
    """A detectron2 model's objects: its ``instances``, or for a foreground model (``sem_seg``
    output) :func:`foreground_instances` at ``score_thresh``."""
    if "instances" in outputs:
        return outputs["instances"]
    return foreground_instances(outputs["sem_seg"], score_thresh)


def build_object_mask_source(cfg, training: bool = False) -> Optional[ObjectMaskSource]:
    """The source named by ``INPUT.OBJECT_MASK.SOURCE``, or None when no step uses object masks:
    the 4th input channel, post-aware filtering, or (``training``) OPS's self-supervised loss or a
    foreground target."""
    c = cfg.INPUT.OBJECT_MASK
    in_training = training and (cfg.MODEL.OPS.SS_LOSS.ENABLED or c.FOREGROUND_TARGET)
    if not (c.ENABLED or cfg.TEST.POST_AWARE.ENABLED or in_training):
        return None
    if c.SOURCE not in OBJECT_MASK_SOURCES:
        raise ValueError(f"INPUT.OBJECT_MASK.SOURCE={c.SOURCE!r}; expected one of {sorted(OBJECT_MASK_SOURCES)}")
    if c.SOURCE == "imperfect":
        return ImperfectObjectMasks(c.IMPERFECT_KERNEL_FRACTION, c.IMPERFECT_MAX_SHIFT, c.IMPERFECT_SEED)
    if c.SOURCE == "stored":
        return StoredObjectMasks(c.STORED_JSON)
    if c.SOURCE == "model":
        return ModelObjectMasks(c.MODEL_CONFIG, c.MODEL_WEIGHTS, c.MODEL_SCORE_THRESH, input_format=cfg.INPUT.FORMAT)
    return OBJECT_MASK_SOURCES[c.SOURCE]()
