"""OPS self-supervised fine-tuning: ``SelfSupervisedPartMask2Former``.

A :class:`PartMask2Former` whose training step takes a mixed batch of labeled inputs (with
``"instances"``) and unlabeled inputs (without): the supervised Mask2Former losses are computed on
the labeled inputs only, and with ``MODEL.OPS.SS_LOSS.ENABLED`` the cluster-contrastive loss
(:class:`ClusterContrastiveLoss`) is added on the stride-4 ``mask_features`` of every input,
restricted to its object pixels. Each training input's ``"object_mask"`` is the transformed mask of
the configured object-mask source, given by :class:`PartDatasetMapper`. Inference is unchanged.
"""
from typing import Dict, List, Optional

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import ImageList

from part_d2.modeling.losses.cluster_contrastive import ClusterContrastiveLoss

from .meta_arch import PartMask2Former


def select_outputs(outputs: Dict, index: torch.Tensor) -> Dict:
    """The head outputs of a subset of the batch.

    Args:
        outputs: head outputs whose tensors are batch-first (``pred_logits`` (N, Q, K + 1),
            ``pred_masks`` (N, Q, h, w), ...) and ``aux_outputs`` a list of such dicts.
        index: (M,) long indices into the batch.
    Returns:
        the same structure with every batch-first tensor indexed by ``index``.
    """
    selected = {}
    for key, value in outputs.items():
        if key == "aux_outputs":
            selected[key] = [select_outputs(aux, index) for aux in value]
        elif isinstance(value, torch.Tensor):
            selected[key] = value[index]
        else:
            selected[key] = value
    return selected


def padded_object_masks(batched_inputs: List[Dict], images: ImageList) -> torch.Tensor:
    """Each input's ``"object_mask"`` (H, W) bool, zero-padded to the batch: (N, H', W') bool."""
    height, width = images.tensor.shape[-2:]
    out = torch.zeros((len(batched_inputs), height, width), dtype=torch.bool, device=images.tensor.device)
    for i, (x, (h, w)) in enumerate(zip(batched_inputs, images.image_sizes)):
        if "object_mask" not in x:
            raise KeyError(
                "MODEL.OPS.SS_LOSS.ENABLED needs an 'object_mask' in each training input: "
                "use PartDatasetMapper with an object-mask source (INPUT.OBJECT_MASK.SOURCE)"
            )
        mask = x["object_mask"]
        if tuple(mask.shape) != (h, w):
            raise ValueError(f"object_mask of shape {tuple(mask.shape)} does not match its image size {(h, w)}")
        out[i, :h, :w] = mask.to(out.device)
    return out


@META_ARCH_REGISTRY.register()
class SelfSupervisedPartMask2Former(PartMask2Former):
    """PartMask2Former trained on labeled + unlabeled inputs with OPS's self-supervised loss.

    Training returns the supervised losses of the labeled inputs (none when the batch has no
    labeled input) plus ``loss_affinity`` and ``loss_contrast`` over all inputs when the SS loss
    is enabled.
    """

    @configurable
    def __init__(self, *, ss_loss: Optional[ClusterContrastiveLoss] = None, **kwargs):
        """
        Args:
            ss_loss: the self-supervised loss, or None to train with the supervised losses only.
            kwargs: arguments of :class:`PartMask2Former`.
        """
        super().__init__(**kwargs)
        self.ss_loss = ss_loss

    @classmethod
    def from_config(cls, cfg):
        args = PartMask2Former.from_config(cfg)
        args["ss_loss"] = ClusterContrastiveLoss(cfg) if cfg.MODEL.OPS.SS_LOSS.ENABLED else None
        return args

    def forward(self, batched_inputs: List[Dict]):
        """
        Args:
            batched_inputs: as :meth:`PartMask2Former.forward`; in training, inputs without
                ``"instances"`` are unlabeled, and with the SS loss every input needs
                ``"object_mask"`` (H, W) bool at its image's size.
        Returns:
            training: dict of weighted losses; inference: as :class:`PartMask2Former`.
        """
        if not self.training:
            return super().forward(batched_inputs)
        images, outputs = self.forward_features(batched_inputs)
        losses = {}
        labeled = [i for i, x in enumerate(batched_inputs) if "instances" in x]
        if labeled:
            index = torch.as_tensor(labeled, dtype=torch.long, device=self.device)
            sub_inputs = [batched_inputs[i] for i in labeled]
            sub_images = ImageList(images.tensor[index], [images.image_sizes[i] for i in labeled])
            losses.update(self.losses(select_outputs(outputs, index), self.prepare_targets(sub_inputs, sub_images)))
        if self.ss_loss is not None:
            losses.update(self.ss_loss(outputs["mask_features"], padded_object_masks(batched_inputs, images)))
        if not losses:
            raise ValueError("a training batch without labeled inputs needs MODEL.OPS.SS_LOSS.ENABLED")
        return losses
