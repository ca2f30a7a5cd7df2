"""``PartRCNN``: detectron2's GeneralizedRCNN (the Cascade Mask R-CNN of part_d2's configs) with OPS
post-aware filtering in its post-processing (``TEST.POST_AWARE``)."""
from typing import Dict, List, Optional

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN

from part_d2.modeling.object_aware import PostAwareFilter


@META_ARCH_REGISTRY.register()
class PartRCNN(GeneralizedRCNN):
    """GeneralizedRCNN whose inference ends with :class:`PostAwareFilter` when it is configured;
    modules, ``state_dict`` and training are GeneralizedRCNN's."""

    @configurable
    def __init__(self, *, post_aware: Optional[PostAwareFilter] = None, **kwargs):
        """
        Args:
            post_aware: crops the predicted parts to the input's object mask (None: off).
            kwargs: GeneralizedRCNN's arguments.
        """
        super().__init__(**kwargs)
        self.post_aware = post_aware

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        ret["post_aware"] = PostAwareFilter.from_config(cfg)
        return ret

    def inference(self, batched_inputs: List[Dict], detected_instances=None, do_postprocess: bool = True):
        results = super().inference(batched_inputs, detected_instances, do_postprocess)
        if self.post_aware is None or not do_postprocess:
            return results
        return self.post_aware(batched_inputs, results)
