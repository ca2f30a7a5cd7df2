"""The PartDistillation stage tools from the command line: a run killed with SIGKILL at a random
moment and rerun gives the bytes of an uninterrupted run, two processes give the bytes of one,
and rerunning a finished stage rewrites nothing."""
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from file_trees import file_tree

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OBJECTS_CFG = "configs/synthetic/pd_objects_R_tiny.yaml"
PROPOSALS_CFG = "configs/synthetic/pd_proposals_R_tiny.yaml"
DATASET = "synthetic_parts_mini_val_objects"  # 12 images


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    """A tmp DETECTRON2_DATASETS with the mini synthetic dataset, and seeded random weights of the
    tiny object model (stage 0 detector and stage 1a backbone)."""
    from part_d2.data.builtin import MINI_NUM_IMAGES
    from part_d2.data.synthetic import ensure_synthetic_parts
    from part_d2.engine.setup import load_config
    from part_d2.engine.trainer import build_part_model

    base = tmp_path_factory.mktemp("offline")
    datasets = base / "datasets"
    ensure_synthetic_parts(str(datasets / "synthetic_parts_mini"), num_images=MINI_NUM_IMAGES)
    torch.manual_seed(0)
    model = build_part_model(load_config(OBJECTS_CFG, ["MODEL.DEVICE", "cpu"]))
    weights = base / "objects.pth"
    torch.save({"model": model.state_dict()}, weights)
    return {"datasets": str(datasets), "weights": str(weights), "base": base}


def _command(setting, tool, config, output, opts, num_gpus=1):
    cmd = [sys.executable, f"tools/{tool}.py", "--config-file", config, "--dataset", DATASET, "--output", output]
    if num_gpus > 1:
        cmd += ["--num-gpus", str(num_gpus), "--dist-url", "auto"]
    return cmd + ["OUTPUT_DIR", str(setting["base"] / "logs"), "MODEL.DEVICE", "cpu",
                  "MODEL.WEIGHTS", setting["weights"], "PART_DISTILLATION.SHARD_SIZE", "1", *opts]


def _env(setting):
    return dict(os.environ, DETECTRON2_DATASETS=setting["datasets"], OMP_NUM_THREADS="1")


def run_tool(setting, tool, config, output, opts, num_gpus=1) -> str:
    proc = subprocess.run(_command(setting, tool, config, output, opts, num_gpus), cwd=ROOT, env=_env(setting),
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise AssertionError(f"{tool} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc.stdout + proc.stderr


def run_killed(setting, tool, config, output, opts, first_file: str) -> float:
    """Start the tool, SIGKILL it at a random moment after ``first_file`` appears; returns the delay."""
    proc = subprocess.Popen(_command(setting, tool, config, output, opts), cwd=ROOT, env=_env(setting),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = os.path.join(output, first_file)
    deadline = time.time() + 240
    while not os.path.exists(first) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    delay = random.uniform(0.0, 0.3)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert os.path.exists(first), f"{tool} ended before writing {first}"
    assert not os.path.exists(os.path.join(output, "manifest.json")), f"{tool} finished before the kill"
    return delay


GROUPING = ["PART_DISTILLATION.PIXEL_GROUPING.IMAGE_SIZE", "160", "PART_DISTILLATION.PIXEL_GROUPING.KMEANS_N_INIT", "2"]


def test_pixel_grouping_killed_resumed_with_two_processes(setting):
    clean, killed = str(setting["base"] / "pg_clean"), str(setting["base"] / "pg_killed")
    run_tool(setting, "pd_pixel_grouping", OBJECTS_CFG, clean, GROUPING)
    delay = run_killed(setting, "pd_pixel_grouping", OBJECTS_CFG, killed, GROUPING, "shards/shard-00000.json")
    log = run_tool(setting, "pd_pixel_grouping", OBJECTS_CFG, killed, GROUPING, num_gpus=2)
    assert "resuming" in log and "stage complete (12 shards, 12 images)" in log
    assert file_tree(killed) == file_tree(clean), f"killed after {delay:.2f} s"
    assert len([k for k in file_tree(clean) if k.startswith("shards/")]) == 12


OBJECTS = ["PART_DISTILLATION.OBJECT_MASKS.VOCABULARY", "['object']", "PART_DISTILLATION.OBJECT_MASKS.TOPK", "2"]


def test_object_masks_two_processes_equal_one_and_finished_rerun_is_a_noop(setting):
    one, two = str(setting["base"] / "om_one"), str(setting["base"] / "om_two")
    run_tool(setting, "pd_object_masks", OBJECTS_CFG, one, OBJECTS)
    run_tool(setting, "pd_object_masks", OBJECTS_CFG, two, OBJECTS, num_gpus=2)
    assert file_tree(one) == file_tree(two)
    assert {"manifest.json", "object_masks.json"} <= set(file_tree(one))
    before = file_tree(one, mtimes=True)
    log = run_tool(setting, "pd_object_masks", OBJECTS_CFG, one, OBJECTS)
    assert "nothing to compute" in log and "stage already complete, nothing rewritten" in log
    assert file_tree(one, mtimes=True) == before  # bytes and modification times


RANKING = ["MODEL.WEIGHTS", "", "SEED", "0", "PART_DISTILLATION.NUM_PART_MODES", "2",
           "PART_DISTILLATION.RANKING.KMEANS_N_INIT", "2"]


def test_part_ranking_killed_and_resumed(setting):
    clean, killed = str(setting["base"] / "rk_clean"), str(setting["base"] / "rk_killed")
    run_tool(setting, "pd_rank_parts", PROPOSALS_CFG, clean, RANKING)
    delay = run_killed(setting, "pd_rank_parts", PROPOSALS_CFG, killed, RANKING, "proposals/shard-00000.json")
    run_tool(setting, "pd_rank_parts", PROPOSALS_CFG, killed, RANKING)
    done = file_tree(clean)
    assert {"part_centroids.npy", "part_centroids.json", "proposals/shard-00011.npy",
            "shards/shard-00011.json"} <= set(done)
    assert file_tree(killed) == done, f"killed after {delay:.2f} s"
