"""Robust image reading: every failure names the file, every odd format becomes 8-bit RGB/BGR."""
import os

import numpy as np
from detectron2.data.detection_utils import convert_PIL_to_numpy
from PIL import Image, ImageOps, UnidentifiedImageError

from part_d2.utils.errors import ImageReadError

__all__ = ["ImageReadError", "check_image_size", "has_alpha_channel", "pil_has_alpha", "read_alpha_channel",
           "read_image_checked"]


def _to_8bit_rgb(img: Image.Image) -> Image.Image:
    """Grayscale, palette, RGBA, CMYK and 16/32-bit images as 8-bit RGB."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        img = Image.fromarray(arr, mode="L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    return img.convert("RGB")


def read_image_checked(file_name: str, format: str = "BGR") -> np.ndarray:
    """Read an image as (H, W, 3) uint8 in ``format`` ("BGR" or "RGB"), EXIF rotation applied.

    Raises:
        ImageReadError: naming the file, when it is missing, truncated or not an image.
    """
    if not os.path.isfile(file_name):
        raise ImageReadError(f"{file_name}: image file not found")
    try:
        with Image.open(file_name) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
            img = _to_8bit_rgb(img)
    except Image.DecompressionBombError as e:
        raise ImageReadError(f"{file_name}: image too large to decode safely ({e})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"{file_name}: cannot decode image ({e})") from None
    return convert_PIL_to_numpy(img, format)


def pil_has_alpha(img: Image.Image) -> bool:
    """Whether an opened image has an alpha channel (RGBA, LA, PA, or a palette with transparency)."""
    return img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)


def has_alpha_channel(file_name: str) -> bool:
    """Whether an image file has an alpha channel (RGBA, LA, or a palette with transparency)."""
    if not os.path.isfile(file_name):
        raise ImageReadError(f"{file_name}: image file not found")
    try:
        with Image.open(file_name) as img:
            return pil_has_alpha(img)
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ImageReadError(f"{file_name}: cannot decode image ({e})") from None


def read_alpha_channel(file_name: str) -> np.ndarray:
    """The alpha channel of an RGBA (or LA / transparent palette) image as a (H, W) bool mask."""
    if not os.path.isfile(file_name):
        raise ImageReadError(f"{file_name}: image file not found")
    try:
        with Image.open(file_name) as img:
            img = ImageOps.exif_transpose(img)
            if img.mode == "P" and "transparency" in img.info:
                img = img.convert("RGBA")
            if img.mode not in ("RGBA", "LA", "PA"):
                raise ImageReadError(
                    f"{file_name}: no alpha channel (mode {img.mode}) for the 'rgba' object-mask source"
                )
            return np.asarray(img.getchannel("A")) > 0
    except Image.DecompressionBombError as e:
        raise ImageReadError(f"{file_name}: image too large to decode safely ({e})") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ImageReadError(f"{file_name}: cannot decode image ({e})") from None


def check_image_size(record: dict, image: np.ndarray) -> None:
    """Raise :class:`ImageReadError` when the image size differs from the record's height/width."""
    h, w = image.shape[:2]
    if ("height" in record and record["height"] != h) or ("width" in record and record["width"] != w):
        raise ImageReadError(
            f"{record['file_name']}: image is {w}x{h} (WxH) but its annotation says "
            f"{record.get('width')}x{record.get('height')}"
        )
