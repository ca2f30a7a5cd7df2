"""Statistics over training seeds: one rule for calling one result better than another.

A difference is claimed only when it exceeds the spread of the seeds: the gap of the two means
must be larger than the sum of the two sample standard deviations. Used by the OPS miniature and
the PartDistillation synthetic comparison alike.
"""
import statistics
from typing import Optional, Sequence, Tuple

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
