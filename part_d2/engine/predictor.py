"""The demo loop behind tools/demo.py: :class:`part_d2.engine.segmenter.PartSegmenter` over image files."""
import glob
import logging
import os
from collections import Counter
from typing import Dict, List, Optional, Sequence

import numpy as np
import tqdm

from part_d2.data.image_io import ImageReadError
from part_d2.engine.segmenter import PartSegmenter, draw, load_image, to_json
from part_d2.utils.io import atomic_write_json
from part_d2.utils.visualization import write_png

logger = logging.getLogger(__name__)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def expand_inputs(inputs):
    """Files, directories (their images, sorted) and glob patterns as a sorted list of files."""
    files = []
    for item in inputs:
        if os.path.isdir(item):
            files += [os.path.join(item, f) for f in sorted(os.listdir(item)) if f.lower().endswith(IMAGE_EXTENSIONS)]
        elif any(ch in item for ch in "*?["):
            files += sorted(glob.glob(item, recursive=True))
        else:
            files.append(item)
    return files


def overlay_names(files: Sequence[str]) -> List[str]:
    """One output name per input file, unique: ``<stem>_parts.png``; inputs sharing a stem are
    told apart by their path below the common folder (``a/x.png`` -> ``a__x_parts.png``), then by
    extension and position. The image's json is the same name with ``.json``.
    """
    stems = [os.path.splitext(os.path.basename(f))[0] for f in files]
    clashing = [f for f, s in zip(files, stems) if Counter(stems)[s] > 1]
    common = os.path.commonpath([os.path.abspath(os.path.dirname(f)) for f in clashing]) if clashing else ""

    def rel(f, ext=False):
        r = os.path.relpath(os.path.abspath(f), common)
        r = r.replace(".", "_") if ext else os.path.splitext(r)[0]
        return r.replace(os.sep, "__")

    out = list(stems)
    for level in (lambda i, f: rel(f), lambda i, f: rel(f, ext=True), lambda i, f: f"{rel(f, ext=True)}_{i}"):
        counts = Counter(out)
        out = [level(i, f) if counts[n] > 1 else n for i, (f, n) in enumerate(zip(files, out))]
    return [f"{n}_parts.png" for n in out]


def run_demo(cfg, files: Sequence[str], output_dir: str, options: Optional[Dict] = None,
             vocabulary: Optional[Sequence[str]] = None, random_weights: bool = False,
             segmenter: Optional[PartSegmenter] = None) -> List[Dict]:
    """Segment the objects and parts of ``files``; per image write ``<name>_parts.png`` (overlay
    with legend, :func:`part_d2.engine.segmenter.draw`) and ``<name>_parts.json``
    (:func:`part_d2.engine.segmenter.to_json`), names from :func:`overlay_names`; and
    ``results.json``, the COCO-style result list of all parts (``image_id`` = input position).

    Args:
        options: per-call options of :class:`PartSegmenter` (None values: ``SEGMENTER.*``).
        vocabulary: object class names (None: ``SEGMENTER.VOCABULARY``).
        segmenter: built from ``cfg`` when None.
    Returns:
        The COCO-style result list.
    """
    seg = segmenter if segmenter is not None else PartSegmenter(cfg, random_weights=random_weights)
    options = dict(options or {})
    seg.resolve_options(options)  # bad values fail before the first image
    os.makedirs(output_dir, exist_ok=True)
    out_names = overlay_names(files)

    results, failed, num_objects = [], 0, 0
    for image_id, path in enumerate(tqdm.tqdm(files, desc="demo")):
        try:
            rgb, alpha, _ = load_image(path)
            image = rgb if alpha is None else np.dstack([rgb, alpha.astype(np.uint8) * 255])
            res = seg(image, vocabulary, **options)
        except ImageReadError as e:
            failed += 1
            logger.warning(f"skipped: {e}")
            continue
        num_objects += len(res)
        data = to_json(res, path, rgb.shape[:2])
        for p in data["parts"]:
            results.append({"file_name": path, "image_id": image_id, "object_id": p["object_id"],
                            "category_id": p["category_id"], "score": p["score"], "segmentation": p["segmentation"]})
        atomic_write_json(os.path.join(output_dir, out_names[image_id][: -len(".png")] + ".json"), data)
        write_png(os.path.join(output_dir, out_names[image_id]), draw(rgb, res))

    atomic_write_json(os.path.join(output_dir, "results.json"), results)
    logger.info(f"{len(files) - failed} images, {num_objects} objects, {len(results)} parts -> {output_dir}"
                + (f"; {failed} unreadable images skipped" if failed else ""))
    return results
