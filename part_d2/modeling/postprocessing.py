"""OPS post-aware filtering: crop part predictions to their object mask.

The OPS paper's "post-aware" variant (not in its released code) uses the object mask after
inference to crop the predicted parts: part pixels outside the object are removed. That is the
default here; a part with no pixel left is dropped (an empty mask predicts nothing). Two further
rules are part_d2 options, not the paper's: drop parts keeping less than a fraction of their area
(``min_area_fraction``) and rescale the scores by the kept fraction (``rescore``). It works on
the predictions of any model (``pred_masks`` bool or float probabilities).
"""

import torch
from detectron2.structures import BitMasks, Instances


def filter_parts_by_object(
    instances: Instances,
    object_mask: torch.Tensor,
    min_area_fraction: float = 0.0,
    rescore: bool = False,
    mask_threshold: float = 0.5,
) -> Instances:
    """Remove part pixels outside the object mask (crop); optionally drop and rescore the parts.

    A part's area is its pixel count (for float masks: pixels with probability
    ``>= mask_threshold``). With ``kept`` its area inside the object and ``orig`` its original area,
    a part is dropped when ``kept == 0`` or ``kept / orig < min_area_fraction``; a kept part's
    score becomes ``score * kept / orig`` when ``rescore``. ``pred_boxes`` are recomputed from the
    cropped (binarised) masks.

    Args:
        instances: predictions of one image with ``pred_masks`` (N, H, W) bool or float and
            ``scores`` (N,); other fields are kept and indexed along.
        object_mask: (H, W) bool object mask, or (M, H, W) bool masks of several objects whose
            union is used.
        min_area_fraction: smallest kept fraction of a part's area (0: crop only, the paper's
            operation; only parts with nothing left are dropped).
        rescore: multiply the scores by the kept fraction (off: the paper's operation).
        mask_threshold: binarisation threshold of float masks.
    Returns:
        New :class:`Instances` with the surviving parts, their cropped masks (same dtype as the
        input: float masks are zeroed outside the object), scores and boxes.
    """
    masks = instances.pred_masks
    if object_mask.dim() == 3:
        object_mask = object_mask.any(dim=0)
    if object_mask.shape != masks.shape[-2:]:
        raise ValueError(
            f"object mask of shape {tuple(object_mask.shape)} does not match the predicted masks "
            f"of shape {tuple(masks.shape[-2:])}"
        )
    object_mask = object_mask.to(device=masks.device, dtype=torch.bool)
    binary = masks if masks.dtype == torch.bool else masks >= mask_threshold
    orig_area = binary.flatten(1).sum(dim=1)
    cropped_binary = binary & object_mask
    kept_area = cropped_binary.flatten(1).sum(dim=1)
    fraction = kept_area.double() / orig_area.clamp(min=1).double()
    keep = (kept_area > 0) & (fraction >= min_area_fraction)

    out = instances[keep]
    cropped = masks & object_mask if masks.dtype == torch.bool else masks * object_mask
    out.pred_masks = cropped[keep]
    out.pred_boxes = BitMasks(cropped_binary[keep]).get_bounding_boxes().to(masks.device)
    if rescore:
        out.scores = instances.scores[keep] * fraction[keep].to(instances.scores.dtype)
    return out
