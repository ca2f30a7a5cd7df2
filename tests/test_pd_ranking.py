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
    object_proposals,
    ranking_logits,
    unique_assignment,
)


def test_ranking_logits_l2_reference_l2_and_dot():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    c = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    # -|x - c|^2
    torch.testing.assert_close(ranking_logits(x, c), torch.tensor([[0.0, -5.0], [-2.0, -1.0]]))
    # reference "l2": x.c - |x|^2 - |c|^2
    torch.testing.assert_close(ranking_logits(x, c, "reference_l2"), torch.tensor([[-1.0, -5.0], [-2.0, -3.0]]))
    # reference "dot": x.c
    torch.testing.assert_close(ranking_logits(x, c, "dot"), torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
    # the paper's and the reference's "l2" rank the second point differently
    assert ranking_logits(x, c).argmax(1).tolist() == [0, 1]
    assert ranking_logits(x, c, "reference_l2").argmax(1).tolist() == [0, 0]
    with pytest.raises(ValueError, match="METRIC"):
        ranking_logits(x, c, "cosine")


def test_pixels_go_to_the_largest_mask_probability_times_class_probability():
    """Hand-computed: pixel 0: A 0.95 x 0.5 = 0.475 > B 0.55 x 0.6 = 0.33 -> A (the higher-scoring
    binary mask B would take it under a binary rule); pixel 1: A 0.6 x 0.5 = 0.30 < B 0.9 x 0.6 =
    0.54 -> B; pixel 2: A 0.7 x 0.5 = 0.35 > B 0.3 x 0.6 = 0.18 -> A; pixel 3: no probability above
    0.5, still A 0.4 x 0.5 = 0.20 < B 0.45 x 0.6 = 0.27 -> B; pixel 4: outside the object -> nobody."""
    probs = np.array([[[0.95, 0.6, 0.7, 0.4, 0.9]], [[0.55, 0.9, 0.3, 0.45, 0.9]]])
    region = np.array([[True, True, True, True, False]])
    out = unique_assignment(probs, np.array([0.5, 0.6]), region)
    np.testing.assert_array_equal(out[0, 0], [True, False, True, False, False])
    np.testing.assert_array_equal(out[1, 0], [False, True, False, True, False])


def test_tau_s_filters_the_class_probability():
    """Class probabilities 0.4 and 0.2 with tau_s 0.3: the first is kept even though class x mean
    mask probability (0.4 x 0.6 = 0.24) is below tau_s."""
    from detectron2.structures import Instances

    inst = Instances((1, 4))
    inst.mask_probs = torch.tensor([[[0.6, 0.6, 0.1, 0.1]], [[0.1, 0.1, 0.6, 0.6]]])
    inst.class_scores = torch.tensor([0.4, 0.2])
    inst.query_embeddings = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    segs, scores, idx, feats = object_proposals(inst, np.ones((1, 4), bool), 0.05, 0.3)
    assert idx.tolist() == [0] and scores.tolist() == pytest.approx([0.4])
    np.testing.assert_array_equal(segs[0, 0], [True, True, False, False])
    np.testing.assert_array_equal(feats, [[1.0, 0.0]])
    inst.remove("mask_probs")
    with pytest.raises(ValueError, match="mask_probs"):
        object_proposals(inst, np.ones((1, 4), bool), 0.05, 0.3)


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
    pf = cents.probabilities(np.array([[1.0, 0.0]]), 0, "reference_l2")
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
