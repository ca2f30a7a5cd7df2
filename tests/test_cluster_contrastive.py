import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage.morphology import convex_hull_image

from part_d2.modeling.losses import (
    ClusterContrastiveLoss,
    cluster_contrastive_losses,
    keep_compact_clusters,
    weighted_cluster_contrastive_losses,
)

L_C_EXAMPLE = 0.6566793457
L_A_EXAMPLE = 2.0622070813


def _worked_example(dtype=torch.float32):
    f = torch.zeros(1, 2, 4, 4, dtype=dtype)
    f[0, 0, :, :2], f[0, 0, :, 2:] = 1.0, 0.1
    f[0, 1, :, :2], f[0, 1, :, 2:] = 0.2, 1.0
    f[0, 1, 0, 0] = 0.5
    return f, torch.ones(1, 4, 4, dtype=torch.bool)


def _reference_losses(features, masks, labels, k, tau_a, tau_c, ratio=0.1):
    """Straightforward per-cluster loops of the OPS reference definition (float64)."""
    loss_a, loss_c, n_valid = 0.0, 0.0, 0
    for f, m, lab in zip(features.double(), masks, labels):
        k_eff = min(k, int(m.sum()))
        if k_eff <= 1:
            continue
        pts = F.normalize(f.permute(1, 2, 0)[m], dim=1)
        lab = lab[m]
        centroids = []
        for c in range(k_eff):
            region = np.zeros(m.shape, dtype=bool)
            region[m.numpy()] = (lab == c).numpy()
            if region.sum() == 0 or region.sum() / convex_hull_image(region).sum() <= ratio:
                continue
            p = pts[lab == c]
            centroid = p.mean(dim=0, keepdim=True)
            loss_a += torch.exp(torch.cdist(p, centroid) / tau_a).mean().item()
            centroids.append(centroid)
        if len(centroids) > 1:
            c = torch.cat(centroids)
            loss_c += torch.exp(-torch.cdist(c, c) / tau_c).mean().item()
            n_valid += 1
    return loss_a / max(n_valid, 1), loss_c / max(n_valid, 1), n_valid


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_worked_example_with_kmeans(seed):
    f, m = _worked_example()
    out = cluster_contrastive_losses(f, m, k=2, tau_a=1.0, tau_c=1.0, seed=seed)
    assert float(out["loss_contrast"]) == pytest.approx(L_C_EXAMPLE, abs=1e-6)
    assert float(out["loss_affinity"]) == pytest.approx(L_A_EXAMPLE, abs=1e-6)
    assert int(out["n_valid"]) == 1


def test_worked_example_with_given_labels_float64():
    f, m = _worked_example(torch.float64)
    labels = torch.tensor([0, 0, 1, 1]).repeat(4, 1)[None]
    out = cluster_contrastive_losses(f, m, labels=labels, k=2)
    assert float(out["loss_contrast"]) == pytest.approx(L_C_EXAMPLE, abs=1e-9)
    assert float(out["loss_affinity"]) == pytest.approx(L_A_EXAMPLE, abs=1e-9)


def _paper_example():
    """1 x 4 image, 2 channels, clusters [0, 0, 1, 1]; features already unit length:
    p0 = (1, 0), p1 = (0, 1) (cluster 0), p2 = p3 = (-1, 0) (cluster 1)."""
    f = torch.tensor([[[[1.0, 0.0, -1.0, -1.0]], [[0.0, 1.0, 0.0, 0.0]]]], dtype=torch.float64)
    return f, torch.ones(1, 1, 4, dtype=torch.bool), torch.tensor([[[0, 0, 1, 1]]])


def test_paper_eq1_eq2_hand_computed():
    f, m, labels = _paper_example()
    out = cluster_contrastive_losses(f, m, labels=labels, k=2, tau_a=1.0, tau_c=1.0, formulation="paper")
    # centroids: c0 = (0.5, 0.5), c1 = (-1, 0); ||c0 - c1||^2 = 1.5^2 + 0.5^2 = 2.5
    # Eq. 1: (1/K) sum over the 4 ordered pairs = (1 + 1 + 2 exp(-2.5)) / 2 = (2 + 0.1641699972) / 2
    assert float(out["loss_contrast"]) == pytest.approx(1.0820849986, abs=1e-9)
    # Eq. 2: cluster 0: ||p0 - c0||^2 = ||p1 - c0||^2 = 0.5 -> mean exp(0.5) = 1.6487212707;
    # cluster 1: distances 0 -> 1; (1/K) sum = (1.6487212707 + 1) / 2
    assert float(out["loss_affinity"]) == pytest.approx(1.3243606354, abs=1e-9)
    assert int(out["n_valid"]) == 1


def test_paper_temperatures_hand_computed():
    f, m, labels = _paper_example()
    out = cluster_contrastive_losses(f, m, labels=labels, k=2, tau_a=0.5, tau_c=2.0, formulation="paper")
    # Eq. 1: (2 + 2 exp(-2.5 / 2)) / 2 = 1 + exp(-1.25) = 1 + 0.2865047969
    assert float(out["loss_contrast"]) == pytest.approx(1.2865047969, abs=1e-9)
    # Eq. 2: (exp(0.5 / 0.5) + 1) / 2 = (2.7182818285 + 1) / 2
    assert float(out["loss_affinity"]) == pytest.approx(1.8591409142, abs=1e-9)


def test_reference_on_paper_example_hand_computed():
    f, m, labels = _paper_example()
    out = cluster_contrastive_losses(f, m, labels=labels, k=2, formulation="reference")
    # mean over the K^2 = 4 entries of exp(-||c_i - c_j||): (2 + 2 exp(-sqrt(2.5))) / 4
    assert float(out["loss_contrast"]) == pytest.approx((2 + 2 * np.exp(-np.sqrt(2.5))) / 4, abs=1e-9)
    # sum over clusters of mean exp(||p - c||): exp(sqrt(0.5)) + 1 = 2.0281149816 + 1
    assert float(out["loss_affinity"]) == pytest.approx(3.0281149816, abs=1e-9)


def test_matches_reference_loops_with_filtered_and_skipped_images():
    g = torch.Generator().manual_seed(0)
    features = torch.randn(4, 3, 8, 8, generator=g, dtype=torch.float64)
    masks = torch.zeros(4, 8, 8, dtype=torch.bool)
    masks[0, 1:7, 1:7] = True
    masks[1] = True
    masks[2, 3, 3] = True  # one pixel: K' = 1, skipped
    masks[3, 2:6, :] = True
    labels = torch.randint(0, 5, (4, 8, 8), generator=g)
    labels[2] = 0
    labels[1, :, :] = torch.randint(0, 3, (8, 8), generator=g)
    labels[1, 0, 0], labels[1, 7, 7] = 4, 4  # two far pixels: |m| / |hull| = 2 / 8 kept
    labels[1, 0, 7], labels[1, 7, 0] = 3, 3  # anti-diagonal ends: 2 / 8 kept
    out = cluster_contrastive_losses(features, masks, labels=labels, k=5, tau_a=0.7, tau_c=1.3)
    loss_a, loss_c, n_valid = _reference_losses(features, masks, labels, 5, 0.7, 1.3)
    assert int(out["n_valid"]) == n_valid == 3
    assert float(out["loss_affinity"]) == pytest.approx(loss_a, abs=1e-9)
    assert float(out["loss_contrast"]) == pytest.approx(loss_c, abs=1e-9)


def test_single_kept_cluster_counts_affinity_only():
    f = torch.randn(1, 2, 20, 20, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    m = torch.ones(1, 20, 20, dtype=torch.bool)
    labels = torch.zeros(1, 20, 20, dtype=torch.long)
    labels[0, 0, 0], labels[0, 19, 19], labels[0, 0, 19], labels[0, 19, 0] = 1, 1, 1, 1  # 4 / 400
    out = cluster_contrastive_losses(f, m, labels=labels, k=2)
    pts = F.normalize(f[0].permute(1, 2, 0)[labels[0] == 0], dim=1)
    expected = torch.exp((pts - pts.mean(0)).norm(dim=1)).mean()
    assert int(out["n_valid"]) == 0 and float(out["loss_contrast"]) == 0.0
    assert float(out["loss_affinity"]) == pytest.approx(float(expected), abs=1e-9)


def test_hull_ratio_threshold_is_strict():
    lab = np.full((20, 20), -1)
    lab[0, 0] = lab[19, 19] = 0  # diagonal band: hull 20 pixels, ratio exactly 0.1 -> dropped
    lab[5, 0] = lab[5, 18] = 1  # row: hull 19 pixels, ratio 2/19 > 0.1 -> kept
    lab[10:12, 3:5] = 2  # compact square
    assert keep_compact_clusters(lab, 4).tolist() == [False, True, True, False]
    assert keep_compact_clusters(lab, 4, hull_ratio=0.09).tolist() == [True, True, True, False]


def test_hull_decisions_match_skimage_on_random_label_maps():
    rng = np.random.default_rng(0)
    for _ in range(40):
        lab = rng.integers(0, 6, (12, 15))
        lab[rng.random(lab.shape) < 0.6] = -1
        ratio = rng.uniform(0.05, 0.6)
        expected = []
        for c in range(6):
            region = lab == c
            expected.append(bool(region.any() and region.sum() / convex_hull_image(region).sum() > ratio))
        assert keep_compact_clusters(lab, 6, hull_ratio=ratio).tolist() == expected


def test_object_mask_resized_nearest_exact_to_feature_size():
    f = torch.randn(1, 4, 6, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    big = torch.zeros(1, 24, 24, dtype=torch.bool)
    big[0, 4:20, 8:24] = True
    small = F.interpolate(big[:, None].double(), size=(6, 6), mode="nearest-exact")[:, 0] > 0.5
    labels = torch.randint(0, 3, (1, 6, 6), generator=torch.Generator().manual_seed(3))
    a = cluster_contrastive_losses(f, big, labels=labels, k=3)
    b = cluster_contrastive_losses(f, small, labels=labels, k=3)
    assert float(a["loss_affinity"]) == float(b["loss_affinity"]) > 0
    assert float(a["loss_contrast"]) == float(b["loss_contrast"])


def test_gradients_flow_to_object_pixels_only():
    f = torch.randn(2, 8, 10, 10, generator=torch.Generator().manual_seed(4), requires_grad=True)
    m = torch.zeros(2, 10, 10, dtype=torch.bool)
    m[:, 2:8, 2:8] = True
    out = weighted_cluster_contrastive_losses(f, m, k=4, seed=0)
    (out["loss_affinity"] + out["loss_contrast"]).backward()
    assert torch.isfinite(f.grad).all()
    assert f.grad[:, :, m[0]].abs().sum() > 0
    assert f.grad[:, :, ~m[0]].abs().sum() == 0


def test_weights_and_configurable_module():
    from detectron2.config import get_cfg

    from part_d2.config import add_part_d2_config

    cfg = add_part_d2_config(get_cfg())
    cfg.MODEL.OPS.SS_LOSS.K = 2
    cfg.MODEL.OPS.SS_LOSS.SEED = 0
    f, m = _worked_example()
    out = ClusterContrastiveLoss(cfg)(f, m)
    assert float(out["loss_contrast"]) == pytest.approx(10.0 * L_C_EXAMPLE, abs=1e-5)
    assert float(out["loss_affinity"]) == pytest.approx(0.5 * L_A_EXAMPLE, abs=1e-6)


def test_bad_inputs_raise():
    f, m = _worked_example()
    with pytest.raises(ValueError, match="cluster ids"):
        cluster_contrastive_losses(f, m, labels=torch.full((1, 4, 4), 2), k=2)
    with pytest.raises(ValueError, match="formulation"):
        cluster_contrastive_losses(f, m, formulation="other")
    with pytest.raises(ValueError, match="expected features"):
        cluster_contrastive_losses(f[0], m)


def test_cluster_features_equals_kmeans_of_each_images_object_pixels():
    from part_d2.clustering import kmeans
    from part_d2.modeling.losses.cluster_contrastive import cluster_features

    g = torch.Generator().manual_seed(3)
    f = F.normalize(torch.randn(3, 5, 6, 7, generator=g), dim=1)
    masks = torch.rand(3, 6, 7, generator=g) > 0.5
    masks[2] = False
    masks[2, 0, :2] = True  # 2 object pixels: k' = 2
    labels = cluster_features(f * masks[:, None], masks, k=3, seed=0)
    assert (labels[~masks] == -1).all()
    # the first image alone with the same seed gets the same draws, hence the same clustering
    ref = kmeans(f[0].permute(1, 2, 0)[masks[0]], 3, seed=0, init="random")[0]
    assert torch.equal(labels[0][masks[0]], ref)
    for b in range(3):
        assert set(labels[b][masks[b]].tolist()) == set(range(min(3, int(masks[b].sum()))))
