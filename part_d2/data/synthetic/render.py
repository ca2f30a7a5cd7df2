"""Render one synthetic image: a cluttered textured background and objects built as part label maps.

Objects are drawn into an instance label map (0 = background, k = k-th part instance), each part
polygon overwriting what it covers, so the parts of all objects partition the object pixels by
construction. The image is painted from the final label map, so pixels and labels always agree.
"""
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import cv2
import numpy as np

from .library import ObjectClass, PartLibrary
from .shapes import (
    ellipse_polygon,
    fill_polygon,
    limb_polygon,
    object_polygons,
    place_polygons,
    polygons_extent,
    rect_polygon,
)
from .textures import random_texture, smooth_noise_field

MIN_PART_AREA = 20  # visible parts smaller than this (pixels) become background
MIN_OBJECT_AREA = 100  # objects smaller than this (pixels) become background
SINGLE_SIZE_RANGE = (0.3, 0.7)  # longer box side of a lone object, fraction of the image side
MAIN_SIZE_RANGE = (0.3, 0.6)  # same for the salient object of a multi-object image
EXTRA_SIZE_RANGE = (0.25, 0.45)  # same for the other objects of a multi-object image
MAX_EXTRA_OBJECTS = 2  # a multi-object image has 1 to this many objects besides the salient one
MAX_OBJECT_TURN = 25.0  # largest in-plane rotation of an object (degrees)
ASPECT_RANGE = (0.85, 1.15)  # random horizontal stretch of an object
NUM_DISTRACTORS = (4, 9)  # inclusive range of background distractor shapes
MIN_PART_CONTRAST = 48.0  # wanted RGB distance between mean colours of parts of one object
TEXTURE_TRIES = 6  # textures tried per part to reach MIN_PART_CONTRAST
SHADING_RANGE = (0.75, 1.15)  # multiplicative smooth illumination of the whole image
PIXEL_NOISE_STD = 3.0  # additive Gaussian pixel noise


@dataclass
class RenderedPart:
    """A visible part instance: its label in the label map and its part kind id (1-based)."""

    label: int
    kind_id: int


@dataclass
class RenderedObject:
    """A visible object: its class and parts (in drawing order)."""

    class_id: int
    parts: List[RenderedPart]


def _distractor_polygon(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random ellipse, rectangle, capsule or polygon somewhere in a ``size``² image: (K, 2)."""
    center = rng.uniform(0.0, size, size=2)
    r = size * rng.uniform(0.04, 0.2)
    kind = rng.integers(4)
    if kind == 0:
        return ellipse_polygon(center, (r, r * rng.uniform(0.4, 1.0)), rng.uniform(0.0, 180.0))
    if kind == 1:
        return rect_polygon(center, (2 * r, 2 * r * rng.uniform(0.3, 1.0)), rng.uniform(0.0, 180.0))
    if kind == 2:
        t = rng.uniform(0.0, 2 * np.pi)
        end = center + 2 * r * np.array([np.cos(t), np.sin(t)])
        return limb_polygon(center, end, r * rng.uniform(0.3, 0.6))
    n = rng.integers(3, 7)
    angles = np.sort(rng.uniform(0.0, 2 * np.pi, size=n))
    radii = r * rng.uniform(0.5, 1.0, size=n)
    return center + np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


def _box(mask: np.ndarray) -> Tuple[slice, slice]:
    """Row and column slices of the bounding box of a non-empty (H, W) bool mask."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def _box_shape(box: Tuple[slice, slice]) -> Tuple[int, int]:
    """(height, width) of a box."""
    return box[0].stop - box[0].start, box[1].stop - box[1].start


def _paint(image: np.ndarray, mask: np.ndarray, texture: np.ndarray, box: Tuple[slice, slice]) -> None:
    """Copy ``texture`` (the size of ``box``) into ``image`` where ``mask`` is set, in place."""
    crop, inside = image[box], mask[box]
    crop[inside] = texture[inside]


def render_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A coarse random texture with distractor shapes painted over it: (S, S, 3) float32."""
    image = random_texture(rng, size, size, scale=2.0)
    for _ in range(rng.integers(NUM_DISTRACTORS[0], NUM_DISTRACTORS[1] + 1)):
        mask = np.zeros((size, size), dtype=np.uint8)
        fill_polygon(mask, _distractor_polygon(rng, size), 1)
        mask = mask.astype(bool)
        if mask.any():
            box = _box(mask)
            _paint(image, mask, random_texture(rng, *_box_shape(box)), box)
    return image


def _draw_object(
    rng, label_map, cls: ObjectClass, library: PartLibrary, size_range, first_label: int
) -> RenderedObject:
    """Draw the parts of one randomly posed object into ``label_map`` with labels from ``first_label``."""
    size = label_map.shape[0]
    polys = object_polygons(rng, cls.parts)
    placed = place_polygons(
        polys,
        size_px=size * rng.uniform(*size_range),
        angle=rng.uniform(-MAX_OBJECT_TURN, MAX_OBJECT_TURN),
        flip=bool(rng.integers(2)),
        aspect=rng.uniform(*ASPECT_RANGE),
    )
    room = np.maximum(size - 1 - polygons_extent(placed), 0.0)
    offset = rng.uniform(0.0, 1.0, size=2) * room
    parts = []
    for i, (poly, spec) in enumerate(zip(placed, cls.parts)):
        fill_polygon(label_map, poly + offset, first_label + i)
        parts.append(RenderedPart(first_label + i, library.part_kind_id(spec["kind"])))
    return RenderedObject(cls.id, parts)


def _absorb_small_parts(label_map: np.ndarray, obj: RenderedObject, area: np.ndarray) -> List[RenderedPart]:
    """Hand each visible part under :data:`MIN_PART_AREA` to the touching large part of its object
    with the longest shared border, or to the background if none touches it.

    Modifies ``label_map`` and ``area`` ((L,) pixels per label) in place; returns the large parts.
    """
    large = {p.label for p in obj.parts if area[p.label] >= MIN_PART_AREA}
    small = [p for p in obj.parts if 0 < area[p.label] < MIN_PART_AREA]
    small.sort(key=lambda p: (area[p.label], p.label))
    for part in small:
        mask = label_map == part.label
        ring = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) & ~mask
        touching = [v for v in label_map[ring] if v in large]
        target = int(np.bincount(touching).argmax()) if touching else 0
        label_map[mask] = target
        area[target] += area[part.label]
        area[part.label] = 0
    return [p for p in obj.parts if p.label in large]


def _remove_small(label_map: np.ndarray, objects: List[RenderedObject]) -> List[RenderedObject]:
    """Absorb parts under :data:`MIN_PART_AREA` and erase objects under :data:`MIN_OBJECT_AREA`.

    Modifies ``label_map`` in place; returns the objects with their remaining parts (objects
    without parts are dropped).
    """
    num_labels = max((p.label for o in objects for p in o.parts), default=0) + 1
    area = np.bincount(label_map.ravel(), minlength=num_labels)
    kept_objects = []
    for obj in objects:
        parts = _absorb_small_parts(label_map, obj, area)
        if sum(area[p.label] for p in parts) < MIN_OBJECT_AREA:
            label_map[np.isin(label_map, [p.label for p in parts])] = 0
            continue
        kept_objects.append(RenderedObject(obj.class_id, parts))
    return kept_objects


def _paint_parts(rng, image: np.ndarray, label_map: np.ndarray, objects: List[RenderedObject]) -> None:
    """Paint each part with its own random texture, preferring colours unlike the object's other parts."""
    for obj in objects:
        means: List[np.ndarray] = []
        for part in obj.parts:
            mask = label_map == part.label
            box = _box(mask)
            inside = mask[box]
            best, best_gap, best_mean = None, -1.0, None
            for _ in range(TEXTURE_TRIES):
                tex = random_texture(rng, *_box_shape(box))
                mean = tex[inside].mean(axis=0)
                gap = min((float(np.linalg.norm(mean - m)) for m in means), default=np.inf)
                if gap > best_gap:
                    best, best_gap, best_mean = tex, gap, mean
                if gap >= MIN_PART_CONTRAST:
                    break
            means.append(best_mean)
            _paint(image, mask, best, box)


def render_image(
    rng: np.random.Generator,
    library: PartLibrary,
    main_class: ObjectClass,
    split_classes: Sequence[ObjectClass],
    size: int,
    multi_object_prob: float,
):
    """Render one image with a salient object of ``main_class``.

    With probability ``multi_object_prob`` 1-2 further objects of random classes of
    ``split_classes`` are drawn first, partly hidden behind the salient one.

    Returns:
        image: (S, S, 3) uint8 RGB; label_map: (S, S) int32 part instance labels (0 = background);
        objects: list of :class:`RenderedObject`, the salient object first (if still visible).
    """
    image = render_background(rng, size)
    label_map = np.zeros((size, size), dtype=np.int32)
    multi = rng.uniform() < multi_object_prob
    drawn: List[RenderedObject] = []
    next_label = 1
    if multi:
        for _ in range(rng.integers(1, MAX_EXTRA_OBJECTS + 1)):
            cls = split_classes[rng.integers(len(split_classes))]
            drawn.append(_draw_object(rng, label_map, cls, library, EXTRA_SIZE_RANGE, next_label))
            next_label += len(cls.parts)
    size_range = MAIN_SIZE_RANGE if multi else SINGLE_SIZE_RANGE
    main = _draw_object(rng, label_map, main_class, library, size_range, next_label)
    objects = _remove_small(label_map, [main] + drawn)
    _paint_parts(rng, image, label_map, objects)
    low, high = SHADING_RANGE
    image *= low + (high - low) * smooth_noise_field(rng, size, size, size / 3.0)[..., None]
    image += rng.normal(0.0, PIXEL_NOISE_STD, size=image.shape).astype(np.float32)
    return np.clip(np.round(image), 0, 255).astype(np.uint8), label_map, objects
