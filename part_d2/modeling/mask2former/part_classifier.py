"""PartDistillation's Mask2Former: part proposals (stage 1b) and per-object-class part classifiers
(stage 3), as the meta-architecture ``PartDistillationMask2Former``.

Stage 1b (``PART_DISTILLATION.CLASSIFIER "agnostic"``) is a class-agnostic
:class:`PartMask2Former` trained on the stage-1a part segments, usually with the backbone and the
pixel decoder's deformable encoder frozen (the reference freezes parameters whose names contain
``backbone`` or ``encoder``).

Stage 3 (``"per_object"``) classifies each query into one of ``P`` part classes *of the image's
object class* (plus "no object"). The classifier holds ``N_obj x P`` rows; for an image of object
class ``o`` only rows ``o * P .. o * P + P - 1`` are gathered **before** the product with the query
embeddings, so a batch materialises ``B x Q x (P + 1)`` logits instead of ``B x Q x (N_obj P + 1)``
and only the gathered rows receive gradient. The rows are excluded from weight decay (they would
otherwise decay on every step in which their object class is absent). With
``PART_DISTILLATION.SPARSE_CLASSIFIER_GRAD`` that gradient is row-sparse (COO: only the
gathered rows exist, so no ``N_obj x P x C`` gradient is allocated) and AdamW updates the rows
lazily (see :mod:`part_d2.solver.build`); it is off by default because NCCL cannot all-reduce
sparse gradients and because lazy updates differ from the dense AdamW of the reference, whose
absent rows keep moving with their momentum.

Pseudo-label convention (stage 2 output): contiguous part category ``c = o * P + m`` for object
class ``o`` and part mode ``m``; the image's ``object_category_id`` must equal ``o`` for all its
parts. At inference the object class comes from the input's ``object_category_id`` (``"record"``:
ground truth on an annotated set, or a stage-0 prediction stored in the record) or from a json of
predicted classes (``"stored"``). Predictions get ``pred_classes`` = the part mode ``m`` and
``pred_object_classes`` = ``o``.
"""
import functools
import logging
import math
import os
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import ImageList
from detectron2.utils import comm
from torch import nn

from part_d2.data.object_classes import read_object_class_json
from part_d2.solver.build import NO_DECAY_ATTR, SPARSE_GRAD_ATTR

from .meta_arch import PartMask2Former, gt_mask_tensor
from .object_conditioning import FeatureObjectConditioning

logger = logging.getLogger(__name__)

CLASSIFIERS = ("agnostic", "per_object")
OBJECT_CLASS_SOURCES = ("record", "stored")
CONDITIONINGS = ("none", "feature")
PIXEL_DECODER_FREEZE_PREFIXES = {
    "none": (),
    "encoder": ("sem_seg_head.pixel_decoder.transformer.encoder.",),
    "all": ("sem_seg_head.pixel_decoder.",),
}


def frozen_prefixes(freeze_backbone: bool, freeze_pixel_decoder: str) -> Tuple[str, ...]:
    """Parameter-name prefixes to freeze for ``PART_DISTILLATION.FREEZE_*``."""
    if freeze_pixel_decoder not in PIXEL_DECODER_FREEZE_PREFIXES:
        raise ValueError(
            f"PART_DISTILLATION.FREEZE_PIXEL_DECODER={freeze_pixel_decoder!r}; expected one of "
            f"{sorted(PIXEL_DECODER_FREEZE_PREFIXES)}"
        )
    return (("backbone.",) if freeze_backbone else ()) + PIXEL_DECODER_FREEZE_PREFIXES[freeze_pixel_decoder]


def freeze_parameters(module: nn.Module, prefixes: Sequence[str]) -> int:
    """Set ``requires_grad=False`` on the parameters whose name starts with one of ``prefixes``.

    Returns:
        the number of parameter tensors frozen.
    """
    count = 0
    for name, p in module.named_parameters():
        if any(name.startswith(prefix) for prefix in prefixes):
            p.requires_grad_(False)
            count += 1
    return count


class PerObjectPartClassifier(nn.Module):
    """``N_obj x P`` part classifiers plus one shared "no object" logit, evaluated only on the rows
    of each image's object class."""

    def __init__(self, num_object_classes: int, num_part_classes: int, embed_dim: int, sparse_grad: bool = False):
        """
        Args:
            num_object_classes, num_part_classes: N_obj and P.
            embed_dim: C, the query embedding size.
            sparse_grad: give ``weight`` and ``bias`` row-sparse COO gradients.
        """
        super().__init__()
        if num_object_classes < 1 or num_part_classes < 1:
            raise ValueError(
                f"PerObjectPartClassifier needs >= 1 object and part class, got {num_object_classes} "
                f"and {num_part_classes}"
            )
        self.num_object_classes = num_object_classes
        self.num_part_classes = num_part_classes
        bound = 1.0 / math.sqrt(embed_dim)  # nn.Linear's default initialisation range
        self.weight = nn.Parameter(
            torch.empty(num_object_classes * num_part_classes, embed_dim).uniform_(-bound, bound)
        )
        self.bias = nn.Parameter(torch.empty(num_object_classes * num_part_classes).uniform_(-bound, bound))
        self.sparse_grad = sparse_grad
        for p in (self.weight, self.bias):
            setattr(p, NO_DECAY_ATTR, True)
            setattr(p, SPARSE_GRAD_ATTR, sparse_grad)
        self.no_object = nn.Linear(embed_dim, 1)

    def rows(self, object_classes: torch.Tensor) -> torch.Tensor:
        """Classifier rows of each image's object class.

        Args:
            object_classes: (B,) int64 in [0, N_obj).
        Returns:
            (B, P) int64, row ``o * P + m`` at [b, m].
        """
        if object_classes.numel() and (object_classes.min() < 0 or object_classes.max() >= self.num_object_classes):
            raise ValueError(
                f"object classes {object_classes.tolist()} outside [0, {self.num_object_classes}) "
                "(PART_DISTILLATION.NUM_OBJECT_CLASSES)"
            )
        modes = torch.arange(self.num_part_classes, device=object_classes.device)
        return object_classes[:, None] * self.num_part_classes + modes[None]

    def forward(self, embeddings: torch.Tensor, object_classes: torch.Tensor) -> torch.Tensor:
        """
        Args:
            embeddings: (B, Q, C) query embeddings.
            object_classes: (B,) int64 object class of each image.
        Returns:
            (B, Q, P + 1) logits: the P parts of each image's object class, then "no object".
        """
        rows = self.rows(object_classes.to(embeddings.device))
        weight = F.embedding(rows, self.weight, sparse=self.sparse_grad).to(embeddings.dtype)  # (B, P, C)
        bias = torch.gather(self.bias, 0, rows.flatten(), sparse_grad=self.sparse_grad)  # (B * P,)
        bias = bias.view(rows.shape).to(embeddings.dtype)  # (B, P)
        part_logits = torch.baddbmm(bias[:, None, :], embeddings, weight.transpose(1, 2))
        return torch.cat([part_logits, self.no_object(embeddings)], dim=-1)


def split_part_labels(labels: torch.Tensor, num_part_classes: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Contiguous pseudo-label categories ``o * P + m`` -> (object classes o, part modes m)."""
    return torch.div(labels, num_part_classes, rounding_mode="floor"), labels % num_part_classes


@META_ARCH_REGISTRY.register()
class PartDistillationMask2Former(PartMask2Former):
    """:class:`PartMask2Former` with freezing, optional object conditioning and, for stage 3, the
    per-object-class part classifier (see the module docstring)."""

    @configurable
    def __init__(
        self,
        *,
        frozen: Sequence[str] = (),
        part_classifier: Optional[PerObjectPartClassifier] = None,
        object_conditioning: Optional[FeatureObjectConditioning] = None,
        object_class_source: str = "record",
        stored_object_classes: Optional[Dict[str, int]] = None,
        **kwargs,
    ):
        """
        Args:
            frozen: parameter-name prefixes that get no gradient (see :func:`frozen_prefixes`).
            part_classifier: stage 3's classifier; None keeps the decoder's own classifier.
            object_conditioning: conditions the decoder on the object mask (training: union of the
                target parts; inference: the input's ``object_mask``).
            object_class_source: "record" or "stored" object class at inference.
            stored_object_classes: the "stored" classes by image key.
            kwargs: :class:`PartMask2Former`'s arguments.
        """
        super().__init__(**kwargs)
        if object_class_source not in OBJECT_CLASS_SOURCES:
            raise ValueError(
                f"PART_DISTILLATION.TEST_OBJECT_CLASS={object_class_source!r}; "
                f"expected one of {OBJECT_CLASS_SOURCES}"
            )
        if object_class_source == "stored" and stored_object_classes is None:
            raise ValueError("TEST_OBJECT_CLASS 'stored' needs PART_DISTILLATION.OBJECT_CLASS_JSON")
        self.part_classifier = part_classifier
        self.object_conditioning = object_conditioning
        self.object_class_source = object_class_source
        self.stored_object_classes = stored_object_classes
        if frozen:
            n = freeze_parameters(self, frozen)
            logger.info(f"Froze {n} parameter tensors with prefixes {list(frozen)}")

    @classmethod
    def from_config(cls, cfg):
        pd = cfg.PART_DISTILLATION
        for key, value, allowed in (
            ("CLASSIFIER", pd.CLASSIFIER, CLASSIFIERS),
            ("OBJECT_CONDITIONING", pd.OBJECT_CONDITIONING, CONDITIONINGS),
        ):
            if value not in allowed:
                raise ValueError(f"PART_DISTILLATION.{key}={value!r}; expected one of {allowed}")
        ret = super().from_config(cfg)
        ret["frozen"] = frozen_prefixes(pd.FREEZE_BACKBONE, pd.FREEZE_PIXEL_DECODER)
        if pd.CLASSIFIER == "per_object":
            if cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES != pd.NUM_PART_MODES:
                raise ValueError(
                    f"CLASSIFIER 'per_object' needs MODEL.SEM_SEG_HEAD.NUM_CLASSES == NUM_PART_MODES "
                    f"({cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES} != {pd.NUM_PART_MODES})"
                )
            if pd.SPARSE_CLASSIFIER_GRAD and comm.get_world_size() > 1 and dist.get_backend() == "nccl":
                raise ValueError(
                    "PART_DISTILLATION.SPARSE_CLASSIFIER_GRAD True: NCCL cannot all-reduce sparse "
                    "gradients; set it False for multi-GPU training"
                )
            ret["part_classifier"] = PerObjectPartClassifier(
                num_object_classes(cfg), pd.NUM_PART_MODES, cfg.MODEL.MASK_FORMER.HIDDEN_DIM,
                sparse_grad=pd.SPARSE_CLASSIFIER_GRAD,
            )
        if pd.OBJECT_CONDITIONING == "feature":
            ret["object_conditioning"] = FeatureObjectConditioning(
                cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM, cfg.MODEL.SEM_SEG_HEAD.MASK_DIM
            )
        ret["object_class_source"] = pd.TEST_OBJECT_CLASS
        if pd.TEST_OBJECT_CLASS == "stored" and pd.OBJECT_CLASS_JSON:
            ret["stored_object_classes"] = read_object_class_json(pd.OBJECT_CLASS_JSON)
        return ret

    def object_classes(self, batched_inputs: List[Dict]) -> torch.Tensor:
        """(B,) int64 object class of each input: its ``object_category_id`` in training and with
        the "record" source, else the stored prediction."""
        classes = []
        for x in batched_inputs:
            name = x.get("file_name", x.get("image_id"))
            if self.training or self.object_class_source == "record":
                c = x.get("object_category_id", -1)
            else:
                keys = (str(x.get("file_name")), os.path.basename(str(x.get("file_name"))), str(x.get("image_id")))
                c = next((self.stored_object_classes[k] for k in keys if k in self.stored_object_classes), -1)
            if c is None or c < 0:
                raise ValueError(
                    f"input {name!r} has no object class (object_category_id, or an entry of "
                    "PART_DISTILLATION.OBJECT_CLASS_JSON); the per-object classifier needs one"
                )
            classes.append(int(c))
        return torch.as_tensor(classes, dtype=torch.int64, device=self.device)

    def object_masks(self, batched_inputs: List[Dict], images: ImageList) -> torch.Tensor:
        """(B, H', W') bool object masks at the padded input resolution: the union of the target
        parts in training, the input's ``object_mask`` (resized) at inference."""
        out = torch.zeros(
            (len(batched_inputs),) + tuple(images.tensor.shape[-2:]), dtype=torch.bool, device=self.device
        )
        for i, (x, (h, w)) in enumerate(zip(batched_inputs, images.image_sizes)):
            if self.training:
                mask = gt_mask_tensor(x["instances"].to(self.device), h, w).any(0)
            elif "object_mask" in x:
                mask = (
                    F.interpolate(x["object_mask"].to(self.device)[None, None].float(), size=(h, w), mode="nearest")[
                        0, 0
                    ]
                    > 0
                )
            else:
                raise ValueError(
                    f"input {x.get('file_name', x.get('image_id'))!r} has no 'object_mask'; object conditioning "
                    "needs an object-mask source at test time (INPUT.OBJECT_MASK.SOURCE with TEST.POST_AWARE.ENABLED)"
                )
            out[i, : mask.shape[0], : mask.shape[1]] = mask
        return out

    def forward_features(self, batched_inputs: List[Dict]) -> Tuple[ImageList, Dict]:
        """As :meth:`PartMask2Former.forward_features`; with the per-object classifier every
        ``pred_logits`` (final and auxiliary) is (N, Q, P + 1) over the image's object class."""
        images = self.preprocess_image(batched_inputs)
        condition = None
        if self.object_conditioning is not None:
            condition = functools.partial(
                self.object_conditioning, object_masks=self.object_masks(batched_inputs, images)
            )
        outputs = self.sem_seg_head(self.backbone(images.tensor), condition=condition)
        if self.part_classifier is not None:
            object_classes = self.object_classes(batched_inputs)
            for out in [outputs] + list(outputs["aux_outputs"]):
                out["pred_logits"] = self.part_classifier(out["pred_embeddings"], object_classes)
            outputs["object_classes"] = object_classes
        return images, outputs

    def prepare_targets(self, batched_inputs: List[Dict], images: ImageList) -> List[Dict[str, torch.Tensor]]:
        """As :meth:`PartMask2Former.prepare_targets`; with the per-object classifier the labels
        become part modes, after checking that each part belongs to the image's object class."""
        targets = super().prepare_targets(batched_inputs, images)
        if self.part_classifier is None:
            return targets
        num_parts = self.part_classifier.num_part_classes
        for x, t in zip(batched_inputs, targets):
            objects, modes = split_part_labels(t["labels"], num_parts)
            expected = x.get("object_category_id", -1)
            if len(objects) and bool((objects != expected).any()):
                raise ValueError(
                    f"{x.get('file_name', x.get('image_id'))!r}: part categories {t['labels'].tolist()} are not "
                    f"(object {expected}) x {num_parts} modes; stage-3 pseudo labels need category o * "
                    f"{num_parts} + m and DATASETS.CLASS_AGNOSTIC False"
                )
            t["labels"] = modes
        return targets

    def inference(self, batched_inputs: List[Dict], images: ImageList, outputs: Dict) -> List[Dict]:
        """Instances as :meth:`PartMask2Former.inference`, plus ``pred_object_classes`` (N,) with
        the per-object classifier (``pred_classes`` are then part modes)."""
        results = super().inference(batched_inputs, images, outputs)
        if self.part_classifier is not None:
            for r, c in zip(results, outputs["object_classes"]):
                inst = r["instances"]
                inst.pred_object_classes = c.expand(len(inst)).clone()
        return results


def num_object_classes(cfg) -> int:
    """``NUM_OBJECT_CLASSES``, or the number of object classes of the first training dataset."""
    n = cfg.PART_DISTILLATION.NUM_OBJECT_CLASSES
    if n > 0:
        return n
    if not cfg.DATASETS.TRAIN:
        raise ValueError("PART_DISTILLATION.NUM_OBJECT_CLASSES is 0 and DATASETS.TRAIN is empty")
    classes = MetadataCatalog.get(cfg.DATASETS.TRAIN[0]).get("object_classes")
    if not classes:
        raise ValueError(
            f"PART_DISTILLATION.NUM_OBJECT_CLASSES is 0 and dataset '{cfg.DATASETS.TRAIN[0]}' has no "
            "object_classes metadata (load it once or set the key)"
        )
    return len(classes)
