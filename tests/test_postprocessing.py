import pytest
import torch
from detectron2.structures import Instances

from part_d2.modeling.postprocessing import filter_parts_by_object


def _parts(masks, scores):
    inst = Instances((6, 6))
    inst.pred_masks = masks
    inst.scores = torch.tensor(scores)
    inst.pred_classes = torch.arange(len(scores))
    return inst


def _bool_parts():
    masks = torch.zeros(4, 6, 6, dtype=torch.bool)
    masks[0, 0:2, 0:2] = True
    masks[1, 0:4, 3] = True
    masks[2, 1, 0:4] = True
    masks[3, 5, :] = True
    return _parts(masks, [0.9, 0.8, 0.7, 0.6])


def _object():
    """Row 0 columns 0-3 and row 1 columns 0-1."""
    obj = torch.zeros(6, 6, dtype=torch.bool)
    obj[0, 0:4] = True
    obj[1, 0:2] = True
    return obj


def test_optional_drop_and_rescore_and_boxes():
    # kept fractions: 4/4, 1/4, 2/4 (at the threshold: kept), 0/6
    out = filter_parts_by_object(_bool_parts(), _object(), min_area_fraction=0.5, rescore=True)
    assert out.pred_classes.tolist() == [0, 2]
    assert out.pred_masks.sum(dim=(1, 2)).tolist() == [4, 2]
    assert out.scores.tolist() == pytest.approx([0.9, 0.7 * 0.5])
    assert out.pred_boxes.tensor.tolist() == [[0, 0, 2, 2], [0, 1, 2, 2]]
    out = filter_parts_by_object(_bool_parts(), _object(), min_area_fraction=0.2, rescore=True)
    assert out.pred_classes.tolist() == [0, 1, 2]
    assert out.scores.tolist() == pytest.approx([0.9, 0.8 * 0.25, 0.7 * 0.5])
    assert out.pred_boxes.tensor.tolist()[1] == [3, 0, 4, 1]


def test_threshold_is_inclusive_and_rescore_off():
    obj = torch.zeros(6, 6, dtype=torch.bool)
    obj[0:2, :] = True
    out = filter_parts_by_object(_bool_parts(), obj, min_area_fraction=0.5, rescore=False)
    # fractions: 4/4, 2/4, 4/4, 0/6
    assert out.pred_classes.tolist() == [0, 1, 2]
    assert out.scores.tolist() == pytest.approx([0.9, 0.8, 0.7])
    out = filter_parts_by_object(_bool_parts(), obj, min_area_fraction=0.51)
    assert out.pred_classes.tolist() == [0, 2]


def test_float_masks_are_zeroed_outside_and_binarised_for_areas():
    masks = torch.zeros(2, 6, 6)
    masks[0, 0:2, 0:2] = 0.9
    masks[0, 0:2, 2:4] = 0.3  # below the threshold: not part of the area
    masks[1, 4:6, 4:6] = 0.8
    obj = torch.zeros(6, 6, dtype=torch.bool)
    obj[0:2, 0:3] = True
    out = filter_parts_by_object(_parts(masks, [0.5, 0.4]), obj)
    assert len(out) == 1 and out.pred_masks.dtype == masks.dtype
    assert torch.equal(out.pred_masks[0], masks[0] * obj)
    assert out.scores.tolist() == pytest.approx([0.5])
    assert out.pred_boxes.tensor.tolist() == [[0, 0, 2, 2]]


def test_union_of_several_objects():
    masks = torch.zeros(2, 6, 6, dtype=torch.bool)
    masks[0, 0, 0:2] = True
    masks[1, 5, 4:6] = True
    objects = torch.zeros(2, 6, 6, dtype=torch.bool)
    objects[0, 0, :] = True
    objects[1, 5, :] = True
    out = filter_parts_by_object(_parts(masks, [0.5, 0.4]), objects)
    assert out.pred_classes.tolist() == [0, 1]
    out = filter_parts_by_object(_parts(masks, [0.5, 0.4]), objects[0])
    assert out.pred_classes.tolist() == [0]


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="does not match"):
        filter_parts_by_object(_bool_parts(), torch.ones(5, 6, dtype=torch.bool))


def test_default_is_crop_only():
    out = filter_parts_by_object(_bool_parts(), _object())
    # kept fractions 4/4, 1/4, 2/4, 0/6: only the part with nothing left is dropped, scores unchanged
    assert out.pred_classes.tolist() == [0, 1, 2]
    assert out.scores.tolist() == pytest.approx([0.9, 0.8, 0.7])
    assert out.pred_masks.sum(dim=(1, 2)).tolist() == [4, 1, 2]


def test_crop_only_leaves_oracle_metrics_unchanged_with_perfect_masks():
    """With the perfect object mask (union of the GT parts), cropping cannot change any evaluated
    pixel's prediction nor a part's oracle label: the confusion matrix is identical."""
    import numpy as np

    from part_d2.evaluation.oracle_semantic_evaluator import oracle_confusion
    from part_d2.evaluation.semantic_metrics import semantic_metrics

    g = torch.Generator().manual_seed(0)
    gt = torch.zeros(3, 16, 16, dtype=torch.bool)
    gt[0, 2:8, 2:10], gt[1, 8:14, 2:10], gt[2, 4:12, 10:14] = True, True, True
    gt_classes = np.array([0, 1, 2])
    perfect = gt.any(dim=0)
    for trial in range(5):
        masks = torch.rand(12, 16, 16, generator=g) > 0.6  # random parts, most reaching outside
        boxes = torch.randint(0, 16, (12, 4), generator=g)
        for i, (y0, y1, x0, x1) in enumerate(boxes.tolist()):
            masks[i, min(y0, y1):max(y0, y1) + 1, min(x0, x1):max(x0, x1) + 1] = True
        inst = _parts(masks, torch.rand(12, generator=g).tolist())
        inst._image_size = (16, 16)
        before = oracle_confusion(masks.numpy(), inst.scores.numpy(), gt.numpy(), gt_classes, 3)
        out = filter_parts_by_object(inst, perfect)
        after = oracle_confusion(out.pred_masks.numpy(), out.scores.numpy(), gt.numpy(), gt_classes, 3)
        assert np.array_equal(before, after)
        classes = ["a", "b", "c"]
        assert semantic_metrics(after, classes)["mIoU"] == semantic_metrics(before, classes)["mIoU"]
    # the optional drop rule does change them: it is not the paper's operation
    dropped = filter_parts_by_object(inst, perfect, min_area_fraction=0.9)
    assert len(dropped) < len(out)
