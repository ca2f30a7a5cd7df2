import os
import signal
import subprocess
import sys
import time

import numpy as np
import torch
from detectron2.data import DatasetCatalog
from detectron2.structures import Instances
from file_trees import file_tree
from pd_helpers import mini_records, tiny_grouper

from part_d2.data.object_mask_models import ObjectMaskModel, select_detections
from part_d2.data.shards import (
    ShardStore,
    assigned_shards,
    load_object_masks,
    read_manifest,
    register_stage_output,
)
from part_d2.engine.offline import run_object_masks, run_pixel_grouping
from part_d2.structures.masks import segmentation_to_mask

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_assigned_shards_cover_all_once():
    got = sorted(s for j in range(2) for r in range(3) for s in assigned_shards(13, 2, j, r, 3))
    assert got == list(range(13))
    assert ShardStore("x", 5, 2).num_shards == 3 and list(ShardStore("x", 5, 2).item_range(2)) == [4]


def test_two_jobs_equal_one_job_and_registered_output(tmp_path):
    records, classes = mini_records(3)
    grouper = tiny_grouper()
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    assert run_pixel_grouping(grouper, records, one, shard_size=2, object_classes=classes, max_objects=0)
    assert not run_pixel_grouping(
        grouper, records, two, shard_size=2, object_classes=classes, max_objects=0, num_jobs=2, job_id=1
    )
    assert run_pixel_grouping(
        grouper, records, two, shard_size=2, object_classes=classes, max_objects=0, num_jobs=2, job_id=0
    )
    assert file_tree(one) == file_tree(two)
    names = register_stage_output("pd_test_groups", one)
    recs = DatasetCatalog.get(names[1])  # agnostic view
    assert [r["file_name"] for r in recs] == [r["file_name"] for r in records]
    for r in recs:
        parts = [segmentation_to_mask(a["segmentation"], r["height"], r["width"]) for a in r["annotations"]]
        assert 1 <= len(parts) <= 4 and all(a["category_id"] == 0 for a in r["annotations"])
        assert all(a["object_id"] == r["objects"][0]["object_id"] for a in r["annotations"])
        assert sum(p.sum() for p in parts) == np.logical_or.reduce(parts).sum()  # disjoint
    assert read_manifest(one)["object_classes"] == classes


SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from file_trees import file_tree
from pd_helpers import mini_records, tiny_grouper
from part_d2.engine.offline import run_pixel_grouping
records, classes = mini_records(6)
run_pixel_grouping(tiny_grouper(delay=0.4), records, {out!r}, shard_size=2, object_classes=classes, max_objects=0)
"""


def test_killed_run_resumes_to_identical_bytes(tmp_path):
    killed, clean = str(tmp_path / "killed"), str(tmp_path / "clean")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT.format(tests=os.path.join(ROOT, "tests"), out=killed)],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = os.path.join(killed, "shards", "shard-00000.json")
    deadline = time.time() + 120
    while not os.path.exists(first) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert os.path.exists(first)
    store = ShardStore(killed, 6, 2)
    assert 1 <= store.num_shards - len(store.missing()) < 3  # killed midway
    assert not os.path.exists(os.path.join(killed, "manifest.json"))
    records, classes = mini_records(6)
    grouper = tiny_grouper()
    assert run_pixel_grouping(grouper, records, killed, shard_size=2, object_classes=classes, max_objects=0)
    assert run_pixel_grouping(grouper, records, clean, shard_size=2, object_classes=classes, max_objects=0)
    done = {k: v for k, v in file_tree(killed).items() if ".tmp" not in k}  # a killed write may leave a temp file
    assert done == file_tree(clean)


class _StandIn:
    """Stand-in predictor: 4 square detections with given scores and classes."""

    def __init__(self, scores, classes):
        self.scores, self.classes = scores, classes

    def __call__(self, image):
        h, w = image.shape[:2]
        n = len(self.scores)
        masks = torch.zeros(n, h, w, dtype=torch.bool)
        for i in range(n):
            masks[i, 2 * i: 2 * i + 4, 2 * i: 2 * i + 4] = True
        inst = Instances((h, w), pred_masks=masks, scores=torch.tensor(self.scores, dtype=torch.float64),
                         pred_classes=torch.tensor(self.classes))
        return {"instances": inst}


def test_select_detections_own_class_else_overall():
    scores = np.array([0.9, 0.5, 0.7, 0.6])
    classes = np.array([0, 1, 1, 2])
    assert select_detections(scores, classes, 1, 10).tolist() == [2, 1]
    assert select_detections(scores, classes, 1, 1).tolist() == [2]
    assert select_detections(scores, classes, 5, 2).tolist() == [0, 2]
    assert select_detections(scores, classes, None, 3, score_thresh=0.65).tolist() == [0, 2]


def test_stage0_adapter_and_stored_object_masks(tmp_path):
    records, _ = mini_records(3)
    model = ObjectMaskModel(_StandIn([0.9, 0.5, 0.7, 0.6], [0, 1, 1, 2]), ["Dog", "Rhino", "Cow"],
                            ["dog", "horse", "cow", "giraffe", "rhino"], topk=2)
    rec = dict(records[0], object_category_id=4)  # "rhino" -> vocabulary index 1
    assert model.own_class(rec) == 1
    objs = model(rec, np.zeros((20, 20, 3), np.uint8))
    assert [o["score"] for o in objs] == [0.7, 0.5] and [o["class_name"] for o in objs] == ["Rhino", "Rhino"]
    rec_other = dict(records[0], object_category_id=1)  # "horse": not in the vocabulary -> overall top-2
    assert [o["score"] for o in model(rec_other, np.zeros((20, 20, 3), np.uint8))] == [0.9, 0.7]
    out = str(tmp_path / "objects")
    assert run_object_masks(model, records, out, shard_size=2)
    masks = load_object_masks(out)
    assert sorted(masks) == sorted(r["file_name"] for r in records) and all(len(v) == 2 for v in masks.values())
    names = register_stage_output("pd_test_objects", out)
    recs = DatasetCatalog.get(names[2])  # objects view
    assert all(len(r["annotations"]) == 2 for r in recs)
    m = segmentation_to_mask(recs[0]["objects"][0]["segmentation"], recs[0]["height"], recs[0]["width"])
    assert m.sum() == 16
