import importlib.util
import json
import os

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from fixtures_raw import write_pinpp_release

from part_d2.data.datasets.pinpp import frequency_of, register_pinpp

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "datasets", "prepare_partimagenet_pp.py")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    raw = str(tmp_path_factory.mktemp("raw"))
    root = str(tmp_path_factory.mktemp("d2"))
    write_pinpp_release(raw)
    spec = importlib.util.spec_from_file_location("prepare_partimagenet_pp", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--raw", raw, "--root", root, "--seed", "3"])
    return root


def _load(root, name):
    with open(os.path.join(root, "pinpp", "annotations", f"{name}.json")) as f:
        return json.load(f)


def test_categories_inclusions_and_discarded(prepared):
    train, val = _load(prepared, "pinpp_train"), _load(prepared, "pinpp_val")
    assert [c["name"] for c in train["categories"]] == ["tench:head", "tench:body", "tench:fin", "goldfish:fin"]
    assert train["info"]["num_part_classes"] == 4
    assert train["part_inclusions"] == [{"object_wnid": "n01440764", "inner": 1, "outer": 2}]
    files = [i["file_name"] for i in train["images"] + val["images"]]
    assert "n01440764/n01440764_110.JPEG" not in files
    assert len(files) == 9 + 3
    # 9:1 per class: round(0.9) = 1 tench image and round(0.3) = 0 goldfish images in val
    assert [i["file_name"].split("/")[0] for i in val["images"]] == ["n01440764"]
    cats = {a["category_id"] for a in train["annotations"] + val["annotations"]}
    assert cats == {1, 2, 4}  # the 4-value fin polygon and the unknown category 9 are dropped
    head = next(a for a in train["annotations"] if a["category_id"] == 1)
    assert head["area"] == 16.0
    obj = next(o for o in train["objects"] if o["image_id"] == head["image_id"])
    assert obj["area"] == 16.0 + 64.0


def test_split_is_seeded(prepared, tmp_path):
    raw = str(tmp_path / "raw")
    write_pinpp_release(raw)
    from part_d2.data.datasets.pinpp import prepare_pinpp

    prepare_pinpp(raw, str(tmp_path / "a"), seed=3)
    with open(tmp_path / "a" / "pinpp" / "annotations" / "pinpp_val.json") as f:
        again = json.load(f)
    assert [i["file_name"] for i in again["images"]] == [i["file_name"] for i in _load(prepared, "pinpp_val")["images"]]


def test_lvis_json_loads(prepared):
    from lvis import LVIS

    gt = LVIS(os.path.join(prepared, "pinpp", "annotations", "pinpp_train_lvis.json"))
    assert [c["frequency"] for c in gt.load_cats([1, 4])] == ["r", "r"]
    assert [c["image_count"] for c in gt.load_cats([1, 2, 3, 4])] == [8, 8, 0, 3]
    img = gt.load_imgs([gt.get_img_ids()[0]])[0]
    assert img["neg_category_ids"] == [3]  # the tench fin, absent from that image
    assert img["not_exhaustive_category_ids"] == []
    assert len(gt.get_ann_ids(img_ids=[img["id"]])) == 2


def test_frequency_groups():
    assert [frequency_of(n) for n in (1, 10, 11, 100, 101)] == ["r", "r", "c", "c", "f"]


def test_registration(prepared):
    register_pinpp(prepared)
    meta = MetadataCatalog.get("pinpp_train_parts")
    assert meta.evaluator_type == "lvis" and meta.json_file.endswith("pinpp_train_lvis.json")
    assert MetadataCatalog.get("pinpp_train_agnostic").evaluator_type == "part"
    recs = DatasetCatalog.get("pinpp_train_parts")
    assert len(recs) == 11
    assert recs[0]["file_name"].startswith(os.path.join(prepared, "imagenet1k", "train", "n01440764"))
    assert MetadataCatalog.get("pinpp_train_parts").thing_classes[3] == "goldfish:fin"
