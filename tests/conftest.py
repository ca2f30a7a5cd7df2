import json
import os

import cv2
import numpy as np
import pytest
import torch

# two threads; one per xdist worker when the suite runs on two workers (`pytest -n 2`)
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)


def _square(x0, y0, x1, y1):
    return [float(x0), float(y0), float(x1), float(y0), float(x1), float(y1), float(x0), float(y1)]


@pytest.fixture
def tiny_part_dataset(tmp_path):
    """A 3-image part json + PNGs: object = two parts (left / right halves of a square).

    Returns (json_file, image_root, data).
    """
    root = tmp_path / "tiny"
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    images, anns, objects = [], [], []
    for i in range(3):
        h, w = 48, 64
        img = (rng.random((h, w, 3)) * 255).astype(np.uint8)
        cv2.imwrite(str(root / "images" / f"{i}.png"), img)
        images.append({"id": i, "file_name": f"images/{i}.png", "height": h, "width": w, "object_category_id": 7})
        x0, y0 = 8 + i, 8
        objects.append(
            {
                "id": 100 + i,
                "image_id": i,
                "category_id": 7,
                "segmentation": [_square(x0, y0, x0 + 32, y0 + 24)],
                "area": 32 * 24,
                "bbox": [x0, y0, 32, 24],
                "iscrowd": 0,
            }
        )
        for j, (a, b) in enumerate([(x0, x0 + 16), (x0 + 16, x0 + 32)]):
            anns.append({"id": 10 * i + j, "image_id": i, "category_id": j + 1, "object_id": 100 + i,
                         "segmentation": [_square(a, y0, b, y0 + 24)], "area": 16 * 24,
                         "bbox": [a, y0, 16, 24], "iscrowd": 0})
    data = {
        "images": images,
        "annotations": anns,
        "objects": objects,
        "categories": [
            {"id": 1, "name": "head", "supercategory": "s"},
            {"id": 2, "name": "body", "supercategory": "s"},
        ],
        "object_categories": [{"id": 7, "name": "thing", "supercategory": "s"}],
    }
    json_file = root / "parts.json"
    json_file.write_text(json.dumps(data))
    return str(json_file), str(root), data


def write_json(path, data):
    with open(path, "w") as f:
        json.dump(data, f)
    return str(path)


@pytest.fixture
def rewrite_json():
    return write_json


def pytest_collection_modifyitems(config, items):
    """The READMEs' commands first: under `pytest -n 2 --dist loadscope` each README is one long
    unit of work (its commands run in order on one worker), and long units started first keep both
    workers busy to the end."""
    items.sort(key=lambda item: "test_readme_commands.py::TestReadme_" not in item.nodeid)
