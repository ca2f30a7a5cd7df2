"""One ``tools/train_net.py`` run executes PartDistillation's stages 1a (before training) and 2
(after training) as hooks and continues into stage 3, with the same output bytes as the stage
tools, and resumes without rewriting anything."""
import os
import subprocess
import sys

import pytest
import torch
from file_trees import file_tree

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OBJECTS_CFG = "configs/synthetic/pd_objects_R_tiny.yaml"
PROPOSALS_CFG = "configs/synthetic/pd_proposals_R_tiny.yaml"
DISTILL_CFG = "configs/synthetic/pd_distill_R_tiny.yaml"
POOL = "synthetic_parts_mini_val_objects"  # 12 images with objects
COMMON = ["MODEL.DEVICE", "cpu", "SEED", "0", "PART_DISTILLATION.SHARD_SIZE", "4", "DATASETS.TEST", "()",
          "PART_DISTILLATION.PIXEL_GROUPING.KMEANS_N_INIT", "2", "PART_DISTILLATION.NUM_PART_MODES", "2",
          "PART_DISTILLATION.RANKING.KMEANS_N_INIT", "2", "SOLVER.IMS_PER_BATCH", "2"]
TRAIN = ["SOLVER.MAX_ITER", "2", "SOLVER.STEPS", "(1,)"]


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    from part_d2.data.builtin import MINI_NUM_IMAGES
    from part_d2.data.synthetic import ensure_synthetic_parts
    from part_d2.engine.setup import load_config
    from part_d2.engine.trainer import build_part_model

    base = tmp_path_factory.mktemp("hooks")
    ensure_synthetic_parts(str(base / "datasets" / "synthetic_parts_mini"), num_images=MINI_NUM_IMAGES)
    torch.manual_seed(0)
    weights = base / "objects.pth"
    torch.save({"model": build_part_model(load_config(OBJECTS_CFG, ["MODEL.DEVICE", "cpu"])).state_dict()}, weights)
    return {"base": base, "weights": str(weights),
            "env": dict(os.environ, DETECTRON2_DATASETS=str(base / "datasets"), OMP_NUM_THREADS="1")}


def run(setting, tool, *argv) -> str:
    proc = subprocess.run([sys.executable, f"tools/{tool}.py", *argv], cwd=ROOT, env=setting["env"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{tool} failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
    return proc.stdout + proc.stderr


def results(folder):
    """{relative path: bytes} of a stage output, without lock files."""
    return {k: v for k, v in file_tree(str(folder)).items() if not os.path.basename(k).startswith(".lock")}


def test_hook_driven_run_writes_the_tool_driven_pseudo_labels_and_resumes(setting):
    tools, hooks = setting["base"] / "tools", setting["base"] / "hooks"
    # tool-driven: stage 1a tool, stage 1b training, stage 2 tool
    groups = f"('pd_groups:{tools / 'groups'}',)"
    run(setting, "pd_pixel_grouping", "--config-file", OBJECTS_CFG, "--dataset", POOL, "--output",
        str(tools / "groups"), "MODEL.WEIGHTS", setting["weights"], "OUTPUT_DIR", str(tools / "logs"), *COMMON)
    run(setting, "train_net", "--config-file", PROPOSALS_CFG, "MODEL.WEIGHTS", setting["weights"],
        "DATASETS.PART_JSONS", groups, "OUTPUT_DIR", str(tools / "proposals"), *COMMON, *TRAIN)
    run(setting, "pd_rank_parts", "--config-file", PROPOSALS_CFG, "--dataset", "pd_groups_agnostic", "--output",
        str(tools / "ranked"), "MODEL.WEIGHTS", str(tools / "proposals" / "model_final.pth"),
        "DATASETS.PART_JSONS", groups, "OUTPUT_DIR", str(tools / "logs"), *COMMON)
    # hook-driven: one train_net run, stage 1a -> 1b -> 2 -> stage 3
    hook_argv = ["--config-file", PROPOSALS_CFG, "MODEL.WEIGHTS", setting["weights"],
                 "OUTPUT_DIR", str(hooks / "proposals"), *COMMON, *TRAIN,
                 "PIPELINE.GROUPING.INPUT", POOL, "PIPELINE.GROUPING.OUTPUT", str(hooks / "groups"),
                 "PIPELINE.GROUPING.PREFIX", "pd_groups",
                 "PIPELINE.RANKING.INPUT", "pd_groups_agnostic", "PIPELINE.RANKING.OUTPUT", str(hooks / "ranked"),
                 "PIPELINE.RANKING.PREFIX", "pd_ranked", "PIPELINE.NEXT_CONFIG", DISTILL_CFG,
                 "PIPELINE.NEXT_OPTS", str(["OUTPUT_DIR", str(hooks / "distill"),
                                           "PART_DISTILLATION.NUM_PART_MODES", "2",
                                           "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "2"] + COMMON + TRAIN)]
    run(setting, "train_net", *hook_argv)
    for stage in ("groups", "ranked"):  # the stage tool's lock file (.lock-job0) is no output
        ours, theirs = results(hooks / stage), results(tools / stage)
        assert ours == theirs, f"{stage}: {sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))}"
    assert {"part_centroids.npy", "part_centroids.json", "manifest.json"} <= set(file_tree(str(hooks / "ranked")))
    assert os.path.isfile(hooks / "distill" / "model_final.pth")  # stage 3 trained on the ranked labels
    # resume: every stage is complete, nothing is rewritten
    before = {stage: file_tree(str(hooks / stage), mtimes=True) for stage in ("groups", "ranked")}
    log = run(setting, "train_net", "--resume", *hook_argv)
    assert "stage already complete, nothing rewritten" in log
    assert {stage: file_tree(str(hooks / stage), mtimes=True) for stage in ("groups", "ranked")} == before


def test_ops_pseudo_label_hook_writes_the_tool_bytes(setting):
    """OPS: base training with the pseudo-label hook gives the bytes of generate_pseudo_labels.py
    run on its final weights."""
    out = setting["base"] / "ops"
    opts = ["MODEL.DEVICE", "cpu", "SEED", "0", "DATASETS.TEST", "()", "SOLVER.IMS_PER_BATCH", "2",
            "DATASETS.TRAIN", "('synthetic_parts_mini_train_agnostic',)", "MODEL.OPS.PSEUDO_LABEL.SCORE_THRESH", "0.0"]
    run(setting, "train_net", "--config-file", "configs/synthetic/mask2former_R_tiny_agnostic.yaml", *opts, *TRAIN,
        "OUTPUT_DIR", str(out / "base"), "PIPELINE.PSEUDO_LABELS.INPUT", "synthetic_parts_mini_val_agnostic",
        "PIPELINE.PSEUDO_LABELS.OUTPUT", str(out / "hook"), "PIPELINE.PSEUDO_LABELS.PREFIX", "pseudo")
    run(setting, "generate_pseudo_labels", "--config-file", "configs/synthetic/mask2former_R_tiny_agnostic.yaml",
        "--dataset", "synthetic_parts_mini_val_agnostic", "--output", str(out / "tool"), *opts,
        "OUTPUT_DIR", str(out / "logs"), "MODEL.WEIGHTS", str(out / "base" / "model_final.pth"))
    hook, tool = results(out / "hook"), results(out / "tool")
    assert list(hook) == ["pseudo_labels.json"] and hook == tool
    assert b'"annotations": [{' in hook["pseudo_labels.json"] or b'"annotations":[{' in hook["pseudo_labels.json"]
