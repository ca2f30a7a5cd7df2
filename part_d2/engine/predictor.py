"""Inference on image files with any part_d2 model, and the demo loop behind tools/demo.py."""
import glob
import logging
import os
from collections import Counter
from typing import List, Optional, Sequence

import numpy as np
import torch
import tqdm
from PIL import Image, ImageOps

from part_d2.data.dataset_mapper import PartDatasetMapper
from part_d2.data.image_io import ImageReadError, read_image_checked
from part_d2.engine.config_checks import ConfigError, check_threshold
from part_d2.modeling.build import load_part_model
from part_d2.structures.masks import masks_to_rles
from part_d2.utils.io import atomic_write_json
from part_d2.utils.visualization import draw_parts, write_png

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


def image_size(path):
    try:
        with Image.open(path) as img:
            return ImageOps.exif_transpose(img).size[::-1]
    except FileNotFoundError:
        raise ImageReadError(f"{path}: image file not found") from None
    except Image.DecompressionBombError as e:
        raise ImageReadError(f"{path}: image too large to decode safely ({e})") from None
    except OSError as e:
        raise ImageReadError(f"{path}: cannot decode image ({e})") from None


def overlay_names(files: Sequence[str]) -> List[str]:
    """One output name per input file, unique: ``<stem>_parts.png``; inputs sharing a stem are
    told apart by their path below the common folder (``a/x.png`` -> ``a__x_parts.png``), then by
    extension and position.
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


class PartPredictor:
    """Run a part_d2 model on image files through the test-time dataset mapper.

    Refuses an empty ``MODEL.WEIGHTS`` (a randomly initialised model) unless ``random_weights``.
    """

    def __init__(self, cfg, random_weights: bool = False):
        if not cfg.MODEL.WEIGHTS and not random_weights:
            raise ConfigError("MODEL.WEIGHTS is empty: the model would be randomly initialised; give MODEL.WEIGHTS "
                              "path/to/model.pth (or --random-weights to do it on purpose)")
        self.cfg = cfg
        self.model = load_part_model(cfg).eval()
        self.mapper = PartDatasetMapper(cfg, False)

    @torch.no_grad()
    def __call__(self, path, image_id=0):
        h, w = image_size(path)
        inputs = self.mapper({"file_name": path, "height": h, "width": w, "image_id": image_id})
        return inputs, self.model([inputs])[0]



def run_demo(cfg, files, output_dir: str, thresh: Optional[float] = None, random_weights: bool = False):
    """Predict parts on ``files``; write overlays (names: :func:`overlay_names`; parts scoring at
    least ``thresh``, default ``TEST.DEMO_CONFIDENCE``) and ``results.json`` (RLE, all parts).

    Returns:
        The COCO-style result list.
    """
    option = "TEST.DEMO_CONFIDENCE" if thresh is None else "--confidence-threshold"
    thresh = cfg.TEST.DEMO_CONFIDENCE if thresh is None else thresh
    check_threshold(thresh, option)
    os.makedirs(output_dir, exist_ok=True)
    predictor = PartPredictor(cfg, random_weights)
    out_names = overlay_names(files)

    results, failed = [], 0
    for image_id, path in enumerate(tqdm.tqdm(files, desc="demo")):
        try:
            inputs, out = predictor(path, image_id)
        except ImageReadError as e:
            failed += 1
            logger.warning(f"skipped: {e}")
            continue
        inst = out["instances"].to("cpu")
        masks = inst.pred_masks.numpy().astype(bool)
        scores = inst.scores.numpy()
        for rle, s, c in zip(masks_to_rles(masks), scores, inst.pred_classes.numpy()):
            results.append({"file_name": path, "image_id": image_id, "category_id": int(c),
                            "score": float(s), "segmentation": rle})
        image = read_image_checked(path, "RGB")
        keep = scores >= thresh
        obj = inputs["object_mask"].numpy() if "object_mask" in inputs else None
        order = np.argsort(-masks[keep].sum(axis=(1, 2)), kind="stable")  # large parts first, small on top
        overlay = draw_parts(image, masks[keep][order], scores[keep][order], obj)
        write_png(os.path.join(output_dir, out_names[image_id]), overlay)

    atomic_write_json(os.path.join(output_dir, "results.json"), results)
    logger.info(f"{len(files) - failed} images, {len(results)} parts -> {output_dir}"
                + (f"; {failed} unreadable images skipped" if failed else ""))
    return results
