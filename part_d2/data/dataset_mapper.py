"""Dataset mapper for part instance segmentation (any model: Cascade Mask R-CNN, Mask2Former).

Training uses large-scale jitter (flip, ResizeScale to a square target, FixedSizeCrop) or
shortest-edge resizing; testing uses shortest-edge resizing. With ``INPUT.OBJECT_MASK.ENABLED``
the object mask becomes a 4th image channel (resized with nearest neighbour, padding is
background), and at test time the mask is also kept at the original resolution as
``"object_mask"`` for post-aware filtering. With OPS's self-supervised loss
(``MODEL.OPS.SS_LOSS.ENABLED``) training inputs also carry the transformed mask as
``"object_mask"`` at the training resolution.
"""
import copy
import logging
from collections import Counter
from typing import Dict, List, Optional

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

from part_d2.data.image_io import ImageReadError, check_image_size, read_image_checked
from part_d2.data.object_masks import ObjectMaskSource, build_object_mask_source
from part_d2.utils.errors import ConfigError

logger = logging.getLogger(__name__)


def build_lsj_augmentations(image_size: int, min_scale: float, max_scale: float, flip: str) -> List[T.Augmentation]:
    """Large-scale jitter: flip, ResizeScale(min..max) of a square target, FixedSizeCrop."""
    augs = []
    if flip != "none":
        augs.append(T.RandomFlip(horizontal=flip == "horizontal", vertical=flip == "vertical"))
    augs += [
        T.ResizeScale(min_scale=min_scale, max_scale=max_scale, target_height=image_size, target_width=image_size),
        T.FixedSizeCrop(crop_size=(image_size, image_size)),
    ]
    return augs


def build_part_augmentations(cfg, is_train: bool) -> List[T.Augmentation]:
    if not is_train:
        return [T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, "choice")]
    if cfg.INPUT.DATASET_MAPPER_NAME == "part_instance_lsj":
        return build_lsj_augmentations(
            cfg.INPUT.IMAGE_SIZE, cfg.INPUT.MIN_SCALE, cfg.INPUT.MAX_SCALE, cfg.INPUT.RANDOM_FLIP_LSJ
        )
    if cfg.INPUT.DATASET_MAPPER_NAME == "part_instance":
        return utils.build_augmentation(cfg, is_train)
    raise ValueError(f"INPUT.DATASET_MAPPER_NAME={cfg.INPUT.DATASET_MAPPER_NAME!r} is not a part_d2 mapper")


def class_agnostic_training(cfg) -> bool:
    """``DATASETS.CLASS_AGNOSTIC``, checked against the label views of ``DATASETS.TRAIN``.

    The switch for class-agnostic *part* training is the dataset view (``X_agnostic``); the key
    maps the classes of views without an agnostic variant (e.g. ``X_objects``) to one class.

    Raises:
        ConfigError: when it is True and a training dataset is a ``_parts`` view (a contradiction).
    """
    if not cfg.DATASETS.CLASS_AGNOSTIC:
        return False
    parts = [n for n in cfg.DATASETS.TRAIN if MetadataCatalog.get(n).get("label_view") == "parts"]
    if parts:
        raise ConfigError(
            f"DATASETS.CLASS_AGNOSTIC True contradicts the part classes of {parts}: train on their "
            "_agnostic view for class-agnostic parts, or set DATASETS.CLASS_AGNOSTIC False"
        )
    return True


class PartDatasetMapper:
    """Map a part dataset record to model inputs.

    Output dict: ``image`` (C, H, W) uint8 tensor with C = 3, or 4 when the object mask is an
    input channel (values 0 / ``object_mask_value``); ``instances`` (training, and at test time
    when annotations are kept) with ``gt_boxes``, ``gt_classes``, ``gt_masks``; ``object_mask``
    (H0, W0) bool tensor at the original resolution when a source is configured at test time, or
    (H, W) bool at the augmented training resolution when ``train_object_mask``; ``sem_seg``
    (training with ``foreground_target``): (H, W) long, 1 on the object mask, 0 elsewhere.
    """

    @configurable
    def __init__(
        self,
        is_train: bool,
        *,
        augmentations: List,
        image_format: str,
        mask_format: str = "bitmask",
        class_agnostic: bool = False,
        object_mask_source: Optional[ObjectMaskSource] = None,
        object_mask_channel: bool = False,
        object_mask_value: float = 255.0,
        train_object_mask: bool = False,
        foreground_target: bool = False,
        skip_bad_images: bool = True,
    ):
        """
        Args:
            train_object_mask: in training, also return the transformed object mask (needs
                ``object_mask_source``).
            foreground_target: in training, also return the object mask as a semantic
                segmentation target ``sem_seg`` (needs ``object_mask_source``).
        """
        if (train_object_mask or foreground_target) and object_mask_source is None:
            raise ValueError("train_object_mask and foreground_target need an object_mask_source")
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.mask_format = mask_format
        self.class_agnostic = class_agnostic
        self.object_mask_source = object_mask_source
        self.object_mask_channel = object_mask_channel
        self.object_mask_value = object_mask_value
        self.train_object_mask = train_object_mask and is_train
        self.foreground_target = foreground_target and is_train
        self.skip_bad_images = skip_bad_images and is_train
        self.skipped = Counter()
        mode = "training" if is_train else "inference"
        logger.info(f"[PartDatasetMapper] {mode} augmentations: {augmentations}")

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        return {
            "is_train": is_train,
            "augmentations": build_part_augmentations(cfg, is_train),
            "image_format": cfg.INPUT.FORMAT,
            "mask_format": cfg.INPUT.MASK_FORMAT,
            "class_agnostic": class_agnostic_training(cfg) if is_train else False,
            "object_mask_source": build_object_mask_source(cfg, training=is_train),
            "object_mask_channel": cfg.INPUT.OBJECT_MASK.ENABLED,
            "object_mask_value": cfg.INPUT.OBJECT_MASK.PIXEL_VALUE,
            "train_object_mask": is_train and cfg.MODEL.OPS.SS_LOSS.ENABLED,
            "foreground_target": is_train and cfg.INPUT.OBJECT_MASK.FOREGROUND_TARGET,
        }

    def __call__(self, dataset_dict):
        try:
            return self._map(copy.deepcopy(dataset_dict))
        except ImageReadError as e:
            if not self.skip_bad_images:
                raise
            self.skipped[type(e).__name__] += 1
            logger.warning(
                f"Skipping unreadable training image ({sum(self.skipped.values())} so far in this worker): {e}"
            )
            return None

    def _map(self, d):
        image = read_image_checked(d["file_name"], self.image_format)
        check_image_size(d, image)
        object_mask = self.object_mask_source(d, image) if self.object_mask_source is not None else None
        return self.map_image(d, image, object_mask)

    def map_image(self, d: Dict, image: np.ndarray, object_mask: Optional[np.ndarray] = None) -> Dict:
        """Map a record whose image is already decoded (the rest of :meth:`__call__`).

        Args:
            d: the record (modified and returned).
            image: (H, W, 3) uint8 in ``image_format``.
            object_mask: (H, W) bool object mask (the 4th channel, post-aware filtering), or None.
        """
        aug_input = T.AugInput(image)
        transforms = self.augmentations(aug_input)
        image = aug_input.image
        h, w = image.shape[:2]
        channels = [image]
        if self.object_mask_channel or self.train_object_mask or self.foreground_target:
            # {0, 1} labels resized with nearest neighbour; pad values (0 or 255) are background.
            moved = transforms.apply_segmentation(object_mask.astype(np.uint8)) == 1
        if self.object_mask_channel:
            channels.append((moved * self.object_mask_value).astype(np.uint8)[:, :, None])
        d["image"] = torch.as_tensor(np.ascontiguousarray(np.concatenate(channels, axis=2).transpose(2, 0, 1)))
        if object_mask is not None and not self.is_train:
            d["object_mask"] = torch.as_tensor(object_mask)
        if self.train_object_mask:
            d["object_mask"] = torch.as_tensor(np.ascontiguousarray(moved))
        if self.foreground_target:
            d["sem_seg"] = torch.as_tensor(np.ascontiguousarray(moved), dtype=torch.long)

        annos = d.pop("annotations", None)
        d.pop("objects", None)
        if not self.is_train or annos is None:
            return d
        annos = [
            utils.transform_instance_annotations(a, transforms, (h, w))
            for a in annos
            if a.get("iscrowd", 0) == 0
        ]
        if self.class_agnostic:
            for a in annos:
                a["category_id"] = 0
        mask_format = self.mask_format
        if any(not isinstance(a["segmentation"], list) for a in annos):
            mask_format = "bitmask"
        instances = utils.annotations_to_instances(annos, (h, w), mask_format=mask_format)
        if instances.has("gt_masks") and len(instances):
            instances.gt_boxes = instances.gt_masks.get_bounding_boxes()
        d["instances"] = utils.filter_empty_instances(instances)
        return d
