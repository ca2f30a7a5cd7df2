"""PartSegmenter (part_d2/engine/segmenter.py): every object source x part source on a synthetic
two-object image with tiny random models and stand-in detectors, the options, the json and the demo."""
import json
import logging
import os

import cv2
import numpy as np
import pytest
import torch
from detectron2.structures import Instances
from tool_loader import load_tool

import part_d2  # noqa: F401
from part_d2.engine.segmenter import PartSegmenter, SegObject, draw, to_json
from part_d2.engine.setup import load_config
from part_d2.modeling.part_ranking import PartCentroids
from part_d2.modeling.pixel_grouping import crf_options
from part_d2.structures.masks import segmentation_to_mask

H, W = 64, 80
TINY_M2F = ["MODEL.DEVICE", "cpu", "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "96",
            "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS", "1", "MODEL.MASK_FORMER.DEC_LAYERS", "2",
            "MODEL.SEM_SEG_HEAD.CONVS_DIM", "32", "MODEL.SEM_SEG_HEAD.MASK_DIM", "32",
            "MODEL.MASK_FORMER.HIDDEN_DIM", "32", "MODEL.MASK_FORMER.DIM_FEEDFORWARD", "64",
            "PART_DISTILLATION.PIXEL_GROUPING.IMAGE_SIZE", "80", "PART_DISTILLATION.PIXEL_GROUPING.KMEANS_N_INIT", "2",
            "SEGMENTER.PART_SCORE_THRESHOLD", "0.0"]
PART_CONFIGS = {
    "object_aware": ("configs/synthetic/ops_object_aware_tiny.yaml", []),
    "proposals": ("configs/synthetic/mask2former_R_tiny_agnostic.yaml", []),
    "grouping": ("configs/synthetic/mask2former_R_tiny_agnostic.yaml", ["SEGMENTER.PART_SOURCE", "grouping"]),
}
OBJECT_SOURCES = ["model", "detic", "masks", "boxes", "alpha", "image"]


def scene():
    """(H, W, 3) uint8 RGB with two objects of two colours each, and their (2, H, W) masks."""
    img = np.full((H, W, 3), 90, np.uint8)
    masks = np.zeros((2, H, W), bool)
    masks[0, 6:38, 4:40] = True
    masks[1, 30:60, 46:76] = True
    masks[0] &= ~masks[1]
    img[masks[0]] = (220, 40, 40)
    img[6:20, 4:40][masks[0, 6:20, 4:40]] = (40, 220, 40)
    img[masks[1]] = (40, 40, 220)
    img[45:60, 46:76] = (230, 230, 40)
    return img, masks


class StandInDetector:
    """Detic adapter contract: ``(image_bgr) -> Instances``, ``class_names``, ``set_vocabulary``."""

    def __init__(self, masks, scores=(0.9, 0.8, 0.2), classes=(0, 1, 0), names=("cat", "dog")):
        self.masks, self.scores, self.classes = masks, scores, classes
        self.class_names = list(names)
        self.vocabulary_calls = []

    def set_vocabulary(self, names=None, npy=""):
        self.vocabulary_calls.append((names, npy))
        if names:
            self.class_names = list(names) + [f"other{i}" for i in range(2 - len(names))]

    def __call__(self, image_bgr):
        assert image_bgr.shape == (H, W, 3)
        inst = Instances((H, W))
        third = np.zeros((H, W), bool)
        third[0:5, 0:5] = True
        inst.pred_masks = torch.from_numpy(np.stack([self.masks[0], self.masks[1], third]))
        inst.scores = torch.tensor(self.scores, dtype=torch.float32)
        inst.pred_classes = torch.tensor(self.classes)
        return inst


def build(part_source, object_source="auto", opts=(), object_model=None):
    cfg_file, extra = PART_CONFIGS[part_source]
    torch.manual_seed(0)
    cfg = load_config(cfg_file, TINY_M2F + extra + ["SEGMENTER.OBJECT_SOURCE", object_source] + list(opts))
    return PartSegmenter(cfg, object_model=object_model, random_weights=True)


def run_source(part_source, object_source, **options):
    """(result, expected object masks) of one combination."""
    img, masks = scene()
    if object_source in ("model", "detic"):
        seg = build(part_source, object_source, object_model=StandInDetector(masks))
        return seg(img, **options), masks[:2]  # the third detection scores below the threshold 0.5
    seg = build(part_source)
    if object_source == "masks":
        objs = seg.objects_from(img, masks=masks)
    elif object_source == "boxes":
        boxes = [[4, 6, 40, 38], [46, 30, 76, 60]]
        objs = seg.objects_from(img, boxes=boxes)
        masks = np.zeros((2, H, W), bool)
        masks[0, 6:38, 4:40] = masks[1, 30:60, 46:76] = True
    elif object_source == "alpha":
        rgba = np.dstack([img, masks[1].astype(np.uint8) * 255])
        return seg(rgba, **options), masks[1:]  # "auto": the alpha channel of an RGBA input
    else:
        return seg(img, **options), np.ones((1, H, W), bool)
    return seg.segment_parts(img, objs, **options), masks


def check_result(res, expected_masks, topk, threshold, non_overlapping):
    assert [o.object_id for o in res] == list(range(len(expected_masks)))
    for o, m in zip(res, expected_masks):
        assert np.array_equal(o.mask, m)
        assert len(o.parts) <= topk
        for p in o.parts:
            assert p.mask.any() and not (p.mask & ~o.mask).any(), "a part outside its object"
            assert p.score >= threshold
        assert [p.score for p in o.parts] == sorted([p.score for p in o.parts], reverse=True)
        if non_overlapping and o.parts:
            assert np.stack([p.mask for p in o.parts]).sum(axis=0).max() <= 1


@pytest.mark.parametrize("part_source", list(PART_CONFIGS))
@pytest.mark.parametrize("object_source", OBJECT_SOURCES)
def test_every_object_source_with_every_part_source(object_source, part_source):
    res, expected = run_source(part_source, object_source, topk=3, non_overlapping=True)
    check_result(res, expected, topk=3, threshold=0.0, non_overlapping=True)
    assert sum(len(o.parts) for o in res) > 0
    if object_source in ("model", "detic"):
        assert [o.name for o in res] == ["cat", "dog"] and [o.score for o in res] == pytest.approx([0.9, 0.8])
    data = to_json(res, "scene.png", (H, W))
    assert [o["object_id"] for o in data["objects"]] == [o.object_id for o in res]
    parts = [p for o in res for p in o.parts]
    assert len(data["parts"]) == len(parts)
    for entry, part, oid in zip(data["parts"], parts, [o.object_id for o in res for _ in o.parts]):
        assert entry["object_id"] == oid and entry["index"] == part.index and entry["score"] == part.score
        assert np.array_equal(segmentation_to_mask(entry["segmentation"], H, W), part.mask)
    for entry, o in zip(data["objects"], res):
        assert np.array_equal(segmentation_to_mask(entry["segmentation"], H, W), o.mask)


@pytest.mark.parametrize("part_source", ["proposals", "object_aware"])
def test_topk_and_part_threshold_are_honoured(part_source):
    full, expected = run_source(part_source, "masks", topk=50)
    scores = sorted((p.score for o in full for p in o.parts), reverse=True)
    assert len(scores) > 2
    threshold = float(np.median(scores))
    cut, _ = run_source(part_source, "masks", topk=50, part_score_threshold=threshold)
    check_result(cut, expected, topk=50, threshold=threshold, non_overlapping=False)
    for a, b in zip(full, cut):  # the same parts, less those below the threshold
        assert [(p.index, p.score) for p in a.parts if p.score >= threshold] == [(p.index, p.score) for p in b.parts]
    top2, _ = run_source(part_source, "masks", topk=2)
    for a, b in zip(full, top2):
        assert [(p.index, p.score) for p in b.parts] == [(p.index, p.score) for p in a.parts[:2]]


def test_object_threshold_and_model_vocabulary_filter():
    img, masks = scene()
    seg = build("proposals", "model", object_model=StandInDetector(masks))
    assert len(seg.detect_objects(img, object_score_threshold=0.1)) == 3
    assert len(seg.detect_objects(img, object_score_threshold=0.85)) == 1
    dogs = seg.detect_objects(img, vocabulary=["Dog"])
    assert [o.name for o in dogs] == ["dog"] and np.array_equal(dogs[0].mask, masks[1])
    assert dogs[0].box == [46.0, 30.0, 76.0, 60.0]


def test_detic_vocabulary_is_set_per_call_only_when_it_changes():
    img, masks = scene()
    det = StandInDetector(masks)
    seg = build("proposals", "detic", opts=["SEGMENTER.VOCABULARY", "['cat', 'dog']"], object_model=det)
    seg.detect_objects(img)
    assert det.vocabulary_calls == []  # the configured vocabulary is the detector's
    objs = seg.detect_objects(img, vocabulary=["bicycle", "car"])
    assert [o.name for o in objs] == ["bicycle", "car"]
    seg.detect_objects(img, vocabulary=["bicycle", "car"])
    assert det.vocabulary_calls == [(["bicycle", "car"], "")]
    seg.detect_objects(img)
    assert det.vocabulary_calls[-1] == (["cat", "dog"], "")


class FixedGrouper:
    """Stand-in pixel grouper returning given parts for every object."""

    def __init__(self, parts):
        self.parts, self.num_clusters = parts, 0

    def __call__(self, image, object_masks):
        return [self.parts & m for m in object_masks]


def fixed_segmenter(parts, cfg=None, **options):
    return PartSegmenter(object_source="image", part_source="grouping", grouper=FixedGrouper(parts),
                         crf=crf_options(cfg or load_config("")),
                         options={"topk": 10, "part_score_threshold": 0.0, "object_score_threshold": 0.5,
                                  "non_overlapping": False, "crf": False, "k": 4, **options})


def test_options_on_hand_made_parts():
    """Scores of grouping parts are their area fractions: 0.5, 0.3, 0.2 (overlapping) and 0.05."""
    parts = np.zeros((4, 10, 20), bool)
    parts[0, :, :10] = True  # 100 px
    parts[1, :, 8:14] = True  # 60 px, overlaps part 0 on columns 8-9
    parts[2, :, 14:18] = True  # 40 px
    parts[3, :5, 18:20] = True  # 10 px
    img = np.zeros((10, 20, 3), np.uint8)
    seg = fixed_segmenter(parts)
    (obj,) = seg(img)
    assert [p.index for p in obj.parts] == [0, 1, 2, 3]
    assert [p.score for p in obj.parts] == pytest.approx([0.5, 0.3, 0.2, 0.05])
    assert [p.index for p in seg(img, topk=2)[0].parts] == [0, 1]
    assert [p.index for p in seg(img, part_score_threshold=0.2)[0].parts] == [0, 1, 2]
    (obj,) = seg(img, non_overlapping=True)
    assert np.array_equal(obj.parts[0].mask, parts[0])  # the higher-scoring part keeps columns 8-9
    assert np.array_equal(obj.parts[1].mask, parts[1] & ~parts[0])
    assert obj.parts[1].score == pytest.approx(0.3)  # scores are not changed by the overlap rule


def test_crf_changes_boundaries_only():
    """Parts split at the wrong column of a two-colour object: the CRF moves the boundary toward
    the colour edge; the parts keep index, score and name, none is added, all stay in the object."""
    img = np.zeros((40, 60, 3), np.uint8)
    img[:, :30] = (230, 30, 30)
    img[:, 30:] = (30, 30, 230)
    obj = np.zeros((40, 60), bool)
    obj[4:36, 6:54] = True
    parts = np.zeros((3, 40, 60), bool)
    parts[0, :, :36] = True  # 6 columns past the colour edge
    parts[1, :, 36:] = True
    parts[2, 4:6, 6:8] = True  # a 4-pixel speck: the CRF may absorb it
    cfg = load_config("", ["PART_DISTILLATION.PIXEL_GROUPING.CRF.MODE", "crop"])
    seg = fixed_segmenter(parts, cfg)
    objects = seg.objects_from(img, masks=obj[None])
    before = seg.segment_parts(img, objects, non_overlapping=True)[0].parts
    after = seg.segment_parts(img, objects, crf=True)[0].parts
    ident = [(p.index, p.score, p.name) for p in before]
    assert [(p.index, p.score, p.name) for p in after] == [x for x in ident if x in
                                                           [(p.index, p.score, p.name) for p in after]]
    assert {p.index for p in after} >= {0, 1}
    for p in after:
        assert p.mask.any() and not (p.mask & ~obj).any()
    assert np.stack([p.mask for p in after]).sum(axis=0).max() <= 1
    left = next(p for p in after if p.index == 0)
    assert left.mask[:, 30:].sum() < parts[0][:, 30:][obj[:, 30:]].sum()  # the boundary moved to the edge
    assert not np.array_equal(left.mask, before[0].mask)


def test_stage3_model_without_object_classes_falls_back_to_agnostic_parts(caplog):
    img, masks = scene()
    torch.manual_seed(0)
    cfg = load_config("configs/synthetic/pd_distill_R_tiny.yaml",
                      TINY_M2F + ["MODEL.WEIGHTS", "", "SEGMENTER.OBJECT_SOURCE", "model"])
    # names that no dataset has (the training set's object_classes may be known from earlier tests)
    detector = StandInDetector(masks, names=("no-such-class-a", "no-such-class-b"))
    seg = PartSegmenter(cfg, object_model=detector, random_weights=True)
    with caplog.at_level(logging.WARNING, logger="part_d2"):
        res = seg(img, topk=3)
        seg(img, topk=3)
    check_result(res, masks[:2], 3, 0.0, False)
    assert all(p.name == "" for o in res for p in o.parts) and any(o.parts for o in res)
    warnings = [r for r in caplog.records if "is not among the part model's object classes" in r.getMessage()]
    assert len(warnings) == 2  # once per unknown class, not once per call


def centroids_dir(tmp_path, dim, k=3):
    rng = np.random.default_rng(0)
    PartCentroids(["cat", "dog"], rng.normal(size=(2, k, dim)).astype(np.float32), np.ones((2, k), np.int64)
                  ).save(str(tmp_path))
    return str(tmp_path)


@pytest.mark.parametrize("config", ["configs/synthetic/mask2former_R_tiny_agnostic.yaml",
                                    "configs/synthetic/pd_distill_R_tiny.yaml"])
def test_class_specific_part_names(tmp_path, config):
    """Stage-1b proposals ranked with stage-2 centroids, and a stage-3 model, name parts "{object}:{mode}"."""
    img, masks = scene()
    torch.manual_seed(0)
    opts = ["MODEL.WEIGHTS", "", "SEGMENTER.OBJECT_SOURCE", "model", "SEGMENTER.PART_CENTROIDS",
            centroids_dir(tmp_path, 32), "PART_DISTILLATION.NUM_OBJECT_CLASSES", "2"]
    if "distill" not in config:
        opts += ["MODEL.META_ARCHITECTURE", "PartDistillationMask2Former"]
    seg = PartSegmenter(load_config(config, TINY_M2F + opts), object_model=StandInDetector(masks), random_weights=True)
    res = seg(img, topk=8)
    check_result(res, masks[:2], 8, 0.0, "distill" not in config)  # ranked segments are disjoint
    for o in res:
        assert o.parts and all(p.name == f"{o.name}:{p.index}" for p in o.parts)


def test_rgba_file_and_array_give_the_alpha_object(tmp_path):
    img, masks = scene()
    path = str(tmp_path / "obj.png")
    cv2.imwrite(path, np.dstack([img[:, :, ::-1], masks[0].astype(np.uint8) * 255]))
    seg = build("grouping")
    from_file = seg.detect_objects(path)
    from_array = seg.detect_objects(np.dstack([img, masks[0].astype(np.uint8) * 255]))
    assert len(from_file) == len(from_array) == 1
    assert np.array_equal(from_file[0].mask, masks[0]) and np.array_equal(from_array[0].mask, masks[0])


def test_draw_has_a_legend_panel():
    img, masks = scene()
    obj = SegObject(0, masks[0], 0.9, "cat", [4, 6, 40, 38])
    res = fixed_segmenter(masks[0][None]).segment_parts(img, [obj])
    out = draw(img, res)
    assert out.shape[1] > W and out.shape[0] >= H and out.dtype == np.uint8
    assert not np.array_equal(out[:H, :W], img)  # the part is drawn


def test_demo_writes_a_json_and_overlay_per_image(tmp_path):
    demo = load_tool("demo")
    img, masks = scene()
    cv2.imwrite(str(tmp_path / "a.png"), np.dstack([img[:, :, ::-1], masks[0].astype(np.uint8) * 255]))
    cv2.imwrite(str(tmp_path / "b.png"), img[:, :, ::-1])
    out = tmp_path / "out"
    demo.main(["--config-file", PART_CONFIGS["proposals"][0], "--input", str(tmp_path / "*.png"), "--output", str(out),
               "--topk", "2", "--non-overlapping", "--part-score-threshold", "0", "--random-weights", *TINY_M2F])
    assert sorted(os.listdir(out)) == [".lock", "a_parts.json", "a_parts.png", "b_parts.json", "b_parts.png",
                                       "results.json"]
    a = json.loads((out / "a_parts.json").read_text())
    assert (a["height"], a["width"]) == (H, W) and len(a["objects"]) == 1  # the alpha object
    assert np.array_equal(segmentation_to_mask(a["objects"][0]["segmentation"], H, W), masks[0])
    assert 0 < len(a["parts"]) <= 2 and all(p["object_id"] == 0 for p in a["parts"])
    b = json.loads((out / "b_parts.json").read_text())
    assert len(b["objects"]) == 1 and b["objects"][0]["bbox"] == [0.0, 0.0, W, H]  # the whole image


@pytest.mark.parametrize("config,reference", [
    ("configs/mask2former/maskformer2_R50_coco_instance.yaml",
     ("mask2former_coco_instance_state_dict_shapes.json", "r50")),
    ("projects/PartDistillation/configs/proposal_learning_swinL.yaml",
     ("partdistillation_state_dict_shapes.json", "proposal")),
])
def test_recipe_configs_have_the_released_checkpoints_layout(config, reference):
    """The demo recipes' configs (projects/PartDistillation/README.md) build the state_dict of the
    official Mask2Former R50 COCO-instance model and of PartDistillation's released part-proposal model."""
    import json

    from test_mask2former_state_dict import REPO, build_on_meta

    path = REPO.parent / "shared" / "reference" / reference[0]
    if not path.is_file():
        pytest.skip(f"reference shapes not found at {path}")
    expected = json.loads(path.read_text())[reference[1]]
    expected = {k: (v[0] if reference[1] == "proposal" else v) for k, v in expected.items()}
    model = build_on_meta(config, num_classes=load_config(config).MODEL.SEM_SEG_HEAD.NUM_CLASSES)
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert sorted(set(expected) ^ set(shapes)) == []
    assert {k: v for k, v in shapes.items() if list(expected[k]) != v} == {}


def test_readme_api_example_runs(tmp_path, capsys):
    """README.md's PartSegmenter example, with the tiny widths, random weights and a synthetic photo."""
    with open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")) as f:
        blocks = f.read().split("```python\n")[1:]
    code = next(b.split("```")[0] for b in blocks if "PartSegmenter(" in b)
    img, masks = scene()
    photo = str(tmp_path / "photo.png")
    cv2.imwrite(photo, img[:, :, ::-1])
    for old, new in (('"photo.jpg"', repr(photo)), ('"weights/model_final_3c8ec9.pkl"', '""'),
                     ('"grouping"])', '"grouping"] + TINY)'),
                     ("PartSegmenter(cfg)", "PartSegmenter(cfg, random_weights=True)"),
                     ("object_score_threshold=0.5", "object_score_threshold=0.0")):
        assert old in code, old
        code = code.replace(old, new)
    tiny = TINY_M2F + ["MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
                       "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", "5", "SEGMENTER.MAX_OBJECTS", "2"]
    namespace = {"TINY": tiny}
    torch.manual_seed(0)
    exec(compile(code, "README.md", "exec"), namespace)
    objects, overlay, result = namespace["objects"], namespace["overlay"], namespace["result"]
    printed = capsys.readouterr().out.strip().splitlines()
    assert 1 <= len(objects) <= 2 and len([line for line in printed if line[:1].isdigit()]) == len(objects)
    assert overlay.shape == (H, W + 220, 3) and overlay.dtype == np.uint8
    assert len(result["objects"]) == len(objects) and all(p["object_id"] < len(objects) for p in result["parts"])
