"""Part json loading (label views, repairs), robust image reading, object-mask sources, the mapper."""
import json
import logging

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from part_d2.config import add_part_d2_config
from part_d2.data.dataset_mapper import PartDatasetMapper, build_lsj_augmentations
from part_d2.data.image_io import ImageReadError, read_image_checked
from part_d2.data.object_masks import (
    AlphaObjectMasks,
    ImperfectObjectMasks,
    PerfectObjectMasks,
    StoredObjectMasks,
    build_object_mask_source,
)
from part_d2.data.part_json import PartDatasetError, load_part_json, register_part_json
from part_d2.structures.masks import mask_to_rle, segmentation_to_mask
from part_d2.utils.errors import ConfigError


def _cfg(**over):
    from detectron2.config import get_cfg

    cfg = get_cfg()
    add_part_d2_config(cfg)
    for k, v in over.items():
        node = cfg
        *path, last = k.split(".")
        for p in path:
            node = node[p]
        node[last] = v
    return cfg


# ---------------------------------------------------------------- part json and label views
def test_label_views(tiny_part_dataset):
    json_file, root, _ = tiny_part_dataset
    parts = load_part_json(json_file, root, "parts")
    agnostic = load_part_json(json_file, root, "agnostic")
    objects = load_part_json(json_file, root, "objects")
    assert len(parts) == 3
    assert [a["category_id"] for a in parts[0]["annotations"]] == [0, 1]  # contiguous part ids
    assert [a["category_id"] for a in agnostic[0]["annotations"]] == [0, 0]
    assert [a["category_id"] for a in objects[0]["annotations"]] == [0]
    assert parts[0]["object_category_id"] == 0
    # the object is exactly the union of its parts
    h, w = parts[0]["height"], parts[0]["width"]
    union = np.zeros((h, w), bool)
    for a in parts[0]["annotations"]:
        union |= segmentation_to_mask(a["segmentation"], h, w)
    assert (union == segmentation_to_mask(objects[0]["annotations"][0]["segmentation"], h, w)).all()
    assert parts[0]["annotations"][0]["area"] == pytest.approx(16 * 24)
    assert parts[0]["annotations"][0]["bbox"] == pytest.approx([8, 8, 16, 24])


def test_defects_are_repaired_or_dropped_with_counts(tiny_part_dataset, rewrite_json, caplog):
    json_file, root, data = tiny_part_dataset
    anns = data["annotations"]
    anns[0]["segmentation"] = [[1, 2, 3, 4]]  # < 6 values
    anns[1]["segmentation"] = [[10, 10, 20, 10, 20, 20, 10]]  # odd length
    anns[2]["segmentation"] = [[5, 5, 5, 5, 5, 5]]  # zero area
    anns[3]["segmentation"] = [[-10, -10, 20, -10, 20, 20, -10, 20]]  # partly outside: clipped
    anns[4]["segmentation"] = [[100, 100, 120, 100, 120, 120]]  # fully outside: zero area after clipping
    data["images"].append({"id": 9, "file_name": "images/0.png", "height": 48, "width": 64})  # no annotations
    rewrite_json(json_file, data)
    with caplog.at_level(logging.WARNING):
        recs = {r["image_id"]: r for r in load_part_json(json_file, root, "parts")}
    assert len(recs[0]["annotations"]) == 0
    assert len(recs[1]["annotations"]) == 1 and recs[1]["annotations"][0]["bbox"] == pytest.approx([0, 0, 20, 20])
    assert len(recs[2]["annotations"]) == 1
    assert recs[9]["annotations"] == []
    text = caplog.text
    assert "2 polygons with < 6 or an odd number of values" in text
    assert "2 parts with zero area" in text
    assert "2 polygons outside the image (clipped)" in text
    assert "2 images without annotations" in text  # image 0 lost both parts


@pytest.mark.parametrize("content", ['{"images": [', "not json", '[1, 2]', '{"images": []}'])
def test_malformed_json_names_the_file(tmp_path, content):
    p = tmp_path / "bad.json"
    p.write_text(content)
    with pytest.raises(PartDatasetError, match="bad.json"):
        load_part_json(str(p), str(tmp_path))


def test_missing_json(tmp_path):
    with pytest.raises(PartDatasetError, match="not found"):
        load_part_json(str(tmp_path / "none.json"), str(tmp_path))


# ---------------------------------------------------------------- images
def test_odd_image_formats_become_8bit_rgb(tmp_path):
    gray = np.tile(np.arange(64, dtype=np.uint8) * 4, (32, 1))
    Image.fromarray(gray).save(tmp_path / "gray.png")
    Image.fromarray((gray.astype(np.uint16) * 257)).save(tmp_path / "g16.png")
    rgba = np.dstack([np.full((32, 64, 3), 200, np.uint8), np.full((32, 64), 128, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(np.full((32, 64, 3), 90, np.uint8)).convert("P").save(tmp_path / "pal.png")
    for name in ("gray", "g16", "rgba", "pal"):
        img = read_image_checked(str(tmp_path / f"{name}.png"), "BGR")
        assert img.shape == (32, 64, 3) and img.dtype == np.uint8, name
    assert (read_image_checked(str(tmp_path / "g16.png"))[:, :, 0] == gray).all()
    assert (read_image_checked(str(tmp_path / "rgba.png")) == 200).all()


def test_exif_rotation_is_applied(tmp_path):
    img = Image.fromarray(np.zeros((20, 40, 3), np.uint8))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise
    img.save(tmp_path / "rot.jpg", exif=exif)
    assert read_image_checked(str(tmp_path / "rot.jpg")).shape == (40, 20, 3)


def test_missing_and_corrupt_images_name_the_file(tmp_path):
    with pytest.raises(ImageReadError, match="missing.png: image file not found"):
        read_image_checked(str(tmp_path / "missing.png"))
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ImageReadError, match="corrupt.png: cannot decode"):
        read_image_checked(str(tmp_path / "corrupt.png"))
    good = tmp_path / "good.jpg"
    cv2.imwrite(str(good), np.zeros((64, 64, 3), np.uint8))
    (tmp_path / "trunc.jpg").write_bytes(good.read_bytes()[:200])
    with pytest.raises(ImageReadError, match="trunc.jpg"):
        read_image_checked(str(tmp_path / "trunc.jpg"))


# ---------------------------------------------------------------- object-mask sources
def test_object_mask_sources(tiny_part_dataset, tmp_path):
    json_file, root, _ = tiny_part_dataset
    rec = load_part_json(json_file, root, "parts")[0]
    img = read_image_checked(rec["file_name"])
    perfect = PerfectObjectMasks()(rec, img)
    assert perfect.sum() == 32 * 24 and perfect[8:32, 8:40].all()
    a = ImperfectObjectMasks(0.3, 0.1, seed=3)(rec, img)
    assert (a == ImperfectObjectMasks(0.3, 0.1, seed=3)(rec, img)).all()  # fixed per image
    assert (a != perfect).any() and (a & perfect).sum() > 0.3 * perfect.sum()

    stored = tmp_path / "masks.json"
    stored.write_text(json.dumps({"0.png": [mask_to_rle(perfect)]}))
    assert (StoredObjectMasks(str(stored))(rec, img) == perfect).all()
    with pytest.raises(PartDatasetError, match="no object mask for image"):
        StoredObjectMasks(str(stored))(dict(rec, file_name="x/1.png", image_id=1), img)
    stored.write_text(json.dumps({"0.png": [mask_to_rle(np.zeros((10, 10), bool))]}))
    with pytest.raises(PartDatasetError, match="10x10"):
        StoredObjectMasks(str(stored))(rec, img)

    rgba = np.dstack([img[:, :, ::-1], perfect.astype(np.uint8) * 255])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "obj.png")
    rec_rgba = dict(rec, file_name=str(tmp_path / "obj.png"))
    assert (AlphaObjectMasks()(rec_rgba, img) == perfect).all()
    with pytest.raises(ImageReadError, match="no alpha channel"):
        AlphaObjectMasks()(rec, img)


def test_imperfect_masks_scale_with_the_object():
    """The same perturbation of an object and of the object scaled 3x: about the same IoU."""
    from part_d2.data.object_masks import mask_iou, perturb_mask

    small = np.zeros((60, 60), dtype=bool)
    small[15:45, 18:42] = True
    large = np.kron(small, np.ones((3, 3), dtype=bool))
    for seed in range(5):
        iou_small = mask_iou(perturb_mask(small, np.random.default_rng(seed), 0.3, 0.05), small)
        iou_large = mask_iou(perturb_mask(large, np.random.default_rng(seed), 0.3, 0.05), large)
        assert abs(iou_small - iou_large) < 0.08
    assert mask_iou(small, small) == 1.0 and mask_iou(small, ~small) == 0.0


def test_object_mask_source_from_config():
    assert build_object_mask_source(_cfg()) is None
    src = build_object_mask_source(_cfg(**{"INPUT.OBJECT_MASK.ENABLED": True, "INPUT.OBJECT_MASK.SOURCE": "imperfect"}))
    assert isinstance(src, ImperfectObjectMasks)
    with pytest.raises(ValueError, match="expected one of"):
        build_object_mask_source(_cfg(**{"INPUT.OBJECT_MASK.ENABLED": True, "INPUT.OBJECT_MASK.SOURCE": "oracle"}))


# ---------------------------------------------------------------- mapper
def test_lsj_mapper_four_channels(tiny_part_dataset):
    json_file, root, _ = tiny_part_dataset
    rec = load_part_json(json_file, root, "parts")[1]
    cfg = _cfg(**{"INPUT.IMAGE_SIZE": 96, "INPUT.MIN_SCALE": 0.5, "INPUT.MAX_SCALE": 1.0,
                  "INPUT.OBJECT_MASK.ENABLED": True, "INPUT.MASK_FORMAT": "bitmask"})
    mapper = PartDatasetMapper(cfg, True)
    np.random.seed(0)
    out = mapper(rec)
    img = out["image"]
    assert img.shape[0] == 4 and tuple(img.shape[1:]) == (96, 96)
    assert set(torch.unique(img[3]).tolist()) <= {0, 255}  # binary channel; padding is background
    inst = out["instances"]
    assert inst.gt_classes.tolist() == [0, 1]  # the parts view keeps its classes (agnostic: the _agnostic view)
    obj = img[3] > 0
    parts = inst.gt_masks.tensor.any(0)
    assert (parts == obj).float().mean() > 0.97  # channel and parts agree up to resampling
    assert not obj[-1].any() or not obj[:, -1].any()


def test_foreground_target_is_the_object_mask_under_the_same_augmentation(tiny_part_dataset):
    json_file, root, _ = tiny_part_dataset
    rec = load_part_json(json_file, root, "objects")[1]
    cfg = _cfg(**{"INPUT.IMAGE_SIZE": 96, "INPUT.MIN_SCALE": 0.5, "INPUT.MAX_SCALE": 1.0,
                  "INPUT.OBJECT_MASK.FOREGROUND_TARGET": True, "INPUT.MASK_FORMAT": "bitmask"})
    np.random.seed(0)
    out = PartDatasetMapper(cfg, True)(rec)
    assert out["image"].shape[0] == 3 and out["sem_seg"].dtype == torch.int64
    assert tuple(out["sem_seg"].shape) == (96, 96) and set(out["sem_seg"].unique().tolist()) == {0, 1}
    objects = out["instances"].gt_masks.tensor.any(0)
    assert (objects == (out["sem_seg"] == 1)).float().mean() > 0.97  # same transform, up to resampling
    assert "sem_seg" not in PartDatasetMapper(_cfg(**{"INPUT.IMAGE_SIZE": 96}), True)(rec)
    assert "sem_seg" not in PartDatasetMapper(cfg, False)(rec)  # a training target only


def test_class_agnostic_key_contradicting_a_parts_training_view_is_an_error(tiny_part_dataset):
    json_file, root, _ = tiny_part_dataset
    register_part_json("cagn", json_file, root)
    with pytest.raises(ConfigError, match="contradicts the part classes of \\['cagn_parts'\\]"):
        PartDatasetMapper(_cfg(**{"DATASETS.TRAIN": ("cagn_parts",), "DATASETS.CLASS_AGNOSTIC": True}), True)
    objects = PartDatasetMapper(_cfg(**{"DATASETS.TRAIN": ("cagn_objects",), "DATASETS.CLASS_AGNOSTIC": True}), True)
    assert objects.class_agnostic  # views without an _agnostic variant: the key maps classes to one
    assert not PartDatasetMapper(_cfg(**{"DATASETS.TRAIN": ("cagn_parts",)}), True).class_agnostic


def test_test_mapper_keeps_object_mask_at_original_resolution(tiny_part_dataset):
    json_file, root, _ = tiny_part_dataset
    rec = load_part_json(json_file, root, "parts")[0]
    cfg = _cfg(**{"INPUT.MIN_SIZE_TEST": 96, "INPUT.MAX_SIZE_TEST": 200, "TEST.POST_AWARE.ENABLED": True})
    out = PartDatasetMapper(cfg, False)(rec)
    assert out["image"].shape == (3, 96, 128)
    assert out["object_mask"].shape == (48, 64) and out["object_mask"].sum() == 32 * 24
    assert "instances" not in out


def test_mapper_skips_unreadable_training_images(tiny_part_dataset):
    json_file, root, _ = tiny_part_dataset
    rec = dict(load_part_json(json_file, root, "parts")[0], file_name="/nonexistent/x.png")
    assert PartDatasetMapper(_cfg(), True)(rec) is None
    with pytest.raises(ImageReadError, match="x.png"):
        PartDatasetMapper(_cfg(), False)(rec)


def test_mapper_size_mismatch_names_file(tiny_part_dataset):
    json_file, root, _ = tiny_part_dataset
    rec = dict(load_part_json(json_file, root, "parts")[0], height=50)
    with pytest.raises(ImageReadError, match="0.png: image is 64x48"):
        PartDatasetMapper(_cfg(), False)(rec)


def test_lsj_augmentations_compose():
    augs = build_lsj_augmentations(64, 0.1, 2.0, "horizontal")
    assert [type(a).__name__ for a in augs] == ["RandomFlip", "ResizeScale", "FixedSizeCrop"]


def test_train_sampler_from_config(tiny_part_dataset):
    from detectron2.data.samplers import RepeatFactorTrainingSampler, TrainingSampler

    from part_d2.data.build import build_train_sampler

    json_file, root, _ = tiny_part_dataset
    records = load_part_json(json_file, root, "parts")
    assert isinstance(build_train_sampler(_cfg(), records), TrainingSampler)
    cfg = _cfg(**{"DATALOADER.SAMPLER_TRAIN": "RepeatFactorTrainingSampler", "DATALOADER.REPEAT_THRESHOLD": 1.0})
    sampler = build_train_sampler(cfg, records)
    assert isinstance(sampler, RepeatFactorTrainingSampler)
    # both part classes are in every image: frequency 1 >= threshold, so no image is repeated
    assert sampler._int_part.tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="SAMPLER_TRAIN"):
        build_train_sampler(_cfg(**{"DATALOADER.SAMPLER_TRAIN": "Nope"}), records)


def test_retrying_map_dataset_skips_bad_records():
    from part_d2.data.build import RetryingMapDataset

    ds = RetryingMapDataset(list(range(10)), lambda x: None if x % 3 == 0 else x)
    out = [ds[i] for i in range(10)]
    assert all(v % 3 != 0 for v in out)
    assert {0, 3} <= ds._bad and ds[1] == 1
    with pytest.raises(RuntimeError, match="every training image failed"):
        RetryingMapDataset([0, 3], lambda x: None)[0]


def test_model_object_mask_source_with_a_stand_in_predictor(tiny_part_dataset):
    from detectron2.structures import Instances

    from part_d2.data.object_masks import ModelObjectMasks

    json_file, root, _ = tiny_part_dataset
    rec = load_part_json(json_file, root, "parts")[0]
    img = read_image_checked(rec["file_name"])

    def predictor(image):
        inst = Instances(image.shape[:2])
        masks = torch.zeros(2, *image.shape[:2], dtype=torch.bool)
        masks[0, :10, :10] = True
        masks[1, 20:, 20:] = True
        inst.pred_masks, inst.scores = masks, torch.tensor([0.9, 0.2])
        return {"instances": inst}

    mask = ModelObjectMasks("unused.yaml", "unused.pth", score_thresh=0.5, predictor=predictor)(rec, img)
    assert mask.sum() == 100 and mask[:10, :10].all()  # the low-scoring detection is dropped
    assert not ModelObjectMasks("", "", 0.95, predictor=predictor)(rec, img).any()


def test_foreground_model_objects_are_its_connected_components():
    from part_d2.data.object_masks import ModelObjectMasks, foreground_instances

    logits = torch.zeros(2, 20, 30)
    logits[1, 2:6, 2:8] = 3.0  # object probability 0.95
    logits[1, 10:18, 12:28] = 1.0  # 0.73
    logits[1, 0, 29] = 5.0  # one pixel: below the least area (0.002 * 600 = 1.2 pixels)
    logits[1, 19, 0:3] = 0.2  # 0.55: above 0.5, below 0.6
    inst = foreground_instances(logits, score_thresh=0.6)
    assert inst.pred_masks.shape == (2, 20, 30) and inst.pred_classes.tolist() == [0, 0]
    assert inst.pred_masks.flatten(1).sum(1).tolist() == [24, 128]  # by decreasing score
    assert inst.scores.tolist() == pytest.approx([torch.sigmoid(torch.tensor(3.0)).item(),
                                                  torch.sigmoid(torch.tensor(1.0)).item()])
    assert inst.pred_boxes.tensor.tolist() == [[2, 2, 8, 6], [12, 10, 28, 18]]
    assert len(foreground_instances(logits, score_thresh=0.52)) == 3  # the 3-pixel row joins (0.5: all pixels)
    assert len(foreground_instances(torch.tensor([1.0, 0.0])[:, None, None].expand(2, 4, 4))) == 0

    source = ModelObjectMasks("", "", score_thresh=0.6, predictor=lambda image: {"sem_seg": logits})
    mask = source({}, np.zeros((20, 30, 3), np.uint8))
    assert mask.sum() == 24 + 128 and mask[2:6, 2:8].all() and not mask[0, 29]


def test_model_object_mask_source_hands_the_predictor_bgr():
    from detectron2.structures import Instances

    from part_d2.data.object_masks import ModelObjectMasks

    seen = []

    def predictor(image):
        seen.append(image.copy())
        inst = Instances(image.shape[:2])
        inst.pred_masks, inst.scores = torch.zeros(0, *image.shape[:2], dtype=torch.bool), torch.zeros(0)
        return {"instances": inst}

    image = np.zeros((4, 5, 3), np.uint8)
    image[..., 0] = 200  # red in RGB, blue in BGR
    ModelObjectMasks("", "", predictor=predictor, input_format="RGB")({}, image)
    assert (seen[-1][..., 2] == 200).all() and (seen[-1][..., 0] == 0).all()  # red last: BGR
    ModelObjectMasks("", "", predictor=predictor, input_format="BGR")({}, image)
    assert (seen[-1] == image).all()  # already BGR: unchanged
