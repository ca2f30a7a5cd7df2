"""3x3 collages of the discovered parts of each object class (the paper's manual evaluation),
behind ``tools/pd_collages.py``.

For every (object class, part class) of a finished stage output, up to ``--per-class`` instances
(highest scores first, then input order) are drawn on their object's crop and tiled into
``OUTPUT/<object class>/<part class>.png``.
"""
import os
import re
from collections import defaultdict

import numpy as np

from part_d2.data.image_io import read_image_checked
from part_d2.data.shards import load_stage_output, read_manifest
from part_d2.structures.masks import segmentation_to_mask
from part_d2.utils.visualization import collage, draw_parts, write_png


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def part_crops(records, per_class: int):
    """{part class: [(record, annotation, object)]}: the ``per_class`` best instances of each class."""
    found = defaultdict(list)
    for r in records:
        objects = {o["object_id"]: o for o in r["objects"]}
        for a in r["annotations"]:
            found[a["category_id"]].append((-a.get("score", 1.0), len(found[a["category_id"]]), r, a,
                                            objects.get(a["object_id"])))
    return {c: [x[2:] for x in sorted(v, key=lambda x: x[:2])[:per_class]] for c, v in found.items()}


def draw_instance(record, ann, obj) -> np.ndarray:
    """One part on its object, cropped to the union of both: (h, w, 3) uint8 RGB."""
    h, w = record["height"], record["width"]
    image = read_image_checked(record["file_name"], "RGB")
    part = segmentation_to_mask(ann["segmentation"], h, w)
    omask = segmentation_to_mask(obj["segmentation"], h, w) if obj is not None else part
    ys, xs = np.nonzero(omask | part)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    out = draw_parts(image, part[None], None, omask)
    return out[y0:y1, x0:x1]


def make_collages(*, input: str, output: str, per_class: int = 9, cols: int = 3) -> int:
    """Write the collages of the finished stage output ``input``; returns the number written."""
    root = input
    manifest = read_manifest(root)
    names, objects = manifest["part_classes"], manifest["object_classes"]
    written = 0
    for c, items in sorted(part_crops(load_stage_output(root, "parts"), per_class).items()):
        name = names[c]
        obj_name, _, part_name = name.rpartition(":") if ":" in name else (
            objects[items[0][0]["object_category_id"]] if items[0][0]["object_category_id"] >= 0 else "all", "", name)
        path = os.path.join(output, _safe(obj_name), f"{_safe(part_name)}.png")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_png(path, collage([draw_instance(*it) for it in items], cols))
        written += 1
    return written
