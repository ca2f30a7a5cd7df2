import importlib.util
import json
import os

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from fixtures_raw import write_pascal_part_release
from PIL import Image

from part_d2.data.datasets.pascal_part import Taxonomy, crop_box, read_pascal_part_mat, register_pascal_part
from part_d2.data.part_json import PartDatasetError
from part_d2.structures.masks import segmentation_to_mask

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "datasets", "prepare_pascal_part.py")


def _run_script(argv):
    spec = importlib.util.spec_from_file_location("prepare_pascal_part", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(argv)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("d2"))
    write_pascal_part_release(root)
    _run_script(["--root", root])
    return root


def _load(root, name):
    with open(os.path.join(root, "pascal_part", "annotations", f"{name}.json")) as f:
        return json.load(f)


def _by_name(data):
    names = {c["id"]: c["name"] for c in data["categories"]}
    return {(a["image_id"], names[a["category_id"]]): a for a in data["annotations"]}


def test_read_mat_structure(tmp_path):
    write_pascal_part_release(str(tmp_path))
    imname, objects = read_pascal_part_mat(str(tmp_path / "pascal_part" / "Annotations_Part" / "2008_000002.mat"))
    assert imname == "2008_000002"
    assert [o["class"] for o in objects] == ["person", "tvmonitor"]
    assert [p[0] for p in objects[0]["parts"]] == ["head", "lebrow", "torso", "llarm", "lhand", "Lhand"]
    assert objects[0]["mask"].sum() == 16 * 10


def test_taxonomy_classes_and_ids():
    t58, t108 = Taxonomy(58), Taxonomy(108)
    assert len(t58.categories) == 57 and len(t108.categories) == 107
    assert t58.class_id["tvmonitor_frame"] == 57 and t108.class_id["boat"] == 18
    assert t58.categories[0] == {"id": 1, "name": "aeroplane_body", "supercategory": "aeroplane"}


def test_scene_parts_58(prepared):
    data = _load(prepared, "pascal_part58_train")
    parts = _by_name(data)
    img = 2008000002
    # person: head absorbs lebrow (inside it), larm = llarm + lhand, "Lhand" is unknown
    assert parts[(img, "person_head")]["area"] == 18
    assert parts[(img, "person_torso")]["area"] == 56
    assert parts[(img, "person_larm")]["area"] == 6
    # tvmonitor: frame = object pixels outside the screen
    assert parts[(img, "tvmonitor_screen")]["area"] == 48
    assert parts[(img, "tvmonitor_frame")]["area"] == 80 - 48
    assert parts[(2008000003, "boat")]["area"] == 9
    assert len(data["annotations"]) == 6
    assert sorted(i["id"] for i in data["images"]) == [2008000002, 2008000003]
    objs = {(o["image_id"], o["category_id"]): o for o in data["objects"]}
    assert objs[(img, 15)]["area"] == 160 and objs[(img, 20)]["area"] == 80
    person_id = objs[(img, 15)]["id"]
    assert {a["object_id"] for k, a in parts.items() if k[1].startswith("person")} == {person_id}


def test_scene_parts_108(prepared):
    parts = _by_name(_load(prepared, "pascal_part108_train"))
    img = 2008000002
    assert parts[(img, "person_head")]["area"] == 18  # lebrow is ignored (255) in 108
    assert parts[(img, "person_ruarm")]["area"] == 4 and parts[(img, "person_rhand")]["area"] == 2
    assert (img, "tvmonitor_frame") not in parts and parts[(img, "tvmonitor_screen")]["area"] == 48
    cow = _by_name(_load(prepared, "pascal_part108_val"))
    assert cow[(2008000007, "cow_head")]["area"] == 9 and cow[(2008000007, "cow_torso")]["area"] == 70


def test_crop_box_rule():
    mask = np.zeros((20, 30), bool)
    mask[2:18, 2:12] = True
    assert crop_box(mask, 0.1) == (1, 0, 13, 20)
    assert crop_box(mask, 0.0) == (2, 2, 12, 18)


def test_object_crops(prepared):
    crops58 = _load(prepared, "pascal_part58_crop_train")
    # person (3 parts) and tvmonitor (2 parts) of the image that exists; the boat has 1 part
    assert [(i["source_image"], i["crop_box"]) for i in crops58["images"]] == [
        ("2008_000002.jpg", [1, 0, 13, 20]), ("2008_000002.jpg", [14, 1, 26, 11])]
    person = crops58["images"][0]
    assert (person["height"], person["width"]) == (20, 12)
    crop_img = Image.open(os.path.join(prepared, "pascal_part", "crops", person["file_name"]))
    assert crop_img.size == (12, 20)
    head = next(a for a in crops58["annotations"] if a["image_id"] == person["id"] and a["category_id"] == 43)
    mask = segmentation_to_mask(head["segmentation"], 20, 12)
    expected = np.zeros((20, 12), bool)
    expected[2:5, 3:9] = True
    assert np.array_equal(mask, expected)
    crops108 = _load(prepared, "pascal_part108_crop_train")
    assert len(crops108["images"]) == 1  # tvmonitor has one 108 part: not a multi-part object
    assert len(_load(prepared, "pascal_part108_crop_val")["images"]) == 1


def test_registered_datasets(prepared):
    names = register_pascal_part(prepared)
    assert len(names) == 2 * 2 * 2 * 3
    recs = DatasetCatalog.get("pascal_part58_train_parts")
    assert len(recs) == 2
    assert recs[0]["file_name"].endswith(os.path.join("VOC2010", "JPEGImages", "2008_000002.jpg"))
    meta = MetadataCatalog.get("pascal_part58_train_parts")
    assert len(meta.thing_classes) == 57 and meta.evaluator_type == "part"
    crops = DatasetCatalog.get("pascal_part108_crop_val_objects")
    assert [a["category_id"] for a in crops[0]["annotations"]] == [9]  # cow, contiguous VOC index
    assert crops[0]["file_name"].startswith(os.path.join(prepared, "pascal_part", "crops"))


def test_missing_files_hint(tmp_path):
    register_pascal_part(str(tmp_path))
    with pytest.raises(PartDatasetError, match="prepare_pascal_part.py"):
        DatasetCatalog.get("pascal_part58_crop_val_agnostic")
