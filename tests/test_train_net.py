"""tools/train_net.py end to end on the mini synthetic dataset: train, resume, eval-only,
2 CPU processes (gloo), and clean errors for bad configs and missing datasets."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = "configs/synthetic/cascade_mask_rcnn_R_tiny_agnostic.yaml"
SMALL = [
    "DATASETS.TRAIN", "('synthetic_parts_mini_train_agnostic',)",
    "DATASETS.TEST", "('synthetic_parts_mini_test_agnostic',)",
    "SOLVER.IMS_PER_BATCH", "2", "SOLVER.WARMUP_ITERS", "1", "SOLVER.STEPS", "()",
    "INPUT.IMAGE_SIZE", "96", "INPUT.MIN_SIZE_TEST", "96", "INPUT.MAX_SIZE_TEST", "96",
    "MODEL.RPN.POST_NMS_TOPK_TRAIN", "64", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32",
    "DATALOADER.NUM_WORKERS", "0",
]


@pytest.fixture(scope="module")
def datasets_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("d2datasets"))


def train_net(datasets_root, *args, check=True):
    env = dict(os.environ, DETECTRON2_DATASETS=datasets_root, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "tools/train_net.py", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"train_net failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def iterations(output_dir):
    with open(os.path.join(output_dir, "metrics.json")) as f:
        return [r["iteration"] for r in map(json.loads, f) if "total_loss" in r]  # training steps only


def test_train_resume_and_eval_only(datasets_root, tmp_path):
    out = str(tmp_path / "run")
    common = ["--config-file", CONFIG, *SMALL, "OUTPUT_DIR", out, "SOLVER.CHECKPOINT_PERIOD", "2"]
    train_net(datasets_root, *common, "SOLVER.MAX_ITER", "3")
    assert os.path.isfile(os.path.join(out, "model_final.pth"))
    assert max(iterations(out)) == 2
    first = len(iterations(out))

    proc = train_net(datasets_root, "--resume", *common, "SOLVER.MAX_ITER", "5")
    assert "Starting training from iteration 3" in proc.stdout + proc.stderr
    its = iterations(out)[first:]
    assert min(its) >= 3 and max(its) == 4

    proc = train_net(datasets_root, "--eval-only", "--config-file", CONFIG, *SMALL, "OUTPUT_DIR", out,
                     "MODEL.WEIGHTS", os.path.join(out, "model_final.pth"))
    text = proc.stdout + proc.stderr
    assert "copypaste: AP,AP50,AP75,APs,APm,APl,AR@1,AR@10,AR@100" in text


def test_two_cpu_processes(datasets_root, tmp_path):
    out = str(tmp_path / "ddp")
    proc = train_net(datasets_root, "--num-gpus", "2", "--config-file", CONFIG, *SMALL,
                     "SOLVER.MAX_ITER", "2", "OUTPUT_DIR", out)
    assert "World size: 2" in proc.stdout + proc.stderr
    assert os.path.isfile(os.path.join(out, "model_final.pth"))


def test_unknown_config_key_is_a_clear_error(datasets_root):
    proc = train_net(datasets_root, "--config-file", CONFIG, "MODEL.NOT_A_KEY", "1", check=False)
    assert proc.returncode == 1
    assert "error: " in proc.stderr and "Non-existent key: MODEL.NOT_A_KEY" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_dataset_names_the_preparation_command(datasets_root):
    proc = train_net(datasets_root, "--eval-only", "--random-weights", "--config-file", CONFIG,
                     "DATASETS.TEST", "('partimagenet_val_agnostic',)", check=False)
    assert proc.returncode == 1
    assert "partimagenet_val_agnostic" in proc.stderr and "prepare_partimagenet.py" in proc.stderr
    assert "Traceback" not in proc.stderr
