"""The two paper pipelines end to end at their "smoke" scale (a few iterations, the mini dataset):
every stage runs, the tables are complete, and a rerun resumes without redoing anything."""
import importlib.util
import json
import math
import os

import cv2
import pytest
from file_trees import file_tree

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _script(path: str, name: str):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _mtimes(root: str, suffix: str):
    """{path: mtime_ns} of the files under ``root`` ending with ``suffix``."""
    return {k: v[1] for k, v in file_tree(root, mtimes=True).items() if k.endswith(suffix)}


def test_ops_miniature_smoke_prints_tables_1_to_3_and_resumes(tmp_path):
    ops = _script("projects/OPS/run_miniature.py", "ops_miniature")
    out = str(tmp_path / "ops")
    rows = ops.main(["--scale", "smoke", "--output", out])
    labels = [(r["table"], r["row"]) for r in rows]
    assert labels[:2] == [("1", "class-aware training"), ("1", "class-agnostic training")]
    assert [label for t, label in labels if t == "2"] == [
        "none", "post (perfect)", "pre (perfect)", "pre+post (perfect)",
        "post (imperfect)", "pre (imperfect)", "pre+post (imperfect)"]
    assert [label for t, label in labels if t == "3"] == [
        "base (pre, imperfect)", "base, trained longer (control)", "+ SS", "+ ST", "+ SS + ST"]
    assert all(0 <= r["AP"] <= 100 and not math.isnan(r["mIoU"]) for r in rows)
    with open(os.path.join(out, "table.md")) as f:
        assert f.read().count("\n") == len(rows) + 2
    assert cv2.imread(os.path.join(out, "table.png")).shape[0] > 100
    weights = _mtimes(out, ".pth")
    assert len(weights) == 8  # aware, agnostic, pre x 2, control, SS, ST, SS+ST
    assert ops.main(["--scale", "smoke", "--output", out]) == rows
    assert ops.main(["--scale", "smoke", "--output", out, "--tables", "3"]) == [r for r in rows if r["table"] == "3"]
    assert _mtimes(out, ".pth") == weights


def test_part_distillation_smoke_reports_ar_and_miou_and_resumes(tmp_path):
    pd = _script("projects/PartDistillation/run_synthetic.py", "pd_synthetic")
    out = str(tmp_path / "pd")
    rows = pd.main(["--scale", "smoke", "--output", out])
    assert list(rows) == ["supervised (seen classes)", "PD stage 1b proposals", "PD stage 3 distilled"]
    for metrics in rows.values():
        ar = [metrics[f"AR@{k}"] for k in (1, 10, 50)]  # the same detection cap (50) for every model
        assert all(0 <= a <= 100 for a in ar) and ar == sorted(ar)  # recall cannot drop with more detections
        assert "AR@100" not in metrics
        assert 0 <= metrics["clustered_C-mIoU"] <= 100
    assert "mapped_C-mIoU" in rows["PD stage 3 distilled"]
    seed0 = os.path.join(out, "seed0")
    assert _mtimes(os.path.join(seed0, "collages"), ".png")
    for stage in ("pixel_groups", "ranked"):
        assert os.path.isfile(os.path.join(seed0, stage, "manifest.json"))
    with open(os.path.join(seed0, "baseline", "config.yaml")) as f:
        baseline = f.read()
    assert "objects/model_final.pth" in baseline and "MAX_ITER: 8" in baseline  # = proposals 4 + distill 4
    with open(os.path.join(out, "results.json")) as f:
        saved = json.load(f)
    assert saved["seeds"] == [0]
    assert saved["values"]["AR@10"] == {name: [m["AR@10"]] for name, m in rows.items()}
    assert cv2.imread(os.path.join(out, "results.png")).shape[0] > 100
    weights = _mtimes(out, ".pth")
    assert pd.main(["--scale", "smoke", "--output", out]) == rows
    assert _mtimes(out, ".pth") == weights


def test_ops_miniature_orderings_need_a_gap_beyond_the_spread():
    ops = _script("projects/OPS/run_miniature.py", "ops_miniature")
    labels = [b for _, a, b in ops.ORDERINGS] + [a for _, a, b in ops.ORDERINGS]

    def seed_rows(ap):  # every row AP 1.0 except those given
        return [{"table": "x", "row": label, "AP": ap.get(label, 1.0), "AP50": 0.0, "mIoU": 0.0, "mACC": 0.0}
                for label in dict.fromkeys(labels)]

    # class-agnostic: 2.0, 2.2, 2.4 (mean 2.2, sd 0.2); class-aware: 1.0 (sd 0) -> gap 1.2 > 0.2
    # pre (perfect): 0.9, 1.0, 1.3 (mean 1.0667, sd 0.2082) vs none 1.0 -> gap 0.0667 within spread
    per_seed = [seed_rows({"class-agnostic training": v, "pre (perfect)": p}) for v, p in
                [(2.0, 0.9), (2.2, 1.0), (2.4, 1.3)]]
    rows = ops.aggregate(per_seed)
    by_row = {r["row"]: r for r in rows}
    assert by_row["class-agnostic training"]["AP"] == pytest.approx(2.2)
    assert by_row["class-agnostic training"]["AP_sd"] == pytest.approx(0.2)
    verdicts = {o["ordering"]: o["verdict"] for o in ops.check_orderings(rows)}
    assert verdicts["Table 1: class-agnostic > class-aware"] == "reproduced"
    assert verdicts["Table 2: pre > none (perfect)"] == "within spread"
    assert "1.07 ± 0.21" in ops.markdown_table(rows)
    one = ops.check_orderings(ops.aggregate(per_seed[:1]))
    assert {o["verdict"] for o in one} == {"one seed: not testable"}


def test_part_distillation_seed_table_marks_gaps_beyond_the_spread():
    pd = _script("projects/PartDistillation/run_synthetic.py", "pd_synthetic")
    base, dist = "supervised (seen classes)", "PD stage 3 distilled"
    per_seed = [{base: {"AR@1": b, "AR@10": 1.0}, dist: {"AR@1": d, "AR@10": 1.1 + 0.3 * (i - 1)}}
                for i, (b, d) in enumerate([(1.0, 2.0), (1.1, 2.1), (0.9, 1.9)])]
    summary = pd.summarize(per_seed, ("AR@1", "AR@10"))
    assert summary[dist]["AR@1"][0] == 2.0 and abs(summary[dist]["AR@1"][1] - 0.1) < 1e-9
    text = pd.table(summary, ("AR@1", "AR@10"), [0, 1, 2])
    assert "2.00 +- 0.10" in text
    assert "AR@1: higher; AR@10: within spread" in text  # 1.1 +- 0.3 vs 1.0 +- 0.0


def test_ops_miniature_paired_differences_by_hand():
    ops = _script("projects/OPS/run_miniature.py", "ops_miniature")
    base, ss = "base (pre, imperfect)", "+ SS"

    def seed_rows(b, s):
        return [{"table": "3", "row": label, "AP": ap, "AP50": 0.0, "mIoU": ap, "mACC": 0.0}
                for label, ap in ((base, b), (ss, s))]

    # AP: base 4.0, 5.0, 9.0 (unpaired sd 2.65); + SS 4.3, 5.2, 9.4 -> differences 0.3, 0.2, 0.4:
    # mean 0.3 > sd 0.1 although the unpaired gap (0.3) is far inside the spread
    rows = ops.aggregate([seed_rows(4.0, 4.3), seed_rows(5.0, 5.2), seed_rows(9.0, 9.4)])
    paired = {(p["row"], p["metric"]): p for p in ops.paired_differences(rows)}
    ap = paired[(ss, "AP")]
    assert ap["reference"] == base and ap["differences"] == pytest.approx([0.3, 0.2, 0.4])
    assert ap["mean"] == pytest.approx(0.3) and ap["sd"] == pytest.approx(0.1) and ap["verdict"] == "higher"
    assert paired[(ss, "AP50")]["verdict"] == "within spread"  # 0 +- 0: no difference
    assert {p["row"] for p in paired.values()} == {ss}  # pairs whose rows were not run are left out
    one = ops.paired_differences(ops.aggregate([seed_rows(4.0, 4.3)]))
    assert {p["verdict"] for p in one} == {"one seed: not testable"}
