import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pd_helpers import mini_records, tiny_grouper

from part_d2.modeling.dense_crf import crop_box, dense_crf, refine_parts_with_crf
from part_d2.modeling.pixel_grouping import assign_pixels, centroid_scores, labels_to_parts, resize_matrix
from part_d2.structures.masks import segmentation_to_mask


def _two_colour_image(h=24, w=32):
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 2] = (200, 30, 30)
    img[:, w // 2:] = (30, 30, 200)
    return img


def test_dense_crf_cleans_label_noise_along_colour_edges():
    img = _two_colour_image()
    labels = np.zeros((24, 32), np.int64)
    labels[:, 16:] = 1
    noisy = labels.copy()
    noisy[5, 4] = noisy[10, 8] = noisy[20, 2] = 1  # isolated wrong labels in the red half
    noisy[3, 25] = 0
    out = dense_crf(img, noisy, 2)
    np.testing.assert_array_equal(out, labels)


def test_dense_crf_rejects_out_of_range_labels():
    with pytest.raises(ValueError):
        dense_crf(_two_colour_image(), np.full((24, 32), 2), 2)


def test_crop_box_margin():
    m = np.zeros((20, 30), bool)
    m[5:15, 10:20] = True
    assert crop_box(m, 0.0) == (10, 5, 20, 15)
    assert crop_box(m, 0.2) == (8, 3, 22, 17)
    assert crop_box(m, 10.0) == (0, 0, 30, 20)


def test_relabel_bug_drops_the_first_part_only_without_background():
    img = _two_colour_image()
    obj = np.ones((24, 32), bool)  # the crop has no background pixel
    parts = np.stack([obj & (np.arange(32) < 16)[None], obj & (np.arange(32) >= 16)[None]])
    fixed = refine_parts_with_crf(img, obj, parts, mode="crop", margin=0.0)
    np.testing.assert_array_equal(fixed, parts)
    buggy = refine_parts_with_crf(img, obj, parts, mode="crop", margin=0.0, reference_relabel_bug=True)
    assert len(buggy) == 1
    np.testing.assert_array_equal(buggy[0], parts[1])
    # with background in the crop the two modes agree
    obj2 = np.zeros((24, 32), bool)
    obj2[4:20, 4:28] = True
    parts2 = parts & obj2[None]
    a = refine_parts_with_crf(img, obj2, parts2, mode="crop", margin=0.2)
    b = refine_parts_with_crf(img, obj2, parts2, mode="crop", margin=0.2, reference_relabel_bug=True)
    assert len(a) == 2
    np.testing.assert_array_equal(a, b)


def test_default_crf_runs_on_the_whole_image_at_the_grouping_size(monkeypatch):
    """The grouper's CRF (default MODE "image") sees the whole image resized to IMAGE_SIZE (160 in
    the tiny config: 96 x 128 -> 120 x 160), and its labels come back at the original size; MODE
    "crop" sees the object's crop at the original resolution."""
    from part_d2.modeling import dense_crf as crf_module

    seen = []
    real = crf_module.dense_crf

    def spy(image, labels, n_labels, **kwargs):
        seen.append((image.shape[:2], labels.shape))
        return real(image, labels, n_labels, **kwargs)

    monkeypatch.setattr(crf_module, "dense_crf", spy)
    img = np.zeros((96, 128, 3), np.uint8)
    img[:, 64:] = 200
    obj = np.zeros((96, 128), bool)
    obj[20:70, 30:100] = True
    parts = tiny_grouper(["PART_DISTILLATION.PIXEL_GROUPING.CRF.ENABLED", "True"])(img, obj[None], 0)[0]
    assert seen == [((120, 160), (120, 160))]
    assert parts.shape[1:] == (96, 128) and len(parts) >= 1
    seen.clear()
    tiny_grouper(["PART_DISTILLATION.PIXEL_GROUPING.CRF.ENABLED", "True",
                  "PART_DISTILLATION.PIXEL_GROUPING.CRF.MODE", "crop"])(img, obj[None], 0)
    assert seen == [((60, 84), (60, 84))]  # box 50 x 70 grown by 10% on each side


def test_l2_scores_rank_like_negative_squared_distance():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(5, 6, 7, generator=g)
    c = torch.randn(2, 3, 5, generator=g)
    s = centroid_scores(f, c, "l2")
    d = -((f.flatten(1).t()[None, :, None] - c[:, None]) ** 2).sum(-1)  # (B, HW, K)
    assert torch.equal(s.flatten(2).argmax(1), d.argmax(-1))
    torch.testing.assert_close(s.flatten(2).transpose(1, 2) - d, (f * f).sum(0).flatten()[None, :, None].expand_as(d))


def test_upsampled_scores_equal_scores_of_upsampled_features():
    g = torch.Generator().manual_seed(1)
    f = torch.randn(8, 4, 5, generator=g)
    c = torch.randn(1, 3, 8, generator=g)
    obj = torch.ones(1, 30, 36, dtype=torch.bool)
    labels = assign_pixels(centroid_scores(f, c, "dot"), torch.ones(1, 3, dtype=torch.bool), (32, 40), (30, 36),
                           (30, 36), obj)
    up = F.interpolate(f[None], size=(32, 40), mode="bilinear", align_corners=False)[0][:, :30, :36]
    ref = torch.einsum("chw,kc->khw", up, c[0]).argmax(0)
    assert torch.equal(labels[0], ref)


def test_labels_to_parts():
    lab = np.array([[-1, 0, 2], [2, 2, -1]])
    parts = labels_to_parts(lab)
    assert parts.shape == (2, 2, 3)
    np.testing.assert_array_equal(parts.sum(0), lab >= 0)


def test_grouping_partitions_each_object_into_k_parts():
    records, _ = mini_records(2)
    grouper = tiny_grouper(["PART_DISTILLATION.PIXEL_GROUPING.CRF.ENABLED", "False"])
    from part_d2.engine.offline import read_rgb

    for rec in records:
        masks = np.stack([segmentation_to_mask(o["segmentation"], rec["height"], rec["width"]) for o in rec["objects"]])
        out = grouper(read_rgb(rec), masks, seed=3)
        for m, parts in zip(masks, out):
            assert len(parts) == 4
            assert (parts.sum(0) <= 1).all()
            np.testing.assert_array_equal(parts.any(0), m)
        again = grouper(read_rgb(rec), masks, seed=3)
        for a, b in zip(out, again):
            np.testing.assert_array_equal(a, b)


def test_resize_matrix_is_torch_linear_interpolation():
    v = torch.randn(2, 3, 7, generator=torch.Generator().manual_seed(2))
    for out in (4, 7, 19):
        ref = F.interpolate(v, size=out, mode="linear", align_corners=False)
        torch.testing.assert_close(v @ resize_matrix(out, 7).t(), ref)


def test_assign_pixels_in_boxes_equals_full_resolution_resizing():
    g = torch.Generator().manual_seed(3)
    scores = torch.randn(3, 4, 10, 12, generator=g)
    active = torch.ones(3, 4, dtype=torch.bool)
    active[1, 2:] = False
    masks = torch.zeros(3, 45, 50, dtype=torch.bool)
    masks[0, 5:30, 10:44] = torch.rand(25, 34, generator=g) > 0.3
    masks[1, 20:45, 0:20] = True
    # reference: resize the whole maps to the padded size, crop, resize to the output size, argmax
    up = F.interpolate(scores, size=(80, 96), mode="bilinear", align_corners=False)[:, :, :70, :90]
    up = F.interpolate(up, size=(45, 50), mode="bilinear", align_corners=False)
    ref = up.masked_fill(~active[:, :, None, None], float("-inf")).argmax(dim=1)
    ref = torch.where(masks, ref, torch.full_like(ref, -1))
    labels = assign_pixels(scores, active, (80, 96), (70, 90), (45, 50), masks)
    assert torch.equal(labels, ref)
    assert (labels[1][masks[1]] < 2).all() and (labels[2] == -1).all()


def test_cpu_features_run_channels_last_with_the_nchw_backbone_s_values(monkeypatch):
    from part_d2.engine.offline import read_rgb
    from part_d2.modeling import onednn

    records, _ = mini_records(1)
    image = read_rgb(records[0])
    monkeypatch.setattr(onednn, "runs_on_onednn", lambda x: False)
    reference = tiny_grouper()  # same seeded weights, backbone left NCHW with detectron2's own Conv2d
    expected, expected_size, _ = reference.features(image)
    monkeypatch.undo()
    grouper = tiny_grouper()
    feats, padded_size, _ = grouper.features(image)
    assert not reference.backbone.stem.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert padded_size == expected_size
    # float tolerance: other summation orders through 3 stages of random convolutions
    torch.testing.assert_close(feats, expected, rtol=1e-4, atol=1e-5 * expected.abs().max().item())
    converted = grouper.backbone.stem.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert converted == onednn.onednn_available()
