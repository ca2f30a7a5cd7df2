import numpy as np
import pytest

from part_d2.evaluation.semantic_metrics import (
    confusion_from_label_maps,
    fwiou,
    gt_label_map,
    iou_per_class,
    macc,
    miou,
    oracle_assign,
    oracle_label_map,
    pacc,
    pred_label_map,
    semantic_metrics,
)
from part_d2.evaluation.superpixel_baselines import baseline_parts, labels_to_masks


def _masks(*pixel_lists, shape=(3, 4)):
    out = np.zeros((len(pixel_lists),) + shape, dtype=bool)
    for i, pixels in enumerate(pixel_lists):
        for r, c in pixels:
            out[i, r, c] = True
    return out


def _example():
    """GT: class 0 in columns 0-1, class 1 in columns 2-3 of rows 0-1; row 2 is unannotated."""
    gt = _masks([(r, c) for r in range(2) for c in range(2)], [(r, c) for r in range(2) for c in (2, 3)])
    pred = _masks(
        [(0, 0), (0, 1), (1, 1), (0, 2), (1, 2)],  # overlaps 3 / 2 -> class 0
        [(0, 3), (1, 3), (2, 3)],  # -> class 1
        [(0, 2)],  # -> class 1, beats part 0 by score
        [(2, 0), (2, 1)],  # overlaps nothing -> no class
    )
    return gt, np.array([0, 1]), pred, np.array([0.9, 0.5, 0.95, 0.99])


def test_oracle_assign():
    gt, gt_classes, pred, _ = _example()
    assert oracle_assign(pred, gt, gt_classes).tolist() == [0, 1, 1, -1]
    tie = _masks([(0, 1), (0, 2)])
    assert oracle_assign(tie, gt, np.array([7, 3])).tolist() == [7]  # equal overlap: first GT part
    assert oracle_assign(pred[:0], gt, gt_classes).shape == (0,)
    assert oracle_assign(pred, gt[:0], gt_classes[:0]).tolist() == [-1, -1, -1, -1]


def test_label_maps_resolve_overlaps_by_score():
    gt, gt_classes, pred, scores = _example()
    assert oracle_label_map(pred, scores, gt, gt_classes).tolist() == [
        [0, 0, 1, 1],
        [-1, 0, 0, 1],
        [-1, -1, -1, 1],
    ]
    same = pred_label_map(pred[:3], np.array([0, 1, 1]), np.array([0.5, 0.5, 0.5]), 3, 4)
    assert same[0, 2] == 0  # equal scores: the earlier part wins
    assert gt_label_map(gt, gt_classes, 3, 4).tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [-1, -1, -1, -1]]


def test_confusion_and_metrics_of_example():
    gt, gt_classes, pred, scores = _example()
    conf = confusion_from_label_maps(
        gt_label_map(gt, gt_classes, 3, 4), oracle_label_map(pred, scores, gt, gt_classes), 2
    )
    assert conf.tolist() == [[3, 0, 1], [1, 3, 0]]
    assert iou_per_class(conf).tolist() == pytest.approx([3 / 5, 3 / 4])
    assert miou(conf) == pytest.approx(0.675)
    assert fwiou(conf) == pytest.approx(0.675)
    assert macc(conf) == pytest.approx(0.75)
    assert pacc(conf) == pytest.approx(6 / 8)
    doubled = conf + confusion_from_label_maps(gt_label_map(gt, gt_classes, 3, 4), np.full((3, 4), -1), 2)
    assert doubled.tolist() == [[3, 0, 5], [1, 3, 4]]


def test_metrics_hand_computed_with_absent_class():
    conf = np.array([[6, 1, 1, 0], [1, 1, 0, 2], [0, 0, 0, 0]])
    assert iou_per_class(conf).tolist() == pytest.approx([6 / 9, 1 / 5, 0.0])
    assert miou(conf) == pytest.approx((6 / 9 + 1 / 5) / 3)
    assert fwiou(conf) == pytest.approx(8 / 12 * 6 / 9 + 4 / 12 * 1 / 5)
    assert macc(conf) == pytest.approx((6 / 8 + 1 / 4) / 2)
    assert pacc(conf) == pytest.approx(7 / 12)
    res = semantic_metrics(conf, ["a", "b", "c"])
    assert res["mIoU"] == pytest.approx(100 * (6 / 9 + 1 / 5) / 3)
    assert res["IoU-b"] == pytest.approx(20.0)


def test_confusion_rejects_bad_maps():
    with pytest.raises(ValueError, match="shape"):
        confusion_from_label_maps(np.zeros((2, 2)), np.zeros((2, 3)), 1)
    with pytest.raises(ValueError, match="num_classes"):
        confusion_from_label_maps(np.zeros((2, 2)), np.full((2, 2), 3), 2)


def _two_tone_image():
    img = np.zeros((40, 40, 3), np.uint8)
    img[:, :20] = (200, 30, 30)
    img[:, 20:] = (30, 30, 200)
    noise = np.random.default_rng(0).integers(0, 20, img.shape)
    obj = np.zeros((40, 40), bool)
    obj[5:35, 5:35] = True
    return np.clip(img + noise, 0, 255).astype(np.uint8), obj


@pytest.mark.parametrize("name", ["slic", "ncut", "felzenszwalb"])
def test_baselines_partition_the_object(name):
    img, obj = _two_tone_image()
    parts = baseline_parts(name, img, obj)
    assert parts.ndim == 3 and parts.shape[1:] == obj.shape and len(parts) >= 2
    assert not parts[:, ~obj].any()
    assert (parts.sum(axis=0)[obj] == 1).all()


@pytest.mark.parametrize("name", ["ncut", "felzenszwalb"])
def test_graph_baselines_find_the_two_halves(name):
    img, obj = _two_tone_image()
    halves = np.stack([obj & (np.arange(40) < 20)[None], obj & (np.arange(40) >= 20)[None]])
    parts = baseline_parts(name, img, obj)
    scores = np.ones(len(parts))
    conf = confusion_from_label_maps(
        gt_label_map(halves, np.array([0, 1]), 40, 40), oracle_label_map(parts, scores, halves, np.array([0, 1])), 2
    )
    assert miou(conf) == 1.0


def test_labels_to_masks_and_unknown_baseline():
    labels = np.array([[5, 5, 2], [7, 2, 2]])
    obj = np.array([[True, True, True], [False, True, True]])
    masks = labels_to_masks(labels, obj)
    assert masks.astype(int).tolist() == [[[1, 1, 0], [0, 0, 0]], [[0, 0, 1], [0, 1, 1]]]
    with pytest.raises(ValueError, match="unknown baseline"):
        baseline_parts("watershed", np.zeros((2, 2, 3)), np.ones((2, 2), bool))
