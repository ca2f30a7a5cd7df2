"""A user's Detic checkout (facebookresearch/Detic with its ``third_party/CenterNet2`` submodule),
made importable and usable in part_d2's environment. Detic and CenterNet2 have no packaging: users
clone them, and :func:`import_detic` takes the clone's path.

Four patches, each a no-op where it is not needed (numbered as in issue 19's list):

1. ``pkg_resources`` (:func:`install_pkg_resources_shim`). CLIP's ``clip/clip.py`` (openai/CLIP and
   the ``clip-anytorch`` wheel), imported by Detic's text encoder, does ``from pkg_resources import
   packaging`` only to compare version strings. ``pkg_resources`` comes with setuptools, which
   recent releases and Python >= 3.12 virtual environments no longer provide. The shim is a
   ``pkg_resources`` module holding just ``packaging``. No-op when ``import pkg_resources`` works.
2. timm (:func:`patch_timm_backbone`). ``detic/modeling/backbone/timm.py`` was written for timm
   versions whose ``default_cfgs`` map model names to dicts: ``create_timm_resnet`` (ResNet-50-21k
   configs) and the ``convnext_tiny_21k`` model (ConvNeXt configs) copy one entry and assign its
   ``'url'``. From timm 0.9 the entries are ``DefaultCfg`` objects, and building those backbones
   fails with "'DefaultCfg' object does not support item assignment" (Detic 436cda2,
   ``timm.py:82`` and ``:33``). The patch replaces, in that module only, ``create_timm_resnet`` by
   a direct construction of the module's own ``CustomResNet`` with its ``model_params`` (what
   timm's builder does without pretrained weights) and ``create_model`` by one that builds timm's
   ``convnext_tiny`` for ``convnext_tiny_21k`` (the same architecture; only the ImageNet-21k
   pretraining url differs). Pretrained ImageNet-21k initialisation (``MODEL.TIMM.PRETRAINED``, a
   training option; Detic's released weights contain the backbone) is then refused with a one-line
   error. No-op when timm's ``default_cfgs`` entries support item assignment (timm < 0.9). Swin-B
   configs do not use these functions.
3. Metadata paths (:func:`resolve_checkout_paths`, applied to each Detic config). Detic's configs
   name files relative to the checkout root (``datasets/metadata/lvis_v1_train_cat_info.json``,
   read at model build when ``USE_FED_LOSS``; zero-shot classifier ``.npy`` files), so Detic runs
   only from its root. Every config value that is a relative path missing from the working
   directory but present in the checkout is made absolute. No-op when run from the checkout root.
4. ``sys.path`` (:func:`add_checkout_to_sys_path`). Detic's code imports ``detic`` and ``centernet``
   as top-level packages; they live at the checkout root and at ``third_party/CenterNet2``. Both
   folders go to the front of ``sys.path``. No-op for a folder already on it (e.g. by PYTHONPATH).
"""
import importlib
import os
import sys
import types
from typing import Dict, List, NamedTuple, Tuple

from part_d2.utils.errors import MissingDependencyError

DETIC_INSTALL_HINT = (
    "clone it with `git clone --recursive https://github.com/facebookresearch/Detic` (the --recursive "
    "brings its third_party/CenterNet2 submodule) and give the clone's path"
)
CENTERNET_DIR = os.path.join("third_party", "CenterNet2")
# Python packages Detic imports that users install themselves: module name -> what to pip install.
PIP_NAMES = {"clip": "clip-anytorch", "timm": "timm", "ftfy": "ftfy", "regex": "regex"}


class DeticModules(NamedTuple):
    """What part_d2 uses of an imported Detic checkout."""
    root: str  # the checkout's folder (absolute)
    add_centernet_config: object  # centernet.config.add_centernet_config(cfg)
    add_detic_config: object  # detic.config.add_detic_config(cfg)
    build_text_encoder: object  # detic.modeling.text.text_encoder.build_text_encoder(pretrain: bool)


def check_checkout(detic_root: str) -> Tuple[str, str]:
    """``(root, centernet_root)``, absolute, of the Detic checkout ``detic_root``, or a one-line
    error naming what is missing (the checkout, or its CenterNet2 submodule)."""
    root = os.path.abspath(os.path.expanduser(detic_root))
    if not os.path.isfile(os.path.join(root, "detic", "__init__.py")):
        raise MissingDependencyError(f"{detic_root}: not a Detic checkout (no detic/__init__.py); {DETIC_INSTALL_HINT}")
    centernet = os.path.join(root, CENTERNET_DIR)
    if not os.path.isfile(os.path.join(centernet, "centernet", "__init__.py")):
        raise MissingDependencyError(
            f"{centernet}: CenterNet2 is missing from the Detic checkout (no centernet/__init__.py); run "
            f"`git submodule update --init {CENTERNET_DIR}` in {root}")
    return root, centernet


def find_detic_root(path: str) -> str:
    """The Detic checkout holding ``path`` (e.g. a config ``Detic/configs/X.yaml``), or ""."""
    folder = os.path.dirname(os.path.abspath(path))
    while True:
        if os.path.isfile(os.path.join(folder, "detic", "__init__.py")):
            return folder
        parent = os.path.dirname(folder)
        if parent == folder:
            return ""
        folder = parent


def add_checkout_to_sys_path(root: str, centernet_root: str) -> List[str]:
    """Patch 4: put the checkout and its CenterNet2 first on ``sys.path``; returns the folders added.

    An error when ``detic`` or ``centernet`` is already imported from another folder (one process
    holds one Detic)."""
    for name, folder in (("detic", root), ("centernet", centernet_root)):
        module = sys.modules.get(name)
        where = os.path.dirname(os.path.dirname(os.path.abspath(getattr(module, "__file__", "") or "")))
        if module is not None and where != folder:
            raise MissingDependencyError(f"{name} is already imported from {where}, not from {folder}: "
                                         "use one Detic checkout per process")
    added = []
    for folder in (centernet_root, root):
        if folder not in [os.path.abspath(p) for p in sys.path if p]:
            sys.path.insert(0, folder)
            added.append(folder)
    return added


def install_pkg_resources_shim() -> bool:
    """Patch 1: a minimal ``pkg_resources`` (only ``packaging``) when the real one is missing;
    returns whether it was installed."""
    try:
        import pkg_resources  # noqa: F401
        return False
    except ImportError:
        pass
    try:
        import packaging.version
    except ImportError:
        raise MissingDependencyError("Detic's CLIP needs the Python package 'packaging': "
                                     "pip install packaging") from None
    shim = types.ModuleType("pkg_resources", "part_d2 shim: CLIP imports only `packaging` from pkg_resources")
    shim.packaging = packaging
    sys.modules["pkg_resources"] = shim
    return True


def _supports_item_assignment(value) -> bool:
    return hasattr(type(value), "__setitem__")


def patch_timm_backbone(module) -> bool:
    """Patch 2 on ``detic.modeling.backbone.timm`` (``module``); returns whether it was patched."""
    if getattr(module, "_part_d2_patched", False):
        return True
    entry = module.default_cfgs_resnet.get("resnet50")
    if entry is None or _supports_item_assignment(entry):
        return False
    original_create_model = module.create_model

    def refuse_pretrained(name):
        raise MissingDependencyError(
            f"MODEL.TIMM.PRETRAINED with {name}: Detic's ImageNet-21k initialisation cannot be built with the "
            "installed timm (>= 0.9); set MODEL.TIMM.PRETRAINED False (Detic's weights include the backbone)")

    def create_timm_resnet(variant, out_indices, pretrained=False, **kwargs):
        if pretrained:
            refuse_pretrained(variant)
        return module.CustomResNet(out_indices=out_indices, **module.model_params[variant], **kwargs)

    def create_model(name, *args, **kwargs):
        if name == "convnext_tiny_21k":
            if kwargs.get("pretrained") or (args and args[0]):
                refuse_pretrained(name)
            name = "convnext_tiny"
        return original_create_model(name, *args, **kwargs)

    module.create_timm_resnet, module.create_model = create_timm_resnet, create_model
    module._part_d2_patched = True
    return True


def resolve_checkout_path(value: str, root: str) -> str:
    """``value`` made absolute against the checkout ``root`` when it is a relative path missing from
    the working directory but present in the checkout; else ``value`` unchanged."""
    if (not value or os.path.isabs(value) or "://" in value or os.path.exists(value)
            or not os.path.exists(os.path.join(root, value))):
        return value
    return os.path.join(root, value)


def resolve_checkout_paths(cfg, root: str, prefix: str = "") -> Dict[str, object]:
    """Patch 3: :func:`resolve_checkout_path` on every string value (and every string
    in a list/tuple value) with a ``/`` of the detectron2 config ``cfg``, in place. Returns
    ``{key: new value}`` of the values changed."""
    changed = {}
    for key, value in list(cfg.items()):
        name = f"{prefix}{key}"
        if hasattr(value, "items"):
            changed.update(resolve_checkout_paths(value, root, name + "."))
            continue
        if isinstance(value, str) and "/" in value:
            new = resolve_checkout_path(value, root)
        elif isinstance(value, (list, tuple)) and any(isinstance(v, str) and "/" in v for v in value):
            new = type(value)(resolve_checkout_path(v, root) if isinstance(v, str) else v for v in value)
        else:
            continue
        if new != value:
            cfg[key] = changed[name] = new
    return changed


def _missing_package_error(e: ImportError, root: str) -> MissingDependencyError:
    name = (getattr(e, "name", None) or "").split(".")[0]
    if name in ("detic", "centernet"):
        where = f"{root} does not provide it" if root else "not on PYTHONPATH and no checkout given"
        return MissingDependencyError(f"Detic is not importable ({name}: {where}); {DETIC_INSTALL_HINT}")
    if name:
        return MissingDependencyError(f"Detic needs the Python package '{PIP_NAMES.get(name, name)}' "
                                      f"(module {name} is not importable): pip install {PIP_NAMES.get(name, name)}")
    return MissingDependencyError(f"Detic cannot be imported: {str(e).splitlines()[0] if str(e) else type(e).__name__}")


_IMPORTED: Dict[str, DeticModules] = {}


def import_detic(detic_root: str = "") -> DeticModules:
    """Import Detic from the checkout ``detic_root`` (empty: wherever ``detic`` and ``centernet``
    are importable, e.g. PYTHONPATH) with patches 4, 1 and 2 applied (patch 3 is
    :func:`resolve_checkout_paths`, applied to each config). A one-line :class:`MissingDependencyError` names
    what is missing: the checkout, CenterNet2, or a package (``clip-anytorch``, ``timm``, ...)."""
    key = os.path.abspath(detic_root) if detic_root else ""
    if key in _IMPORTED:
        return _IMPORTED[key]
    root = ""
    if detic_root:
        root, centernet_root = check_checkout(detic_root)
        add_checkout_to_sys_path(root, centernet_root)
    install_pkg_resources_shim()
    try:
        centernet_config = importlib.import_module("centernet.config")
        detic = importlib.import_module("detic")  # registers Detic's architectures, heads and backbones
        detic_config = importlib.import_module("detic.config")
        text_encoder = importlib.import_module("detic.modeling.text.text_encoder")
        timm_backbone = importlib.import_module("detic.modeling.backbone.timm")
    except ImportError as e:
        raise _missing_package_error(e, root) from None
    patch_timm_backbone(timm_backbone)
    modules = DeticModules(root or os.path.dirname(os.path.dirname(os.path.abspath(detic.__file__))),
                           centernet_config.add_centernet_config, detic_config.add_detic_config,
                           text_encoder.build_text_encoder)
    _IMPORTED[key] = modules
    return modules
