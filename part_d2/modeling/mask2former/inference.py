"""Instance inference of Mask2Former from one image's query predictions."""
import torch
from detectron2.structures import Boxes, Instances


def select_topk(class_logits: torch.Tensor, topk: int):
    """Rank all (query, class) pairs by class probability (no-object excluded) and keep ``topk``.

    Args:
        class_logits: (Q, K + 1) float.
    Returns:
        scores (N,), classes (N,) int64 and query indices (N,) int64, N = min(topk, Q * K),
        by decreasing score.
    """
    num_classes = class_logits.shape[-1] - 1
    probs = class_logits.softmax(-1)[:, :-1].flatten()
    scores, flat = probs.topk(min(topk, probs.numel()), sorted=True)
    return scores, flat % num_classes, torch.div(flat, num_classes, rounding_mode="floor")


def boxes_from_masks(masks: torch.Tensor) -> torch.Tensor:
    """Tight XYXY boxes of binary masks (x1, y1 inclusive; x2, y2 one past the last pixel); an
    empty mask gets the zero box.

    Args:
        masks: (N, H, W) bool.
    Returns:
        (N, 4) float32 on the masks' device.
    """
    h, w = masks.shape[-2:]
    as_bytes = masks.view(torch.uint8)  # amax over bytes is several times faster than any() on CPU
    cols = as_bytes.amax(1).bool()
    rows = as_bytes.amax(2).bool()
    xs = torch.arange(w, device=masks.device)
    ys = torch.arange(h, device=masks.device)
    boxes = torch.stack(
        [
            torch.where(cols, xs, w).min(1).values,
            torch.where(rows, ys, h).min(1).values,
            torch.where(cols, xs, -1).max(1).values + 1,
            torch.where(rows, ys, -1).max(1).values + 1,
        ],
        dim=1,
    ).float()
    return torch.where(cols.any(1, keepdim=True), boxes, torch.zeros_like(boxes))


def mask_score(mask_logits: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """Mean foreground probability inside each binary mask ``logit > 0`` (0 for empty masks).

    Args:
        mask_logits: (N, H, W) float; overwritten with the masked probabilities if ``inplace``.
    Returns:
        (N,) float.
    """
    # float 0/1 mask and in-place products: CPU reductions over bool tensors and fresh full-size
    # temporaries cost several times more than the arithmetic
    binary = torch.gt(mask_logits, 0, out=torch.empty_like(mask_logits))
    probs = mask_logits.sigmoid_() if inplace else mask_logits.sigmoid()
    inside = probs.mul_(binary).sum(dim=(-2, -1))
    return inside / (binary.sum(dim=(-2, -1)) + 1e-6)


def instance_inference(class_logits, mask_logits, image_size, topk: int, resize_masks=None,
                       embeddings=None, mask_probs: bool = False) -> Instances:
    """Top-k instances of one image: score = class probability x :func:`mask_score`.

    Args:
        class_logits: (Q, K + 1) float.
        mask_logits: (Q, h, w) float.
        image_size: (H, W) of the returned instances.
        resize_masks: optional function (N, h, w) -> (N, H, W) applied to the selected logits;
            without it the logits must already be (H, W).
        embeddings: optional (Q, C) query features, returned as ``query_embeddings`` (N, C).
        mask_probs: also return ``mask_probs`` (N, H, W) float (sigmoid of the mask logits) and
            ``class_scores`` (N,) (class probability alone), for PartDistillation's part ranking.
    Returns:
        Instances with ``pred_masks`` (N, H, W) bool, ``pred_boxes``, ``scores`` (N,),
        ``pred_classes`` (N,) and ``query_indices`` (N,) (plus ``query_embeddings`` if given).
    """
    scores, classes, queries = select_topk(class_logits, topk)
    masks = mask_logits[queries]
    if resize_masks is not None:
        masks = resize_masks(masks)
    result = Instances(image_size)
    result.pred_masks = masks > 0
    result.pred_boxes = Boxes(boxes_from_masks(result.pred_masks))
    if mask_probs:
        result.mask_probs = masks.sigmoid()
        result.class_scores = scores
    # the selected (and resized) logits are this function's own copy: scoring may overwrite them
    result.scores = scores * mask_score(masks, inplace=True)
    result.pred_classes = classes
    result.query_indices = queries
    if embeddings is not None:
        result.query_embeddings = embeddings[queries]
    return result
