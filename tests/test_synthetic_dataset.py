import importlib.util
import json
import multiprocessing as mp
import os
from collections import Counter

import numpy as np
import pycocotools.mask as mask_util
import pytest
from file_trees import file_tree
from PIL import Image
from pycocotools.coco import COCO

from part_d2.data.part_json import LABEL_VIEWS, PartDatasetError, load_part_json
from part_d2.data.synthetic import (
    SPLITS,
    annotation_paths,
    ensure_synthetic_parts,
    generate_synthetic_parts,
    image_root,
    load_library,
)
from part_d2.data.synthetic import generate as gen_module
from part_d2.data.synthetic.generate import annotate, read_done
from part_d2.data.synthetic.library import held_out_counts, split_of_classes
from part_d2.data.synthetic.render import MIN_PART_AREA, RenderedObject, RenderedPart
from part_d2.structures.masks import segmentation_to_mask

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = dict(seed=0, num_images={"train": 12, "val": 12, "test": 12}, image_size=96, multi_object_prob=0.3)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("synth") / "synthetic_parts")
    paths = generate_synthetic_parts(root, num_workers=1, **SMALL)
    return root, {split: json.load(open(p)) for split, p in paths.items()}


def test_held_out_counts_and_split_rule():
    assert held_out_counts(5) == {"train": 3, "val": 1, "test": 1}
    assert held_out_counts(10) == {"train": 6, "val": 2, "test": 2}
    assert held_out_counts(2) == {"train": 1, "val": 0, "test": 1}
    assert held_out_counts(1) == {"train": 1, "val": 0, "test": 0}
    assert split_of_classes(["a", "b", "a", "a", "a", "a"]) == ["train", "train", "train", "train", "val", "test"]


def test_library_shares_part_kinds_and_covers_every_split():
    lib = load_library()
    assert 10 <= len(lib.part_kinds) <= 14 and 24 <= len(lib.classes) <= 30
    supercats = {c.supercategory for c in lib.classes}
    for split in SPLITS:
        assert {c.supercategory for c in lib.classes_of(split)} == supercats
    multi = [c for c in lib.classes if max(sum(p["kind"] == k for p in c.parts) for k in lib.part_kinds) > 1]
    assert len(multi) > len(lib.classes) // 2


def test_bad_library_names_file(tmp_path):
    path = tmp_path / "lib.json"
    part = {"kind": "tentacle", "shape": "ellipse", "center": [0, 0], "radii": [1, 1], "angle": 0}
    classes = [{"name": "x", "supercategory": "s", "parts": [part]}]
    path.write_text(json.dumps({"part_kinds": ["head"], "classes": classes}))
    with pytest.raises(PartDatasetError, match="lib.json.*tentacle"):
        load_library(str(path))


def test_annotate_hand_computed():
    label_map = np.zeros((6, 8), dtype=np.int32)
    label_map[1:3, 1:4] = 1  # 6 px
    label_map[3:5, 1:3] = 2  # 4 px
    label_map[0:2, 6:8] = 3  # 4 px
    objects = [
        RenderedObject(7, [RenderedPart(1, 2), RenderedPart(2, 3)]),
        RenderedObject(9, [RenderedPart(3, 1)]),
    ]
    anns = annotate(label_map, objects)
    assert [a["category_id"] for a in anns] == [7, 9]
    assert anns[0]["area"] == 10.0 and anns[0]["bbox"] == [1.0, 1.0, 3.0, 4.0]
    assert [(p["category_id"], p["area"], p["bbox"]) for p in anns[0]["parts"]] == [
        (2, 6.0, [1.0, 1.0, 3.0, 2.0]),
        (3, 4.0, [1.0, 3.0, 2.0, 2.0]),
    ]
    assert anns[1]["bbox"] == [6.0, 0.0, 2.0, 2.0]
    assert isinstance(anns[1]["parts"][0]["segmentation"]["counts"], str)
    np.testing.assert_array_equal(segmentation_to_mask(anns[0]["segmentation"], 6, 8), np.isin(label_map, [1, 2]))


def test_same_output_for_any_number_of_workers(dataset, tmp_path):
    root, _ = dataset
    other = str(tmp_path / "synthetic_parts")
    generate_synthetic_parts(other, num_workers=2, **SMALL)
    a, b = file_tree(root), file_tree(other)
    assert sorted(a) == sorted(b) and len(a) == 3 * 12 + 3 + 1
    assert all(a[k] == b[k] for k in a)


def test_splits_have_disjoint_object_classes(dataset):
    _, data = dataset
    lib = load_library()
    present = {split: {o["category_id"] for o in d["objects"]} for split, d in data.items()}
    assert not present["train"] & present["val"] and not present["train"] & present["test"]
    assert not present["val"] & present["test"]
    for split, d in data.items():
        assert present[split] <= {c.id for c in lib.classes_of(split)}
        assert {i["object_category_id"] for i in d["images"]} <= present[split] | {c.id for c in lib.classes_of(split)}
        assert d["object_categories"] == data["train"]["object_categories"]
        assert d["categories"] == data["train"]["categories"]
        assert [c["name"] for c in d["categories"]] == list(lib.part_kinds)


def test_parts_partition_their_objects(dataset):
    _, data = dataset
    n_multi = 0
    for d in data.values():
        objects = {o["id"]: o for o in d["objects"]}
        for img in d["images"]:
            h, w = img["height"], img["width"]
            img_objects = [o for o in d["objects"] if o["image_id"] == img["id"]]
            n_multi += len(img_objects) > 1
            coverage = np.zeros((h, w), dtype=np.int32)
            for obj in img_objects:
                parts = [a for a in d["annotations"] if a["object_id"] == obj["id"]]
                assert parts, "an object without parts"
                masks = np.stack([segmentation_to_mask(a["segmentation"], h, w) for a in parts])
                assert masks.sum(axis=0).max() == 1, "overlapping parts"
                np.testing.assert_array_equal(masks.any(axis=0), segmentation_to_mask(obj["segmentation"], h, w))
                coverage += masks.sum(axis=0)
                assert obj["image_id"] == img["id"]
            assert coverage.max() <= 1, "parts of different objects overlap"
        for ann in d["annotations"]:
            assert objects[ann["object_id"]]["image_id"] == ann["image_id"]
    assert n_multi > 0


def test_areas_bboxes_and_sizes_match_masks(dataset):
    _, data = dataset
    for d in data.values():
        for ann in d["annotations"] + d["objects"]:
            rle = dict(ann["segmentation"], counts=ann["segmentation"]["counts"].encode("ascii"))
            assert ann["area"] == float(mask_util.area(rle))
            assert ann["bbox"] == [float(v) for v in mask_util.toBbox(rle)]
            assert ann["iscrowd"] == 0
        assert min(a["area"] for a in d["annotations"]) >= MIN_PART_AREA
        objects_per_image = Counter(o["image_id"] for o in d["objects"])
        for obj in d["objects"]:
            if objects_per_image[obj["image_id"]] == 1:
                assert 0.25 * 96 <= max(obj["bbox"][2:]) <= 0.72 * 96


def test_images_match_json(dataset):
    root, data = dataset
    for split, d in data.items():
        for img in d["images"]:
            pixels = np.asarray(Image.open(os.path.join(image_root(root, split), img["file_name"])))
            assert pixels.shape == (img["height"], img["width"], 3) and pixels.dtype == np.uint8
            assert pixels.std() > 10


def test_loads_in_all_label_views_and_pycocotools(dataset):
    root, data = dataset
    for split, path in annotation_paths(root).items():
        d = data[split]
        for view in LABEL_VIEWS:
            records = load_part_json(path, image_root(root, split), view)
            assert len(records) == len(d["images"])
            anns = [a for r in records for a in r["annotations"]]
            assert len(anns) == len(d["objects"] if view == "objects" else d["annotations"])
            if view == "agnostic":
                assert {a["category_id"] for a in anns} == {0}
        for rec, img in zip(records, d["images"]):
            assert rec["object_category_id"] == img["object_category_id"] - 1
            assert os.path.isfile(rec["file_name"])
        coco = COCO(path)
        assert len(coco.getAnnIds()) == len(d["annotations"]) and len(coco.getImgIds()) == len(d["images"])
        ann = coco.loadAnns(coco.getAnnIds())[0]
        expected = segmentation_to_mask(ann["segmentation"], 96, 96)
        np.testing.assert_array_equal(coco.annToMask(ann).astype(bool), expected)


def test_ensure_regenerates_only_when_parameters_change(tmp_path):
    root = str(tmp_path / "synthetic_parts")
    small = dict(num_images={"train": 2, "val": 1, "test": 1}, image_size=64, num_workers=1)
    paths = ensure_synthetic_parts(root, **small)
    assert paths == annotation_paths(root)
    stamp = os.stat(os.path.join(root, "DONE")).st_ino, os.stat(paths["train"]).st_mtime_ns
    ensure_synthetic_parts(root, **small)
    assert (os.stat(os.path.join(root, "DONE")).st_ino, os.stat(paths["train"]).st_mtime_ns) == stamp
    ensure_synthetic_parts(root, seed=3, **small)
    assert read_done(root)["seed"] == 3
    assert os.stat(paths["train"]).st_mtime_ns != stamp[1]
    assert sorted(os.listdir(tmp_path)) == ["synthetic_parts", "synthetic_parts.lock"]


def _ensure_in_child(root, log):
    original = gen_module._build

    def logged_build(*args, **kwargs):
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
        original(*args, **kwargs)

    gen_module._build = logged_build
    ensure_synthetic_parts(root, num_images={"train": 3, "val": 1, "test": 1}, image_size=64, num_workers=1)


def test_concurrent_ensure_generates_once(tmp_path):
    root, log = str(tmp_path / "synthetic_parts"), str(tmp_path / "builds.txt")
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_ensure_in_child, args=(root, log)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert len(open(log).read().split()) == 1
    assert read_done(root)["num_images"] == {"train": 3, "val": 1, "test": 1}


def test_refuses_to_replace_foreign_directory(tmp_path):
    root = tmp_path / "synthetic_parts"
    root.mkdir()
    (root / "my_thesis.tex").write_text("x")
    with pytest.raises(PartDatasetError, match="refusing"):
        generate_synthetic_parts(str(root), num_images={"train": 1, "val": 0, "test": 0}, num_workers=1)
    assert (root / "my_thesis.tex").exists()


def test_cli_writes_summary_and_preview(tmp_path, capsys):
    script = os.path.join(REPO, "datasets", "generate_synthetic_parts.py")
    spec = importlib.util.spec_from_file_location("gen_cli", script)
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    root = str(tmp_path / "synthetic_parts")
    argv = ["--root", root, "--num-train", "4", "--num-val", "2", "--num-test", "2", "--image-size", "64"]
    assert cli.main(argv + ["--workers", "1", "--preview-images", "6"]) == 0
    out = capsys.readouterr().out
    assert "train:     4 images" in out and "test :     2 images" in out
    assert Image.open(os.path.join(root, "preview.png")).size == (4 * 2 * 64, 2 * 64)
