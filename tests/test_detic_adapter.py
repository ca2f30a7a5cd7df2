"""The Detic adapter (part_d2/compat/detic.py, part_d2/data/object_mask_models.py) against a stand-in
Detic checkout written to tmp_path: tiny ``detic`` / ``centernet`` / ``clip`` packages with the
module paths and functions the adapter uses. The real checkout was checked by hand (issue 19)."""
import os
import sys
import textwrap
import types

import numpy as np
import pytest
import torch
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import Instances

import part_d2.compat.detic as compat
from part_d2.data.object_mask_models import build_detic_object_model, build_object_mask_model, load_detic_config
from part_d2.utils.errors import ConfigError, MissingDependencyError, PartDatasetError

ARCH = "PartD2StandInDetic"
CONFIG = "configs/StandIn.yaml"
FILES = {
    "detic/__init__.py": """
        from .modeling.meta_arch import stand_in_rcnn  # registers the architecture, as Detic's __init__
        from .modeling.backbone import timm
    """,
    "detic/modeling/__init__.py": "",
    "detic/modeling/meta_arch/__init__.py": "",
    "detic/modeling/backbone/__init__.py": "",
    "detic/modeling/text/__init__.py": "",
    "detic/config.py": """
        from detectron2.config import CfgNode as CN

        def add_detic_config(cfg):
            cfg.MODEL.ROI_BOX_HEAD.ZEROSHOT_WEIGHT_PATH = "datasets/metadata/lvis.npy"
            cfg.MODEL.ROI_BOX_HEAD.ZEROSHOT_WEIGHT_DIM = 4
            cfg.MODEL.ROI_BOX_HEAD.CAT_FREQ_PATH = "datasets/metadata/cat_info.json"
            cfg.MODEL.ROI_HEADS.ONE_CLASS_PER_PROPOSAL = False
            cfg.MODEL.TEST_CLASSIFIERS = ["datasets/metadata/lvis.npy", "datasets/metadata/absent.npy"]
            cfg.MODEL.SWIN = CN()
            cfg.MODEL.SWIN.SIZE = "T"
            cfg.MODEL.TIMM = CN()
            cfg.MODEL.TIMM.BASE_NAME = "resnet50_in21k"
            cfg.MODEL.TIMM.PRETRAINED = True
    """,
    # timm >= 0.9 behaviour: default_cfgs entries without item assignment (Detic's timm.py:82)
    "detic/modeling/backbone/timm.py": """
        import copy
        import torch

        class DefaultCfg:
            url = ""

        default_cfgs_resnet = {"resnet50": DefaultCfg()}
        model_params = {"resnet50_in21k": dict(width=3)}

        class CustomResNet(torch.nn.Module):
            def __init__(self, out_indices, width):
                super().__init__()
                self.out_indices, self.conv = out_indices, torch.nn.Conv2d(3, width, 1)

        def create_model(name, **kwargs):
            raise AssertionError("not used by the stand-in")

        def create_timm_resnet(variant, out_indices, pretrained=False):
            default_cfgs_resnet[variant] = copy.deepcopy(default_cfgs_resnet["resnet50"])
            default_cfgs_resnet[variant]["url"] = "https://example.invalid/in21k.pth"
            return CustomResNet(out_indices, **model_params[variant])
    """,
    "detic/modeling/text/text_encoder.py": """
        import torch
        from clip.simple_tokenizer import SimpleTokenizer  # noqa: F401  (as Detic's: needs the clip package)

        class StandInTextEncoder(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.token_embedding = torch.nn.Embedding(128, 6)
                self.text_projection = torch.nn.Parameter(torch.randn(6, 4))

            def forward(self, captions):
                ids = [torch.tensor([ord(c) % 128 for c in t]) for t in captions]
                return torch.stack([self.token_embedding(i).mean(0) for i in ids]) @ self.text_projection

        def build_text_encoder(pretrain=True):
            assert not pretrain, "part_d2 loads the CLIP weights itself"
            return StandInTextEncoder()
    """,
    # boxes: 3 fixed squares with features e_0, e_1, e_2 (D=4); class = argmax of feature . zs_weight
    "detic/modeling/meta_arch/stand_in_rcnn.py": """
        import json
        import types
        import torch
        from detectron2.modeling import META_ARCH_REGISTRY
        from detectron2.structures import Boxes, Instances
        from detic.modeling.backbone import timm

        class Predictor(torch.nn.Module):
            def __init__(self, dim, num_classes):
                super().__init__()
                self.norm_weight = True
                self.cls_score = torch.nn.Module()
                self.cls_score.norm_weight = True
                self.cls_score.zs_weight = torch.nn.Parameter(torch.randn(dim, num_classes + 1))

        class StandInDetic(torch.nn.Module):
            def __init__(self, cfg):
                super().__init__()
                with open(cfg.MODEL.ROI_BOX_HEAD.CAT_FREQ_PATH) as f:  # relative to the checkout in Detic
                    self.cat_info = json.load(f)
                self.backbone = timm.create_timm_resnet(cfg.MODEL.TIMM.BASE_NAME, [3, 4],
                                                        pretrained=cfg.MODEL.TIMM.PRETRAINED)
                dim = cfg.MODEL.ROI_BOX_HEAD.ZEROSHOT_WEIGHT_DIM
                self.roi_heads = types.SimpleNamespace(num_classes=5, box_predictor=torch.nn.ModuleList(
                    [Predictor(dim, 5) for _ in range(3)]))
                self.stages = self.roi_heads.box_predictor
                self.max_dets = cfg.TEST.DETECTIONS_PER_IMAGE

            def forward(self, batched_inputs):
                zs = self.roi_heads.box_predictor[-1].cls_score.zs_weight[:, :-1]
                logits = torch.eye(3, zs.shape[0]) @ zs
                scores, classes = logits.softmax(1).max(1)
                out = []
                for x in batched_inputs:
                    h, w = x["height"], x["width"]
                    masks = torch.zeros(3, h, w, dtype=torch.bool)
                    for i in range(3):
                        masks[i, 2 * i: 2 * i + 3, 2 * i: 2 * i + 3] = True
                    boxes = Boxes(torch.tensor([[2. * i, 2. * i, 2. * i + 3, 2. * i + 3] for i in range(3)]))
                    inst = Instances((h, w), pred_masks=masks, scores=scores, pred_classes=classes, pred_boxes=boxes)
                    out.append({"instances": inst[: self.max_dets]})
                return out

        META_ARCH_REGISTRY._obj_map.pop("%(arch)s", None)
        StandInDetic.__name__ = "%(arch)s"
        META_ARCH_REGISTRY.register(StandInDetic)
    """ % {"arch": ARCH},
    "third_party/CenterNet2/centernet/__init__.py": "",
    "third_party/CenterNet2/centernet/config.py": """
        from detectron2.config import CfgNode as CN

        def add_centernet_config(cfg):
            cfg.MODEL.CENTERNET = CN()
            cfg.MODEL.CENTERNET.NUM_CLASSES = 80
    """,
    "datasets/metadata/cat_info.json": '[{"id": 1, "image_count": 3}]',
    "datasets/metadata/lvis.npy": "only its path matters",
    CONFIG: f"""
        MODEL:
          META_ARCHITECTURE: "{ARCH}"
        INPUT:
          MIN_SIZE_TEST: 16
          MAX_SIZE_TEST: 32
    """,
}
# the clip package: clip/__init__.py imports pkg_resources as openai/CLIP's clip/clip.py does
CLIP_FILES = {
    "clip/__init__.py": "from pkg_resources import packaging  # noqa: F401\n",
    "clip/simple_tokenizer.py": "class SimpleTokenizer:\n    pass\n",
}
IMAGE = np.zeros((20, 24, 3), np.uint8)


def write_tree(root, files):
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def forget_detic():
    for name in list(sys.modules):
        if name.split(".")[0] in ("detic", "centernet", "clip") or (
                name == "pkg_resources" and not hasattr(sys.modules[name], "__file__")):
            del sys.modules[name]
    META_ARCH_REGISTRY._obj_map.pop(ARCH, None)


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A stand-in checkout ``tmp_path/Detic`` and clip package ``tmp_path/site`` (on sys.path); the
    working directory elsewhere; every import, sys.path entry and registration undone afterwards."""
    root = write_tree(tmp_path / "Detic", FILES)
    monkeypatch.setattr(sys, "path", [str(write_tree(tmp_path / "site", CLIP_FILES))] + sys.path)
    monkeypatch.setattr(compat, "_IMPORTED", {})
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    forget_detic()
    yield types.SimpleNamespace(root=str(root), tmp=tmp_path, site=str(tmp_path / "site"))
    forget_detic()


def text_encoder_weights(path, seed=0, scripted=False):
    """Stand-in CLIP weights of the stand-in text encoder (a state dict or a TorchScript archive
    as OpenAI's ViT-B-32.pt), and the encoder with them."""
    from detic.modeling.text.text_encoder import StandInTextEncoder

    torch.manual_seed(seed)
    encoder = StandInTextEncoder().eval()
    if scripted:
        class Holder(torch.nn.Module):  # same parameter names; scriptable
            def __init__(self):
                super().__init__()
                self.token_embedding, self.text_projection = encoder.token_embedding, encoder.text_projection

            def forward(self, x):
                return self.token_embedding(x) @ self.text_projection

        torch.jit.save(torch.jit.script(Holder()), str(path))
    else:
        torch.save(dict(encoder.state_dict(), **{"visual.proj": torch.zeros(2), "logit_scale": torch.ones(())}),
                   str(path))
    return encoder


def one_line(excinfo):
    return "\n" not in str(excinfo.value)


def test_missing_checkout_centernet_and_detic_are_one_line_errors(env, tmp_path):
    with pytest.raises(MissingDependencyError, match="not a Detic checkout .*git clone --recursive") as e:
        build_detic_object_model(str(tmp_path / "nowhere"), CONFIG, "")
    assert one_line(e)
    bare = write_tree(tmp_path / "bare", {k: v for k, v in FILES.items() if not k.startswith("third_party")})
    with pytest.raises(MissingDependencyError, match="CenterNet2 is missing .*git submodule update") as e:
        build_detic_object_model(str(bare), CONFIG, "")
    assert one_line(e)
    with pytest.raises(MissingDependencyError, match="Detic is not importable .*no checkout given"):
        compat.import_detic("")  # neither a checkout nor PYTHONPATH


def test_missing_clip_package_is_a_one_line_error(env, monkeypatch):
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != env.site])
    with pytest.raises(MissingDependencyError, match="pip install clip-anytorch") as e:
        compat.import_detic(env.root)
    assert one_line(e)


def test_checkout_from_another_folder_and_config_file_errors(env, tmp_path):
    compat.import_detic(env.root)
    other = write_tree(tmp_path / "Other", FILES)
    with pytest.raises(MissingDependencyError, match="already imported from"):
        compat.import_detic(str(other))
    with pytest.raises(ConfigError, match="absent.yaml: .*does not exist"):
        load_detic_config("configs/absent.yaml", (), env.root)
    with pytest.raises(ConfigError, match=r"StandIn.yaml: expected KEY VALUE pairs, got 1 items"):
        load_detic_config(CONFIG, ["MODEL.WEIGHTS"], env.root)


def test_model_from_a_checkout_outside_the_working_directory(env):
    """Patches 3 and 4 applied: checkout and CenterNet2 on sys.path, metadata paths of the config
    made absolute (the stand-in reads CAT_FREQ_PATH at build), the config file found in the checkout."""
    cfg = load_detic_config(CONFIG, (), env.root)
    meta = os.path.join(env.root, "datasets", "metadata")
    assert sys.path[:2] == [env.root, os.path.join(env.root, "third_party", "CenterNet2")]
    assert cfg.MODEL.ROI_BOX_HEAD.CAT_FREQ_PATH == os.path.join(meta, "cat_info.json")
    assert cfg.MODEL.TEST_CLASSIFIERS == [os.path.join(meta, "lvis.npy"), "datasets/metadata/absent.npy"]
    assert cfg.MODEL.ROI_BOX_HEAD.ZEROSHOT_WEIGHT_PATH == "rand" and cfg.TEST.DETECTIONS_PER_IMAGE == 1000
    assert not cfg.MODEL.TIMM.PRETRAINED and cfg.MODEL.SWIN.SIZE == "T"  # Detic's MODEL.SWIN, not part_d2's
    model = build_detic_object_model(env.root, CONFIG, "", vocabulary_npy=write_npy(env.tmp, np.eye(3, 4)))
    assert model.predictor.model.cat_info == [{"id": 1, "image_count": 3}]


def test_patches_are_no_ops_where_not_needed(env, monkeypatch):
    sys.path[:0] = [os.path.join(env.root, "third_party", "CenterNet2"), env.root]
    path = list(sys.path)
    monkeypatch.chdir(env.root)
    cfg = load_detic_config(CONFIG, (), "")  # importable from sys.path, run from the checkout root
    assert sys.path == path
    assert cfg.MODEL.ROI_BOX_HEAD.CAT_FREQ_PATH == "datasets/metadata/cat_info.json"
    assert compat.add_checkout_to_sys_path(env.root, os.path.join(env.root, "third_party", "CenterNet2")) == []


def test_pkg_resources_shim_only_when_pkg_resources_is_missing(monkeypatch):
    try:
        import pkg_resources
    except ImportError:  # a setuptools-less environment: only the second half applies
        pkg_resources = None
    if pkg_resources is not None:
        assert compat.install_pkg_resources_shim() is False and sys.modules["pkg_resources"] is pkg_resources
    monkeypatch.setitem(sys.modules, "pkg_resources", None)  # `import pkg_resources` now fails
    assert compat.install_pkg_resources_shim() is True
    import packaging
    from pkg_resources import packaging as shimmed
    assert shimmed is packaging and shimmed.version.parse("1.7.1") < shimmed.version.parse("2.12")


def timm_module(item_assignment: bool):
    """A stand-in ``detic.modeling.backbone.timm`` over old (dict) or new (DefaultCfg) timm."""
    m = types.ModuleType("stand_in_timm")
    m.default_cfgs_resnet = {"resnet50": {} if item_assignment else object()}
    m.model_params = {"resnet50_in21k": dict(block="bottleneck", layers=[3, 4, 6, 3])}
    m.CustomResNet = lambda **kw: ("CustomResNet", kw)
    m.create_model = lambda name, **kw: ("timm", name, kw)
    m.create_timm_resnet = "original"
    return m


def test_timm_patch_only_for_timm_with_default_cfg_objects():
    old = timm_module(item_assignment=True)
    assert compat.patch_timm_backbone(old) is False and old.create_timm_resnet == "original"
    new = timm_module(item_assignment=False)
    assert compat.patch_timm_backbone(new) is True
    assert new.create_timm_resnet("resnet50_in21k", out_indices=[2, 3]) == (
        "CustomResNet", dict(out_indices=[2, 3], block="bottleneck", layers=[3, 4, 6, 3]))
    assert new.create_model("convnext_tiny_21k", features_only=True) == ("timm", "convnext_tiny",
                                                                         {"features_only": True})
    assert new.create_model("resnet18", pretrained=True)[1] == "resnet18"
    for call in (lambda: new.create_timm_resnet("resnet50_in21k", [3], pretrained=True),
                 lambda: new.create_model("convnext_tiny_21k", pretrained=True)):
        with pytest.raises(MissingDependencyError, match="MODEL.TIMM.PRETRAINED False"):
            call()


def write_npy(tmp, array, name="vocab.npy"):
    np.save(str(tmp / name), np.asarray(array, np.float32))
    return str(tmp / name)


def test_vocabulary_from_npy_and_the_call_contract(env):
    # class embeddings e_2, e_0, e_1: box i (feature e_i) -> class (i + 1) % 3
    emb = np.eye(4, dtype=np.float32)[[2, 0, 1]]
    model = build_detic_object_model(env.root, CONFIG, "", vocabulary=["cat", "dog", "cow"],
                                     vocabulary_npy=write_npy(env.tmp, emb), detections_per_image=2)
    inst = model(IMAGE)
    assert isinstance(inst, Instances) and inst.image_size == (20, 24) and len(inst) == 2
    assert inst.pred_masks.shape == (2, 20, 24) and inst.pred_masks.dtype == torch.bool
    assert inst.pred_classes.tolist() == [1, 2] and model.class_names == ["cat", "dog", "cow"]
    zs = model.predictor.model.roi_heads.box_predictor[0].cls_score.zs_weight
    assert zs.shape == (4, 4) and torch.equal(zs[:, -1], torch.zeros(4))  # + background column
    assert model.predictor.model.roi_heads.num_classes == 3
    model.set_vocabulary(npy=write_npy(env.tmp, np.eye(4)[[1, 2, 0, 3]], "v4.npy"))  # unnamed classes
    assert model.class_names == ["", "", "", ""] and model(IMAGE).pred_classes.tolist() == [2, 0]


def test_npy_shape_and_file_errors(env):
    model = build_detic_object_model(env.root, CONFIG, "")
    cases = [(np.eye(2, 4), ["a", "b", "c"], r"expected \(3, D\) .* got shape \(2, 4\)"),
             (np.ones(4), None, r"expected \(C, D\) .* got shape \(4,\)")]
    for array, names, match in cases:
        with pytest.raises(PartDatasetError, match="vocab.npy: " + match) as e:
            model.set_vocabulary(names, write_npy(env.tmp, array))
        assert one_line(e)
    (env.tmp / "bad.npy").write_text("not numpy")
    with pytest.raises(PartDatasetError, match="bad.npy: cannot read the vocabulary embeddings"):
        model.set_vocabulary(["a"], str(env.tmp / "bad.npy"))
    with pytest.raises(PartDatasetError, match="Detic needs a vocabulary"):
        model.set_vocabulary()


@pytest.mark.parametrize("scripted", [False, True])
def test_vocabulary_from_names_with_local_clip_weights(env, scripted):
    compat.import_detic(env.root)
    weights = env.tmp / "clip.pt"
    encoder = text_encoder_weights(weights, scripted=scripted)
    model = build_detic_object_model(env.root, CONFIG, "", vocabulary=["dog", "bicycle", "person"],
                                     clip_weights=str(weights))
    with torch.no_grad():
        expected = torch.nn.functional.normalize(encoder(["a dog", "a bicycle", "a person"]).t(), dim=0)  # (D, C)
    zs = model.predictor.model.roi_heads.box_predictor[0].cls_score.zs_weight
    assert torch.allclose(zs[:, :3], expected, atol=1e-6)
    assert model(IMAGE).pred_classes.tolist() == expected[:3].argmax(1).tolist()
    assert model.class_names == ["dog", "bicycle", "person"]


def test_missing_or_wrong_clip_weights_are_one_line_errors(env):
    model = build_detic_object_model(env.root, CONFIG, "")
    default = os.path.join(str(env.tmp / "home"), ".cache", "clip", "ViT-B-32.pt")
    for clip_weights, path in (("", default), (str(env.tmp / "none.pt"), str(env.tmp / "none.pt"))):
        model.clip_weights = clip_weights
        with pytest.raises(MissingDependencyError, match=f"{path}: CLIP ViT-B/32 weights not found") as e:
            model.set_vocabulary(["dog"])
        assert one_line(e)
    torch.save({"token_embedding.weight": torch.zeros(3, 3)}, str(env.tmp / "other.pt"))
    model.clip_weights = str(env.tmp / "other.pt")
    with pytest.raises(PartDatasetError, match="other.pt: not CLIP ViT-B/32 weights"):
        model.set_vocabulary(["dog"])
    np.save(str(env.tmp / "emb.npy"), np.zeros((1, 4)))
    model.clip_weights = str(env.tmp / "emb.npy")
    with pytest.raises(PartDatasetError, match="emb.npy: not CLIP weights"):
        model.set_vocabulary(["dog"])


def test_stage0_object_model_is_the_same_detic_path(env, tmp_path):
    """tools/pd_object_masks.py --detic: the checkout found from the config's path, the vocabulary
    from OBJECT_MASKS, objects selected by the record's class."""
    npy = write_npy(tmp_path, np.eye(4, dtype=np.float32)[[2, 0, 1]])
    cfg = load_detic_config(os.path.join(env.root, CONFIG), ["PART_DISTILLATION.OBJECT_MASKS.VOCABULARY_EMBEDDINGS",
                                                              npy, "PART_DISTILLATION.OBJECT_MASKS.TOPK", "1",
                                                              "MODEL.DEVICE", "cpu"])
    model = build_object_mask_model(cfg, ["cat", "dog", "cow"])
    assert model.class_names == ["cat", "dog", "cow"]
    objs = model({"object_category_id": 0}, IMAGE[:, :, ::-1])
    assert [(o["class_name"], o["bbox"]) for o in objs] == [("cat", [4, 4, 3, 3])]
