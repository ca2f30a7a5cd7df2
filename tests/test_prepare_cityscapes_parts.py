import importlib.util
import json
import os

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from fixtures_raw import cityscapes_uid_map, write_cityscapes_parts

from part_d2.data.datasets.cityscapes_parts import decode_uids, register_cityscapes_parts
from part_d2.data.part_json import PartDatasetError

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "datasets", "prepare_cityscapes_parts.py")


def test_decode_uids_formats():
    sids, iids, pids = decode_uids(np.array([7, 24, 25003, 2400102, 2600205, 0]))
    assert sids.tolist() == [7, 24, 25, 24, 26, 0]
    assert iids.tolist() == [-1, -1, 3, 1, 2, -1]
    assert pids.tolist() == [-1, -1, -1, 2, 5, -1]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("d2"))
    write_cityscapes_parts(root, n_train=4)
    spec = importlib.util.spec_from_file_location("prepare_cityscapes_parts", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--root", root, "--few-shot", "50"])
    return root


def test_objects_and_parts(prepared):
    with open(os.path.join(prepared, "cityscapes_parts", "cityscapes_parts_val.json")) as f:
        data = json.load(f)
    names = {c["id"]: c["name"] for c in data["categories"]}
    assert len(names) == 23 and names[13] == "car-chassis"
    parts = sorted((names[a["category_id"]], a["area"]) for a in data["annotations"])
    assert parts == [("car-chassis", 15.0), ("car-window", 10.0), ("person-head", 8.0), ("person-torso", 8.0)]
    objs = sorted((o["category_id"], o["area"]) for o in data["objects"])
    assert objs == [(0, 16.0), (1, 4.0), (2, 25.0)]  # person, rider (no parts), car; the crowd is no object
    person = next(o for o in data["objects"] if o["category_id"] == 0)
    assert {a["object_id"] for a in data["annotations"] if names[a["category_id"]].startswith("person")} == {
        person["id"]
    }
    assert data["images"][0]["file_name"] == os.path.join("val", "aachen", "aachen_000000_000019_leftImg8bit.png")
    assert cityscapes_uid_map().shape == (data["images"][0]["height"], data["images"][0]["width"])


def test_few_shot_subset_and_registration(prepared):
    register_cityscapes_parts(prepared)
    full = DatasetCatalog.get("cityscapes_parts_train_parts")
    assert len(full) == 4
    with open(os.path.join(prepared, "cityscapes_parts", "cityscapes_parts_train_50pct.json")) as f:
        sub = json.load(f)
    files = sorted(i["file_name"] for i in sub["images"])
    ordered = sorted(
        i["file_name"]
        for i in json.load(open(os.path.join(prepared, "cityscapes_parts", "cityscapes_parts_train.json")))["images"]
    )
    np.random.RandomState(1234).shuffle(ordered)
    assert files == sorted(ordered[:2])
    assert len(sub["annotations"]) == 2 * 4
    assert MetadataCatalog.get("cityscapes_parts_val_objects").thing_classes == [
        "person",
        "rider",
        "car",
        "truck",
        "bus",
    ]
    with pytest.raises(PartDatasetError, match="--few-shot 1"):
        DatasetCatalog.get("cityscapes_parts_train_1pct_parts")
