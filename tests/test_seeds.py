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


def test_plot_draws_each_row_at_its_mean(tmp_path):
    import cv2
    import numpy as np

    from part_d2.evaluation.seeds import plot_seeds

    path = plot_seeds({"AP": {"one": [1.0, 1.0, 1.0], "three": [2.5, 3.0, 3.5]}}, str(tmp_path / "p.png"), "t")
    image = cv2.imread(path)[..., ::-1].astype(int)  # RGB
    bar = np.abs(image - np.array([0x8F, 0xB3, 0xD9])).sum(-1) < 12  # the bars' colour
    rows = np.flatnonzero(bar.any(1))
    bands = np.split(rows, np.flatnonzero(np.diff(rows) > 1) + 1)  # top bar ("one"), then "three"
    assert len(bands) == 2
    lengths = [int(bar[band].sum(1).max()) for band in bands]
    assert lengths[1] / lengths[0] == pytest.approx(3.0, rel=0.1)  # bars drawn from 0 to the mean
