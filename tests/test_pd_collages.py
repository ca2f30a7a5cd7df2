"""tools/pd_collages.py on a finished stage-1a output: one 3x3 collage per (object class, part)."""
import importlib.util
import os

import cv2
import numpy as np
from pd_helpers import mini_records, tiny_grouper

from part_d2.data.shards import load_stage_output, read_manifest
from part_d2.engine.offline import run_pixel_grouping

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tool():
    spec = importlib.util.spec_from_file_location("pd_collages", os.path.join(ROOT, "tools", "pd_collages.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_collages_one_png_per_part_class_with_at_most_nine_tiles(tmp_path, capsys):
    records, classes = mini_records(4)
    stage = str(tmp_path / "groups")
    assert run_pixel_grouping(tiny_grouper(), records, stage, shard_size=2, object_classes=classes, max_objects=0)
    parts = load_stage_output(stage, "parts")
    used = sorted({a["category_id"] for r in parts for a in r["annotations"]})
    counts = {c: sum(a["category_id"] == c for r in parts for a in r["annotations"]) for c in used}
    names = read_manifest(stage)["part_classes"]

    out = str(tmp_path / "collages")
    _tool().run(["--input", stage, "--output", out, "--per-class", "2"])
    assert f"{len(used)} collages written" in capsys.readouterr().out
    pngs = sorted(os.path.relpath(os.path.join(d, f), out) for d, _, fs in os.walk(out) for f in fs)
    assert len(pngs) == len(used)
    for c in used:
        obj, _, part = names[c].rpartition(":") if ":" in names[c] else ("", "", names[c])
        matches = [p for p in pngs if p.endswith(f"{part}.png") and (not obj or p.startswith(obj.replace(" ", "_")))]
        assert matches, (names[c], pngs)
        image = cv2.imread(os.path.join(out, matches[0]))
        tiles = min(2, counts[c])
        cell, pad = 160, 2
        assert image.shape == (cell + 2 * pad, 3 * (cell + pad) + pad, 3)  # one row of 3 columns
        filled = [(image[pad:pad + cell, pad + i * (cell + pad): pad + i * (cell + pad) + cell] != 255).any()
                  for i in range(3)]
        assert filled == [i < tiles for i in range(3)]

    _tool().run(["--input", stage, "--output", str(tmp_path / "nine")])
    big = [cv2.imread(os.path.join(d, f)) for d, _, fs in os.walk(tmp_path / "nine") for f in fs]
    assert max(b.shape[0] for b in big) <= 3 * (160 + 2) + 2 and all(np.asarray(b).std() > 0 for b in big)
