"""Post-aware filtering attached to any detectron2 model as a forward hook.

At inference, each output's part predictions are cropped to the image's object mask (the
``"object_mask"`` the dataset mapper puts in the input at the original resolution) by
:func:`part_d2.modeling.postprocessing.filter_parts_by_object`. The hook leaves training and the
model's ``state_dict`` untouched, so it works with any architecture.
"""
import torch.nn.functional as F

from part_d2.modeling.postprocessing import filter_parts_by_object


def _object_mask_like(mask, height, width):
    """(H0, W0) bool mask resized (nearest) to (height, width) if needed."""
    if tuple(mask.shape) == (height, width):
        return mask
    return F.interpolate(mask[None, None].float(), size=(height, width), mode="nearest")[0, 0] > 0.5


def attach_post_aware_filter(model, min_area_fraction: float, rescore: bool):
    """Register the post-aware forward hook on ``model``; returns the hook handle."""

    def hook(module, args, outputs):
        if module.training or not args:
            return outputs
        for inp, out in zip(args[0], outputs):
            if "instances" not in out:
                continue
            if "object_mask" not in inp:
                raise KeyError(
                    "TEST.POST_AWARE.ENABLED needs an 'object_mask' in each input: "
                    "set INPUT.OBJECT_MASK.SOURCE so the mapper provides one"
                )
            inst = out["instances"]
            mask = _object_mask_like(inp["object_mask"], *inst.image_size).to(inst.pred_masks.device)
            out["instances"] = filter_parts_by_object(inst, mask, min_area_fraction, rescore)
        return outputs

    return model.register_forward_hook(hook)
