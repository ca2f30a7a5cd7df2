"""Geometry of synthetic objects: part shapes as polygons, per-part jitter and placement.

All functions work on float polygons ``(K, 2)`` of ``(x, y)`` points, y pointing down.
"""
from typing import Dict, List, Sequence, Tuple

import cv2
import numpy as np

ELLIPSE_POINTS = 40  # vertices of an ellipse polygon
CAP_POINTS = 10  # vertices of each round end of a limb
LIMB_MAX_TURN = 20.0  # largest articulation of a limb around its attachment (degrees)
PART_MAX_TURN = 8.0  # largest rotation of other parts around their anchor (degrees)
PART_SCALE_RANGE = (0.85, 1.15)  # per-part size jitter
PART_SHIFT_STD = 0.02  # per-part translation jitter (canonical units)


def rotation(degrees: float) -> np.ndarray:
    """(2, 2) matrix rotating points clockwise on screen (y down) by ``degrees``."""
    t = np.deg2rad(degrees)
    return np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])


def ellipse_polygon(
    center: Sequence[float], radii: Sequence[float], angle: float, n: int = ELLIPSE_POINTS
) -> np.ndarray:
    """(n, 2) vertices of a rotated ellipse."""
    t = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    pts = np.stack([radii[0] * np.cos(t), radii[1] * np.sin(t)], axis=1)
    return pts @ rotation(angle).T + np.asarray(center, dtype=np.float64)


def rect_polygon(center: Sequence[float], size: Sequence[float], angle: float) -> np.ndarray:
    """(4, 2) corners of a rotated rectangle."""
    w, h = size[0] / 2.0, size[1] / 2.0
    pts = np.array([[-w, -h], [w, -h], [w, h], [-w, h]])
    return pts @ rotation(angle).T + np.asarray(center, dtype=np.float64)


def limb_polygon(start: Sequence[float], end: Sequence[float], width, n: int = CAP_POINTS) -> np.ndarray:
    """(2n, 2) outline of a capsule from ``start`` to ``end``, tapering from ``width[0]`` to ``width[1]``.

    ``width`` is a number (constant width) or a pair.
    """
    w0, w1 = (width, width) if np.isscalar(width) else width
    a, b = np.asarray(start, dtype=np.float64), np.asarray(end, dtype=np.float64)
    d = b - a
    length = np.hypot(*d)
    if length == 0:
        return ellipse_polygon(a, (w0 / 2.0, w0 / 2.0), 0.0, 2 * n)
    theta = np.arctan2(d[1], d[0])
    # start cap spans the half circle facing away from ``end``, the end cap the other half
    t0 = theta + np.linspace(np.pi / 2, 3 * np.pi / 2, n)
    t1 = theta + np.linspace(-np.pi / 2, np.pi / 2, n)
    cap0 = a + (w0 / 2.0) * np.stack([np.cos(t0), np.sin(t0)], axis=1)
    cap1 = b + (w1 / 2.0) * np.stack([np.cos(t1), np.sin(t1)], axis=1)
    return np.concatenate([cap0, cap1], axis=0)


def part_polygon(part: Dict) -> Tuple[np.ndarray, np.ndarray]:
    """Polygon and anchor point of one library part spec.

    Returns:
        polygon: (K, 2) float; anchor: (2,) the point the part rotates and scales around.
    """
    shape = part["shape"]
    if shape == "ellipse":
        return ellipse_polygon(part["center"], part["radii"], part["angle"]), np.asarray(part["center"], float)
    if shape == "rect":
        return rect_polygon(part["center"], part["size"], part["angle"]), np.asarray(part["center"], float)
    if shape == "limb":
        return limb_polygon(part["from"], part["to"], part["width"]), np.asarray(part["from"], float)
    if shape == "polygon":
        pts = np.asarray(part["points"], dtype=np.float64)
        return pts, pts[0]
    raise ValueError(f"unknown part shape {shape!r}")


def jitter_polygon(rng: np.random.Generator, poly: np.ndarray, anchor: np.ndarray, max_turn: float) -> np.ndarray:
    """Randomly scale and rotate ``poly`` around ``anchor`` and shift it slightly.

    Args:
        poly: (K, 2) float; anchor: (2,) float; max_turn: largest rotation in degrees.
    Returns:
        (K, 2) float.
    """
    scale = rng.uniform(*PART_SCALE_RANGE)
    turn = rng.uniform(-max_turn, max_turn)
    shift = rng.normal(0.0, PART_SHIFT_STD, size=2)
    return (poly - anchor) @ (scale * rotation(turn)).T + anchor + shift


def object_polygons(rng: np.random.Generator, parts: Sequence[Dict]) -> List[np.ndarray]:
    """Jittered canonical polygons of an object's parts, in drawing order."""
    polys = []
    for part in parts:
        poly, anchor = part_polygon(part)
        max_turn = LIMB_MAX_TURN if part["shape"] == "limb" else PART_MAX_TURN
        polys.append(jitter_polygon(rng, poly, anchor, max_turn))
    return polys


def place_polygons(
    polys: List[np.ndarray], size_px: float, angle: float, flip: bool, aspect: float
) -> List[np.ndarray]:
    """Map canonical polygons of one object to pixel units.

    The object is flipped horizontally if ``flip``, stretched in x by ``aspect``, rotated by
    ``angle`` degrees and scaled so that the longer side of its bounding box is ``size_px``; its
    bounding box then starts at (0, 0).

    Returns:
        The polygons as (K, 2) float arrays.
    """
    lin = rotation(angle) @ np.diag([(-1.0 if flip else 1.0) * aspect, 1.0])
    moved = [p @ lin.T for p in polys]
    allpts = np.concatenate(moved, axis=0)
    lo, hi = allpts.min(axis=0), allpts.max(axis=0)
    scale = size_px / max(hi - lo)
    return [(p - lo) * scale for p in moved]


def polygons_extent(polys: List[np.ndarray]) -> np.ndarray:
    """(2,) width and height of the bounding box of several polygons."""
    allpts = np.concatenate(polys, axis=0)
    return allpts.max(axis=0) - allpts.min(axis=0)


def fill_polygon(canvas: np.ndarray, poly: np.ndarray, value) -> None:
    """Fill a pixel-coordinate polygon into ``canvas`` in place (1/16 px vertex precision)."""
    pts = np.round(np.asarray(poly) * 16.0).astype(np.int32)
    cv2.fillPoly(canvas, [pts], value, lineType=cv2.LINE_8, shift=4)
