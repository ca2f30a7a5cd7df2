"""Semantic part segmentation metrics (detectron2's SemSegEvaluator) for instance part models."""
import torch
from detectron2.data import MetadataCatalog
from detectron2.evaluation import SemSegEvaluator


def instances_to_semantic(instances, num_classes: int, background: int) -> torch.Tensor:
    """Paint instance predictions into per-class score maps.

    Args:
        instances: Instances with ``pred_masks`` (N, H, W), ``scores`` (N,), ``pred_classes`` (N,).
        num_classes: channels of the output (part classes + background).
        background: channel of pixels no prediction covers.
    Returns:
        (num_classes, H, W) float scores: per class the highest score of its masks at each pixel,
        and a tiny constant in the background channel, so ``argmax`` gives the semantic map.
    """
    h, w = instances.image_size
    out = torch.zeros(num_classes, h, w)
    out[background] = 1e-6
    masks = instances.pred_masks.to("cpu").bool()
    for m, s, c in zip(masks, instances.scores.to("cpu"), instances.pred_classes.to("cpu")):
        out[int(c)][m] = torch.maximum(out[int(c)][m], s)
    return out


class InstanceSemSegEvaluator(SemSegEvaluator):
    """SemSegEvaluator that also accepts instance outputs (painted by :func:`instances_to_semantic`).

    The dataset's metadata must give ``stuff_classes`` (parts + background) and
    ``background_class`` (the background index; default: the last class).
    """

    def process(self, inputs, outputs):
        converted = []
        for out in outputs:
            if "sem_seg" not in out and "instances" in out:
                meta = MetadataCatalog.get(self._dataset_name)
                background = getattr(meta, "background_class", self._num_classes - 1)
                out = {"sem_seg": instances_to_semantic(out["instances"], self._num_classes, background)}
            converted.append(out)
        super().process(inputs, converted)
