"""The project's one k-means: batched, masked, seeded and device-agnostic (torch).

Used by the OPS self-supervised loss (per image, inside every training step), PartDistillation's
pixel grouping (per object instance) and part ranking (per object class, up to millions of
features). Every consumer calls :func:`batched_kmeans` or its single-set wrapper :func:`kmeans`.

Algorithm (Lloyd's, as scikit-learn's ``KMeans(algorithm="lloyd")``):

- **init**: ``"k-means++"`` is greedy k-means++ (``2 + floor(ln k)`` candidates per step, keep the
  one that lowers the potential most, as scikit-learn does); ``"random"`` picks ``k`` distinct
  valid points uniformly.
- **iterations**: assign every valid point to its nearest centre, move each centre to the mean of
  its points; a run stops after ``max_iter`` iterations or once its total squared centre shift is
  ``<= tol * mean per-feature variance`` of its element's points (scikit-learn's tolerance); a
  stopped run keeps its centres while the others go on.
- **empty clusters**: an active cluster left without points is re-seeded to the valid point that is
  farthest from its own centre (distinct points for several empty clusters of one run), as
  scikit-learn relocates empty clusters. With fewer distinct points than clusters some clusters
  may stay empty.
- **restarts**: ``n_init`` independent runs per element, all computed together (the centres of
  the live runs form one ``(B, runs * k, D)`` matrix, one matrix product per iteration); each
  batch element keeps the run of lowest inertia at its last assignment (the first one on ties;
  exact once the run's labels stopped changing, otherwise measured before its last centre update).
  A final assignment to the kept centres gives ``labels`` and ``inertia``.

Batch elements may hold different numbers of valid points: element ``b`` uses
``k_b = min(k, n_valid_b)`` clusters; the centres ``k_b..k-1`` of its output are zeros and no
point is assigned to them. Invalid points get label ``-1``.

Randomness comes from CPU :class:`torch.Generator` s and is moved to the data's device, so a seed
gives the same draws on CPU and GPU: ``seed`` (one fresh generator), ``generator`` (one generator
for the batch, or a sequence of ``B``, one per element) or, with neither, torch's global RNG. With
one generator per element, an element's k-means++ draws do not depend on the other elements nor on
the padding, so grouping sets into batches changes results only by float rounding. The OPS
reference implementation (``kmeans_pytorch``) clusters with the unseeded global RNG, ``"random"``
init, at most 20 iterations and a centre-shift stopping rule; pass ``init="random", max_iter=20``
to mimic it.

Cost: squared distances are ``|x|^2 - 2 x.c + |c|^2`` with ``|x|^2`` computed once; an iteration
needs only the argmin of ``|c|^2 - 2 x.c`` and is one pass over the points, chunked by
``chunk_size`` (assignment and centre sums of a chunk together, while it is in cache), so e.g. 1M x
256 features need ``O(chunk_size * n_init * k)`` extra memory. Computation is in ``x``'s float
dtype (half precision in float32).
"""
import math
from typing import NamedTuple, Optional, Sequence, Tuple, Union

import torch

INITS = ("k-means++", "random")
METRICS = ("l2", "cosine")

Generators = Union[None, torch.Generator, Sequence[torch.Generator]]


def batched_kmeans(
    x: torch.Tensor,
    k: int,
    valid: Optional[torch.Tensor] = None,
    n_init: int = 1,
    max_iter: int = 20,
    tol: float = 1e-4,
    init: str = "k-means++",
    seed: Optional[int] = None,
    generator: Generators = None,
    metric: str = "l2",
    chunk_size: int = 16384,
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
        generator: CPU generator to draw from, or a sequence of B generators (one per element).
        metric: "l2" (Euclidean) or "cosine" (points and centres L2-normalised: spherical k-means).
        chunk_size: points per distance chunk.
    Returns:
        labels: (B, N) long in [0, k_b) for valid points, -1 for invalid ones.
        centers: (B, k, D) of x's dtype; rows >= k_b are zeros.
        inertia: (B,) float64, sum of squared distances of valid points to their centres.
    """
    out_dtype = x.dtype
    x, valid = _check_inputs(x, k, valid, n_init, init, metric)
    gen = _make_generator(seed, generator, x.shape[0])
    if x.numel() == 0:
        b, n, dim = x.shape
        empty = torch.full((b, n), -1, dtype=torch.long, device=x.device)
        return empty, x.new_zeros(b, k, dim), torch.zeros(b, dtype=torch.float64, device=x.device)
    with torch.no_grad():
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        if metric == "cosine":
            x = torch.nn.functional.normalize(x, dim=-1)
        x = x.masked_fill(~valid[..., None], 0.0).contiguous()
        x_sq = _sq_norms(x, chunk_size)
        k_eff = torch.clamp(valid.sum(dim=1), max=k)
        active = torch.arange(k, device=x.device)[None, :] < k_eff[:, None]
        tol_b = tol * _mean_variance(x, valid, chunk_size)
        if init == "random":
            centers = _init_random(x, valid, k, n_init, gen)
        else:
            centers = _init_kmeanspp(x, x_sq, valid, active, n_init, gen, chunk_size)
        centers = centers.masked_fill(~active[:, None, :, None], 0.0)
        centers, run_inertia = _lloyd(x, x_sq, valid, active, centers, tol_b, max_iter, metric, chunk_size)
        best = run_inertia.argmin(dim=1)
        centers = centers[torch.arange(len(best), device=x.device), best]
        final = _e_step(x, x_sq, valid, centers[:, None], active, chunk_size, with_labels=True)
    return final.labels[:, 0], centers.to(out_dtype), final.inertia[:, 0]


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


def _make_generator(seed, generator, batch):
    if isinstance(generator, (list, tuple)):
        if len(generator) != batch:
            raise ValueError(f"got {len(generator)} generators for a batch of {batch} point sets")
        return list(generator)
    if generator is not None:
        return generator
    if seed is None:
        return None
    return torch.Generator(device="cpu").manual_seed(int(seed))


def _rand(shape, gen, device):
    """Uniform [0, 1) float64 draws (shape[0] = B) from the CPU generator(s), moved to ``device``."""
    if isinstance(gen, list):
        return torch.stack([torch.rand(shape[1:], generator=g, dtype=torch.float64) for g in gen]).to(device)
    return torch.rand(shape, generator=gen, dtype=torch.float64).to(device)


def _chunks(n, chunk_size):
    return [(start, min(start + chunk_size, n)) for start in range(0, n, chunk_size)]


def _sq_norms(x, chunk_size):
    """(B, N) squared norms of the points of (B, N, D) ``x``."""
    return torch.cat([(x[:, s:e] * x[:, s:e]).sum(dim=-1) for s, e in _chunks(x.shape[1], chunk_size)], dim=1)


def _mean_variance(x, valid, chunk_size):
    """(B,) mean over features of the per-feature variance of each element's valid points.

    Args:
        x: (B, N, D), zero at invalid points; valid: (B, N) bool.
    """
    n = valid.sum(dim=1).clamp(min=1).to(torch.float64)
    mean = (torch.bmm(valid[:, None].to(x.dtype), x) / n.to(x.dtype)[:, None, None])  # (B, 1, D)
    sq = torch.zeros_like(n)
    for s, e in _chunks(x.shape[1], chunk_size):
        dev = x[:, s:e] - mean
        sq += ((dev * dev).sum(dim=-1) * valid[:, s:e]).sum(dim=1, dtype=torch.float64)
    return sq / n / x.shape[2]


def _sq_dists(x, x_sq, points, chunk_size):
    """Squared Euclidean distances of every point of ``x`` to ``points``, chunked over x.

    Args:
        x: (B, N, D); x_sq: (B, N) its squared norms; points: (B, M, D).
    Returns:
        (B, M, N) of x's dtype, clamped at 0.
    """
    p = points.to(x.dtype)
    p_sq = (p * p).sum(dim=-1)[..., None]
    out = []
    for s, e in _chunks(x.shape[1], chunk_size):
        d = torch.baddbmm(p_sq, p, x[:, s:e].transpose(1, 2), alpha=-2.0) + x_sq[:, None, s:e]
        out.append(d.clamp_(min=0))
    return torch.cat(out, dim=2)


class _Assignment(NamedTuple):
    """Result of :func:`_e_step` for B elements and R runs (optional fields are None unless asked)."""

    inertia: Optional[torch.Tensor]  # (B, R) float64, sum of squared distances to the nearest centres
    labels: Optional[torch.Tensor]  # (B, R, N) long nearest centre, -1 if invalid
    dmin: Optional[torch.Tensor]  # (B, R, N) squared distance to the nearest centre, 0 if invalid
    sums: Optional[torch.Tensor]  # (B, R, k, D) sum of each cluster's points
    counts: Optional[torch.Tensor]  # (B, R, k) float number of points of each cluster


def _e_step(x, x_sq, valid, centers, active, chunk_size, with_inertia=True, with_labels=False, with_dmin=False,
            with_sums=False):
    """Assign every point to its nearest active centre, for every run at once, in one pass.

    Args:
        x: (B, N, D), zero at invalid points; x_sq: (B, N); valid: (B, N) bool; active: (B, k) bool.
        centers: (B, R, k, D), the centres of R runs.
    Returns:
        :class:`_Assignment` with the fields asked for.
    """
    b, r, k, dim = centers.shape
    c = centers.reshape(b, r * k, dim).to(x.dtype)
    c_sq = (c * c).sum(dim=-1).masked_fill(~active.repeat(1, r), float("inf"))[:, None]  # (B, 1, R*k)
    offsets = torch.arange(r, device=x.device) * k
    dmins, labels = [], []
    sums = x.new_zeros(b, r * k, dim) if with_sums else None
    counts = x.new_zeros(b, r * k) if with_sums else None
    for s, e in _chunks(x.shape[1], chunk_size):
        xc, vc = x[:, s:e], valid[:, s:e, None]
        score = torch.baddbmm(c_sq, xc, c.transpose(1, 2), alpha=-2.0)  # (B, n, R*k): |c|^2 - 2 x.c
        best, lab = score.view(b, e - s, r, k).min(dim=-1)  # (B, n, R)
        if with_inertia or with_dmin:
            dmins.append((best + x_sq[:, s:e, None]).clamp_(min=0).masked_fill_(~vc, 0.0))
        if with_labels:
            labels.append(lab.masked_fill(~vc, -1))
        if with_sums:
            index = lab + offsets
            onehot = x.new_zeros(b, e - s, r * k).scatter_(2, index, 1.0)  # invalid points are zeros
            sums += torch.bmm(onehot.transpose(1, 2), xc)
            counts.scatter_add_(1, index.view(b, -1), vc.expand(-1, -1, r).reshape(b, -1).to(x.dtype))
    dmin = torch.cat(dmins, dim=1).transpose(1, 2) if dmins else None
    return _Assignment(
        dmin.sum(dim=-1, dtype=torch.float64) if with_inertia else None,
        torch.cat(labels, dim=1).transpose(1, 2) if with_labels else None,
        dmin if with_dmin else None,
        sums.view(b, r, k, dim) if with_sums else None,
        counts.view(b, r, k) if with_sums else None,
    )


def _sample(weights, n, gen, fallback_cdf):
    """Draw ``n`` indices per row with probability proportional to ``weights`` (..., N) >= 0.

    Rows of zero total weight draw from ``fallback_cdf`` (..., N) float64, a cumulative sum of
    weights, instead. Returns (..., n) long.
    """
    cdf = weights.cumsum(dim=-1, dtype=torch.float64)
    cdf = torch.where(cdf[..., -1:] > 0, cdf, fallback_cdf)
    u = _rand(cdf.shape[:-1] + (n,), gen, cdf.device) * cdf[..., -1:]
    idx = torch.searchsorted(cdf, u, right=True)
    return idx.clamp_(max=weights.shape[-1] - 1)


def _gather_points(x, idx):
    """x: (B, N, D), idx: (B, *S) long -> (B, *S, D)."""
    flat = idx.reshape(idx.shape[0], -1)
    pts = torch.gather(x, 1, flat[..., None].expand(-1, -1, x.shape[-1]))
    return pts.view(tuple(idx.shape) + (x.shape[-1],))


def _init_random(x, valid, k, n_init, gen):
    """(B, R, k, D): per run, k distinct valid points (invalid ones only where fewer are valid)."""
    scores = _rand((x.shape[0], n_init, x.shape[1]), gen, x.device).masked_fill(~valid[:, None], -1.0)
    idx = scores.topk(min(k, x.shape[1]), dim=-1).indices
    if idx.shape[-1] < k:
        idx = torch.cat([idx, idx[..., :1].expand(-1, -1, k - idx.shape[-1])], dim=-1)
    return _gather_points(x, idx)


def _init_kmeanspp(x, x_sq, valid, active, n_init, gen, chunk_size):
    """(B, R, k, D): greedy k-means++ seeding (scikit-learn's variant) of R runs per element.

    ``x`` is zero at invalid points, whose distance to any candidate is then at least their
    ``closest`` distance 0: they never change a potential.
    """
    b, k = active.shape
    n, dim = x.shape[1:]
    n_trials = 2 + int(math.log(k))
    uniform = valid[:, None].expand(b, n_init, n).cumsum(dim=-1, dtype=torch.float64)
    first = _sample(valid[:, None].expand(b, n_init, n), 1, gen, uniform)
    centers = [_gather_points(x, first)]  # (B, R, 1, D)
    closest = _sq_dists(x, x_sq, centers[0][:, :, 0], chunk_size).masked_fill_(~valid[:, None], 0.0)  # (B, R, N)
    rows = torch.arange(b, device=x.device)[:, None]
    runs = torch.arange(n_init, device=x.device)[None]
    for j in range(1, k):
        cand = _gather_points(x, _sample(closest, n_trials, gen, uniform))  # (B, R, T, D)
        p = cand.view(b, n_init * n_trials, dim)
        p_sq = (p * p).sum(dim=-1)[..., None]
        slack = (closest - x_sq[:, None])[:, :, None]  # min(d, closest) = |x|^2 + min(|p|^2 - 2 x.p, slack)
        potential = x.new_zeros(b, n_init, n_trials, dtype=torch.float64)
        for s, e in _chunks(n, chunk_size):
            score = torch.baddbmm(p_sq, p, x[:, s:e].transpose(1, 2), alpha=-2.0)
            score = torch.minimum(score.view(b, n_init, n_trials, e - s), slack[..., s:e])
            potential += score.sum(dim=-1, dtype=torch.float64)
        pick = potential.argmin(dim=-1)
        chosen = cand[rows, runs, pick]  # (B, R, D)
        centers.append(chosen[:, :, None])
        if n <= chunk_size:  # one chunk: the chosen candidates' distances are in ``score``
            new_closest = (score[rows, runs, pick] + x_sq[:, None]).clamp_(min=0)
        else:
            new_closest = torch.minimum(closest, _sq_dists(x, x_sq, chosen, chunk_size))
        closest = torch.where(active[:, None, j : j + 1], new_closest, closest)
    return torch.cat(centers, dim=2)


def _reseed_empty(x, valid, centers, counts, active, dmin):
    """Move every empty active cluster to a distinct farthest valid point of its element.

    Args:
        x: (E, N, D); valid: (E, N) bool; centers: (E, k, D); counts, active: (E, k);
        dmin: (E, N) squared distance of each point to its assigned centre.
    Returns:
        (E, k, D) centres of ``centers``' dtype.
    """
    empty = active & (counts == 0)
    k = active.shape[1]
    far = dmin.masked_fill(~valid, -1.0).topk(min(k, dmin.shape[1]), dim=1).indices
    rank = (empty.cumsum(dim=1) - 1).clamp(min=0, max=far.shape[1] - 1)
    pts = _gather_points(x, torch.gather(far, 1, rank)).to(centers.dtype)
    return torch.where(empty[..., None], pts, centers)


def _reseed_runs(x, x_sq, valid, active, centers, new, counts, empty_runs, chunk_size):
    """Re-seed the empty clusters of the runs ``empty_runs`` (B, R) bool of ``new`` (B, R, k, D);
    farthest points are measured to the centres ``centers`` the points were assigned to."""
    bi, ri = empty_runs.nonzero(as_tuple=True)
    xe = x[bi]
    dmin = _e_step(xe, x_sq[bi], valid[bi], centers[bi, ri][:, None], active[bi], chunk_size, with_inertia=False,
                   with_dmin=True).dmin[:, 0]
    new = new.clone()
    new[bi, ri] = _reseed_empty(xe, valid[bi], new[bi, ri], counts[bi, ri], active[bi], dmin)
    return new


def _lloyd(x, x_sq, valid, active, centers, tol_b, max_iter, metric, chunk_size):
    """Lloyd iterations of R runs per element.

    Each iteration computes only the runs still moving: elements without any are dropped (their
    points copied out once per drop), the others' live runs are packed first, so an iteration's cost
    follows the element with the most live runs rather than all R.

    Args:
        centers: (B, R, k, D) initial centres (zeros for inactive clusters); tol_b: (B,).
    Returns:
        centers: (B, R, k, D) final centres (a run stops once its shift is within ``tol_b``);
        inertia: (B, R) float64 of each run's last assignment (to the centres before its last
        update, an upper bound of the final inertia; equal to it once a run's labels stop changing).
    """
    b, r = centers.shape[:2]
    done = torch.zeros(b, r, dtype=torch.bool, device=x.device)
    inertia = torch.full((b, r), float("inf"), dtype=torch.float64, device=x.device)
    elems = torch.arange(b, device=x.device)  # elements with live runs, and their data:
    xw, x_sqw, validw, activew, tolw = x, x_sq, valid, active, tol_b
    for _ in range(max_iter):
        keep = ~done[elems].all(dim=1)
        if not bool(keep.all()):
            elems, xw, x_sqw, validw, activew, tolw = (t[keep] for t in (elems, xw, x_sqw, validw, activew, tolw))
        rows = elems[:, None]
        n_live = int((~done[elems]).sum(dim=1).max())
        runs = torch.argsort(done[elems].to(torch.uint8), dim=1, stable=True)[:, :n_live]  # (B', L)
        live = ~done[rows, runs]
        cur = centers[rows, runs]
        step = _e_step(xw, x_sqw, validw, cur, activew, chunk_size, with_sums=True)
        new = torch.where((step.counts > 0)[..., None], step.sums / step.counts.clamp(min=1)[..., None], cur)
        if metric == "cosine":
            new = torch.nn.functional.normalize(new, dim=-1)
        empty_runs = (activew[:, None] & (step.counts == 0)).any(dim=-1) & live
        if bool(empty_runs.any()):
            new = _reseed_runs(xw, x_sqw, validw, activew, cur, new, step.counts, empty_runs, chunk_size)
        new = new.masked_fill(~activew[:, None, :, None], 0.0)
        shift = ((new - cur) ** 2).sum(dim=(2, 3))
        centers[rows, runs] = torch.where(live[..., None, None], new, cur)
        inertia[rows, runs] = torch.where(live, step.inertia, inertia[rows, runs])
        done[rows, runs] = ~live | (shift <= tolw[:, None])
        if bool(done.all()):
            break
    return centers, inertia
