"""Builders of tiny fixtures in the exact raw formats of the real part datasets' releases.

Each builder writes into a given folder and returns what the tests need to know about it.
"""
import json
import os
import zipfile
from typing import Dict

import numpy as np
from PIL import Image

PIN_CATEGORIES = os.path.join(os.path.dirname(__file__), "..", "part_d2", "data", "metadata", "partimagenet.json")


def _sq(x0, y0, x1, y1):
    """A rectangle polygon with corners (x0, y0) and (x1, y1)."""
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def partimagenet_split_jsons() -> Dict[str, Dict]:
    """PartImageNet OOD COCO jsons (train/val/test) with the release's defects.

    train: image 1 (n01440764, 20x20): Fish Head = square 2..8 plus a 5-value polygon; Fish Body
    split over two annotations (squares 10..16 x 2..8 and 10..16 x 10..16); Fish Fin with a
    4-value polygon only; Fish Tail with a zero-area (collinear) polygon. Image 2 (n01443537):
    Fish Head square 15..25 x 0..5, clipped to the 20 px wide image. Image 3: no annotation.
    """
    with open(PIN_CATEGORIES) as f:
        categories = [dict(c) for c in json.load(f)["categories"]]

    def image(i, name):
        return {"id": i, "file_name": name, "height": 20, "width": 20}

    train = {
        "images": [image(1, "n01440764_10029.JPEG"), image(2, "n01443537_1.JPEG"), image(3, "n01443537_2.JPEG")],
        "categories": categories,
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 9,
                "segmentation": [_sq(2, 2, 8, 8), [0, 0, 1, 1, 2]],
                "iscrowd": 0,
                "area": 1,
            },
            {"id": 2, "image_id": 1, "category_id": 10, "segmentation": [_sq(10, 2, 16, 8)], "iscrowd": 0, "area": 1},
            {"id": 3, "image_id": 1, "category_id": 10, "segmentation": [_sq(10, 10, 16, 16)], "iscrowd": 0, "area": 1},
            {"id": 4, "image_id": 1, "category_id": 11, "segmentation": [[1, 1, 2, 2]], "iscrowd": 0, "area": 1},
            {"id": 5, "image_id": 1, "category_id": 12, "segmentation": [[1, 1, 3, 1, 5, 1]], "iscrowd": 0, "area": 1},
            {"id": 6, "image_id": 2, "category_id": 9, "segmentation": [_sq(15, 0, 25, 5)], "iscrowd": 0, "area": 1},
        ],
    }
    val = {
        "images": [image(1, "n02085620_7.JPEG")],
        "categories": categories,
        "annotations": [{"id": 1, "image_id": 1, "category_id": 0, "segmentation": [_sq(0, 0, 10, 10)], "iscrowd": 0}],
    }
    test = {
        "images": [image(5, "n03792782_3.JPEG")],
        "categories": categories,
        "annotations": [{"id": 9, "image_id": 5, "category_id": 30, "segmentation": [_sq(4, 4, 6, 6)], "iscrowd": 0}],
    }
    return {"train": train, "val": val, "test": test}


def write_partimagenet_release(folder: str, nested_zip: bool = True) -> str:
    """Write the OOD release; returns the path to give ``--raw``.

    nested_zip: ``PartImageNet_OOD.zip`` holding ``PartImageNet/annotations.zip`` holding flat
    ``{split}.json`` files; otherwise an extracted folder with ``annotations/{split}.json``.
    """
    jsons = partimagenet_split_jsons()
    os.makedirs(folder, exist_ok=True)
    if not nested_zip:
        ann_dir = os.path.join(folder, "PartImageNet", "annotations")
        os.makedirs(ann_dir, exist_ok=True)
        for split, data in jsons.items():
            with open(os.path.join(ann_dir, f"{split}.json"), "w") as f:
                json.dump(data, f)
        return os.path.join(folder, "PartImageNet")
    inner = os.path.join(folder, "annotations.zip")
    with zipfile.ZipFile(inner, "w") as zf:
        for split, data in jsons.items():
            zf.writestr(f"{split}.json", json.dumps(data))
    outer = os.path.join(folder, "PartImageNet_OOD.zip")
    with zipfile.ZipFile(outer, "w") as zf:
        zf.write(inner, "PartImageNet/annotations.zip")
        zf.writestr("__MACOSX/._junk", "x")
    os.remove(inner)
    return outer


def write_partimagenet_seg_release(folder: str) -> Dict[str, np.ndarray]:
    """Seg release folder: ``images/{split}/*.JPEG``, ``annotations/{split}/*.png`` (0-39, 40 bg).

    train has two images (one label map with a stray value 77) and one label map without image;
    val and test one image each. Returns the written train label maps by stem.
    """
    rng = np.random.RandomState(0)
    maps = {}
    for split, stems in {
        "train": ["n01440764_1", "n01440764_2"],
        "val": ["n02085620_7"],
        "test": ["n03792782_3"],
    }.items():
        os.makedirs(os.path.join(folder, "images", split), exist_ok=True)
        os.makedirs(os.path.join(folder, "annotations", split), exist_ok=True)
        for stem in stems:
            Image.fromarray(rng.randint(0, 255, (8, 8, 3), dtype=np.uint8)).save(
                os.path.join(folder, "images", split, f"{stem}.JPEG"), format="JPEG")
            label = np.full((8, 8), 40, dtype=np.uint8)
            label[2:5, 2:5] = 9
            if stem == "n01440764_2":
                label[0, 0] = 77
            Image.fromarray(label).save(os.path.join(folder, "annotations", split, f"{stem}.png"))
            Image.fromarray((label != 40).astype(np.uint8)).save(
                os.path.join(folder, "annotations", split, f"{stem}_whole.png"))
            maps[stem] = label
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(os.path.join(folder, "annotations", "train", "orphan.png"))
    return maps


def _box_mask(h, w, y0, y1, x0, x1):
    m = np.zeros((h, w), dtype=np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def _struct_array(rows, fields):
    """A 1xN MATLAB struct array as scipy.io.savemat writes it."""
    arr = np.zeros((1, len(rows)), dtype=[(f, "O") for f in fields])
    for i, row in enumerate(rows):
        for f in fields:
            arr[0, i][f] = row[f]
    return arr


def _write_anno_mat(path, imname, objects):
    """One Annotations_Part file: struct ``anno`` (imname, objects(class, class_ind, mask, parts))."""
    import scipy.io

    rows = []
    for cls, cls_ind, mask, parts in objects:
        part_arr = (_struct_array([{"part_name": n, "mask": m} for n, m in parts], ["part_name", "mask"])
                    if parts else np.zeros((0, 0)))
        rows.append({"class": cls, "class_ind": cls_ind, "mask": mask, "parts": part_arr})
    scipy.io.savemat(
        path, {"anno": {"imname": imname, "objects": _struct_array(rows, ["class", "class_ind", "mask", "parts"])}}
    )


def write_pascal_part_release(root: str) -> None:
    """``root/pascal_part/``: VOC2010 split lists and JPEGs plus Annotations_Part .mat files.

    train: 2008_000002 (20x30, image present): person y2-18 x2-12 with head y2-5 x4-10,
    lebrow y2-3 x4-6, torso y5-12 x3-11, llarm y5-9 x2-3, lhand y9-11 x2-3 and a part named
    ``Lhand`` (unknown: names match exactly); tvmonitor y2-10 x15-25 with screen y3-9 x16-24.
    2008_000003 (no image): boat y1-4 x1-4 without parts. 2008_000099: listed, no .mat.
    val: 2008_000007 (12x12, image present): cow y0-10 x0-10 with head y0-3 x0-3, leye y0-1 x0-1,
    torso y3-10 x0-10.
    """
    base = os.path.join(root, "pascal_part")
    main = os.path.join(base, "VOC2010", "ImageSets", "Main")
    jpeg = os.path.join(base, "VOC2010", "JPEGImages")
    ann = os.path.join(base, "Annotations_Part")
    for d in (main, jpeg, ann):
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(main, "train.txt"), "w") as f:
        f.write("2008_000002\n2008_000003\n2008_000099\n")
    with open(os.path.join(main, "val.txt"), "w") as f:
        f.write("2008_000007\n")
    rng = np.random.RandomState(0)
    for name, (h, w) in {"2008_000002": (20, 30), "2008_000007": (12, 12)}.items():
        Image.fromarray(rng.randint(0, 255, (h, w, 3), dtype=np.uint8)).save(os.path.join(jpeg, f"{name}.jpg"))
    b = _box_mask
    _write_anno_mat(os.path.join(ann, "2008_000002.mat"), "2008_000002", [
        ("person", 15, b(20, 30, 2, 18, 2, 12), [
            ("head", b(20, 30, 2, 5, 4, 10)), ("lebrow", b(20, 30, 2, 3, 4, 6)), ("torso", b(20, 30, 5, 12, 3, 11)),
            ("llarm", b(20, 30, 5, 9, 2, 3)), ("lhand", b(20, 30, 9, 11, 2, 3)), ("Lhand", b(20, 30, 11, 12, 2, 3))]),
        ("tvmonitor", 20, b(20, 30, 2, 10, 15, 25), [("screen", b(20, 30, 3, 9, 16, 24))]),
    ])
    _write_anno_mat(os.path.join(ann, "2008_000003.mat"), "2008_000003", [("boat", 4, b(8, 8, 1, 4, 1, 4), [])])
    _write_anno_mat(os.path.join(ann, "2008_000007.mat"), "2008_000007", [
        ("cow", 10, b(12, 12, 0, 10, 0, 10), [
            ("head", b(12, 12, 0, 3, 0, 3)), ("leye", b(12, 12, 0, 1, 0, 1)), ("torso", b(12, 12, 3, 10, 0, 10))]),
    ])


def write_pinpp_release(folder: str) -> None:
    """PartImageNet++ release: two classes with the release's files.

    n01440764 ("tench", parts head/body/fin = local ids 1/2/3, list form): 10 images 16x16, each
    with head = square 0..4 and body = square 4..12; image 3 also has a 4-value fin polygon and
    an annotation of unknown category 9; image 10 is discarded. n01443537 ("goldfish", parts as
    ``{id: name}``): 3 images with fin = square 2..6. Inclusions of the tench: ``head:body``
    (kept), ``eye:head`` (unknown part), ``no separator`` (malformed).
    """
    os.makedirs(os.path.join(folder, "json"), exist_ok=True)
    os.makedirs(os.path.join(folder, "including"), exist_ok=True)

    def class_json(wnid, n, cats, anns_of):
        images = [{"id": i, "file_name": f"{wnid}_{100 + i}.JPEG", "height": 16, "width": 16} for i in range(1, n + 1)]
        anns = [dict(a, id=k + 1) for k, a in enumerate(x for i in range(1, n + 1) for x in anns_of(i))]
        return {"images": images, "annotations": anns, "categories": cats}

    def tench(i):
        anns = [{"image_id": i, "category_id": 1, "segmentation": [_sq(0, 0, 4, 4)], "iscrowd": 0},
                {"image_id": i, "category_id": 2, "segmentation": [_sq(4, 4, 12, 12)], "iscrowd": 0}]
        if i == 3:
            anns += [{"image_id": i, "category_id": 3, "segmentation": [[1, 1, 2, 2]], "iscrowd": 0},
                     {"image_id": i, "category_id": 9, "segmentation": [_sq(0, 0, 2, 2)], "iscrowd": 0}]
        return anns

    cats = [{"id": 1, "name": "x"}, {"id": 2, "name": "y"}, {"id": 3, "name": "z"}]
    data = {
        "n01440764": class_json("n01440764", 10, cats, tench),
        "n01443537": class_json(
            "n01443537",
            3,
            [{"id": 7, "name": "fin"}],
            lambda i: [{"image_id": i, "category_id": 7, "segmentation": [_sq(2, 2, 6, 6)], "iscrowd": 0}],
        ),
    }
    for wnid, d in data.items():
        with open(os.path.join(folder, "json", f"{wnid}.json"), "w") as f:
            json.dump(d, f)
    with open(os.path.join(folder, "category_name.json"), "w") as f:
        json.dump([{"file_name": "n01440764.json", "object_name": "tench", "part_name": ["head", "body", "fin"]},
                   {"file_name": "n01443537.json", "object_name": "goldfish", "part_name": {"7": "fin"}}], f)
    with open(os.path.join(folder, "discarded_data.json"), "w") as f:
        json.dump([{"file_name": "n01440764/n01440764_110.JPEG"}], f)
    with open(os.path.join(folder, "including", "n01440764.txt"), "w") as f:
        f.write("head:body\neye:head\nno separator\n")


def cityscapes_uid_map() -> np.ndarray:
    """A 10x10 Cityscapes-Panoptic-Parts uid map.

    road (uid 7) everywhere; person iid 1 at y0-4 x0-4: head (pid 2) y0-2, torso (pid 1) y2-4;
    car iid 2 at y5-10 x5-10: window (pid 1) y5-7, chassis (pid 5) y7-10; a person crowd region
    (semantic only, uid 24) at y0-2 x8-10; rider iid 3 without parts (uid 25003) at y8-10 x0-2.
    """
    m = np.full((10, 10), 7, dtype=np.int32)
    m[0:2, 0:4], m[2:4, 0:4] = 2400102, 2400101
    m[5:7, 5:10], m[7:10, 5:10] = 2600201, 2600205
    m[0:2, 8:10] = 24
    m[8:10, 0:2] = 25003
    return m


def write_cityscapes_parts(root: str, n_train: int = 2) -> None:
    """``root/cityscapes/``: gtFinePanopticParts .tif uid maps (int32 TIFF) and leftImg8bit PNGs."""
    for split, n in (("train", n_train), ("val", 1)):
        lab = os.path.join(root, "cityscapes", "gtFinePanopticParts", split, "aachen")
        img = os.path.join(root, "cityscapes", "leftImg8bit", split, "aachen")
        os.makedirs(lab, exist_ok=True)
        os.makedirs(img, exist_ok=True)
        for k in range(n):
            stem = f"aachen_{k:06d}_000019"
            Image.fromarray(cityscapes_uid_map()).save(os.path.join(lab, f"{stem}_gtFinePanopticParts.tif"))
            Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(os.path.join(img, f"{stem}_leftImg8bit.png"))


def write_imagenet(root: str) -> None:
    """``root/imagenet21k`` (words.txt, synsets.dat in another order, 2 class folders) and
    ``root/imagenet1k/train`` (goldfish and n01530575, a class absent from the 21K list)."""
    in21k = os.path.join(root, "imagenet21k")
    os.makedirs(in21k, exist_ok=True)
    with open(os.path.join(in21k, "words.txt"), "w") as f:
        f.write("n00000001\tentity\nn01440764\ttench, Tinca tinca\nn01443537\tgoldfish\nn09999999\tnot a synset\n")
    with open(os.path.join(in21k, "synsets.dat"), "w") as f:
        f.write("n01443537\nn01440764\nn00000001\n")
    files = {os.path.join(in21k, "n01440764", "n01440764_1.JPEG"): (8, 6),
             os.path.join(in21k, "n01443537", "n01443537_2.JPEG"): (4, 4),
             os.path.join(root, "imagenet1k", "train", "n01443537", "n01443537_3.JPEG"): (5, 7),
             os.path.join(root, "imagenet1k", "train", "n01530575", "n01530575_4.JPEG"): (3, 3)}
    for path, (w, h) in files.items():
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(path, format="JPEG")
