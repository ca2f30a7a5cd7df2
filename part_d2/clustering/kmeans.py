"""The project's one k-means: batched, masked, seeded and device-agnostic (torch).

Used by the OPS self-supervised loss (per image, inside every training step), PartDistillation's
pixel grouping (per object instance) and part ranking (per object class, up to millions of
features). Every consumer calls :func:`batched_kmeans` or its single-set wrapper :func:`kmeans`.

Algorithm (Lloyd's, as scikit-learn's ``KMeans(algorithm="lloyd")``):

- **init**: ``"k-means++"`` is greedy k-means++ (``2 + floor(ln k)`` candidates per step, keep the
  one that lowers the potential most, as scikit-learn does); ``"random"`` picks ``k`` distinct
  valid points uniformly.
- **iterations**: assign every valid point to its nearest centre, move each centre to the mean of
  its points; stop after ``max_iter`` iterations or once every batch element's total squared
  centre shift is ``<= tol * mean per-feature variance`` of its points (scikit-learn's tolerance).
  A final assignment makes ``labels`` consistent with the returned ``centers``.
- **empty clusters**: an active cluster left without points is re-seeded to the valid point that is
  farthest from its own centre (distinct points for several empty clusters of one element), as
  scikit-learn relocates empty clusters. With fewer distinct points than clusters some clusters
  may stay empty.
- **restarts**: ``n_init`` independent runs; each batch element keeps the run of lowest inertia.

Batch elements may hold different numbers of valid points: element ``b`` uses
``k_b = min(k, n_valid_b)`` clusters; the centres ``k_b..k-1`` of its output are zeros and no
point is assigned to them. Invalid points get label ``-1``.

Randomness comes from a CPU :class:`torch.Generator` (``seed`` or ``generator``) and is moved to
the data's device, so a seed gives the same draws on CPU and GPU. With neither, torch's global RNG
is used. The OPS reference implementation (``kmeans_pytorch``) clusters with the unseeded global
RNG, ``"random"`` init, at most 20 iterations and a centre-shift stopping rule; pass
``init="random", max_iter=20`` to mimic it.

Distances are computed in chunks of ``chunk_size`` points so that e.g. 1M x 256 features with 8
centres need only ``O(chunk_size * k)`` extra memory.
"""
import math
from typing import Optional, Tuple

import torch

INITS = ("k-means++", "random")
METRICS = ("l2", "cosine")


def batched_kmeans(
    x: torch.Tensor,
    k: int,
    valid: Optional[torch.Tensor] = None,
    n_init: int = 1,
    max_iter: int = 20,
    tol: float = 1e-4,
    init: str = "k-means++",
    seed: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
    metric: str = "l2",
    chunk_size: int = 65536,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cluster B independent point sets with k-means.

    Args:
        x: (B, N, D) float points (half precision is clustered in float32).
        k: number of clusters (element ``b`` uses ``min(k, n_valid_b)``).
        valid: (B, N) bool, which points take part; all when None.
        n_init: number of restarts; the lowest-inertia run is kept per element.
        max_iter: most Lloyd iterations per restart.
        tol: relative tolerance on the squared centre shift (see module docstring).
        init: "k-means++" or "random".
        seed: seed of a fresh CPU generator (ignored when ``generator`` is given).
        generator: CPU generator to draw from.
        metric: "l2" (Euclidean) or "cosine" (points and centres L2-normalised: spherical k-means).
        chunk_size: points per distance chunk.
    Returns:
        labels: (B, N) long in [0, k_b) for valid points, -1 for invalid ones.
        centers: (B, k, D) of x's dtype; rows >= k_b are zeros.
        inertia: (B,) float64, sum of squared distances of valid points to their centres.
    """
    out_dtype = x.dtype
    x, valid = _check_inputs(x, k, valid, n_init, init, metric)
    gen = _make_generator(seed, generator)
    with torch.no_grad():
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        if metric == "cosine":
            x = torch.nn.functional.normalize(x, dim=-1)
        k_eff = torch.clamp(valid.sum(dim=1), max=k)
        active = torch.arange(k, device=x.device)[None, :] < k_eff[:, None]
        tol_b = tol * _mean_variance(x, valid, chunk_size)
        best = None
        for _ in range(n_init):
            run = _lloyd(x, valid, active, tol_b, init, gen, max_iter, metric, chunk_size)
            best = run if best is None else _keep_better(best, run)
    labels, centers, inertia = best
    return labels, centers.to(out_dtype), inertia


def kmeans(
    x: torch.Tensor, k: int, **kwargs
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """k-means of one point set; see :func:`batched_kmeans` for the keyword arguments.

    Args:
        x: (N, D) float points.
        k: number of clusters; ``k' = min(k, #valid points)`` are used.
        valid: optional (N,) bool, which points take part.
    Returns:
        labels: (N,) long (-1 for invalid points); centers: (k', D); inertia: () float64.
    """
    if x.dim() != 2:
        raise ValueError(f"kmeans expects (N, D) points, got shape {tuple(x.shape)}")
    valid = kwargs.pop("valid", None)
    if valid is not None:
        valid = valid[None]
    labels, centers, inertia = batched_kmeans(x[None], k, valid=valid, **kwargs)
    k_eff = min(k, int((labels[0] >= 0).sum()))
    return labels[0], centers[0, :k_eff], inertia[0]


def _check_inputs(x, k, valid, n_init, init, metric):
    if x.dim() != 3:
        raise ValueError(f"batched_kmeans expects (B, N, D) points, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"batched_kmeans expects floating point points, got {x.dtype}")
    if k < 1 or n_init < 1:
        raise ValueError(f"k and n_init must be >= 1, got k={k}, n_init={n_init}")
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; expected one of {INITS}")
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; expected one of {METRICS}")
    if valid is None:
        valid = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    elif valid.shape != x.shape[:2]:
        raise ValueError(f"valid has shape {tuple(valid.shape)}, expected {tuple(x.shape[:2])}")
    return x.detach(), valid.to(device=x.device, dtype=torch.bool)


def _make_generator(seed, generator):
    if generator is not None:
        return generator
    if seed is None:
        return None
    return torch.Generator(device="cpu").manual_seed(int(seed))


def _rand(shape, gen, device):
    """Uniform [0, 1) float64 draws from the CPU generator, moved to ``device``."""
    return torch.rand(shape, generator=gen, dtype=torch.float64).to(device)


def _mean_variance(x, valid, chunk_size):
    """(B,) mean over features of the per-feature variance of each element's valid points."""
    n = valid.sum(dim=1).clamp(min=1).to(torch.float64)[:, None]
    total = torch.zeros(x.shape[0], x.shape[2], dtype=torch.float64, device=x.device)
    for start in range(0, x.shape[1], chunk_size):
        w = valid[:, start : start + chunk_size, None]
        total += (x[:, start : start + chunk_size].to(torch.float64) * w).sum(dim=1)
    mean = total / n
    sq = torch.zeros_like(total)
    for start in range(0, x.shape[1], chunk_size):
        w = valid[:, start : start + chunk_size, None]
        dev = x[:, start : start + chunk_size].to(torch.float64) - mean[:, None]
        sq += (dev * dev * w).sum(dim=1)
    return (sq / n).mean(dim=-1)


def _sq_dists(x, centers, chunk_size):
    """Squared Euclidean distances, chunked over points.

    Args:
        x: (B, N, D); centers: (B, M, D).
    Returns:
        (B, N, M) float32/64 (x's dtype), clamped at 0.
    """
    c = centers.to(x.dtype)
    c_sq = (c * c).sum(dim=-1)
    out = []
    for start in range(0, x.shape[1], chunk_size):
        xc = x[:, start : start + chunk_size]
        d = (xc * xc).sum(dim=-1, keepdim=True) - 2 * torch.bmm(xc, c.transpose(1, 2)) + c_sq[:, None]
        out.append(d.clamp_(min=0))
    return torch.cat(out, dim=1)


def _assign(x, centers, active, valid, chunk_size):
    """Nearest active centre of every point.

    Returns:
        labels: (B, N) long (-1 for invalid points); dmin: (B, N) float64 (0 for invalid points).
    """
    labels, dmins = [], []
    for start in range(0, x.shape[1], chunk_size):
        d = _sq_dists(x[:, start : start + chunk_size], centers, chunk_size)
        d = d.masked_fill(~active[:, None, :], float("inf"))
        dmin, lab = d.min(dim=-1)
        labels.append(lab)
        dmins.append(dmin.to(torch.float64))
    labels, dmin = torch.cat(labels, dim=1), torch.cat(dmins, dim=1)
    return labels.masked_fill(~valid, -1), dmin.masked_fill(~valid, 0.0)


def _sample(weights, n, gen):
    """Draw ``n`` indices per row with probability proportional to ``weights`` (B, N) >= 0.

    Rows of zero total weight draw uniformly among all points. Returns (B, n) long.
    """
    weights = weights.to(torch.float64)
    total = weights.sum(dim=1, keepdim=True)
    weights = torch.where(total > 0, weights, torch.ones_like(weights))
    cdf = weights.cumsum(dim=1)
    u = _rand((weights.shape[0], n), gen, weights.device) * cdf[:, -1:]
    idx = torch.searchsorted(cdf, u, right=True)
    return idx.clamp_(max=weights.shape[1] - 1)


def _gather_points(x, idx):
    """x: (B, N, D), idx: (B, M) -> (B, M, D)."""
    return torch.gather(x, 1, idx[..., None].expand(-1, -1, x.shape[-1]))


def _init_random(x, valid, k, gen):
    """k distinct valid points per element (invalid ones only where fewer than k are valid)."""
    scores = _rand(valid.shape, gen, x.device).masked_fill(~valid, -1.0)
    idx = scores.topk(min(k, x.shape[1]), dim=1).indices
    if idx.shape[1] < k:
        idx = torch.cat([idx, idx[:, :1].expand(-1, k - idx.shape[1])], dim=1)
    return _gather_points(x, idx).to(torch.float64)


def _init_kmeanspp(x, valid, active, gen, chunk_size):
    """Greedy k-means++ seeding (scikit-learn's variant), batched over elements."""
    k = active.shape[1]
    n_trials = 2 + int(math.log(k))
    first = _sample(valid.to(torch.float64), 1, gen)
    centers = [_gather_points(x, first)]
    closest = _sq_dists(x, centers[0], chunk_size)[..., 0].to(torch.float64) * valid
    for j in range(1, k):
        cand = _sample(closest, n_trials, gen)
        cand_pts = _gather_points(x, cand)
        d = _sq_dists(x, cand_pts, chunk_size).to(torch.float64)
        new_closest = torch.minimum(closest[..., None], d) * valid[..., None]
        best = new_closest.sum(dim=1).argmin(dim=1)
        ar = torch.arange(x.shape[0], device=x.device)
        centers.append(cand_pts[ar, best][:, None])
        closest = torch.where(active[:, j : j + 1], new_closest[ar, :, best], closest)
    return torch.cat(centers, dim=1).to(torch.float64)


def _update_centers(x, labels, active, chunk_size):
    """Mean of each cluster's points.

    Returns:
        means: (B, k, D) float64 (zeros for empty clusters); counts: (B, k) long.
    """
    b, _, dim = x.shape
    k = active.shape[1]
    sums = torch.zeros(b, k, dim, dtype=torch.float64, device=x.device)
    counts = torch.zeros(b, k, dtype=torch.long, device=x.device)
    for start in range(0, x.shape[1], chunk_size):
        lab = labels[:, start : start + chunk_size]
        onehot = torch.nn.functional.one_hot(lab.clamp(min=0), k) * (lab >= 0)[..., None]
        xc = x[:, start : start + chunk_size]
        sums += torch.bmm(onehot.transpose(1, 2).to(xc.dtype), xc).to(torch.float64)
        counts += onehot.sum(dim=1)
    means = sums / counts.clamp(min=1)[..., None]
    return means, counts


def _reseed_empty(x, valid, centers, counts, active, dmin):
    """Move every empty active cluster to a distinct farthest valid point of its element."""
    empty = active & (counts == 0)
    k = active.shape[1]
    far = dmin.masked_fill(~valid, -1.0).topk(min(k, dmin.shape[1]), dim=1).indices
    rank = (empty.cumsum(dim=1) - 1).clamp(min=0, max=far.shape[1] - 1)
    pts = _gather_points(x, torch.gather(far, 1, rank)).to(torch.float64)
    return torch.where(empty[..., None], pts, centers)


def _lloyd(x, valid, active, tol_b, init, gen, max_iter, metric, chunk_size):
    """One restart for every batch element. Returns (labels, centers float64, inertia)."""
    k = active.shape[1]
    if init == "random":
        centers = _init_random(x, valid, k, gen)
    else:
        centers = _init_kmeanspp(x, valid, active, gen, chunk_size)
    centers = centers.masked_fill(~active[..., None], 0.0)
    for _ in range(max_iter):
        labels, dmin = _assign(x, centers, active, valid, chunk_size)
        means, counts = _update_centers(x, labels, active, chunk_size)
        new = torch.where((counts > 0)[..., None], means, centers)
        if metric == "cosine":
            new = torch.nn.functional.normalize(new, dim=-1)
        if bool((active & (counts == 0)).any()):
            new = _reseed_empty(x, valid, new, counts, active, dmin)
        new = new.masked_fill(~active[..., None], 0.0)
        shift = ((new - centers) ** 2).sum(dim=(1, 2))
        centers = new
        if bool((shift <= tol_b).all()):
            break
    labels, dmin = _assign(x, centers, active, valid, chunk_size)
    return labels, centers, dmin.sum(dim=1)


def _keep_better(a, b):
    """Per element, the run (labels, centers, inertia) of lower inertia; ties keep ``a``."""
    take_b = b[2] < a[2]
    labels = torch.where(take_b[:, None], b[0], a[0])
    centers = torch.where(take_b[:, None, None], b[1], a[1])
    inertia = torch.where(take_b, b[2], a[2])
    return labels, centers, inertia
