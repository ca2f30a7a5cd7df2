"""Bottom-up part baselines of the OPS paper: SLIC, Normalized Cut and Felzenszwalb.

Each baseline segments the pixels of one object (its mask) into regions with scikit-image and
returns them as part masks (N, H, W) bool, to be scored with oracle labels by
:mod:`part_d2.evaluation.semantic_metrics` exactly as the model's parts are. All regions lie inside
the object mask; regions are ordered by their first pixel in raster order. Every baseline is
deterministic: SLIC and Felzenszwalb are, and NCut solves its eigen-problems densely by default.

NCut solvers. ``solver="dense"`` (default) runs :func:`dense_normalized_cut`, the recursive two-way
normalized cut of scikit-image's ``cut_normalized`` (same graph with its unit self-edges, same
``thresh`` and ``num_cuts`` threshold search) with ``numpy.linalg.eigh`` instead of ARPACK.
``solver="arpack"`` calls ``cut_normalized`` itself; measured with scikit-image 0.24 / SciPy's
ARPACK it is not reproducible (the cut of an image depends on which images were cut before it, on
8 of the first 30 synthetic test images) and it can stop with ARPACK's "starting vector is zero"
(9 of the first 120 synthetic test images); such an image then falls back to the dense solver,
counted in ``stats["ncut_fallbacks"]`` and logged.

``PARAM_GRIDS`` names the one parameter per baseline that controls its number of segments and
the values tried when the parameters are tuned to a segment count (see
``tools/eval_superpixel_baselines.py --tune-dataset``).
"""
import logging
from typing import Dict, MutableMapping, Optional

import numpy as np
from scipy.sparse.csgraph import connected_components
from scipy.sparse.linalg import ArpackError
from skimage.graph import cut_normalized, rag_mean_color
from skimage.segmentation import felzenszwalb, slic

logger = logging.getLogger(__name__)

BASELINES = ("slic", "ncut", "felzenszwalb")
# baseline -> (parameter controlling the number of segments, values tried by the tuning)
PARAM_GRIDS = {
    "slic": ("n_segments", (2, 3, 4, 5, 6, 8, 10, 12, 16, 20)),
    # NCut's count follows its SLIC over-segmentation: on flat-coloured regions the similarity
    # weights between regions are ~0, so even thresh 1e-12 cuts nearly every such boundary
    "ncut": ("n_segments", (5, 10, 15, 20, 30, 40, 60, 100)),
    "felzenszwalb": ("scale", (25.0, 50.0, 100.0, 200.0, 400.0, 800.0, 1600.0, 3200.0)),
}


def _check(image: np.ndarray, object_mask: np.ndarray):
    image = np.asarray(image)
    mask = np.asarray(object_mask, dtype=bool)
    if image.ndim != 3 or image.shape[:2] != mask.shape:
        raise ValueError(
            f"expected an (H, W, 3) image and an (H, W) object mask, got {image.shape} and {mask.shape}"
        )
    return image, mask


def labels_to_masks(labels: np.ndarray, object_mask: np.ndarray) -> np.ndarray:
    """Regions of a label map restricted to the object.

    Args:
        labels: (H, W) int region ids (any values).
        object_mask: (H, W) bool.
    Returns:
        (N, H, W) bool, one mask per region id present inside the object, in raster order of the
        regions' first pixels.
    """
    inside = labels[object_mask]
    _, first = np.unique(inside, return_index=True)
    ids = inside[np.sort(first)]
    if len(ids) == 0:
        return np.zeros((0,) + labels.shape, dtype=bool)
    return (labels[None] == ids[:, None, None]) & object_mask[None]


def slic_parts(
    image: np.ndarray, object_mask: np.ndarray, n_segments: int = 10, compactness: float = 10.0, sigma: float = 1.0
) -> np.ndarray:
    """SLIC superpixels inside the object mask.

    Args:
        image: (H, W, 3) RGB, uint8 or float in [0, 1].
        object_mask: (H, W) bool.
        n_segments: approximate number of superpixels in the object.
        compactness, sigma: ``skimage.segmentation.slic`` parameters.
    Returns:
        (N, H, W) bool part masks.
    """
    image, mask = _check(image, object_mask)
    if not mask.any():
        return np.zeros((0,) + mask.shape, dtype=bool)
    labels = slic(image, n_segments=n_segments, compactness=compactness, sigma=sigma, mask=mask, start_label=1)
    return labels_to_masks(labels, mask & (labels > 0))


def felzenszwalb_parts(
    image: np.ndarray, object_mask: np.ndarray, scale: float = 100.0, sigma: float = 0.8, min_size: int = 50
) -> np.ndarray:
    """Felzenszwalb graph segmentation of the image, cut to the object mask.

    The segmentation runs on the whole image (the algorithm takes no mask); each segment's part
    inside the object is one part.

    Args:
        image: (H, W, 3) RGB; object_mask: (H, W) bool.
        scale, sigma, min_size: ``skimage.segmentation.felzenszwalb`` parameters.
    Returns:
        (N, H, W) bool part masks.
    """
    image, mask = _check(image, object_mask)
    labels = felzenszwalb(image, scale=scale, sigma=sigma, min_size=min_size)
    return labels_to_masks(labels, mask)


def _min_ncut(ev: np.ndarray, weights: np.ndarray, num_cuts: int):
    """Best of ``num_cuts`` thresholds of the indicator ``ev`` (m,) by normalized-cut cost.

    Returns:
        (mask (m,) bool, cost); cost is inf when ``ev`` is constant.
    """
    best, best_cost = np.zeros(len(ev), dtype=bool), np.inf
    if np.allclose(ev.min(), ev.max()):
        return best, best_cost
    degree = weights.sum(axis=1)
    for t in np.linspace(ev.min(), ev.max(), num_cuts, endpoint=False):
        mask = ev > t
        cut = weights[mask][:, ~mask].sum()
        cost = cut / degree[mask].sum() + cut / degree[~mask].sum()
        if cost < best_cost:
            best, best_cost = mask, cost
    return best, best_cost


def dense_normalized_cut(weights: np.ndarray, thresh: float = 0.001, num_cuts: int = 10) -> np.ndarray:
    """Recursive two-way normalized cut (Shi & Malik 2000) of a small graph, solved densely.

    The procedure of scikit-image's ``cut_normalized`` with a dense eigen-solver. Disconnected
    parts of a (sub)graph (cut cost 0) are separated first; a connected subgraph of more than two
    nodes is cut along the second-smallest eigenvector of ``D^-1/2 (D - W) D^-1/2``
    (``numpy.linalg.eigh``, deterministic) at the best of ``num_cuts`` thresholds, and cut again
    while the cost is below ``thresh`` (as ``cut_normalized`` does).

    Args:
        weights: (m, m) symmetric non-negative edge weights (0: no edge; the diagonal holds
            self-edges, which count in the degrees but are never cut).
    Returns:
        (m,) int64 segment id per node, ``0 .. S-1``.
    """
    labels = np.full(len(weights), -1, dtype=np.int64)
    pending = [np.arange(len(weights))]
    next_label = 0
    while pending:
        idx = pending.pop()
        w = weights[np.ix_(idx, idx)]
        n_comp, comp = connected_components(w > 0, directed=False)
        if n_comp > 1:
            pending += [idx[comp == c] for c in range(n_comp)]
            continue
        if len(idx) > 2:
            d = w.sum(axis=1)
            inv_sqrt = 1.0 / np.sqrt(d)
            _, vectors = np.linalg.eigh(inv_sqrt[:, None] * (np.diag(d) - w) * inv_sqrt[None])
            mask, cost = _min_ncut(vectors[:, 1], w, num_cuts)
            if cost < thresh:
                pending += [idx[mask], idx[~mask]]
                continue
        labels[idx] = next_label
        next_label += 1
    return labels


def _rag_weights(rag, max_edge: float = 1.0):
    """Nodes (sorted) and their dense (m, m) weights, with ``cut_normalized``'s self-edges.

    ``cut_normalized`` adds an edge of weight ``max_edge`` (the weight between identical regions)
    from each node to itself before cutting; so does this.
    """
    nodes = sorted(rag.nodes)
    index = {n: i for i, n in enumerate(nodes)}
    weights = np.eye(len(nodes)) * max_edge
    for u, v, data in rag.edges(data=True):
        if u != v:
            weights[index[u], index[v]] = weights[index[v], index[u]] = data["weight"]
    return np.asarray(nodes), weights


def ncut_parts(
    image: np.ndarray,
    object_mask: np.ndarray,
    n_segments: int = 100,
    compactness: float = 10.0,
    thresh: float = 0.001,
    num_cuts: int = 10,
    solver: str = "dense",
    seed: Optional[int] = 0,
    stats: Optional[MutableMapping[str, int]] = None,
) -> np.ndarray:
    """Normalized Cut of a SLIC over-segmentation's region adjacency graph, inside the object.

    SLIC superpixels of the object become the nodes of a mean-colour similarity RAG, which is
    partitioned recursively (see the module docstring for the two solvers).

    Args:
        image: (H, W, 3) RGB; object_mask: (H, W) bool.
        n_segments, compactness: SLIC over-segmentation parameters.
        thresh, num_cuts: ``cut_normalized`` parameters (``thresh``: a (sub)graph is cut while the
            best cut costs less; higher gives more segments).
        solver: "dense" (deterministic) or "arpack" (scikit-image's ``cut_normalized``).
        seed: "arpack": seed of the eigen-solver's start vector.
        stats: optional counter of "arpack" fallbacks.
    Returns:
        (N, H, W) bool part masks.
    """
    if solver not in ("dense", "arpack"):
        raise ValueError(f"unknown NCut solver {solver!r}; expected 'dense' or 'arpack'")
    image, mask = _check(image, object_mask)
    if not mask.any():
        return np.zeros((0,) + mask.shape, dtype=bool)
    labels = slic(image, n_segments=n_segments, compactness=compactness, mask=mask, start_label=1)
    inside = mask & (labels > 0)
    if len(np.unique(labels[inside])) < 2:
        return labels_to_masks(labels, inside)
    rag = rag_mean_color(image, labels, mode="similarity")
    if 0 in rag:
        rag.remove_node(0)
    if solver == "arpack":
        try:
            cut = cut_normalized(labels, rag, thresh=thresh, num_cuts=num_cuts, in_place=False,
                                 rng=np.random.default_rng(seed))
            return labels_to_masks(cut, inside)
        except ArpackError as e:
            if stats is not None:
                stats["ncut_fallbacks"] = stats.get("ncut_fallbacks", 0) + 1
            logger.info("NCut: scikit-image's cut failed (%s); used the dense solver", e)
    nodes, weights = _rag_weights(rag)
    lut = np.zeros(labels.max() + 1, dtype=np.int64)
    lut[nodes] = dense_normalized_cut(weights, thresh, num_cuts) + 1
    return labels_to_masks(lut[labels], inside)


def baseline_parts(
    name: str,
    image: np.ndarray,
    object_mask: np.ndarray,
    stats: Optional[MutableMapping[str, int]] = None,
    **kwargs,
) -> np.ndarray:
    """Run the baseline ``name`` ("slic", "ncut" or "felzenszwalb"); (N, H, W) bool part masks.

    ``kwargs`` are the baseline's parameters; ``stats`` counts NCut fallbacks.
    """
    funcs = {"slic": slic_parts, "ncut": ncut_parts, "felzenszwalb": felzenszwalb_parts}
    if name not in funcs:
        raise ValueError(f"unknown baseline {name!r}; expected one of {BASELINES}")
    if name == "ncut":
        kwargs["stats"] = stats
    return funcs[name](image, object_mask, **kwargs)


def closest_to_target(mean_segments: Dict[float, float], target: float) -> float:
    """The parameter value whose mean segment count is closest to ``target`` (first on ties).

    Args:
        mean_segments: {parameter value: mean segments per object}, in grid order.
    """
    return min(mean_segments, key=lambda v: abs(mean_segments[v] - target))
