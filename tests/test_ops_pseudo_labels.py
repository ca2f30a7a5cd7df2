"""OPS self-training: pseudo-label json from predictions, the tool on a tiny model, and
registration of the result through DATASETS.PART_JSONS."""
import json
import os

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model
from detectron2.structures import Instances

import part_d2  # noqa: F401
from part_d2.data.part_json import (
    PartDatasetError,
    load_part_json,
    parse_part_json_spec,
    register_part_json,
)
from part_d2.data.shards import register_config_part_jsons
from part_d2.engine.pseudo_labels import encode_parts, generate_pseudo_labels, pseudo_label_json
from part_d2.engine.setup import load_config
from part_d2.structures.masks import segmentation_to_mask

TINY = "configs/synthetic/mask2former_R_tiny_agnostic.yaml"


class FixedModel(torch.nn.Module):
    """Predicts three parts per image with scores 0.05, 0.1 and 0.9 (left, right, whole half)."""

    def forward(self, inputs):
        outs = []
        for x in inputs:
            h, w = x["height"], x["width"]
            masks = torch.zeros(3, h, w, dtype=torch.bool)
            masks[0, :, : w // 2] = True
            masks[1, :, w // 2:] = True
            masks[2, : h // 2] = True
            inst = Instances((h, w), pred_masks=masks, scores=torch.tensor([0.05, 0.1, 0.9]),
                             pred_classes=torch.zeros(3, dtype=torch.long))
            outs.append({"instances": inst})
        return outs


def test_pseudo_label_json_threshold_and_objects(tiny_part_dataset, tmp_path):
    json_file, root, data = tiny_part_dataset
    register_part_json("pl_src", json_file, root)
    cfg = load_config(TINY, ["DATALOADER.NUM_WORKERS", "0"])
    out = str(tmp_path / "pl" / "pseudo.json")
    written = generate_pseudo_labels(cfg, FixedModel(), "pl_src_agnostic", out, score_thresh=0.1)
    with open(out) as f:
        on_disk = json.load(f)
    assert on_disk == json.loads(json.dumps(written))
    # score > 0.1 strictly: only the 0.9 part of each of the 3 images
    assert [a["score"] for a in on_disk["annotations"]] == pytest.approx([0.9] * 3)
    assert on_disk["categories"] == [{"id": 1, "name": "part", "supercategory": "part"}]
    ann = on_disk["annotations"][0]
    mask = segmentation_to_mask(ann["segmentation"], 48, 64)
    assert mask[:24].all() and not mask[24:].any() and ann["area"] == 24 * 64 and ann["bbox"] == [0, 0, 64, 24]
    assert [img["file_name"] for img in on_disk["images"]] == [f"images/{i}.png" for i in range(3)]
    assert on_disk["info"]["image_root"] == root
    # objects kept (same masks as the source), so the "perfect" object-mask source still works
    records = load_part_json(out, root, "agnostic")
    src = {r["image_id"]: r for r in load_part_json(json_file, root, "agnostic")}
    for rec in records:
        assert len(rec["annotations"]) == 1 and rec["annotations"][0]["category_id"] == 0
        (obj,), (src_obj,) = rec["objects"], src[rec["image_id"]]["objects"]
        assert np.array_equal(segmentation_to_mask(obj["segmentation"], 48, 64),
                              segmentation_to_mask(src_obj["segmentation"], 48, 64))
        assert obj["category_id"] == src_obj["category_id"]


def test_pseudo_label_json_default_threshold_and_empty():
    records = [{"image_id": 5, "file_name": "/abs/a.png", "height": 4, "width": 4}]
    masks = np.zeros((3, 4, 4), dtype=bool)
    masks[0, 1:3, 1:3] = True  # the second mask is empty: dropped whatever its score
    masks[2, 0, :] = True
    parts = encode_parts(masks, np.array([0.11, 0.95, 0.1]))
    assert [p["area"] for p in parts] == [4, 4] and parts[1]["bbox"] == [0, 0, 4, 1]
    data = pseudo_label_json(records, {5: parts}, 0.1)  # 0.1 is not above the threshold
    assert len(data["annotations"]) == 1 and data["annotations"][0]["area"] == 4
    assert data["annotations"][0]["bbox"] == [1, 1, 2, 2] and data["annotations"][0]["category_id"] == 1
    assert data["images"][0]["file_name"] == "/abs/a.png" and data["objects"] == []
    assert encode_parts(np.zeros((0, 4, 4), dtype=bool), np.zeros(0)) == []
    assert pseudo_label_json(records, {5: []}, 0.1)["annotations"] == []


def test_part_json_specs(tiny_part_dataset, tmp_path):
    json_file, root, _ = tiny_part_dataset
    assert parse_part_json_spec(f"x:{json_file}:{root}") == {"name": "x", "json_file": json_file, "image_root": root}
    with pytest.raises(PartDatasetError, match="name:json_file"):
        parse_part_json_spec("only_a_name")
    with pytest.raises(PartDatasetError, match="missing.json: file not found"):
        parse_part_json_spec(f"x:{tmp_path}/missing.json")
    cfg = load_config(TINY, ["DATASETS.PART_JSONS", f"('cfgjson:{json_file}:{root}',)"])
    assert register_config_part_jsons(cfg) == ["cfgjson_parts", "cfgjson_agnostic", "cfgjson_objects"]
    assert len(DatasetCatalog.get("cfgjson_agnostic")) == 3


# a 2-layer decoder and 1-layer encoder on the CPU, data loaded in the main process
TINY_TOOL_OPTS = [
    "MODEL.DEVICE",
    "cpu",
    "MODEL.MASK_FORMER.DEC_LAYERS",
    "2",
    "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS",
    "1",
    "DATALOADER.NUM_WORKERS",
    "0",
]


def test_tool_on_tiny_model(tiny_part_dataset, tmp_path):
    from tool_loader import load_tool

    run = load_tool("generate_pseudo_labels").run

    json_file, root, _ = tiny_part_dataset
    opts = [
        *TINY_TOOL_OPTS,
        "OUTPUT_DIR",
        str(tmp_path / "log"),
        "DATASETS.PART_JSONS",
        f"('toolsrc:{json_file}:{root}',)",
    ]
    cfg = load_config(TINY, opts)
    torch.manual_seed(0)
    weights = str(tmp_path / "tiny.pth")
    torch.save({"model": build_model(cfg).state_dict()}, weights)
    out_dir = tmp_path / "pseudo"
    run(["--config-file", TINY, "--dataset", "toolsrc_agnostic", "--output", str(out_dir), "--score-thresh", "0.02",
         "--name", "toolpl", *opts, "MODEL.WEIGHTS", weights])
    out = out_dir / "pseudo_labels.json"
    data = json.loads(out.read_text())
    assert data["info"]["score_thresh"] == 0.02 and len(data["images"]) == 3
    assert data["annotations"] and all(a["score"] > 0.02 for a in data["annotations"])
    assert sorted(os.listdir(out_dir)) == [".lock", "pseudo_labels.json"]  # no temporary file (.lock: the output lock)
    before = (out.stat().st_mtime_ns, out.read_bytes())
    run(["--config-file", TINY, "--dataset", "toolsrc_agnostic", "--output", str(out_dir), "--score-thresh", "0.02",
         *opts, "MODEL.WEIGHTS", weights])
    assert (out.stat().st_mtime_ns, out.read_bytes()) == before  # a finished run is not redone
    cfg = load_config(TINY, ["DATASETS.PART_JSONS", f"('toolpl:{out}',)"])  # image root from the json
    register_config_part_jsons(cfg)
    records = DatasetCatalog.get("toolpl_agnostic")
    assert sum(len(r["annotations"]) for r in records) == len(data["annotations"])
    assert all(os.path.isfile(r["file_name"]) for r in records)


def test_tool_with_two_processes_writes_the_same_bytes(tiny_part_dataset, tmp_path):
    """OPS pseudo labels are deterministic and independent of the number of processes."""
    import subprocess
    import sys

    json_file, root, _ = tiny_part_dataset
    opts = [
        *TINY_TOOL_OPTS,
        "DATASETS.PART_JSONS",
        f"('twoproc:{json_file}:{root}',)",
    ]
    torch.manual_seed(0)
    weights = str(tmp_path / "tiny.pth")
    torch.save({"model": build_model(load_config(TINY, opts)).state_dict()}, weights)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    outputs = []
    for procs in ("1", "2"):
        out = tmp_path / f"pl{procs}"
        proc = subprocess.run(
            [sys.executable, "tools/generate_pseudo_labels.py", "--num-gpus", procs, "--config-file", TINY,
             "--dataset", "twoproc_agnostic", "--output", str(out), "--score-thresh", "0.02", *opts,
             "OUTPUT_DIR", str(tmp_path / f"log{procs}"), "MODEL.WEIGHTS", weights],
            cwd=repo, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        outputs.append((out / "pseudo_labels.json").read_bytes())
    assert outputs[0] == outputs[1] and json.loads(outputs[0])["annotations"]
