"""PART_DISTILLATION.OBJECT_CLASS_JSON: matching evaluated images' classes to the stage-3
classifier's classes (by name, or by wnid through the 21K class list), the tool, and the guard
against evaluating a stage-3 model on records whose class ids index another class list."""
import json

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from tool_loader import load_tool

from part_d2.config import load_part_d2_config
from part_d2.data.object_classes import (
    check_object_classes,
    image_keys,
    object_class_map,
    read_object_class_json,
)
from part_d2.engine.config_checks import check_test_object_classes
from part_d2.utils.errors import ConfigError, PartDatasetError

# As datasets/prepare_imagenet.py writes them (words.txt order restricted to synsets.dat).
CLASSES_21K = [{"id": 0, "wnid": "n00000001", "name": "entity"},
               {"id": 1, "wnid": "n01440764", "name": "tench, Tinca tinca"},
               {"id": 2, "wnid": "n01443537", "name": "goldfish"}]
MODEL_CLASSES = [c["name"] for c in CLASSES_21K]


def _records(classes):
    return [{"file_name": f"/data/val/{c}/{c}_{i}.JPEG", "image_id": i, "object_category_id": k}
            for i, (c, k) in enumerate(classes)]


def test_wnids_match_through_the_class_list():
    # PartImageNet's object classes are wnids (sorted); the model's are 21K names
    eval_classes = ["n01440764", "n01443537"]
    records = _records([("n01443537", 1), ("n01440764", 0), ("n01443537", 1)])
    mapping, unmatched = object_class_map(records, eval_classes, MODEL_CLASSES, CLASSES_21K)
    assert not unmatched
    assert mapping == {"n01443537_0.JPEG": 2, "n01440764_1.JPEG": 1, "n01443537_2.JPEG": 2}
    # without the class list nothing matches, and every image is counted by its class
    mapping, unmatched = object_class_map(records, eval_classes, MODEL_CLASSES)
    assert mapping == {} and unmatched == {"n01443537": 2, "n01440764": 1}


def test_names_match_ignoring_case_and_underscores():
    records = _records([("x", 0), ("y", 1), ("z", -1)])
    mapping, unmatched = object_class_map(records, ["Gold_Fish", "rocket"], ["rocket", "gold  fish"])
    assert mapping == {"x_0.JPEG": 1, "y_1.JPEG": 0}
    assert unmatched == {"<no object class>": 1}


def test_keys_fall_back_to_image_ids_when_basenames_repeat():
    records = [{"file_name": "a/x.jpg", "image_id": 7}, {"file_name": "b/x.jpg", "image_id": 9}]
    assert image_keys(records) == ["7", "9"]


def test_same_class_lists_pass_and_others_are_named():
    assert check_object_classes(["a", "b"], ["A", "b"], "d", "m") is None
    assert check_object_classes([], ["a"], "d", "m") is None  # unknown: nothing to compare
    problem = check_object_classes(["n01440764"], MODEL_CLASSES, "partimagenet_val_parts", "trained on 'r'")
    assert "'partimagenet_val_parts' has 1 object classes that are not the 3 classes" in problem
    assert "tools/pd_object_class_json.py" in problem


@pytest.fixture
def datasets(tmp_path):
    """An evaluated dataset with wnid classes and a stage-3 training dataset with 21K names."""
    names = []
    for name, classes, records in (
        ("t_ocj_eval", ["n01440764", "n01443537"], _records([("n01443537", 1), ("n01440764", 0)])),
        ("t_ocj_train", MODEL_CLASSES, _records([("goldfish", 2)])),
    ):
        DatasetCatalog.register(name, lambda r=records: r)
        MetadataCatalog.get(name).set(object_classes=classes)
        names.append(name)
    yield names
    for name in names:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_tool_writes_the_json_the_model_reads(tmp_path, datasets):
    stage_dir = tmp_path / "ranked"
    stage_dir.mkdir()
    (stage_dir / "manifest.json").write_text(json.dumps({"object_classes": MODEL_CLASSES}))
    class_list = tmp_path / "imagenet21k_classes.json"
    class_list.write_text(json.dumps({"classes": CLASSES_21K}))
    out = tmp_path / "object_classes.json"
    tool = load_tool("pd_object_class_json")
    n = tool.main(["--dataset", "t_ocj_eval", "--model-classes", str(stage_dir), "--class-list", str(class_list),
                   "--output", str(out)])
    assert n == 2
    assert read_object_class_json(str(out)) == {"n01443537_0.JPEG": 2, "n01440764_1.JPEG": 1}
    # a registered dataset gives the same classes as the stage folder
    tool.main(["--dataset", "t_ocj_eval", "--model-classes", "t_ocj_train", "--class-list", str(class_list),
               "--output", str(tmp_path / "b.json")])
    assert read_object_class_json(str(tmp_path / "b.json")) == read_object_class_json(str(out))


def test_tool_error_names_the_unmatched_classes(tmp_path, datasets, capsys):
    with pytest.raises(SystemExit) as e:
        load_tool("pd_object_class_json").main(["--dataset", "t_ocj_eval", "--model-classes", "t_ocj_train",
                                                "--output", str(tmp_path / "o.json")])
    assert e.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: t_ocj_eval: 2 images of 2 object classes match no class")
    assert "give --class-list" in err[0] and not (tmp_path / "o.json").exists()


def test_bad_object_class_json_is_one_error(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"a.jpg": "goldfish"}))
    with pytest.raises(PartDatasetError, match="expected a json object mapping image keys to integer"):
        read_object_class_json(str(bad))


def test_stage3_evaluation_refuses_another_class_list(datasets):
    cfg = load_part_d2_config()
    cfg.PART_DISTILLATION.CLASSIFIER = "per_object"
    cfg.DATASETS.TRAIN = ("t_ocj_train",)
    with pytest.raises(ConfigError, match="tools/pd_object_class_json.py"):
        check_test_object_classes(cfg, "t_ocj_eval")
    check_test_object_classes(cfg, "t_ocj_train")  # the training classes themselves
    cfg.PART_DISTILLATION.TEST_OBJECT_CLASS = "stored"
    check_test_object_classes(cfg, "t_ocj_eval")  # classes come from the json
    cfg.PART_DISTILLATION.TEST_OBJECT_CLASS = "record"
    cfg.PART_DISTILLATION.CLASSIFIER = "agnostic"
    check_test_object_classes(cfg, "t_ocj_eval")  # no per-object rows
