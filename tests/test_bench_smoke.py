"""Smoke tests of the bench/ performance suite at a tiny scale (no timing assertions)."""
import json
import os
import sys

import pytest
import torch

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")
sys.path.insert(0, BENCH)

import bench_classifier_memory  # noqa: E402
import run_all  # noqa: E402
from common import interleaved_self_timed, ratio_row, speedup_row  # noqa: E402

TINY_M2F = "configs/synthetic/mask2former_R_tiny_agnostic.yaml"


def test_rows_hand_computed():
    row = speedup_row("m", "s", baseline=30.0, part_d2=2.0, target=10.0, quality="q", quality_ok=True)
    assert row["value"] == 15.0 and row["met"] is True
    assert speedup_row("m", "s", 30.0, 2.0, 10.0, quality_ok=False)["met"] is False
    row = ratio_row("m", "MiB", baseline=1000.0, part_d2=25.0, target=1 / 50)
    assert row["value"] == 0.025 and row["met"] is False
    assert ratio_row("m", "s", None, 1.0, 1.0)["met"] is None


def test_runner_tiny_scale(tmp_path):
    cases = ["pixel_grouping", "part_ranking", "mask2former", "ss_loss", "evaluator"]
    threads = torch.get_num_threads()
    try:
        status = run_all.main(["--scale", "0.01", "--cases", ",".join(cases), "--pg-channels", "16",
                               "--m2f-config", TINY_M2F, "--output", str(tmp_path), "--threads", "1"])
    finally:
        torch.set_num_threads(threads)
    assert status == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert [c["case"] for c in report["cases"]] == cases
    assert report["scale"] == 0.01 and report["environment"]["torch_threads"] == 1
    by_name = {c["case"]: c for c in report["cases"]}
    for case in report["cases"]:
        assert "error" not in case
        for row in case["rows"]:
            assert row["part_d2"] > 0
    assert by_name["pixel_grouping"]["params"]["instances"] == 1
    assert by_name["part_ranking"]["params"]["classes"] == 10
    assert by_name["evaluator"]["params"]["images"] == 10
    for name in ("pixel_grouping", "part_ranking", "evaluator"):
        assert all(r["quality_ok"] for r in by_name[name]["rows"]), name
    assert abs(by_name["part_ranking"]["details"]["inertia_gap"]) < 0.01
    # reduced Mask2Former sizes have no reference figure to compare with
    assert all(r["baseline"] is None and r["met"] is None for r in by_name["mask2former"]["rows"])
    md = (tmp_path / "report.md").read_text()
    for case in report["cases"]:
        assert f"## {case['title']}" in md
    assert md.count("| Measurement | Baseline | part_d2 |") == len(cases)


def test_runner_reports_failing_case(tmp_path):
    status = run_all.main(["--scale", "0.01", "--cases", "mask2former,evaluator", "--m2f-config",
                           str(tmp_path / "missing.yaml"), "--output", str(tmp_path)])
    assert status == 1
    report = json.loads((tmp_path / "report.json").read_text())
    assert "missing.yaml" in report["cases"][0]["error"]
    assert report["cases"][1]["rows"][0]["quality_ok"]
    assert "**failed**" in (tmp_path / "report.md").read_text()


def test_runner_rejects_unknown_case(tmp_path):
    with pytest.raises(SystemExit):
        run_all.main(["--cases", "evaluator,nope", "--output", str(tmp_path)])


def test_classifier_memory_child_dense_equals_gathered():
    dense = bench_classifier_memory.child("dense", "forward", 2000, "cpu", 0)
    gathered = bench_classifier_memory.child("gathered", "forward", 2000, "cpu", 0)
    assert dense["loss"] == pytest.approx(gathered["loss"], rel=1e-5)
    # dense logits: 8 x 200 x 16,000 float32 = 100 MiB; gathered: 8 x 200 x 9
    assert dense["peak_extra_bytes"] > 50 * 2**20
    assert gathered["peak_extra_bytes"] < dense["peak_extra_bytes"] / 10


def test_interleaved_self_timed_takes_the_returned_seconds():
    calls = []
    fns = {"a": lambda: calls.append("a") or 3.0 - len(calls) % 2, "b": lambda: calls.append("b") or 7.0}
    times = interleaved_self_timed(fns, iters=3, warmup=1)
    assert calls == ["a", "b"] * 4  # alternating, warm-up included
    assert times == {"a": 2.0, "b": 7.0}  # a's timed calls return 3, 2, 2 (calls 3, 5, 7)


def test_fce_evaluator_tiny_scale():
    pytest.importorskip("faster_coco_eval")
    import bench_fce_evaluator

    result = bench_fce_evaluator.run(scale=0.01, iters=1)
    assert result["params"]["coco_images"] == 10 and result["params"]["lvis_images"] == 5
    assert len(result["rows"]) == 4 and all(r["quality_ok"] and r["part_d2"] > 0 for r in result["rows"])
    coco, lvis = result["details"]["coco"], result["details"]["lvis"]
    assert coco["fce_diff"]["other"] == 0 and coco["fce_diff"]["arrays"] <= 2.3e-16
    # without empty masks faster-coco-eval's LVIS mode agrees with part_d2 (= LVISEval) but for the last bit
    clean = lvis["fce_diff_without_empty_masks"]
    assert clean["other"] == 0 and clean["arrays"] <= 2.3e-16 and clean["same_missing"]


def test_fce_differences_and_empty_mask_filter():
    pytest.importorskip("faster_coco_eval")
    import bench_evaluator
    import bench_fce_evaluator

    from part_d2.evaluation import EvalParams, evaluate_coco, summarize

    gt, dets = bench_evaluator.make_data(3, 20, 16, seed=1)
    ours = evaluate_coco(gt, dets, EvalParams(use_cats=False, max_dets=bench_evaluator.MAX_DETS))
    ev, seconds = bench_fce_evaluator.run_fce(gt, dets, lvis_style=False)
    assert seconds > 0
    arrays = {"precision": ours.precision, "recall": ours.recall}
    stats = summarize(ours)
    keys = bench_fce_evaluator.COCO_KEYS
    diff = bench_fce_evaluator.differences(arrays, stats, ev, keys)
    # seed 1: faster-coco-eval has precision 1.0 where pycocotools and part_d2 have 1 - 2**-52
    assert diff["last_bit"] > 0 and diff["other"] == 0 and diff["arrays"] == 2.0**-52
    assert diff["summary"] < 1e-12 and diff["same_missing"]
    changed = dict(arrays, recall=ours.recall + 0.25 * (ours.recall > -1))
    diff = bench_fce_evaluator.differences(changed, dict(stats, AP=stats["AP"] + 1), ev, keys)
    assert diff["arrays"] == 0.25 and diff["other"] == (ours.recall > -1).sum()
    assert diff["summary"] == pytest.approx(1.0)
    before_gt, before_dets = bench_fce_evaluator._without_empty_masks(gt, dets)
    empty = {"size": [16, 16], "counts": "P8"}  # 256 background pixels
    gt["annotations"].append(dict(gt["annotations"][0], id=999, area=0.0, segmentation=empty))
    dets.append(dict(dets[0], segmentation=empty))
    kept_gt, kept_dets = bench_fce_evaluator._without_empty_masks(gt, dets)
    assert kept_gt["annotations"] == before_gt["annotations"] and kept_dets == before_dets
