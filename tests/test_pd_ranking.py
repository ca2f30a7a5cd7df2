import numpy as np
import pytest
import torch

from part_d2.modeling.part_ranking import (
    PartCentroids,
    cluster_part_modes,
    default_group_size,
    filter_proposals,
    label_segments,
    mode_names,
    ranking_logits,
    unique_assignment,
)


def test_ranking_logits_l2_and_reference_formula():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    c = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    # -|x - c|^2
    torch.testing.assert_close(ranking_logits(x, c), torch.tensor([[0.0, -5.0], [-2.0, -1.0]]))
    # reference: x.c - |x|^2 - |c|^2
    torch.testing.assert_close(ranking_logits(x, c, faithful=True), torch.tensor([[-1.0, -5.0], [-2.0, -3.0]]))
    # the two formulas rank the second point differently
    assert ranking_logits(x, c).argmax(1).tolist() == [0, 1]
    assert ranking_logits(x, c, faithful=True).argmax(1).tolist() == [0, 0]


def test_unique_assignment_gives_pixels_to_best_score_inside_region():
    masks = np.zeros((2, 1, 4), bool)
    masks[0, 0, :3] = True
    masks[1, 0, 1:] = True
    region = np.array([[True, True, True, False]])
    out = unique_assignment(masks, np.array([0.2, 0.9]), region)
    np.testing.assert_array_equal(out[0, 0], [True, False, False, False])
    np.testing.assert_array_equal(out[1, 0], [False, True, True, False])


def test_filters_keep_all_when_none_passes():
    areas = np.array([10.0, 50.0, 0.0, 30.0])
    scores = np.array([0.9, 0.2, 0.99, 0.25])
    # area > 0.2 * 100 keeps 1 and 3; none of them scores > 0.3 -> both kept
    assert filter_proposals(areas, scores, 100.0, 0.2, 0.3).tolist() == [1, 3]
    # nothing passes the area filter -> all non-empty kept, then score filter keeps 0
    assert filter_proposals(areas, scores, 100.0, 0.9, 0.3).tolist() == [0]


def test_centroids_persisted_and_reloaded(tmp_path):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(20, 4, generator=g) * 0.05 + torch.tensor([5.0, 0, 0, 0])
    b = torch.randn(20, 4, generator=g) * 0.05 + torch.tensor([0, 5.0, 0, 0])
    x = torch.cat([a, b]).numpy()
    classes = np.array([0] * 40)
    cents = cluster_part_modes(x, classes, ["dog", "cat"], k=2, n_init=2, seed=0)
    assert cents.counts[0].tolist() in ([20, 20],) and cents.counts[1].tolist() == [0, 0]
    cents.save(str(tmp_path))
    back = PartCentroids.load(str(tmp_path))
    assert back.class_names == ["dog", "cat"]
    np.testing.assert_array_equal(back.centroids, cents.centroids)
    np.testing.assert_array_equal(back.counts, cents.counts)
    p = back.probabilities(x[:1], 0)
    assert p.shape == (1, 2) and abs(p.sum() - 1) < 1e-6
    mode_a = int(np.argmax(p))
    assert back.probabilities(x[20:21], 0)[0].argmax() == 1 - mode_a


def test_probabilities_are_softmax_of_negative_squared_distance():
    cents = PartCentroids(["o"], np.array([[[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]]), np.array([[3, 2, 0]]),
                          normalize=False)
    p = cents.probabilities(np.array([[1.0, 0.0]]), 0)
    e = np.exp([0.0, -2.0])
    np.testing.assert_allclose(p[0], [e[0] / e.sum(), e[1] / e.sum(), 0.0], rtol=1e-6)
    pf = cents.probabilities(np.array([[1.0, 0.0]]), 0, faithful=True)
    e = np.exp([-1.0, -2.0])
    np.testing.assert_allclose(pf[0], [e[0] / e.sum(), e[1] / e.sum(), 0.0], rtol=1e-6)


def test_label_segments_merges_modes():
    segs = np.eye(3, dtype=bool)[:, None, :]  # 3 disjoint one-pixel segments
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    masks, modes, scores = label_segments(segs, np.array([1.0, 0.5, 0.5]), probs)
    assert modes.tolist() == [0, 1]
    np.testing.assert_array_equal(masks[0, 0], [True, False, True])
    np.testing.assert_allclose(scores, [0.9, 0.4])
    assert mode_names(["dog"], 2) == ["dog:0", "dog:1"]


def test_grouping_classes_does_not_change_their_modes():
    g = torch.Generator().manual_seed(1)
    sizes = [30, 12, 0, 21, 5]
    classes = np.repeat(np.arange(5), sizes)
    x = torch.randn(len(classes), 6, generator=g).numpy()
    names = [f"c{i}" for i in range(5)]
    one = cluster_part_modes(x, classes, names, k=3, n_init=3, seed=2, group_size=1)
    many = cluster_part_modes(x, classes, names, k=3, n_init=3, seed=2, group_size=3)
    np.testing.assert_allclose(one.centroids, many.centroids, atol=1e-5)
    np.testing.assert_array_equal(one.counts, many.counts)
    assert one.counts.sum(axis=1).tolist() == sizes and (one.centroids[2] == 0).all()
    with pytest.raises(ValueError, match="class indices"):
        cluster_part_modes(x, classes + 1, names, k=3)


def test_default_group_size_depends_on_device():
    assert default_group_size("cpu") == 4 and default_group_size("cuda:0") == 128
