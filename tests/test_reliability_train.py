"""Training reliability: an interrupted run resumes at the right iteration with the same learning
rates, and ``tools/train_net.py`` trains through missing / corrupt images (logged skips) while an
evaluation on them stops with one line naming the file."""
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
from detectron2.engine import HookBase

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = "configs/synthetic/cascade_mask_rcnn_R_tiny_agnostic.yaml"
TINY = ["SOLVER.IMS_PER_BATCH", "2", "INPUT.IMAGE_SIZE", "96", "INPUT.MIN_SIZE_TEST", "96", "INPUT.MAX_SIZE_TEST", "96",
        "MODEL.RPN.POST_NMS_TOPK_TRAIN", "64", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32"]


class _Interrupt(Exception):
    pass


class _RecordLR(HookBase):
    """Records ``{iteration: lr used by its step}``; raises :class:`_Interrupt` after step ``stop_at``."""

    def __init__(self, lrs, stop_at=None):
        self.lrs, self.stop_at = lrs, stop_at

    def before_step(self):
        self.lrs[self.trainer.iter] = self.trainer.optimizer.param_groups[0]["lr"]

    def after_step(self):
        if self.trainer.iter == self.stop_at:
            raise _Interrupt()


def _last_metrics(output_dir):
    with open(os.path.join(output_dir, "metrics.json")) as f:
        return [json.loads(line) for line in f][-1]


def test_interrupted_run_resumes_with_the_same_lr_schedule(tmp_path):
    from part_d2.data.builtin import register_synthetic_parts
    from part_d2.engine import PartTrainer
    from part_d2.engine.setup import load_config

    register_synthetic_parts(root=str(tmp_path), prefix="rel_resume", num_images={"train": 6, "val": 2, "test": 2})

    def trainer(out, stop_at=None, lrs=None):
        cfg = load_config(CONFIG, TINY + [
            "DATASETS.TRAIN", "('rel_resume_train_agnostic',)", "DATASETS.TEST", "()", "DATALOADER.NUM_WORKERS", "0",
            "SOLVER.MAX_ITER", "7", "SOLVER.WARMUP_ITERS", "2", "SOLVER.STEPS", "(4, 5)", "SOLVER.GAMMA", "0.5",
            "SOLVER.CHECKPOINT_PERIOD", "3", "OUTPUT_DIR", out, "SEED", "1"])
        t = PartTrainer(cfg)
        t.register_hooks([_RecordLR(lrs, stop_at)])
        return t

    full, broken = {}, {}
    straight = trainer(str(tmp_path / "straight"), lrs=full)
    straight.resume_or_load(resume=False)
    straight.train()
    assert sorted(full) == list(range(7))
    assert full[0] < full[1] < full[2] == full[3] > full[4] > full[5] == full[6]  # warmup, then two decays

    out = str(tmp_path / "interrupted")
    first = trainer(out, stop_at=4, lrs=broken)
    first.resume_or_load(resume=False)
    with pytest.raises(_Interrupt):
        first.train()
    assert os.path.isfile(os.path.join(out, "model_0000002.pth"))  # last checkpoint before the interruption
    resumed = {}
    second = trainer(out, lrs=resumed)
    second.resume_or_load(resume=True)
    assert second.start_iter == 3
    second.train()
    assert resumed == {i: full[i] for i in range(3, 7)}
    assert broken == {i: full[i] for i in range(5)}
    a, b = _last_metrics(str(tmp_path / "straight")), _last_metrics(out)
    assert a["iteration"] == b["iteration"] == 6 and a["lr"] == b["lr"] == full[6]


def _bad_part_json(datasets_root, out_dir, damage=True):
    """A 6-image part json of the mini training split whose 2nd image is missing and 4th corrupt
    (all fine when not ``damage``).

    Returns (json_file, image_root, missing_path, corrupt_path).
    """
    from part_d2.data.builtin import MINI_NUM_IMAGES
    from part_d2.data.synthetic import ensure_synthetic_parts

    src = os.path.join(datasets_root, "synthetic_parts_mini")
    ensure_synthetic_parts(src, num_images=MINI_NUM_IMAGES)
    with open(os.path.join(src, "annotations", "train.json")) as f:
        data = json.load(f)
    data["images"] = data["images"][:6]
    ids = {im["id"] for im in data["images"]}
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in ids]
    data["objects"] = [o for o in data.get("objects", []) if o["image_id"] in ids]
    images = os.path.join(out_dir, "images")
    os.makedirs(images)
    for im in data["images"]:
        name = os.path.basename(im["file_name"])
        shutil.copy(os.path.join(src, "images", "train", im["file_name"]), os.path.join(images, name))
        im["file_name"] = name
    missing = os.path.join(images, data["images"][1]["file_name"])
    corrupt = os.path.join(images, data["images"][3]["file_name"])
    if damage:
        os.remove(missing)
        with open(corrupt, "wb") as f:
            f.write(b"\x89PNG\r\n\x1a\n truncated")
    json_file = os.path.join(out_dir, "parts.json")
    with open(json_file, "w") as f:
        json.dump(data, f)
    return json_file, images, missing, corrupt


def test_train_net_skips_bad_images_and_eval_names_the_file(tmp_path):
    datasets = str(tmp_path / "datasets")
    json_file, images, missing, corrupt = _bad_part_json(datasets, str(tmp_path / "bad"))
    out = str(tmp_path / "run")
    env = dict(os.environ, DETECTRON2_DATASETS=datasets, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "tools/train_net.py", "--config-file", CONFIG, *TINY,
         "DATASETS.PART_JSONS", f"('bad:{json_file}:{images}',)", "DATASETS.TRAIN", "('bad_agnostic',)",
         "DATASETS.TEST", "('bad_agnostic',)", "DATALOADER.NUM_WORKERS", "2", "SOLVER.NUM_WORKERS_EVAL", "2",
         "SOLVER.MAX_ITER", "6", "SOLVER.WARMUP_ITERS", "1", "SOLVER.STEPS", "()", "OUTPUT_DIR", out],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    err, log = proc.stderr, proc.stdout + proc.stderr  # detectron2's loggers write to stdout
    assert os.path.isfile(os.path.join(out, "model_final.pth")), err[-4000:]  # training completed
    # the count depends on which worker drew which bad image first (the training order is random)
    assert re.search(rf"Skipping unreadable training image \([12] so far in this worker\): {re.escape(missing)}: "
                     "image file not found", log)
    assert f"{corrupt}: cannot decode image" in log
    # the final evaluation reads the same images: it stops at the first bad one, with one line
    assert proc.returncode == 1
    assert f"error: {missing}: image file not found" in err.splitlines()
    assert "Traceback" not in err and "DataLoader worker" not in err



def test_kill_9_during_a_checkpoint_write_then_resume_continues_from_the_previous_checkpoint(tmp_path):
    """train_net killed with SIGKILL while it writes model_0000003.pth: ``--resume`` starts after
    the previous good checkpoint (model_0000002.pth), with no traceback."""
    import signal
    import time

    datasets = str(tmp_path / "datasets")
    json_file, images, _, _ = _bad_part_json(datasets, str(tmp_path / "data"), damage=False)
    out = str(tmp_path / "run")
    env = dict(os.environ, DETECTRON2_DATASETS=datasets, OMP_NUM_THREADS="1")
    opts = [*TINY, "DATASETS.PART_JSONS", f"('ok:{json_file}:{images}',)", "DATASETS.TRAIN", "('ok_agnostic',)",
            "DATASETS.TEST", "()", "DATALOADER.NUM_WORKERS", "0", "SOLVER.WARMUP_ITERS", "1", "SOLVER.STEPS", "()",
            "SOLVER.CHECKPOINT_PERIOD", "1", "OUTPUT_DIR", out]
    tool = [sys.executable, "tools/train_net.py"]
    proc = subprocess.Popen([*tool, "--config-file", CONFIG, *opts, "SOLVER.MAX_ITER", "1000"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not (
            os.path.isdir(out) and any(p.startswith("model_0000003.pth.tmp") for p in os.listdir(out))):
        time.sleep(0.0005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    left = sorted(os.listdir(out))
    assert "model_0000002.pth" in left and "model_0000003.pth" not in left, left
    with open(os.path.join(out, "last_checkpoint")) as f:
        assert f.read() == "model_0000002.pth"
    resumed = subprocess.run([*tool, "--resume", "--config-file", CONFIG, *opts, "SOLVER.MAX_ITER", "5"], cwd=ROOT,
                             env=env, capture_output=True, text=True, timeout=300)
    log = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0 and "Traceback" not in log, log[-3000:]
    assert "Starting training from iteration 3" in log
    assert os.path.isfile(os.path.join(out, "model_final.pth"))
