"""PartDistillation stage 2 (part ranking): per-class k-means of query features, part_d2 vs scikit-learn.

Workload: 1,000 object classes with 500-1,500 L2-normalised 256-d features each (~1M in all;
seeded: 8 noisy modes per class), k = 8, k-means++ with 10 restarts, at most 300 iterations.
``--scale`` shrinks the number of classes (hence of features) proportionally.

- **baseline**: scikit-learn ``KMeans(8, n_init=10)`` per class, timed on a subset of the classes
  and extrapolated linearly in the number of features.
- **part_d2 batched**: :func:`part_d2.clustering.kmeans.batched_kmeans` over groups of classes of
  similar sizes, each group padded with ``valid``.
- **part_d2 cluster_part_modes**: :func:`part_d2.modeling.part_ranking.cluster_part_modes`, the
  function stage 2 calls (one ``batched_kmeans`` call per class).

Quality: part_d2's total inertia on the baseline's classes within 1% of scikit-learn's.
"""
import argparse
import json
import math

import numpy as np
import torch
from common import check_device, relative_gap, scaled, speedup_row, timed_once
from sklearn.cluster import KMeans

from part_d2.clustering.kmeans import batched_kmeans
from part_d2.modeling.part_ranking import cluster_part_modes

K = 8
N_INIT = 10
MAX_ITER = 300
DIM = 256


def make_features(num_classes: int, seed: int, min_size: int = 500, max_size: int = 1500):
    """Seeded per-class features: list of (n_c, 256) float32 L2-normalised arrays, each drawn
    around 8 random unit modes with per-dimension noise 0.05."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(num_classes):
        n = int(rng.integers(min_size, max_size + 1))
        modes = rng.standard_normal((K, DIM))
        modes /= np.linalg.norm(modes, axis=1, keepdims=True)
        x = modes[rng.integers(K, size=n)] + 0.05 * rng.standard_normal((n, DIM))
        out.append((x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32))
    return out


def group_classes(sizes, group_size: int):
    """Class indices sorted by size, in consecutive groups of ``group_size``."""
    order = np.argsort(sizes, kind="stable")
    return [order[i: i + group_size] for i in range(0, len(order), group_size)]


def batched_per_class(features, device: str, seed: int, group_size: int) -> np.ndarray:
    """Inertia (C,) of part_d2's batched k-means over groups of classes padded to their largest."""
    inertia = np.zeros(len(features))
    gen = torch.Generator(device="cpu").manual_seed(seed)
    for idx in group_classes([len(f) for f in features], group_size):
        n_max = max(len(features[i]) for i in idx)
        x = torch.zeros(len(idx), n_max, DIM)
        valid = torch.zeros(len(idx), n_max, dtype=torch.bool)
        for j, i in enumerate(idx):
            x[j, : len(features[i])] = torch.from_numpy(features[i])
            valid[j, : len(features[i])] = True
        _, _, inert = batched_kmeans(x.to(device), K, valid=valid.to(device), n_init=N_INIT, max_iter=MAX_ITER,
                                     init="k-means++", generator=gen)
        inertia[idx] = inert.cpu().numpy()
    return inertia


def sklearn_per_class(features, seed: int) -> np.ndarray:
    """Inertia of scikit-learn's KMeans for each class of ``features``."""
    return np.array([KMeans(K, n_init=N_INIT, max_iter=MAX_ITER, random_state=seed + c).fit(x).inertia_
                     for c, x in enumerate(features)])


def run(scale: float = 1.0, device: str = "cpu", seed: int = 0, baseline_fraction: float = 0.05,
        group_size: int = 0, with_part_ranking_api: bool = True) -> dict:
    """Time scikit-learn (subset, extrapolated) and part_d2 (full workload). Returns a case result.

    ``group_size`` 0: 4 classes per call on CPU (larger padded batches fall out of cache and run
    slower there), 128 on a GPU.
    """
    check_device(device)
    group_size = group_size or (128 if device.startswith("cuda") else 4)
    num_classes = scaled(1000, scale, 2)
    num_base = min(num_classes, max(2, math.ceil(baseline_fraction * num_classes)))
    features = make_features(num_classes, seed)
    total = sum(len(f) for f in features)
    subset_points = sum(len(f) for f in features[:num_base])

    base_inertia, base_time = timed_once(lambda: sklearn_per_class(features[:num_base], seed))
    base_total = base_time * total / subset_points
    ours_inertia, ours_time = timed_once(lambda: batched_per_class(features, device, seed, group_size), device)
    gap = relative_gap(float(ours_inertia[:num_base].sum()), float(base_inertia.sum()))
    quality = (f"inertia on the {num_base} baseline classes: part_d2 {ours_inertia[:num_base].sum():.6g} vs "
               f"sklearn {base_inertia.sum():.6g} ({100 * gap:+.3f}%, limit +1%)")
    metric = f"{num_classes} classes, {total} x {DIM}-d features, k={K}"
    rows = [speedup_row(f"batched_kmeans, {metric}", "s", base_total, ours_time, 10.0, quality, gap <= 0.01,
                        num_base < num_classes)]
    details = {"baseline_subset_s": base_time, "sklearn_inertia_subset": float(base_inertia.sum()),
               "part_d2_inertia_subset": float(ours_inertia[:num_base].sum()), "inertia_gap": gap}

    if with_part_ranking_api:
        flat = np.concatenate(features)
        classes = np.repeat(np.arange(num_classes), [len(f) for f in features])
        names = [f"class{c}" for c in range(num_classes)]
        _, api_time = timed_once(lambda: cluster_part_modes(flat, classes, names, K, N_INIT, MAX_ITER, seed))
        rows.append(
            speedup_row(
                f"cluster_part_modes (classes in padded groups), {metric}",
                "s",
                base_total,
                api_time,
                10.0,
                "same k-means as batched_kmeans, one class per call",
                True,
                num_base < num_classes,
            )
        )
    return {
        "case": "part_ranking",
        "title": "Part-ranking clustering (PartDistillation stage 2)",
        "params": {"classes": num_classes, "features": total, "dim": DIM, "k": K, "n_init": N_INIT,
                   "max_iter": MAX_ITER, "baseline_classes": num_base, "group_size": group_size,
                   "device": device, "seed": seed},
        "rows": rows,
        "details": details,
        "notes": [f"baseline timed on {num_base} of {num_classes} classes ({subset_points} features) and "
                  "extrapolated linearly in the number of features" if num_base < num_classes
                  else "baseline timed on every class",
                  f"batched: classes sorted by size, {group_size} per batched_kmeans call"],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--group-size", type=int, default=0, help="classes per batched_kmeans call (0: auto)")
    args = parser.parse_args()
    print(json.dumps(run(args.scale, args.device, args.seed, group_size=args.group_size), indent=2))


if __name__ == "__main__":
    main()
