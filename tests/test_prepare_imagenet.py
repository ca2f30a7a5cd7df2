import importlib.util
import json
import os

import pytest
from detectron2.data import DatasetCatalog
from fixtures_raw import write_imagenet

from part_d2.data.datasets.imagenet import attach_object_masks, read_21k_classes, register_imagenet
from part_d2.data.part_json import PartDatasetError
from part_d2.structures.masks import mask_to_rle

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "datasets", "prepare_imagenet.py")


def _main(argv):
    spec = importlib.util.spec_from_file_location("prepare_imagenet", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(argv)


def test_21k_classes_in_words_order(tmp_path):
    write_imagenet(str(tmp_path))
    classes = read_21k_classes(
        str(tmp_path / "imagenet21k" / "words.txt"), str(tmp_path / "imagenet21k" / "synsets.dat")
    )
    assert [(c["id"], c["wnid"]) for c in classes] == [(0, "n00000001"), (1, "n01440764"), (2, "n01443537")]
    assert classes[1]["name"] == "tench, Tinca tinca"


def test_lists_mapping_and_registration(tmp_path):
    root = str(tmp_path)
    write_imagenet(root)
    exclude = tmp_path / "exclude.txt"
    exclude.write_text("n01443537\n")
    _main(["--root", root, "--which", "1k", "21k", "--exclude", str(exclude)])
    with open(tmp_path / "imagenet" / "imagenet21k_classes.json") as f:
        meta = json.load(f)
    assert meta["in1k_wnids"] == ["n01443537", "n01530575"] and meta["in1k_to_in21k"] == [2, -1]
    with open(tmp_path / "imagenet" / "imagenet21k_unlabeled.json") as f:
        in21k = json.load(f)
    # the excluded goldfish is not listed, class ids stay the global 21K ids
    assert [(i["file_name"], i["object_category_id"], i["width"], i["height"]) for i in in21k["images"]] == [
        ("n01440764/n01440764_1.JPEG", 1, 8, 6)]
    assert in21k["annotations"] == [] and len(in21k["object_categories"]) == 3
    register_imagenet(root)
    assert DatasetCatalog.get("imagenet21k_unlabeled")[0]["object_category_id"] == 1
    in1k = DatasetCatalog.get("imagenet1k_train_unlabeled")  # the exclude list applies to both lists
    assert [(os.path.basename(r["file_name"]), r["object_category_id"]) for r in in1k] == [("n01530575_4.JPEG", 1)]


def test_attach_object_masks():
    import numpy as np

    data = {"images": [{"id": 1, "file_name": "a/x.JPEG", "height": 4, "width": 5, "object_category_id": 3},
                       {"id": 2, "file_name": "a/y.JPEG", "height": 4, "width": 5, "object_category_id": 3}]}
    mask = np.zeros((4, 5), bool)
    mask[1:3, 2:5] = True
    out = attach_object_masks(data, {"a/x.JPEG": [mask_to_rle(mask)], "2": [mask_to_rle(np.zeros((3, 3), bool))]})
    assert len(out["objects"]) == 1
    obj = out["objects"][0]
    assert (obj["image_id"], obj["category_id"], obj["area"], obj["bbox"]) == (1, 3, 6.0, [2.0, 1.0, 3.0, 2.0])


def test_missing_list_hint(tmp_path):
    register_imagenet(str(tmp_path))
    with pytest.raises(PartDatasetError, match="prepare_imagenet.py --which 21k"):
        DatasetCatalog.get("imagenet21k_unlabeled")
