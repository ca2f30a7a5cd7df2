"""Federated loss (Zhou et al. 2021, "Probabilistic two-stage detection") for Fast R-CNN box heads.

The classification loss is a sigmoid cross-entropy restricted, for each training batch, to a set
of classes: every foreground ground-truth class of the batch's proposals plus negative classes
sampled without replacement with probability proportional to ``image_count ** power``. Classes
outside the set get no gradient, so rare classes are not suppressed by images that do not
annotate them (large-vocabulary datasets such as LVIS or PartImageNet++).

The pure functions of this module compute the class frequencies of a dataset, sample the classes
of a batch and evaluate the loss; :class:`FederatedFastRCNNOutputLayers` uses them, and
:class:`FederatedCascadeROIHeads` (``MODEL.ROI_HEADS.NAME``) puts it at every cascade stage.
"""
import logging
from typing import Callable, Dict, List, Optional, Sequence, Union

import torch
from detectron2.config import configurable
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.layers import cat
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, CascadeROIHeads
from detectron2.modeling.roi_heads.fast_rcnn import FastRCNNOutputLayers, _log_classification_stats
from torch.nn import functional as F

from part_d2.utils.errors import PartDatasetError
from part_d2.utils.io import read_json

logger = logging.getLogger(__name__)

# keyword arguments of detectron2 main's FastRCNNOutputLayers that this class handles itself
_UPSTREAM_FED_KEYS = ("use_fed_loss", "use_sigmoid_ce", "get_fed_loss_cls_weights", "fed_loss_num_classes")


def image_counts_from_json(json_file: str) -> Optional[torch.Tensor]:
    """Per-class image counts stored in a COCO/LVIS json's categories (``image_count``).

    Returns:
        (K,) long tensor in contiguous order (categories sorted by id), or None when some category
        has no ``image_count`` (a plain COCO or part json).
    """
    data = read_json(json_file)
    categories = data.get("categories") if isinstance(data, dict) else None
    if not categories:
        raise PartDatasetError(f"{json_file}: no 'categories' to read class frequencies from")
    categories = sorted(categories, key=lambda c: c["id"])
    if not all("image_count" in c for c in categories):
        return None
    return torch.tensor([int(c["image_count"]) for c in categories], dtype=torch.long)


def image_counts_from_records(records: Sequence[Dict], num_classes: int) -> torch.Tensor:
    """Number of images containing each class, counted from detectron2 dataset dicts.

    Args:
        records: dataset dicts whose ``annotations`` have contiguous ``category_id`` in [0, K).
        num_classes: K.
    Returns:
        (K,) long tensor.
    """
    counts = torch.zeros(num_classes, dtype=torch.long)
    for record in records:
        classes = {int(a["category_id"]) for a in record.get("annotations", [])}
        bad = [c for c in classes if not 0 <= c < num_classes]
        if bad:
            raise ValueError(f"image {record.get('file_name')}: category ids {bad} outside [0, {num_classes})")
        counts[sorted(classes)] += 1
    return counts


def dataset_image_counts(dataset_name: str) -> torch.Tensor:
    """Per-class image counts of a registered dataset, from the first source that has them.

    Sources, in order: metadata ``class_image_count`` (detectron2's LVIS convention: a list of
    ``{"id", "image_count"}``), the ``image_count`` of the categories of metadata ``json_file``
    (LVIS jsons such as ``pinpp_*_parts``'), or a count over the dataset's records.

    Returns:
        (K,) long tensor in contiguous class order.
    """
    meta = MetadataCatalog.get(dataset_name)
    stored = meta.get("class_image_count", None)
    if stored is not None:
        return torch.tensor([int(c["image_count"]) for c in sorted(stored, key=lambda c: c["id"])])
    json_file = meta.get("json_file", None)
    if json_file:
        counts = image_counts_from_json(json_file)
        if counts is not None:
            return counts
    records = DatasetCatalog.get(dataset_name)
    num_classes = len(MetadataCatalog.get(dataset_name).thing_classes)
    logger.info(f"Federated loss: counting class image frequencies over the {len(records)} images of {dataset_name}")
    return image_counts_from_records(records, num_classes)


def federated_class_weights(dataset_names: Union[str, Sequence[str]], power: float, num_classes: int) -> torch.Tensor:
    """Sampling weights of the federated loss: ``image_count ** power``, summed over datasets.

    Args:
        dataset_names: training datasets (with the same classes).
        power: exponent of the image counts (0.5 in the paper).
        num_classes: K, the model's number of foreground classes, checked against the datasets.
    Returns:
        (K,) float tensor; classes seen in no image get weight 0 and are never sampled.
    """
    names = [dataset_names] if isinstance(dataset_names, str) else list(dataset_names)
    if not names:
        raise ValueError("federated loss: no training dataset to compute class frequencies from")
    total = torch.zeros(num_classes, dtype=torch.long)
    for name in names:
        counts = dataset_image_counts(name)
        if counts.numel() != num_classes:
            raise ValueError(
                f"federated loss: dataset '{name}' has {counts.numel()} classes but "
                f"MODEL.ROI_HEADS.NUM_CLASSES is {num_classes}"
            )
        total += counts
    logger.info(
        f"Federated loss: image counts of {num_classes} classes over {names}: "
        f"{int((total == 0).sum())} classes unseen, max {int(total.max())}"
    )
    return total.float() ** power


def sample_federated_classes(
    gt_classes: torch.Tensor,
    num_classes: int,
    num_fed_classes: int,
    class_weights: torch.Tensor,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """The classes of one batch's federated loss: its ground-truth classes plus sampled negatives.

    Args:
        gt_classes: (R,) long, the proposals' classes in [0, K]; K (background) is ignored.
        num_classes: K, the number of foreground classes.
        num_fed_classes: size of the returned set when the batch has fewer ground-truth classes.
        class_weights: (K,) float >= 0, unnormalised probabilities of sampling each class.
        generator: random generator of the sampling (None: torch's global one).
    Returns:
        (M,) long, sorted, distinct: every foreground class of ``gt_classes`` and negatives drawn
        without replacement with probability proportional to ``class_weights``, up to
        ``M = num_fed_classes`` (fewer only when fewer classes have a positive weight; more when
        the batch alone has more ground-truth classes).
    """
    if class_weights.shape != (num_classes,):
        raise ValueError(f"class_weights has shape {tuple(class_weights.shape)}, expected ({num_classes},)")
    gt = torch.unique(gt_classes[(gt_classes >= 0) & (gt_classes < num_classes)])
    probs = class_weights.detach().float().clone()
    probs[gt] = 0
    num_negatives = min(num_fed_classes - len(gt), int((probs > 0).sum()))
    if num_negatives <= 0:
        return gt
    negatives = torch.multinomial(probs, num_negatives, replacement=False, generator=generator)
    return torch.sort(torch.cat([gt, negatives.to(gt.device)])).values


def sigmoid_cross_entropy(
    logits: torch.Tensor, gt_classes: torch.Tensor, classes: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Per-class binary cross-entropy of box classification logits, averaged over proposals.

    Args:
        logits: (R, K + 1) float, foreground classes then background; the background logit is
            not used (a background proposal has target 0 for every foreground class).
        gt_classes: (R,) long in [0, K].
        classes: (M,) long foreground classes to include (the federated set); None: all K.
    Returns:
        scalar: sum over the R proposals and the included classes of the BCE, divided by R
        (0, connected to ``logits``, when R = 0).
    """
    num_proposals, num_classes = logits.shape[0], logits.shape[1] - 1
    if num_proposals == 0:
        return logits.sum() * 0.0
    targets = F.one_hot(gt_classes, num_classes + 1)[:, :num_classes].to(logits.dtype)
    fg_logits = logits[:, :num_classes]
    if classes is not None:
        fg_logits, targets = fg_logits[:, classes], targets[:, classes]
    return F.binary_cross_entropy_with_logits(fg_logits, targets, reduction="sum") / num_proposals


class FederatedFastRCNNOutputLayers(FastRCNNOutputLayers):
    """Fast R-CNN box predictor with a sigmoid cross-entropy and optionally the federated loss.

    Same layers (and state dict) as :class:`FastRCNNOutputLayers`, on detectron2 v0.6 and main.
    With ``use_sigmoid_ce`` the classification loss is :func:`sigmoid_cross_entropy` and the
    class probabilities are per-class sigmoids; with ``use_fed_loss`` as well, the loss is
    restricted to :func:`sample_federated_classes`. The class weights are computed on the first
    training step, so that a model for inference builds without its training data.
    """

    @configurable
    def __init__(
        self,
        input_shape,
        *,
        use_sigmoid_ce: bool = False,
        use_fed_loss: bool = False,
        fed_loss_num_classes: int = 50,
        fed_loss_cls_weights: Union[None, torch.Tensor, Callable[[], torch.Tensor]] = None,
        **kwargs,
    ):
        """
        Args:
            input_shape, kwargs: as :class:`FastRCNNOutputLayers` (v0.6 arguments).
            use_sigmoid_ce: sigmoid cross-entropy instead of softmax cross-entropy.
            use_fed_loss: restrict the sigmoid cross-entropy to the federated classes (needs
                ``use_sigmoid_ce``).
            fed_loss_num_classes: number of classes of each batch's federated set.
            fed_loss_cls_weights: (K,) sampling weights, or a function returning them.
        """
        super().__init__(input_shape, **kwargs)
        if use_fed_loss and not use_sigmoid_ce:
            raise ValueError("MODEL.ROI_BOX_HEAD.USE_FED_LOSS needs MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE")
        if use_fed_loss and fed_loss_cls_weights is None:
            raise ValueError("the federated loss needs fed_loss_cls_weights")
        self.use_sigmoid_ce = use_sigmoid_ce
        self.use_fed_loss = use_fed_loss
        self.fed_loss_num_classes = fed_loss_num_classes
        self._fed_loss_cls_weights_fn = fed_loss_cls_weights if callable(fed_loss_cls_weights) else None
        initial = None if callable(fed_loss_cls_weights) else fed_loss_cls_weights
        self.register_buffer("fed_loss_cls_weights", initial, persistent=False)

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        for key in _UPSTREAM_FED_KEYS:
            ret.pop(key, None)
        box_head = cfg.MODEL.ROI_BOX_HEAD
        train_sets = tuple(cfg.DATASETS.TRAIN)
        num_classes = cfg.MODEL.ROI_HEADS.NUM_CLASSES
        power = box_head.FED_LOSS_FREQ_WEIGHT_POWER
        ret.update(
            use_sigmoid_ce=box_head.USE_SIGMOID_CE,
            use_fed_loss=box_head.USE_FED_LOSS,
            fed_loss_num_classes=box_head.FED_LOSS_NUM_CLASSES,
            fed_loss_cls_weights=lambda: federated_class_weights(train_sets, power, num_classes),
        )
        return ret

    def federated_classes(self, gt_classes: torch.Tensor) -> torch.Tensor:
        """(M,) long: the federated classes of a batch whose proposals have ``gt_classes`` (R,)."""
        if self.fed_loss_cls_weights is None:
            self.fed_loss_cls_weights = self._fed_loss_cls_weights_fn().to(gt_classes.device)
        return sample_federated_classes(
            gt_classes, self.num_classes, self.fed_loss_num_classes, self.fed_loss_cls_weights
        )

    def losses(self, predictions, proposals: List) -> Dict[str, torch.Tensor]:
        """
        Args:
            predictions: ``(scores (R, K + 1), proposal_deltas (R, 4 or 4K))`` from :meth:`forward`.
            proposals: R proposals over the batch, with ``proposal_boxes``, ``gt_classes`` and
                (for foreground ones) ``gt_boxes``.
        Returns:
            ``loss_cls`` and ``loss_box_reg``, weighted by ``loss_weight``.
        """
        if not self.use_sigmoid_ce:
            return super().losses(predictions, proposals)
        scores, proposal_deltas = predictions
        if proposals:
            gt_classes = cat([p.gt_classes for p in proposals], dim=0)
            proposal_boxes = cat([p.proposal_boxes.tensor for p in proposals], dim=0)
            gt_boxes = cat([(p.gt_boxes if p.has("gt_boxes") else p.proposal_boxes).tensor for p in proposals], dim=0)
        else:
            gt_classes = torch.empty(0, dtype=torch.long, device=scores.device)
            proposal_boxes = gt_boxes = torch.empty((0, 4), device=proposal_deltas.device)
        _log_classification_stats(scores, gt_classes)
        classes = self.federated_classes(gt_classes) if self.use_fed_loss else None
        losses = {
            "loss_cls": sigmoid_cross_entropy(scores, gt_classes, classes),
            "loss_box_reg": self.box_reg_loss(proposal_boxes, gt_boxes, proposal_deltas, gt_classes),
        }
        return {k: v * self.loss_weight.get(k, 1.0) for k, v in losses.items()}

    def predict_probs(self, predictions, proposals: List) -> List[torch.Tensor]:
        """Per-image (Ri, K + 1) class probabilities: sigmoids with ``use_sigmoid_ce``, else softmax."""
        if not self.use_sigmoid_ce:
            return super().predict_probs(predictions, proposals)
        scores, _ = predictions
        return scores.sigmoid().split([len(p) for p in proposals], dim=0)


@ROI_HEADS_REGISTRY.register()
class FederatedCascadeROIHeads(CascadeROIHeads):
    """:class:`CascadeROIHeads` with a :class:`FederatedFastRCNNOutputLayers` at every stage.

    Keys: ``MODEL.ROI_BOX_HEAD.{USE_SIGMOID_CE, USE_FED_LOSS, FED_LOSS_NUM_CLASSES,
    FED_LOSS_FREQ_WEIGHT_POWER}``; class frequencies come from ``DATASETS.TRAIN``. Inference
    averages the stages' sigmoid (or softmax) probabilities as detectron2's cascade does.
    """

    @classmethod
    def _init_box_head(cls, cfg, input_shape):
        # detectron2 main's own predictors would read the federated keys themselves (and need
        # ``class_image_count`` metadata): build the stages with them off, then swap the predictors.
        plain = cfg.clone()
        plain.defrost()
        plain.MODEL.ROI_BOX_HEAD.USE_FED_LOSS = False
        plain.MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE = False
        ret = super()._init_box_head(plain, input_shape)
        ret["box_predictors"] = [
            FederatedFastRCNNOutputLayers(cfg, head.output_shape, box2box_transform=predictor.box2box_transform)
            for head, predictor in zip(ret["box_heads"], ret["box_predictors"])
        ]
        return ret
