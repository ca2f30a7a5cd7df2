"""Dense CRF refinement of an object's part segments (PartDistillation stage 1a), with pydensecrf.

Where the CRF runs (``PIXEL_GROUPING.CRF.MODE``):

- ``"image"`` (default, the reference's ``continuously_postprocess_dcrf.py``): on the whole image
  resized so that its longer side is the grouping size (``PIXEL_GROUPING.IMAGE_SIZE``, 640), the
  part labels resized to it (nearest); the refined labels are resized back (nearest). The
  kernels' pixel units (sxy 3 and 20) thus act at the grouping scale whatever the image size.
  (The reference also pads the resized image to 640 x 640 with black; part_d2 does not pad.)
- ``"crop"``: on the object's crop (its box grown by ``CROP_MARGIN``) at the original resolution.

Either way there is one label per part plus a background label for the pixels outside the
parts. Defaults are the reference's
post-processing constants: unary from labels with ``gt_prob`` 0.7, a Gaussian kernel (sxy 3,
compat 3), a bilateral kernel (sxy 20, srgb 13, compat 10) and 10 mean-field iterations.

The reference relabels the label map with ``np.unique`` before the CRF and then treats label 0 as
background. When the crop has no background pixel this turns the first part into "background" and
drops it. :func:`refine_parts_with_crf` keeps the labels as they are; ``reference_relabel_bug=True``
reproduces the reference's behaviour.
"""
from typing import Tuple

import cv2
import numpy as np

CRF_MODES = ("image", "crop")


def dense_crf(
    image: np.ndarray,
    labels: np.ndarray,
    n_labels: int,
    gt_prob: float = 0.7,
    iterations: int = 10,
    gaussian_sxy: float = 3.0,
    gaussian_compat: float = 3.0,
    bilateral_sxy: float = 20.0,
    bilateral_srgb: float = 13.0,
    bilateral_compat: float = 10.0,
) -> np.ndarray:
    """Mean-field inference of a fully connected CRF initialised from a label map.

    Args:
        image: (H, W, 3) uint8 RGB.
        labels: (H, W) int in [0, n_labels).
        n_labels: number of labels (>= 2).
    Returns:
        (H, W) int64, the most probable label of every pixel.
    """
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import create_pairwise_bilateral, create_pairwise_gaussian, unary_from_labels

    h, w = labels.shape
    if image.shape[:2] != (h, w) or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image of shape {image.shape} does not match labels of shape {labels.shape}")
    if labels.min() < 0 or labels.max() >= n_labels or n_labels < 2:
        raise ValueError(f"labels must lie in [0, {n_labels}) with n_labels >= 2")
    crf = dcrf.DenseCRF2D(w, h, n_labels)
    crf.setUnaryEnergy(unary_from_labels(labels.reshape(-1), n_labels, gt_prob=gt_prob, zero_unsure=False))
    crf.addPairwiseEnergy(create_pairwise_gaussian(sdims=(gaussian_sxy, gaussian_sxy), shape=(h, w)),
                          compat=gaussian_compat, kernel=dcrf.DIAG_KERNEL,
                          normalization=dcrf.NORMALIZE_SYMMETRIC)
    feats = create_pairwise_bilateral(sdims=(bilateral_sxy, bilateral_sxy), schan=(bilateral_srgb,) * 3,
                                      img=np.ascontiguousarray(image, dtype=np.uint8), chdim=2)
    crf.addPairwiseEnergy(feats, compat=bilateral_compat, kernel=dcrf.DIAG_KERNEL,
                          normalization=dcrf.NORMALIZE_SYMMETRIC)
    q = np.asarray(crf.inference(iterations)).reshape(n_labels, h, w)
    return q.argmax(axis=0).astype(np.int64)


def crop_box(mask: np.ndarray, margin: float) -> Tuple[int, int, int, int]:
    """(x0, y0, x1, y1), x1/y1 exclusive: the box of a non-empty (H, W) mask grown by ``margin`` x
    its size on each side, clipped to the image."""
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    if len(xs) == 0:
        raise ValueError("crop_box of an empty mask")
    mx = int(round(margin * (xs[-1] + 1 - xs[0])))
    my = int(round(margin * (ys[-1] + 1 - ys[0])))
    h, w = mask.shape
    return max(0, xs[0] - mx), max(0, ys[0] - my), min(w, xs[-1] + 1 + mx), min(h, ys[-1] + 1 + my)


def _resize_nearest(labels: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """(H, W) int labels resized to ``size`` = (h, w) with nearest-neighbour sampling."""
    if labels.shape == tuple(size):
        return labels
    return cv2.resize(labels.astype(np.int32), (size[1], size[0]), interpolation=cv2.INTER_NEAREST).astype(np.int64)


def grouping_size(height: int, width: int, size: int) -> Tuple[int, int]:
    """(h, w) of an image resized so that its longer side is ``size`` (unchanged when ``size <= 0``);
    the same rounding as :func:`part_d2.modeling.pixel_grouping.resize_longest`."""
    if size <= 0 or max(height, width) == size:
        return height, width
    s = size / max(height, width)
    return max(1, round(height * s)), max(1, round(width * s))


def refine_parts_with_crf(
    image: np.ndarray,
    object_mask: np.ndarray,
    part_masks: np.ndarray,
    mode: str = "image",
    image_size: int = 640,
    margin: float = 0.1,
    reference_relabel_bug: bool = False,
    keep_empty: bool = False,
    **crf_kwargs,
) -> np.ndarray:
    """Refine the disjoint parts of one object with :func:`dense_crf` (see the module docstring).

    Label 0 is the background (pixels in no part), label ``i + 1`` is part ``i``. Parts may grow
    beyond or shrink within the object mask, as in the reference; parts left empty are dropped.

    Args:
        image: (H, W, 3) uint8 RGB.
        object_mask: (H, W) bool, non-empty.
        part_masks: (P, H, W) bool, disjoint.
        mode: "image" (whole image at the grouping size) or "crop" (object crop, original size).
        image_size: "image": the grouping size (longer side).
        margin: "crop": crop margin as a fraction of the object box size.
        reference_relabel_bug: relabel with ``np.unique`` and drop output label 0 as the reference
            does (the first part is lost when the CRF's region has no background pixel).
        keep_empty: return all P parts, those left empty included (part ``i`` stays at index ``i``).
        crf_kwargs: parameters of :func:`dense_crf`.
    Returns:
        (P', H, W) bool refined parts, P' <= P, in part order (P' = P with ``keep_empty``).
    """
    if mode not in CRF_MODES:
        raise ValueError(f"PIXEL_GROUPING.CRF.MODE={mode!r}; expected one of {CRF_MODES}")
    num_parts = len(part_masks)
    if num_parts == 0:
        return part_masks.astype(bool)
    height, width = object_mask.shape
    if mode == "crop":
        x0, y0, x1, y1 = crop_box(object_mask, margin)
    else:
        x0, y0, x1, y1 = 0, 0, width, height
    labels = (part_masks[:, y0:y1, x0:x1] * np.arange(1, num_parts + 1)[:, None, None]).sum(axis=0)
    region = image[y0:y1, x0:x1]
    if mode == "image":
        h, w = grouping_size(height, width, image_size)
        region = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR) if (h, w) != (height, width) else image
        labels = _resize_nearest(labels, (h, w))
    if reference_relabel_bug:
        labels = np.unique(labels, return_inverse=True)[1].reshape(labels.shape)
    refined = dense_crf(region, labels, num_parts + 1, **crf_kwargs)
    refined = _resize_nearest(refined, (y1 - y0, x1 - x0))
    present = [c for c in range(1, num_parts + 1) if keep_empty or (refined == c).any()]
    out = np.zeros((len(present),) + object_mask.shape, dtype=bool)
    for i, c in enumerate(present):
        out[i, y0:y1, x0:x1] = refined == c
    return out
