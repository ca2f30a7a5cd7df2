"""Drawing part predictions: overlays, object contours and image collages (pure numpy + OpenCV)."""
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from part_d2.utils.io import atomic_write_bytes


def part_colors(n: int, seed: int = 0) -> np.ndarray:
    """(n, 3) uint8 distinct-looking RGB colours (golden-ratio hues, fixed order)."""
    if n == 0:
        return np.zeros((0, 3), np.uint8)
    hues = (np.arange(n) * 0.618033988749895 + 0.1 * seed) % 1.0
    hsv = np.stack([hues * 179, np.full(n, 200), np.full(n, 255)], axis=1).astype(np.uint8)[None]
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0]


def draw_parts(
    image_rgb: np.ndarray,
    masks: np.ndarray,
    scores: Optional[Sequence[float]] = None,
    object_mask: Optional[np.ndarray] = None,
    alpha: float = 0.55,
) -> np.ndarray:
    """Overlay part masks on an image.

    Args:
        image_rgb: (H, W, 3) uint8.
        masks: (N, H, W) bool, drawn in order (later masks on top).
        scores: N scores written at each part's centroid, or None.
        object_mask: (H, W) bool, or (M, H, W) bool masks of several objects, drawn as white
            contours, or None.
    Returns:
        (H, W, 3) uint8 RGB overlay.
    """
    out = image_rgb.astype(np.float32).copy()
    colors = part_colors(len(masks)).astype(np.float32)
    for m, c in zip(masks, colors):
        out[m] = out[m] * (1 - alpha) + c * alpha
    out = out.astype(np.uint8)
    for m, c in zip(masks, colors):
        contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, tuple(int(v) for v in c // 2), 1)
    for obj in [] if object_mask is None else (object_mask[None] if object_mask.ndim == 2 else object_mask):
        contours, _ = cv2.findContours(obj.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, (255, 255, 255), 1)
    if scores is not None:
        scale = max(0.3, min(out.shape[:2]) / 600)
        for m, s in zip(masks, scores):
            ys, xs = np.nonzero(m)
            if len(xs):
                cv2.putText(out, f"{s:.2f}", (int(xs.mean()), int(ys.mean())), cv2.FONT_HERSHEY_SIMPLEX,
                            scale, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def add_legend(image_rgb: np.ndarray, entries: Sequence[Tuple[str, Optional[Sequence[int]]]],
               line_height: int = 16, width: int = 220) -> np.ndarray:
    """Append a legend panel to the right of an image.

    Args:
        image_rgb: (H, W, 3) uint8.
        entries: (text, colour) lines, top to bottom; a colour (RGB) draws a swatch before the
            text, None writes the text as a heading.
    Returns:
        (max(H, lines * line_height + 8), W + width, 3) uint8: the image, then a dark panel.
    """
    h, w = image_rgb.shape[:2]
    out = np.full((max(h, len(entries) * line_height + 8), w + width, 3), 32, np.uint8)
    out[:h, :w] = image_rgb
    for i, (text, color) in enumerate(entries):
        y = 4 + i * line_height
        x = w + 6
        if color is not None:
            cv2.rectangle(out, (x + 8, y + 3), (x + 18, y + line_height - 3), tuple(int(c) for c in color), -1)
            x += 24
        cv2.putText(out, text, (x, y + line_height - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1,
                    cv2.LINE_AA)
    return out


# Cells are at most this many times wider than tall (a thin strip among the images then fits by width).
MAX_CELL_ASPECT = 3.0


def collage(images: List[np.ndarray], cols: int, cell: int = 160, pad: int = 2) -> np.ndarray:
    """Tile RGB images (H_i, W_i, 3) into a grid of ``cols`` columns of equal cells, each image resized
    to fit its cell. Cells are ``cell`` pixels tall and as wide as the widest image's aspect needs
    (at least ``cell``, at most ``MAX_CELL_ASPECT * cell``), so that wide images (e.g. an overlay
    with its legend beside it) fill their cells' height. Returns (rows * (cell + pad) + pad,
    cols * (cell_w + pad) + pad, 3) uint8 on white."""
    rows = max(1, (len(images) + cols - 1) // cols)
    aspect = max([img.shape[1] / max(1, img.shape[0]) for img in images] + [1.0])
    cell_w = round(cell * min(aspect, MAX_CELL_ASPECT))
    canvas = np.full((rows * (cell + pad) + pad, cols * (cell_w + pad) + pad, 3), 255, np.uint8)
    for i, img in enumerate(images):
        h, w = img.shape[:2]
        s = min(cell_w / w, cell / h)
        small = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
        r, c = divmod(i, cols)
        y, x = pad + r * (cell + pad), pad + c * (cell_w + pad)
        canvas[y : y + small.shape[0], x : x + small.shape[1]] = small
    return canvas


def write_png(path: str, image_rgb: np.ndarray) -> None:
    """Write an RGB image as PNG, atomically."""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"{path}: could not encode PNG")
    atomic_write_bytes(path, buf.tobytes())
