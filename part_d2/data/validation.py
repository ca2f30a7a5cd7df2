"""Checks of a part json's entries before any of them reaches pycocotools.

pycocotools trusts its input: a NaN polygon coordinate makes ``frPyObjects`` allocate without
bound, and an RLE whose counts do not add up to the image size is decoded past its buffer. These
checks are pure Python and run on every geometry that :func:`part_d2.data.part_json.load_part_json`
keeps. Structural problems (duplicate ids, wrong-typed image fields, an empty dataset) are errors
naming the file and the entry; a bad geometry is a counted drop.
"""
import math
from typing import Dict, List, Optional, Sequence

from part_d2.utils.errors import PartDatasetError

IMAGE_KEYS = ("id", "file_name", "height", "width")


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def polygon_problem(poly) -> Optional[str]:
    """None for a polygon of finite numbers, else the defect (a count key of the loader)."""
    if not isinstance(poly, (list, tuple)):
        return "polygons that are not lists of numbers (dropped)"
    if not all(_number(v) for v in poly):
        return "polygons with non-numeric coordinates (dropped)"
    if not all(math.isfinite(v) for v in poly):
        return "polygons with NaN or infinite coordinates (dropped)"
    return None


def rle_string_counts(counts: str) -> Optional[List[int]]:
    """The run lengths of a compressed COCO RLE string (pycocotools' ``rleFrString`` in Python),
    or None when a character is outside the alphabet or the string ends inside a number."""
    out: List[int] = []
    p = 0
    while p < len(counts):
        x, k, more = 0, 0, True
        while more:
            if p >= len(counts):
                return None
            c = ord(counts[p]) - 48
            if not 0 <= c < 64:
                return None
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(out) > 2:
            x += out[-2]
        out.append(x)
    return out


def rle_problem(segm: Dict, height: int, width: int) -> Optional[str]:
    """None when an RLE's counts decode to exactly ``height * width`` pixels, else the defect."""
    counts = segm["counts"]
    if isinstance(counts, bytes):
        try:
            counts = counts.decode("ascii")
        except UnicodeDecodeError:
            return "RLEs with undecodable counts (dropped)"
    if isinstance(counts, str):
        runs = rle_string_counts(counts)
        if runs is None:
            return "RLEs with undecodable counts (dropped)"
    elif isinstance(counts, list) and all(isinstance(c, int) and not isinstance(c, bool) for c in counts):
        runs = counts
    else:
        return "RLEs with undecodable counts (dropped)"
    if any(r < 0 for r in runs) or sum(runs) != height * width:
        return "RLEs whose counts do not cover the image (dropped)"
    return None


def valid_size(segm: Dict) -> bool:
    size = segm.get("size")
    return isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(v, int) for v in size)


def index_images(path: str, images: Sequence) -> Dict:
    """``{id: image}`` of the ``images`` of a part json.

    Raises:
        PartDatasetError: no images, an entry without id/file_name/height/width or with wrong
            types (height/width must be positive integers), or a duplicate id.
    """
    if not isinstance(images, list):
        raise PartDatasetError(f"{path}: 'images' must be a list, got {type(images).__name__}")
    if not images:
        raise PartDatasetError(f"{path}: the dataset has no images")
    index: Dict = {}
    for i, img in enumerate(images):
        where = f"{path}: images[{i}]"
        if not isinstance(img, dict):
            raise PartDatasetError(f"{where}: expected an object, got {type(img).__name__}")
        missing = [k for k in IMAGE_KEYS if k not in img]
        if missing:
            raise PartDatasetError(f"{where} (id {img.get('id')!r}): missing {', '.join(missing)}")
        if not isinstance(img["id"], (int, str)) or isinstance(img["id"], bool):
            raise PartDatasetError(f"{where}: id must be an integer or a string, got {img['id']!r}")
        where = f"{path}: image id {img['id']!r} (images[{i}])"
        for key in ("height", "width"):
            v = img[key]
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise PartDatasetError(f"{where}: {key} must be a positive integer, got {v!r}")
        if not isinstance(img["file_name"], str) or not img["file_name"]:
            raise PartDatasetError(f"{where}: file_name must be a non-empty string, got {img['file_name']!r}")
        if img["id"] in index:
            raise PartDatasetError(f"{where}: duplicate image id (also {index[img['id']]['file_name']}); "
                                   "image ids must be unique")
        index[img["id"]] = img
    return index


def check_unique_ids(path: str, entries: Sequence, key: str) -> None:
    """Raise PartDatasetError for an entry of ``entries`` (the json's list ``key``) that is not an
    object, or whose ``id`` repeats an earlier one (entries without id are allowed)."""
    if not isinstance(entries, list):
        raise PartDatasetError(f"{path}: '{key}' must be a list, got {type(entries).__name__}")
    seen = set()
    for i, e in enumerate(entries):
        if not isinstance(e, dict):
            raise PartDatasetError(f"{path}: {key}[{i}]: expected an object, got {type(e).__name__}")
        ident = e.get("id")
        if ident is None:
            continue
        if not isinstance(ident, (int, str)) or isinstance(ident, bool):
            raise PartDatasetError(f"{path}: {key}[{i}]: id must be an integer or a string, got {ident!r}")
        if ident in seen:
            raise PartDatasetError(f"{path}: {key}[{i}]: duplicate id {ident!r} in '{key}'; ids must be unique")
        seen.add(ident)


def check_categories(path: str, categories: Sequence, key: str) -> None:
    """Every category has a unique integer id and a string name."""
    check_unique_ids(path, categories, key)
    for i, c in enumerate(categories):
        if not isinstance(c.get("id"), int) or isinstance(c.get("id"), bool) or not isinstance(c.get("name"), str):
            raise PartDatasetError(f"{path}: {key}[{i}]: a category needs an integer id and a name, got {c!r}")
