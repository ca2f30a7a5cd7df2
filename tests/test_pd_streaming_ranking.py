"""Stage 2 clustering from chunks in bounded memory equals the in-memory clustering."""

import numpy as np
import pytest
import torch

from part_d2.modeling.part_ranking import cluster_part_modes, cluster_part_modes_streaming, plan_buckets


def _data(seed=0, sizes=(30, 12, 0, 21, 5, 40, 9), dim=6, dtype=np.float32):
    """Features of classes of ``sizes`` (3 separated modes per class), shuffled, in 5 chunks."""
    g = torch.Generator().manual_seed(seed)
    classes = np.repeat(np.arange(len(sizes)), sizes)
    modes = torch.randn(len(sizes), 3, dim, generator=g)
    pick = torch.randint(0, 3, (len(classes),), generator=g)
    x = (modes[torch.as_tensor(classes), pick] + 0.05 * torch.randn(len(classes), dim, generator=g)).numpy()
    perm = np.random.default_rng(seed).permutation(len(classes))
    x, classes = x[perm].astype(dtype), classes[perm]
    cuts = np.linspace(0, len(classes), 6).astype(int)
    chunks = [(x[a:b], classes[a:b]) for a, b in zip(cuts[:-1], cuts[1:])]
    return x, classes, [f"c{i}" for i in range(len(sizes))], chunks


def test_plan_buckets_hand_computed():
    # 4-byte rows, budget 40 bytes: 3+5 rows fit (32 B), +4 would be 48 -> new bucket; 12 rows alone exceed it
    np.testing.assert_array_equal(plan_buckets(np.array([3, 5, 4, 12, 0, 1]), 4, 40), [0, 2, 3, 4, 6])
    np.testing.assert_array_equal(plan_buckets(np.array([0, 0]), 0, 40), [0, 2])


def test_one_bucket_equals_in_memory_exactly(tmp_path):
    x, classes, names, chunks = _data()
    ref = cluster_part_modes(x, classes, names, k=3, n_init=3, seed=2)
    out = cluster_part_modes_streaming(lambda: iter(chunks), names, k=3, workdir=str(tmp_path / "b"),
                                       n_init=3, seed=2)
    np.testing.assert_array_equal(out.centroids, ref.centroids)
    np.testing.assert_array_equal(out.counts, ref.counts)
    assert out.counts.sum(axis=1).tolist() == [30, 12, 0, 21, 5, 40, 9]
    assert not (tmp_path / "b").exists()  # range files and their folder removed


def test_many_buckets_equal_in_memory_to_float_tolerance(tmp_path):
    """A 100-byte budget (4 rows of 6 float32) puts every class in a range of its own."""
    x, classes, names, chunks = _data(seed=1)
    ref = cluster_part_modes(x, classes, names, k=3, n_init=3, seed=5, group_size=3)
    out = cluster_part_modes_streaming(lambda: iter(chunks), names, k=3, workdir=str(tmp_path), n_init=3, seed=5,
                                       group_size=3, budget_bytes=100)
    np.testing.assert_allclose(out.centroids, ref.centroids, atol=1e-5)
    np.testing.assert_array_equal(out.counts, ref.counts)


def test_float16_chunks_equal_in_memory_float16_features(tmp_path):
    """Memory-mapped float16 .npy shards: the ranges stay float16 on disk and cluster as the same values."""
    x, classes, names, _ = _data(seed=2, dtype=np.float16)
    for i, (a, b) in enumerate([(0, 50), (50, 117)]):
        np.save(tmp_path / f"f{i}.npy", x[a:b])
        np.save(tmp_path / f"c{i}.npy", classes[a:b])

    def chunks():
        for i in range(2):
            yield np.load(tmp_path / f"f{i}.npy", mmap_mode="r"), np.load(tmp_path / f"c{i}.npy")

    ref = cluster_part_modes(x.astype(np.float32), classes, names, k=3, n_init=2, seed=0)
    out = cluster_part_modes_streaming(chunks, names, k=3, workdir=str(tmp_path / "w"), n_init=2, seed=0)
    np.testing.assert_array_equal(out.centroids, ref.centroids)


def test_bad_class_index_is_an_error(tmp_path):
    x, classes, names, _ = _data()
    with pytest.raises(ValueError, match="class indices"):
        cluster_part_modes_streaming(lambda: iter([(x, classes + 1)]), names, k=3, workdir=str(tmp_path))
