"""Summaries and a preview collage of a generated synthetic part dataset."""
import colorsys
import os
from typing import Dict, List

import cv2
import numpy as np
from PIL import Image

from part_d2.structures.masks import segmentation_to_mask
from part_d2.utils.io import read_json

from .generate import annotation_paths, image_root


def summarize(root: str) -> Dict[str, Dict]:
    """Counts of each split: ``images, objects, parts`` and the sorted object ``classes`` present."""
    out = {}
    for split, path in annotation_paths(root).items():
        data = read_json(path)
        names = {c["id"]: c["name"] for c in data["object_categories"]}
        out[split] = {
            "images": len(data["images"]),
            "objects": len(data["objects"]),
            "parts": len(data["annotations"]),
            "classes": sorted({names[o["category_id"]] for o in data["objects"]}),
        }
    return out


def _instance_colours(n: int) -> np.ndarray:
    """(n, 3) float well separated RGB colours (golden-ratio hue steps)."""
    return np.array([colorsys.hsv_to_rgb(i * 0.618034 % 1.0, 0.85, 1.0) for i in range(n)]).reshape(n, 3) * 255.0


def overlay_parts(image: np.ndarray, part_masks: List[np.ndarray], alpha: float = 0.55) -> np.ndarray:
    """Colour each part of ``image`` ((H, W, 3) uint8) and outline it; returns (H, W, 3) uint8."""
    out = image.astype(np.float32)
    for mask, colour in zip(part_masks, _instance_colours(len(part_masks))):
        out[mask] = (1 - alpha) * out[mask] + alpha * colour
    out = out.astype(np.uint8)
    for mask in part_masks:
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, (255, 255, 255), 1)
    return out


def _tile(root: str, split: str, data: Dict, image: Dict) -> np.ndarray:
    """One collage tile: the image and its part overlay side by side, captioned."""
    pixels = np.asarray(Image.open(os.path.join(image_root(root, split), image["file_name"])).convert("RGB"))
    h, w = image["height"], image["width"]
    anns = [a for a in data["annotations"] if a["image_id"] == image["id"]]
    masks = [segmentation_to_mask(a["segmentation"], h, w) for a in anns]
    tile = np.concatenate([pixels, overlay_parts(pixels, masks)], axis=1).copy()
    names = {c["id"]: c["name"] for c in data["object_categories"]}
    caption = f"{split}: {names.get(image.get('object_category_id'), '?')} ({len(masks)} parts)"
    cv2.putText(tile, caption, (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(tile, caption, (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (255, 255, 255), 1, cv2.LINE_AA)
    return tile


def make_preview(root: str, path: str, num_images: int = 16, columns: int = 4) -> str:
    """Write a collage of ``num_images`` images (taken from every split) with part overlays.

    Returns:
        ``path``.
    """
    tiles = []
    per_split = -(-num_images // 3)
    for split, json_path in annotation_paths(root).items():
        data = read_json(json_path)
        tiles += [_tile(root, split, data, img) for img in data["images"][:per_split]]
    tiles = tiles[:num_images]
    if not tiles:
        raise ValueError(f"{root}: no images to preview")
    blank = np.zeros_like(tiles[0])
    tiles += [blank] * (-len(tiles) % columns)
    rows = [np.concatenate(tiles[i : i + columns], axis=1) for i in range(0, len(tiles), columns)]
    Image.fromarray(np.concatenate(rows, axis=0)).save(path)
    return path
