"""OPS post-aware filtering as a step of a meta-architecture's post-processing.

At inference, each output's part predictions are cropped to the image's object mask (the
``"object_mask"`` the dataset mapper puts in the input at the original resolution) by
:func:`part_d2.modeling.postprocessing.filter_parts_by_object`. :class:`PostAwareFilter` is built
from ``TEST.POST_AWARE`` and called at the end of inference by the part_d2 meta-architectures
(:class:`part_d2.modeling.mask2former.PartMask2Former` and its subclasses,
:class:`part_d2.modeling.rcnn.PartRCNN`); it leaves training and the ``state_dict`` untouched.
"""
from typing import Dict, List, Optional

import torch.nn.functional as F

from part_d2.modeling.postprocessing import filter_parts_by_object


def _object_mask_like(mask, height, width):
    """(H0, W0) bool mask resized (nearest) to (height, width) if needed."""
    if tuple(mask.shape) == (height, width):
        return mask
    return F.interpolate(mask[None, None].float(), size=(height, width), mode="nearest")[0, 0] > 0.5


class PostAwareFilter:
    """Crop each output's ``instances`` to its input's ``object_mask`` (see the module docstring)."""

    def __init__(self, min_area_fraction: float, rescore: bool):
        self.min_area_fraction = min_area_fraction
        self.rescore = rescore

    @classmethod
    def from_config(cls, cfg) -> Optional["PostAwareFilter"]:
        """The filter of ``TEST.POST_AWARE``, or None when it is not enabled."""
        c = cfg.TEST.POST_AWARE
        return cls(c.MIN_AREA_FRACTION, c.RESCORE) if c.ENABLED else None

    def __call__(self, batched_inputs: List[Dict], outputs: List[Dict]) -> List[Dict]:
        for inp, out in zip(batched_inputs, outputs):
            if "instances" not in out:
                continue
            if "object_mask" not in inp:
                raise KeyError(
                    "TEST.POST_AWARE.ENABLED needs an 'object_mask' in each input: "
                    "set INPUT.OBJECT_MASK.SOURCE so the mapper provides one"
                )
            inst = out["instances"]
            mask = _object_mask_like(inp["object_mask"], *inst.image_size).to(inst.pred_masks.device)
            out["instances"] = filter_parts_by_object(inst, mask, self.min_area_fraction, self.rescore)
        return outputs
