"""``PartMask2Former``: Mask2Former for (class-agnostic) part instance segmentation."""
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, Backbone, build_backbone
from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.structures import BitMasks, ImageList, PolygonMasks
from torch import nn

from part_d2.modeling.object_aware import PostAwareFilter
from part_d2.modeling.onednn import channels_last_input

from .criterion import SetCriterion
from .head import MaskFormerHead
from .inference import instance_inference
from .matcher import HungarianMatcher


def build_criterion(cfg) -> SetCriterion:
    """The matcher and set criterion of ``cfg.MODEL.MASK_FORMER`` (weights of every output)."""
    mf = cfg.MODEL.MASK_FORMER
    matcher = HungarianMatcher(
        class_weight=mf.CLASS_WEIGHT, mask_weight=mf.MASK_WEIGHT, dice_weight=mf.DICE_WEIGHT,
        num_points=mf.TRAIN_NUM_POINTS,
    )
    weights = {"loss_ce": mf.CLASS_WEIGHT, "loss_mask": mf.MASK_WEIGHT, "loss_dice": mf.DICE_WEIGHT}
    if mf.DEEP_SUPERVISION:
        weights.update({f"{k}_{i}": v for i in range(mf.DEC_LAYERS - 1) for k, v in list(weights.items())})
    return SetCriterion(
        cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
        matcher=matcher,
        weight_dict=weights,
        no_object_weight=mf.NO_OBJECT_WEIGHT,
        num_points=mf.TRAIN_NUM_POINTS,
        oversample_ratio=mf.OVERSAMPLE_RATIO,
        importance_sample_ratio=mf.IMPORTANCE_SAMPLE_RATIO,
        point_sampling=mf.POINT_SAMPLING,
        deep_supervision=mf.DEEP_SUPERVISION,
    )


def gt_mask_tensor(instances, height: int, width: int) -> torch.Tensor:
    """``instances.gt_masks`` (BitMasks, PolygonMasks or a (K, H, W) tensor as the official
    mappers give) as a (K, height, width) bool tensor."""
    masks = instances.gt_masks
    if isinstance(masks, PolygonMasks):
        masks = BitMasks.from_polygon_masks(masks, height, width)
    if isinstance(masks, BitMasks):
        masks = masks.tensor
    if not isinstance(masks, torch.Tensor) or masks.dim() != 3:
        raise TypeError(f"gt_masks must be BitMasks, PolygonMasks or a (K, H, W) tensor, got {type(masks).__name__}")
    return masks.bool()


@META_ARCH_REGISTRY.register()
class PartMask2Former(nn.Module):
    """Mask2Former with instance inference; ``sem_seg_head`` and ``criterion`` are named as in the
    official checkpoints so that they load unchanged.

    Training returns the weighted losses; inference returns detectron2-style
    ``[{"instances": Instances}]`` at each input's ``height x width``.
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        sem_seg_head: nn.Module,
        criterion: SetCriterion,
        num_queries: int,
        size_divisibility: int,
        pixel_mean: Tuple[float, ...],
        pixel_std: Tuple[float, ...],
        test_topk_per_image: int,
        return_query_embeddings: bool = False,
        post_aware: Optional[PostAwareFilter] = None,
    ):
        """
        Args:
            size_divisibility: pad images to a multiple of this; < 0 uses the backbone's.
            pixel_mean, pixel_std: one value per input channel (3, or 4 with the object mask).
            test_topk_per_image: at most this many instances per image.
            return_query_embeddings: add each prediction's decoder embedding (``query_embeddings``,
                (N, C)) to the output instances.
            post_aware: OPS post-aware filtering of the inference outputs (None: off).
        """
        super().__init__()
        if len(pixel_mean) != len(pixel_std):
            raise ValueError(f"PIXEL_MEAN {pixel_mean} and PIXEL_STD {pixel_std} differ in length")
        self.backbone = backbone
        self.sem_seg_head = sem_seg_head
        self.criterion = criterion
        self.num_queries = num_queries
        self.size_divisibility = backbone.size_divisibility if size_divisibility < 0 else size_divisibility
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1), False)
        self.test_topk_per_image = test_topk_per_image
        self.return_query_embeddings = return_query_embeddings
        self.post_aware = post_aware
        self.return_mask_probs = False  # set by stage-2 ranking: add mask_probs and class_scores

    @classmethod
    def from_config(cls, cfg):
        backbone = build_backbone(cfg)
        return {
            "backbone": backbone,
            "sem_seg_head": MaskFormerHead(cfg, backbone.output_shape()),
            "criterion": build_criterion(cfg),
            "num_queries": cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES,
            "size_divisibility": cfg.MODEL.MASK_FORMER.SIZE_DIVISIBILITY,
            "pixel_mean": tuple(cfg.MODEL.PIXEL_MEAN),
            "pixel_std": tuple(cfg.MODEL.PIXEL_STD),
            "test_topk_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
            "return_query_embeddings": cfg.MODEL.MASK_FORMER.TEST.RETURN_QUERY_EMBEDDINGS,
            "post_aware": PostAwareFilter.from_config(cfg),
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def in_channels(self) -> int:
        return self.pixel_mean.shape[0]

    def preprocess_image(self, batched_inputs: List[Dict]) -> ImageList:
        """Normalise ``"image"`` (C, H, W) uint8 tensors and pad them into one (N, C, H', W') batch."""
        images = []
        for x in batched_inputs:
            image = x["image"]
            if image.dim() != 3 or image.shape[0] != self.in_channels:
                raise ValueError(
                    f"image of shape {tuple(image.shape)} does not match the model's {self.in_channels} "
                    "input channels (len(MODEL.PIXEL_MEAN)); with INPUT.OBJECT_MASK.ENABLED the mapper "
                    "adds the 4th channel and PIXEL_MEAN/PIXEL_STD need 4 values"
                )
            images.append((image.to(self.device).float() - self.pixel_mean) / self.pixel_std)
        return ImageList.from_tensors(images, self.size_divisibility)

    def forward_features(self, batched_inputs: List[Dict]) -> Tuple[ImageList, Dict]:
        """Run backbone and head.

        Returns:
            the padded images and the head's outputs: ``"pred_logits"`` (N, Q, K + 1),
            ``"pred_masks"`` (N, Q, H'/4, W'/4), ``"pred_embeddings"`` (N, Q, C),
            ``"aux_outputs"`` and ``"mask_features"`` (N, mask_dim, H'/4, W'/4) (H', W': padded size).
        """
        images = self.preprocess_image(batched_inputs)
        x = channels_last_input(self, images.tensor)  # CPU: channels-last convolutions (onednn.py)
        return images, self.sem_seg_head(self.backbone(x))

    def mask_features(self, batched_inputs: List[Dict]) -> torch.Tensor:
        """Per-pixel mask features (N, mask_dim, H'/4, W'/4) of the padded batch (e.g. for
        OPS's self-supervised loss). Use :meth:`forward_features` when the predictions are needed too."""
        return self.forward_features(batched_inputs)[1]["mask_features"]

    def prepare_targets(self, batched_inputs: List[Dict], images: ImageList) -> List[Dict[str, torch.Tensor]]:
        """Ground truth as criterion targets: ``"labels"`` (K,) and ``"masks"`` (K, H', W') bool
        zero-padded to the batch's padded size."""
        padded_h, padded_w = images.tensor.shape[-2:]
        targets = []
        for x, (h, w) in zip(batched_inputs, images.image_sizes):
            if "instances" not in x:
                raise ValueError("training inputs need 'instances' (use the part_d2 dataset mappers)")
            instances = x["instances"].to(self.device)
            masks = gt_mask_tensor(instances, h, w)
            padded = masks.new_zeros((masks.shape[0], padded_h, padded_w))
            padded[:, : masks.shape[1], : masks.shape[2]] = masks
            targets.append({"labels": instances.gt_classes, "masks": padded})
        return targets

    def losses(self, outputs: Dict, targets: List[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
        """Weighted criterion losses (names without a weight are dropped)."""
        losses = self.criterion(outputs, targets)
        weights = self.criterion.weight_dict
        return {k: v * weights[k] for k, v in losses.items() if k in weights}

    def forward(self, batched_inputs: List[Dict]):
        """
        Args:
            batched_inputs: dicts with ``"image"`` (C, H, W) uint8, in training ``"instances"``
                (``gt_classes`` (K,), ``gt_masks`` BitMasks or PolygonMasks), and optionally
                ``"height"``, ``"width"`` of the output.
        Returns:
            training: dict of weighted losses. Inference: a list of
            ``{"instances": Instances}`` with ``pred_masks`` (N, height, width) bool,
            ``pred_boxes``, ``scores``, ``pred_classes`` and ``query_indices`` (and
            ``query_embeddings`` (N, C) if enabled), cropped to the inputs' ``object_mask`` by
            ``post_aware`` when it is set.
        """
        images, outputs = self.forward_features(batched_inputs)
        if self.training:
            return self.losses(outputs, self.prepare_targets(batched_inputs, images))
        results = self.inference(batched_inputs, images, outputs)
        return results if self.post_aware is None else self.post_aware(batched_inputs, results)

    def inference(self, batched_inputs: List[Dict], images: ImageList, outputs: Dict) -> List[Dict]:
        """Instances of each image from the final predictions (see :func:`instance_inference`)."""
        padded_size = images.tensor.shape[-2:]
        results = []
        for i, (x, image_size) in enumerate(zip(batched_inputs, images.image_sizes)):
            height = x.get("height", image_size[0])
            width = x.get("width", image_size[1])

            def resize(mask_logits, image_size=image_size, height=height, width=width):
                full = F.interpolate(mask_logits[None], size=padded_size, mode="bilinear", align_corners=False)[0]
                if (height, width) == tuple(image_size):  # sem_seg_postprocess would resize to the same size
                    return full[:, : image_size[0], : image_size[1]]
                return sem_seg_postprocess(full, image_size, height, width)

            embeddings = outputs["pred_embeddings"][i] if self.return_query_embeddings else None
            instances = instance_inference(
                outputs["pred_logits"][i], outputs["pred_masks"][i], (height, width),
                self.test_topk_per_image, resize_masks=resize, embeddings=embeddings,
                mask_probs=self.return_mask_probs,
            )
            results.append({"instances": instances})
        return results
