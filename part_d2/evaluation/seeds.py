"""Statistics over training seeds: one rule for calling one result better than another.

A difference is claimed only when it exceeds the spread of the seeds: the gap of the two means
must be larger than the sum of the two sample standard deviations. Used by the OPS miniature and
the PartDistillation synthetic comparison alike.
"""
import statistics
from typing import Dict, Optional, Sequence, Tuple

HIGHER, LOWER, WITHIN, UNTESTABLE = "higher", "lower", "within spread", "one seed: not testable"


def mean_sd(values: Sequence[float]) -> Tuple[float, Optional[float]]:
    """(mean, sample standard deviation); the sd is None for a single value."""
    values = list(values)
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def compare(a: Tuple[float, Optional[float]], b: Tuple[float, Optional[float]]) -> str:
    """Verdict on ``a`` vs ``b`` (each ``(mean, sd)``): :data:`HIGHER` when mean_a - mean_b >
    sd_a + sd_b, :data:`LOWER` when mean_b - mean_a > sd_a + sd_b, else :data:`WITHIN`;
    :data:`UNTESTABLE` without a spread (one seed)."""
    (ma, sa), (mb, sb) = a, b
    if sa is None or sb is None:
        return UNTESTABLE
    spread = sa + sb
    return HIGHER if ma - mb > spread else LOWER if mb - ma > spread else WITHIN


def plot_seeds(values: Dict[str, Dict[str, Sequence[float]]], path: str, title: str = "", columns: int = 4) -> str:
    """One panel per metric (``columns`` per line): a horizontal bar per row at its mean over seeds,
    the sample sd as an error bar and each seed's value as a dot; written as a PNG to ``path``
    (returned).

    Args:
        values: {metric: {row label: per-seed values}}; rows keep their order, top to bottom.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = list(values)
    labels = list(dict.fromkeys(label for m in metrics for label in values[m]))
    cols = min(columns, len(metrics))
    lines = -(-len(metrics) // cols)
    fig, axes = plt.subplots(lines, cols, figsize=(3.2 * cols + 2.5, lines * (0.4 * len(labels) + 1.0) + 0.4),
                             sharey=True, squeeze=False)
    ys = list(range(len(labels)))[::-1]
    for ax in axes.flat[len(metrics):]:
        ax.set_visible(False)
    for ax, metric in zip(axes.flat, metrics):
        for y, label in zip(ys, labels):
            seeds = list(values[metric].get(label, []))
            if not seeds:
                continue
            mean, sd = mean_sd(seeds)
            ax.barh(y, mean, xerr=sd or 0, color="#8fb3d9", ecolor="#333333", capsize=3)
            ax.plot(seeds, [y] * len(seeds), "o", color="#1f3b5c", markersize=3)
        ax.set_title(metric, fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(axis="x", alpha=0.3)
    for row in axes:
        row[0].set_yticks(ys)
        row[0].set_yticklabels(labels, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
