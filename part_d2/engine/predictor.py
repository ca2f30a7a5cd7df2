"""Inference on image files with any part_d2 model, and the demo loop behind tools/demo.py."""
import glob
import logging
import os
from typing import Optional

import numpy as np
import torch
import tqdm
from PIL import Image, ImageOps

from part_d2.data.dataset_mapper import PartDatasetMapper
from part_d2.data.image_io import ImageReadError, read_image_checked
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
    except OSError as e:
        raise ImageReadError(f"{path}: cannot decode image ({e})") from None


class PartPredictor:
    """Run a part_d2 model on image files through the test-time dataset mapper."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.model = load_part_model(cfg).eval()
        self.mapper = PartDatasetMapper(cfg, False)

    @torch.no_grad()
    def __call__(self, path, image_id=0):
        h, w = image_size(path)
        inputs = self.mapper({"file_name": path, "height": h, "width": w, "image_id": image_id})
        return inputs, self.model([inputs])[0]



def run_demo(cfg, files, output_dir: str, thresh: Optional[float] = None):
    """Predict parts on ``files``; write ``<name>_parts.png`` overlays (parts scoring at least
    ``thresh``, default ``TEST.DEMO_CONFIDENCE``) and ``results.json`` (RLE, all parts).

    Returns:
        The COCO-style result list.
    """
    thresh = cfg.TEST.DEMO_CONFIDENCE if thresh is None else thresh
    os.makedirs(output_dir, exist_ok=True)
    predictor = PartPredictor(cfg)

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
        name = os.path.splitext(os.path.basename(path))[0]
        write_png(os.path.join(output_dir, f"{name}_parts.png"), overlay)

    atomic_write_json(os.path.join(output_dir, "results.json"), results)
    logger.info(f"{len(files) - failed} images, {len(results)} parts -> {output_dir}"
                + (f"; {failed} unreadable images skipped" if failed else ""))
    return results
