"""Object classes of evaluated images in the stage-3 classifier's class list: the
``PART_DISTILLATION.OBJECT_CLASS_JSON`` file (reader and writer).

Stage 3's per-object-class classifier has one block of rows per object class of its *training*
data (e.g. ImageNet-21K's classes after Detic). An evaluated dataset indexes its own object classes
(PartImageNet: 158 ImageNet wnids), so its ``object_category_id`` selects the wrong rows unless the
two class lists agree. The json maps each evaluated image (``file_name``, its basename or
``str(image_id)``) to its class index in the model's list; :func:`object_class_map` builds it by
matching class names, or ImageNet wnids through a class list ``[{"wnid", "name"}]`` (the
``imagenet21k_classes.json`` written by ``datasets/prepare_imagenet.py``).
"""
import os
from collections import Counter
from typing import Dict, List, Optional, Sequence, Tuple

from part_d2.data.object_mask_models import normalize_class_name
from part_d2.utils.errors import PartDatasetError
from part_d2.utils.io import atomic_write_json, read_json


def read_object_class_json(path: str) -> Dict[str, int]:
    """``{file_name | basename | str(image_id): model object class}`` from ``path``."""
    data = read_json(path)
    if not isinstance(data, dict) or not all(isinstance(v, int) and not isinstance(v, bool) for v in data.values()):
        raise PartDatasetError(f"{path}: expected a json object mapping image keys to integer object classes")
    return data


def write_object_class_json(path: str, mapping: Dict[str, int]) -> None:
    atomic_write_json(path, dict(sorted(mapping.items())))


def read_class_list(path: str) -> List[Dict]:
    """``[{"wnid", "name"}]`` of a class-list json: ``{"classes": [...]}`` or a bare list."""
    data = read_json(path)
    classes = data.get("classes") if isinstance(data, dict) else data
    if not isinstance(classes, list) or not all(isinstance(c, dict) and "name" in c for c in classes):
        raise PartDatasetError(f"{path}: expected a class list [{{'wnid', 'name'}}] (or {{'classes': [...]}})")
    return classes


def class_index(model_classes: Sequence[str], class_list: Sequence[Dict] = ()) -> Dict[str, int]:
    """Lookup key -> model class index: each model class name, and the wnid of every class of
    ``class_list`` whose name is a model class (normalised: case, ``_`` and spaces)."""
    index: Dict[str, int] = {}
    for i, name in enumerate(model_classes):
        index.setdefault(normalize_class_name(name), i)
    for c in class_list:
        i = index.get(normalize_class_name(c["name"]))
        if i is not None and c.get("wnid"):
            index.setdefault(normalize_class_name(c["wnid"]), i)
    return index


def image_keys(records: Sequence[Dict]) -> List[str]:
    """One key per record: the file's basename when basenames are unique, else ``str(image_id)``."""
    bases = [os.path.basename(r["file_name"]) for r in records]
    if len(set(bases)) == len(bases):
        return bases
    return [str(r["image_id"]) for r in records]


def object_class_map(records: Sequence[Dict], eval_classes: Sequence[str], model_classes: Sequence[str],
                     class_list: Sequence[Dict] = ()) -> Tuple[Dict[str, int], Counter]:
    """Each record's object class, as an index into ``model_classes``.

    Args:
        records: detectron2 dataset dicts with ``object_category_id`` (index into ``eval_classes``).
        eval_classes / model_classes: class names of the evaluated dataset / the stage-3 classifier.
        class_list: optional ``[{"wnid", "name"}]`` translating wnids to model class names.

    Returns:
        ``({image key: model class}, Counter of the evaluated class names that match no model class)``;
        images without an object class are counted under ``"<no object class>"``.
    """
    index = class_index(model_classes, class_list)
    mapping, unmatched = {}, Counter()
    for key, r in zip(image_keys(records), records):
        c = r.get("object_category_id", -1)
        if c is None or not 0 <= c < len(eval_classes):
            unmatched["<no object class>"] += 1
            continue
        i = index.get(normalize_class_name(eval_classes[c]))
        if i is None:
            unmatched[eval_classes[c]] += 1
        else:
            mapping[key] = i
    return mapping, unmatched


def unmatched_message(unmatched: Counter, source: str) -> str:
    names = ", ".join(f"{n} ({k})" for n, k in unmatched.most_common(5))
    more = f" and {len(unmatched) - 5} more" if len(unmatched) > 5 else ""
    return (f"{sum(unmatched.values())} images of {len(unmatched)} object classes match no class of {source}: "
            f"{names}{more}")


def check_object_classes(eval_classes: Sequence[str], model_classes: Sequence[str], dataset: str,
                         model_source: str) -> Optional[str]:
    """None when ``object_category_id`` of ``dataset`` indexes the model's classes (same lists),
    else the problem in one line."""
    same = [normalize_class_name(c) for c in eval_classes] == [normalize_class_name(c) for c in model_classes]
    if not eval_classes or not model_classes or same:
        return None
    return (f"'{dataset}' has {len(eval_classes)} object classes that are not the {len(model_classes)} classes "
            f"of the stage-3 classifier ({model_source}): its object_category_id would pick another class's rows. "
            "Write PART_DISTILLATION.OBJECT_CLASS_JSON with tools/pd_object_class_json.py and set "
            "PART_DISTILLATION.TEST_OBJECT_CLASS stored")
