"""Plumbing of the scale benchmarks (offline stages, streaming ranking) and of bench/gpu_check.py
at tiny sizes on CPU (no timing assertions)."""
import json
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))

import bench_offline_stages  # noqa: E402
import bench_streaming_ranking  # noqa: E402
import gpu_check  # noqa: E402

TINY_M2F = os.path.join(ROOT, "configs/synthetic/mask2former_R_tiny_agnostic.yaml")


def test_offline_stage_children_complete_each_stage(tmp_path):
    """Each stage's measurement (as its fresh process runs it) on 1 image + 1 warm-up, tiny model."""
    records = bench_offline_stages.write_images(str(tmp_path), 2, seed=0)
    assert len(json.loads(open(records).read())) == 2
    for stage in bench_offline_stages.STAGES:
        r = bench_offline_stages.child(stage, records, str(tmp_path / stage), "cpu", TINY_M2F, 0)
        assert r["complete"] and r["images"] == 1 and r["seconds"] > 0, stage
        assert r["peak_rss"] >= r["stage_peak_rss"] > 0 and r["output_bytes"] > 0
        assert os.path.isfile(tmp_path / stage / "manifest.json")
        assert (r["ranking_features"] > 0) if stage == "stage2" else r["ranking_features"] is None
    assert os.path.isfile(tmp_path / "stage2" / "part_centroids.npy")


def test_streaming_case_tiny(tmp_path):
    result = bench_streaming_ranking.run(scale=0.0005, workdir=str(tmp_path), fresh_processes=False)
    assert result["params"]["features"] == 5000 and result["params"]["classes"] == 5
    assert all(r["quality_ok"] for r in result["rows"])
    assert result["details"]["centroid_max_diff"] <= 1e-4
    assert os.listdir(tmp_path) == []  # shards and range files removed


def test_streaming_shards_are_seeded(tmp_path):
    bench_streaming_ranking.write_shards(str(tmp_path / "a"), 250, 3, seed=4)
    bench_streaming_ranking.write_shards(str(tmp_path / "b"), 250, 3, seed=4)
    (fa, ca), = list(bench_streaming_ranking.shard_chunks(str(tmp_path / "a"))())
    (fb, cb), = list(bench_streaming_ranking.shard_chunks(str(tmp_path / "b"))())
    assert fa.dtype == np.float16 and fa.shape == (250, 256) and ca.max() < 3
    np.testing.assert_array_equal(fa, fb)
    np.testing.assert_array_equal(ca, cb)


def test_gpu_check_plan_fits_ten_minutes(capsys):
    assert gpu_check.main(["--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "bench/run_all.py --device cuda" in out and "--scale gpu" in out
    assert sum(s["limit"] for s in gpu_check.plan("/w", tiny=False)) <= 560
    with pytest.raises(SystemExit):
        gpu_check.main(["--dry-run", "--steps", "env,nope"])


def test_gpu_check_tiny_runs_and_records_times(tmp_path):
    status = gpu_check.main(["--tiny", "--steps", "env,bench", "--output", str(tmp_path / "out"),
                             "--work", str(tmp_path / "work")])
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert status == 0, summary
    assert [s["name"] for s in summary["steps"]] == ["env", "bench"]
    assert all(s["rc"] == 0 and not s["timed_out"] and s["end"] >= s["start"] for s in summary["steps"])
    assert '"available"' in summary["steps"][0]["log_tail"]
    assert sorted(os.listdir(tmp_path / "out")) == ["bench_report.json", "bench_report.md", "logs.txt",
                                                    "summary.json", "summary.md"]
    assert "| bench |" in (tmp_path / "out" / "summary.md").read_text()


def test_gpu_check_step_past_its_limit_is_killed(tmp_path):
    step = {"name": "slow", "argv": [sys.executable, "-c", "import time; time.sleep(30)"], "limit": 1, "keep": {}}
    r = gpu_check.run_step(step, str(tmp_path / "slow.log"), dict(os.environ))
    assert r["timed_out"] and r["seconds"] < 10
