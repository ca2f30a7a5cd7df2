"""The object-class library of the synthetic part dataset: loading, validation and class splits.

The library is data (``part_d2/data/metadata/synthetic_parts_library.json``): a list of shared
``part_kinds`` and of object ``classes``, each with a ``supercategory`` and the parts that build it
(see the file's ``description`` for the shape vocabulary). Part kinds and classes get 1-based ids
in file order, identical in every split.
"""
import hashlib
import json
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from part_d2.utils.errors import PartDatasetError
from part_d2.utils.io import read_json

SPLITS = ("train", "val", "test")
# Fractions of the classes of each supercategory held out as unseen val / test classes.
HELD_OUT_FRACTIONS = {"val": 0.2, "test": 0.2}

DEFAULT_LIBRARY = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "metadata", "synthetic_parts_library.json"
)

# Required parameters of each shape, with the number of values each holds (None: scalar or pair).
SHAPE_PARAMS = {
    "ellipse": {"center": 2, "radii": 2, "angle": 1},
    "rect": {"center": 2, "size": 2, "angle": 1},
    "limb": {"from": 2, "to": 2, "width": None},
    "polygon": {"points": None},
}


@dataclass(frozen=True)
class ObjectClass:
    """One object class: ``id`` (1-based), name, supercategory, split and its part specs."""

    id: int
    name: str
    supercategory: str
    split: str
    parts: Tuple[Dict, ...]


@dataclass(frozen=True)
class PartLibrary:
    """Shared part kinds and the object classes built from them."""

    part_kinds: Tuple[str, ...]
    classes: Tuple[ObjectClass, ...]
    sha1: str

    def part_kind_id(self, kind: str) -> int:
        """1-based id of a part kind."""
        return self.part_kinds.index(kind) + 1

    def classes_of(self, split: str) -> List[ObjectClass]:
        """Object classes of one split, in id order."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        return [c for c in self.classes if c.split == split]


def held_out_counts(num_classes: int) -> Dict[str, int]:
    """Numbers of train / val / test classes of a supercategory with ``num_classes`` classes.

    val and test each get ``round(0.2 n)`` classes but at least one while train keeps at least
    one (test is served first: a supercategory of two classes has one train and one test class).
    """
    counts = {"train": num_classes, "val": 0, "test": 0}
    for split in ("test", "val"):
        n = max(1, int(round(HELD_OUT_FRACTIONS[split] * num_classes)))
        n = min(n, counts["train"] - 1)
        counts[split] = max(n, 0)
        counts["train"] -= counts[split]
    return counts


def split_of_classes(supercategories: List[str]) -> List[str]:
    """Split of each class, given the supercategory of each class in library order.

    Within a supercategory the first classes are ``train``, the next ``val``, the last ``test``.
    """
    members: Dict[str, List[int]] = {}
    for i, sc in enumerate(supercategories):
        members.setdefault(sc, []).append(i)
    splits = [""] * len(supercategories)
    for idx in members.values():
        counts = held_out_counts(len(idx))
        order = ["train"] * counts["train"] + ["val"] * counts["val"] + ["test"] * counts["test"]
        for i, split in zip(idx, order):
            splits[i] = split
    return splits


def _check_part(path: str, where: str, part: Dict, part_kinds: List[str]) -> None:
    if part.get("kind") not in part_kinds:
        raise PartDatasetError(f"{path}: {where}: unknown part kind {part.get('kind')!r}")
    shape = part.get("shape")
    if shape not in SHAPE_PARAMS:
        raise PartDatasetError(f"{path}: {where}: unknown shape {shape!r}; expected one of {sorted(SHAPE_PARAMS)}")
    for key, n in SHAPE_PARAMS[shape].items():
        if key not in part:
            raise PartDatasetError(f"{path}: {where}: {shape} needs {key!r}")
        value = part[key]
        size = len(value) if isinstance(value, list) else 1
        if n is not None and size != n:
            raise PartDatasetError(f"{path}: {where}: {key!r} needs {n} value(s), got {value!r}")
    if shape == "polygon" and len(part["points"]) < 3:
        raise PartDatasetError(f"{path}: {where}: a polygon needs at least 3 points")


def load_library(path: Optional[str] = None) -> PartLibrary:
    """Load and validate a part library json (default: the embedded one).

    Raises:
        PartDatasetError: naming the file and the offending class / part.
    """
    path = path or DEFAULT_LIBRARY
    data = read_json(path)
    for key in ("part_kinds", "classes"):
        if key not in data:
            raise PartDatasetError(f"{path}: missing top-level key {key!r}")
    part_kinds = list(data["part_kinds"])
    if len(set(part_kinds)) != len(part_kinds):
        raise PartDatasetError(f"{path}: duplicate part kinds")
    names = [c.get("name") for c in data["classes"]]
    if len(set(names)) != len(names):
        raise PartDatasetError(f"{path}: duplicate class names")
    for c in data["classes"]:
        if not c.get("supercategory") or not c.get("parts"):
            raise PartDatasetError(f"{path}: class {c.get('name')!r} needs a supercategory and parts")
        for j, part in enumerate(c["parts"]):
            _check_part(path, f"class {c['name']!r} part {j}", part, part_kinds)
    splits = split_of_classes([c["supercategory"] for c in data["classes"]])
    classes = tuple(
        ObjectClass(i + 1, c["name"], c["supercategory"], split, tuple(c["parts"]))
        for i, (c, split) in enumerate(zip(data["classes"], splits))
    )
    sha1 = hashlib.sha1(json.dumps(data, sort_keys=True).encode("utf-8")).hexdigest()
    return PartLibrary(tuple(part_kinds), classes, sha1)
