import importlib.util
import json
import os

import numpy as np
import pycocotools.mask as mask_util
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from fixtures_raw import partimagenet_split_jsons, write_partimagenet_release, write_partimagenet_seg_release

from part_d2.data.datasets.partimagenet import convert_partimagenet_split, register_partimagenet
from part_d2.data.datasets.utils import RepairLog
from part_d2.data.part_json import PartDatasetError

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "datasets", "prepare_partimagenet.py")


def _script():
    spec = importlib.util.spec_from_file_location("prepare_partimagenet", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _poly_area(polys, h=20, w=20):
    return float(mask_util.area(mask_util.merge(mask_util.frPyObjects(polys, h, w))))


def test_convert_repairs_and_counts():
    log = RepairLog("t")
    out = convert_partimagenet_split(partimagenet_split_jsons()["train"], "train", "train.json", log)
    c = log.counts
    assert c["polygons with 4 values (a 2-point line, dropped)"] == 1
    assert c["polygons with fewer than 6 values (dropped)"] == 1
    assert c["annotations without a valid polygon (dropped)"] == 1
    assert c["zero-area part annotations (dropped)"] == 1
    assert c["parts split across several annotations (merged into one instance per image x part class)"] == 1
    assert c["polygons outside the image (clipped)"] == 1
    assert c["images without any valid part (kept, no object)"] == 1
    assert c["train: split counts differ from the official release (warned)"] == 1

    anns = {(a["image_id"], a["category_id"]): a for a in out["annotations"]}
    assert sorted(anns) == [(1, 9), (1, 10), (2, 9)]
    # pycocotools rasterises the square 2..8 as 6x6 px; the two body squares merge to 2x36 px
    assert anns[(1, 9)]["area"] == 36.0 == _poly_area([[2, 2, 8, 2, 8, 8, 2, 8]])
    assert anns[(1, 10)]["area"] == 72.0
    assert len(anns[(1, 10)]["segmentation"]) == 2
    assert anns[(2, 9)]["area"] == 25.0  # 15..25 x 0..5 clipped to x <= 20
    assert anns[(1, 10)]["bbox"] == [10.0, 2.0, 6.0, 14.0]

    imgs = {i["id"]: i for i in out["images"]}
    assert imgs[1]["file_name"] == "train/n01440764/n01440764_10029.JPEG"
    assert [c["name"] for c in out["object_categories"]] == ["n01440764", "n01443537"]
    assert [c["supercategory"] for c in out["object_categories"]] == ["Fish", "Fish"]
    assert imgs[3]["object_category_id"] == 1
    objs = {o["image_id"]: o for o in out["objects"]}
    assert sorted(objs) == [1, 2]
    assert objs[1]["area"] == 36.0 + 72.0 and objs[1]["category_id"] == 0
    assert all(a["object_id"] == a["image_id"] for a in out["annotations"])


def test_convert_rejects_other_categories():
    data = partimagenet_split_jsons()["val"]
    data["categories"] = [dict(c, id=c["id"] + 1) for c in data["categories"]]
    with pytest.raises(PartDatasetError, match="ids 0-39"):
        convert_partimagenet_split(data, "val", "val.json", RepairLog("t"))


@pytest.mark.parametrize("nested_zip", [True, False])
def test_script_and_registered_datasets(tmp_path, nested_zip):
    raw = write_partimagenet_release(str(tmp_path / "download"), nested_zip=nested_zip)
    root = str(tmp_path / "d2")
    _script().main(["--raw", raw, "--root", root])
    for split in ("train", "val", "test"):
        assert os.path.isfile(os.path.join(root, "partimagenet", "annotations", f"partimagenet_{split}.json"))

    names = register_partimagenet(root)
    assert "partimagenet_train_parts" in names and "partimagenet_seg_val" in names
    parts = DatasetCatalog.get("partimagenet_train_parts")
    assert len(parts) == 3
    rec = next(r for r in parts if r["image_id"] == 1)
    assert rec["file_name"] == os.path.join(root, "partimagenet", "images", "train/n01440764/n01440764_10029.JPEG")
    assert sorted(a["category_id"] for a in rec["annotations"]) == [9, 10]
    assert MetadataCatalog.get("partimagenet_train_parts").thing_classes[25] == "Car Tier"
    assert MetadataCatalog.get("partimagenet_train_parts").evaluator_type == "part"
    agn = DatasetCatalog.get("partimagenet_train_agnostic")
    assert {a["category_id"] for r in agn for a in r["annotations"]} == {0}
    objs = DatasetCatalog.get("partimagenet_test_objects")
    assert [a["category_id"] for a in objs[0]["annotations"]] == [0]
    assert MetadataCatalog.get("partimagenet_test_objects").thing_classes == ["n03792782"]
    with pytest.raises(PartDatasetError, match="prepare_partimagenet.py --seg-raw"):
        DatasetCatalog.get("partimagenet_seg_train")
    # held-out split of train: round(3 * 3265 / 16540) = 1 image held out, the views agree
    assert "partimagenet_indomain_val_agnostic" in names
    held = {r["image_id"] for r in DatasetCatalog.get("partimagenet_indomain_val_parts")}
    kept = {r["image_id"] for r in DatasetCatalog.get("partimagenet_indomain_train_agnostic")}
    assert len(held) == 1 and held | kept == {r["image_id"] for r in parts} and not held & kept
    assert {r["image_id"] for r in DatasetCatalog.get("partimagenet_indomain_val_objects")} == held
    assert MetadataCatalog.get("partimagenet_indomain_val_parts").thing_classes[25] == "Car Tier"


def test_heldout_split_by_hand():
    from part_d2.data.datasets.partimagenet import heldout_image_ids

    records = [{"image_id": i, "object_category_id": 0 if i < 10 else (1 if i < 16 else 2)} for i in range(20)]
    # 5 held out; exact quotas 10/4 = 2.5, 6/4 = 1.5, 4/4 = 1 -> floors 2, 1, 1; the one left goes to
    # the largest remainder, a tie (0.5, 0.5) won by the smaller class id: 3, 1, 1
    held = heldout_image_ids(records, fraction=0.25, seed=0)
    assert [sum(1 for i in held if lo <= i < hi) for lo, hi in ((0, 10), (10, 16), (16, 20))] == [3, 1, 1]
    assert heldout_image_ids(records, fraction=0.25, seed=0) == held  # deterministic
    assert any(heldout_image_ids(records, fraction=0.25, seed=s) != held for s in range(1, 4))
    # the OPS reference's size: 16540 train images -> 3265 held out (13275 in-domain train)
    many = [{"image_id": i, "object_category_id": i % 109} for i in range(16540)]
    assert len(heldout_image_ids(many)) == 3265


def test_absent_files_name_the_command(tmp_path):
    register_partimagenet(str(tmp_path))
    with pytest.raises(PartDatasetError, match="prepare_partimagenet.py --raw"):
        DatasetCatalog.get("partimagenet_val_parts")


def test_seg_release_index_and_registration(tmp_path):
    maps = write_partimagenet_seg_release(str(tmp_path / "seg"))
    root = str(tmp_path / "d2")
    _script().main(["--seg-raw", str(tmp_path / "seg"), "--root", root])
    with open(os.path.join(root, "partimagenet_seg", "partimagenet_seg_train.json")) as f:
        index = json.load(f)
    assert [os.path.basename(r["sem_seg_file_name"]) for r in index] == ["n01440764_1.png", "n01440764_2.png"]
    assert all(os.path.basename(r["whole_file_name"]).endswith("_whole.png") for r in index)
    register_partimagenet(root)
    recs = DatasetCatalog.get("partimagenet_seg_train")
    from PIL import Image

    assert np.array_equal(np.asarray(Image.open(recs[0]["sem_seg_file_name"])), maps["n01440764_1"])
    meta = MetadataCatalog.get("partimagenet_seg_train")
    assert meta.evaluator_type == "sem_seg" and len(meta.stuff_classes) == 41 and meta.stuff_classes[40] == "background"
