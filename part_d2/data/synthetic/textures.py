"""Procedural textures with random colours: stripes, dots, checkers, smooth noise, gradients, grain.

Every texture is an image-sized ``(H, W, 3) float32`` array in [0, 255] drawn from a numpy
``Generator``; compositing it through a mask paints one part, distractor or the background.
"""
import colorsys
from typing import Callable, Dict, Tuple

import cv2
import numpy as np

MIN_PALETTE_CONTRAST = 60.0  # smallest RGB distance between the two colours of a texture


def random_colour(rng: np.random.Generator) -> np.ndarray:
    """(3,) float RGB colour of random hue, saturation in [0.2, 1] and value in [0.2, 1]."""
    h, s, v = rng.uniform(0.0, 1.0), rng.uniform(0.2, 1.0), rng.uniform(0.2, 1.0)
    return 255.0 * np.asarray(colorsys.hsv_to_rgb(h, s, v), dtype=np.float32)


def random_palette(rng: np.random.Generator, tries: int = 8) -> Tuple[np.ndarray, np.ndarray]:
    """Two random colours at least :data:`MIN_PALETTE_CONTRAST` apart (the last try otherwise)."""
    c1 = random_colour(rng)
    for _ in range(tries):
        c2 = random_colour(rng)
        if np.linalg.norm(c1 - c2) >= MIN_PALETTE_CONTRAST:
            break
    return c1, c2


def _coords(rng: np.random.Generator, h: int, w: int) -> Tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates rotated by a random angle and shifted by a random phase: two (H, W)."""
    t = rng.uniform(0.0, np.pi)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    u = x * np.cos(t) + y * np.sin(t) + rng.uniform(0.0, 100.0)
    v = -x * np.sin(t) + y * np.cos(t) + rng.uniform(0.0, 100.0)
    return u, v


def _blend(t: np.ndarray, c1: np.ndarray, c2: np.ndarray) -> np.ndarray:
    """(H, W) weights in [0, 1] → (H, W, 3) mix of ``c1`` (at 0) and ``c2`` (at 1)."""
    t = t[..., None].astype(np.float32)
    return c1 * (1.0 - t) + c2 * t


def stripes(rng, h, w, scale=1.0):
    """Parallel stripes of period 4-12 px (times ``scale``) at a random angle."""
    u, _ = _coords(rng, h, w)
    period = scale * rng.uniform(4.0, 12.0)
    duty = rng.uniform(0.3, 0.7)
    return _blend(np.mod(u / period, 1.0) < duty, *random_palette(rng))


def dots(rng, h, w, scale=1.0):
    """A rotated grid of discs, spacing 5-12 px (times ``scale``)."""
    u, v = _coords(rng, h, w)
    spacing = scale * rng.uniform(5.0, 12.0)
    radius = spacing * rng.uniform(0.2, 0.4)
    du = np.mod(u, spacing) - spacing / 2.0
    dv = np.mod(v, spacing) - spacing / 2.0
    return _blend(du * du + dv * dv < radius * radius, *random_palette(rng))


def checker(rng, h, w, scale=1.0):
    """A rotated checkerboard of 4-10 px cells (times ``scale``)."""
    u, v = _coords(rng, h, w)
    cell = scale * rng.uniform(4.0, 10.0)
    return _blend(np.mod(np.floor(u / cell) + np.floor(v / cell), 2.0), *random_palette(rng))


def smooth_noise_field(rng, h, w, cell: float) -> np.ndarray:
    """(H, W) float32 smooth value noise in [0, 1] with features of about ``cell`` pixels."""
    gh, gw = int(np.ceil(h / cell)) + 2, int(np.ceil(w / cell)) + 2
    grid = rng.uniform(0.0, 1.0, size=(gh, gw)).astype(np.float32)
    big = cv2.resize(grid, (int(round(gw * cell)), int(round(gh * cell))), interpolation=cv2.INTER_CUBIC)
    oy, ox = rng.integers(0, max(1, big.shape[0] - h)), rng.integers(0, max(1, big.shape[1] - w))
    return np.clip(big[oy : oy + h, ox : ox + w], 0.0, 1.0)


def noise(rng, h, w, scale=1.0):
    """Smooth two-colour value noise with blobs of 4-16 px (times ``scale``)."""
    return _blend(smooth_noise_field(rng, h, w, scale * rng.uniform(4.0, 16.0)), *random_palette(rng))


def gradient(rng, h, w, scale=1.0):
    """A linear two-colour gradient at a random angle over 20-80 px (times ``scale``)."""
    u, _ = _coords(rng, h, w)
    length = scale * rng.uniform(20.0, 80.0)
    return _blend(np.abs(np.mod(u / length, 2.0) - 1.0), *random_palette(rng))


def grain(rng, h, w, scale=1.0):
    """One colour with strong per-pixel grain."""
    c = random_colour(rng)
    sigma = rng.uniform(8.0, 24.0)
    return np.clip(c + rng.normal(0.0, sigma, size=(h, w, 1)).astype(np.float32), 0.0, 255.0)


TEXTURES: Dict[str, Callable] = {
    "stripes": stripes,
    "dots": dots,
    "checker": checker,
    "noise": noise,
    "gradient": gradient,
    "grain": grain,
}
TEXTURE_NAMES = tuple(TEXTURES)


def random_texture(rng: np.random.Generator, h: int, w: int, scale: float = 1.0) -> np.ndarray:
    """A texture of a random kind: (H, W, 3) float32 in [0, 255]."""
    name = TEXTURE_NAMES[rng.integers(len(TEXTURE_NAMES))]
    return TEXTURES[name](rng, h, w, scale)
