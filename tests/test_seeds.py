"""The one rule for claiming a difference over seeds (part_d2/evaluation/seeds.py)."""
import pytest

from part_d2.evaluation.seeds import HIGHER, LOWER, UNTESTABLE, WITHIN, compare, mean_sd


def test_mean_and_sample_sd_by_hand():
    mean, sd = mean_sd([2.0, 2.2, 2.4])  # deviations -0.2, 0, 0.2: variance 0.08 / 2 = 0.04
    assert mean == pytest.approx(2.2) and sd == pytest.approx(0.2)
    assert mean_sd([5.0]) == (5.0, None)


def test_gap_must_exceed_the_sum_of_the_sds():
    assert compare((2.2, 0.2), (1.0, 0.0)) == HIGHER  # gap 1.2 > 0.2
    assert compare((1.0, 0.0), (2.2, 0.2)) == LOWER
    assert compare((1.25, 0.1), (1.0, 0.15)) == WITHIN  # gap 0.25 = spread 0.25: not beyond it
    assert compare((1.3, 0.1), (1.0, 0.15)) == HIGHER  # gap 0.3 > 0.25
    assert compare((9.0, None), (1.0, None)) == UNTESTABLE  # one seed has no spread
