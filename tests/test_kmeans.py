import pytest
import torch
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs

from part_d2.clustering import batched_kmeans, kmeans
from part_d2.clustering.kmeans import _lloyd, _mean_variance, _reseed_empty


@pytest.mark.parametrize("init", ["k-means++", "random"])
def test_inertia_within_one_percent_of_sklearn(init):
    x, _ = make_blobs(n_samples=300, centers=5, n_features=3, cluster_std=2.0, random_state=0)
    ref = KMeans(n_clusters=5, n_init=10, random_state=0).fit(x).inertia_
    _, _, inertia = kmeans(torch.tensor(x, dtype=torch.float64), 5, n_init=10, max_iter=100, seed=0, init=init)
    assert float(inertia) <= 1.01 * ref


def test_hand_computed_two_clusters():
    x = torch.tensor([[0.0], [1.0], [10.0], [11.0]])
    labels, centers, inertia = kmeans(x, 2, n_init=3, seed=0)
    assert labels[0] == labels[1] and labels[2] == labels[3] and labels[0] != labels[2]
    assert sorted(centers[:, 0].tolist()) == [0.5, 10.5]
    assert float(inertia) == pytest.approx(1.0)


def test_labels_match_returned_centers_and_inertia():
    x = torch.randn(1, 200, 4, generator=torch.Generator().manual_seed(0))
    labels, centers, inertia = batched_kmeans(x, 6, seed=3)
    d = torch.cdist(x[0].double(), centers[0].double()) ** 2
    assert torch.equal(labels[0], d.argmin(dim=1))
    assert float(inertia[0]) == pytest.approx(float(d.min(dim=1).values.sum()), rel=1e-5)


def test_per_element_valid_counts():
    x = torch.randn(3, 20, 2, generator=torch.Generator().manual_seed(1))
    valid = torch.ones(3, 20, dtype=torch.bool)
    valid[1, 2:] = False
    valid[2] = False
    labels, centers, inertia = batched_kmeans(x, 4, valid=valid, seed=0)
    assert set(labels[0].tolist()) == {0, 1, 2, 3}
    assert sorted(labels[1, :2].tolist()) == [0, 1]  # k' = min(4, 2)
    assert (labels[1, 2:] == -1).all() and (labels[2] == -1).all()
    assert torch.equal(centers[1, 2:], torch.zeros(2, 2)) and torch.equal(centers[2], torch.zeros(4, 2))
    assert float(inertia[1]) == 0.0 and float(inertia[2]) == 0.0
    assert torch.allclose(centers[1, :2].sort(dim=0).values, x[1, :2].sort(dim=0).values)


def test_seeded_runs_are_deterministic_and_chunking_is_exact():
    x = torch.randn(2, 150, 5, generator=torch.Generator().manual_seed(2))
    a = batched_kmeans(x, 5, n_init=2, seed=7)
    b = batched_kmeans(x, 5, n_init=2, seed=7, chunk_size=16)
    assert torch.equal(a[0], b[0])
    assert torch.allclose(a[1], b[1], atol=1e-6)
    assert torch.allclose(a[2], b[2], rtol=1e-6)


def test_best_restart_is_kept_per_element():
    x = torch.randn(2, 100, 3, generator=torch.Generator().manual_seed(4))
    single = [
        batched_kmeans(x, 8, n_init=1, init="random", generator=torch.Generator().manual_seed(s))[2] for s in range(3)
    ]
    many = batched_kmeans(x, 8, n_init=12, init="random", seed=0)[2]
    assert (many <= torch.stack(single).min(dim=0).values + 1e-9).all()


def test_empty_cluster_reseeded_to_farthest_point():
    x = torch.tensor([[[0.0], [1.0], [5.0], [9.0]]])
    centers = torch.tensor([[[0.5], [100.0], [7.0]]], dtype=torch.float64)
    counts = torch.tensor([[2, 0, 2]])
    active = torch.ones(1, 3, dtype=torch.bool)
    dmin = torch.tensor([[0.25, 0.25, 4.0, 4.5]], dtype=torch.float64)
    valid = torch.ones(1, 4, dtype=torch.bool)
    new = _reseed_empty(x, valid, centers, counts, active, dmin)
    assert new[0, :, 0].tolist() == [0.5, 9.0, 7.0]


def test_cosine_metric_groups_by_direction():
    x = torch.tensor([[1.0, 0.0], [5.0, 0.1], [0.0, 1.0], [0.1, 7.0]])
    labels, centers, _ = kmeans(x, 2, metric="cosine", seed=0)
    assert labels[0] == labels[1] and labels[2] == labels[3] and labels[0] != labels[2]
    assert torch.allclose(centers.norm(dim=1), torch.ones(2))


def test_more_clusters_than_points_and_bad_arguments():
    labels, centers, inertia = kmeans(torch.tensor([[0.0, 0.0], [1.0, 1.0]]), 5, seed=0)
    assert sorted(labels.tolist()) == [0, 1] and centers.shape == (2, 2) and float(inertia) == 0.0
    with pytest.raises(ValueError, match="init"):
        kmeans(torch.zeros(3, 2), 2, init="bogus")
    with pytest.raises(ValueError, match="metric"):
        kmeans(torch.zeros(3, 2), 2, metric="l1")
    with pytest.raises(ValueError, match="valid"):
        batched_kmeans(torch.zeros(1, 3, 2), 2, valid=torch.ones(1, 4, dtype=torch.bool))



def test_runs_stop_independently_at_hand_computed_fixed_points():
    x = torch.tensor([[[0.0], [1.0], [10.0], [11.0]]])
    x_sq = (x * x).sum(-1)
    valid = torch.ones(1, 4, dtype=torch.bool)
    active = torch.ones(1, 2, dtype=torch.bool)
    # run 0 starts at its fixed point; run 1 moves [0, 1] -> [0, 22/3] -> [0.5, 10.5] and then stops
    init = torch.tensor([[[[0.5], [10.5]], [[0.0], [1.0]]]])
    centers, inertia = _lloyd(x, x_sq, valid, active, init.clone(), torch.zeros(1), 100, "l2", 2)
    assert centers[0, :, :, 0].tolist() == [[0.5, 10.5], [0.5, 10.5]]
    assert inertia[0].tolist() == [1.0, 1.0]
    # one iteration only: run 1's inertia is that of its first assignment to [0, 1]: 0 + 0 + 81 + 100
    centers, inertia = _lloyd(x, x_sq, valid, active, init.clone(), torch.zeros(1), 1, "l2", 2)
    assert centers[0, 1, :, 0].tolist() == pytest.approx([0.0, 22 / 3])
    assert inertia[0].tolist() == [1.0, 181.0]


def test_one_generator_per_element_makes_results_independent_of_batching():
    g = torch.Generator().manual_seed(5)
    sizes = [40, 25, 33]
    x = torch.randn(3, 40, 6, generator=g)
    valid = torch.arange(40)[None] < torch.tensor(sizes)[:, None]

    def gens():
        return [torch.Generator().manual_seed(100 + i) for i in range(3)]

    labels, centers, inertia = batched_kmeans(x, 4, valid=valid, n_init=3, seed=None, generator=gens())
    for i, n in enumerate(sizes):
        alone = batched_kmeans(x[i : i + 1, :n], 4, n_init=3, generator=gens()[i : i + 1])
        assert torch.equal(labels[i, :n], alone[0][0]) and (labels[i, n:] == -1).all()
        torch.testing.assert_close(centers[i], alone[1][0], atol=1e-5, rtol=1e-5)
        assert float(inertia[i]) == pytest.approx(float(alone[2][0]), rel=1e-5)
    with pytest.raises(ValueError, match="generators"):
        batched_kmeans(x, 4, generator=gens()[:2])


def test_non_contiguous_input_gives_the_same_result():
    x = torch.randn(2, 7, 60, generator=torch.Generator().manual_seed(6))  # (B, D, N)
    a = batched_kmeans(x.transpose(1, 2), 3, n_init=2, seed=1)
    b = batched_kmeans(x.transpose(1, 2).contiguous(), 3, n_init=2, seed=1)
    assert all(torch.equal(u, v) for u, v in zip(a, b))


def test_mean_variance_matches_numpy_on_valid_points():
    x = torch.randn(2, 30, 5, generator=torch.Generator().manual_seed(7)) * 3 + 10
    valid = torch.ones(2, 30, dtype=torch.bool)
    valid[1, 12:] = False
    got = _mean_variance(x.masked_fill(~valid[..., None], 0.0), valid, 8)
    for b in range(2):
        ref = x[b][valid[b]].double().numpy().var(axis=0).mean()
        assert float(got[b]) == pytest.approx(ref, rel=1e-5)


def test_empty_batch_and_empty_sets():
    labels, centers, inertia = batched_kmeans(torch.zeros(2, 0, 3), 2)
    assert labels.shape == (2, 0) and torch.equal(centers, torch.zeros(2, 2, 3)) and inertia.tolist() == [0.0, 0.0]
