"""`tools/train_net.py --eval-only` on every registered real dataset built from the raw-format
fixtures: the registered names load, pick their evaluator and produce metrics."""
import os
import subprocess
import sys

import pytest
from fixtures_raw import (
    write_cityscapes_parts,
    write_partimagenet_release,
    write_partimagenet_seg_release,
    write_pascal_part_release,
    write_pinpp_release,
)

from part_d2.data.datasets.cityscapes_parts import prepare_cityscapes_parts
from part_d2.data.datasets.partimagenet import prepare_partimagenet, prepare_partimagenet_seg
from part_d2.data.datasets.pascal_part import prepare_pascal_part
from part_d2.data.datasets.pinpp import prepare_pinpp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = "configs/synthetic/cascade_mask_rcnn_R_tiny_agnostic.yaml"
DATASETS = [
    "partimagenet_val_agnostic",
    "partimagenet_test_parts",
    "pascal_part58_val_agnostic",
    "pascal_part108_crop_val_parts",
    "cityscapes_parts_val_agnostic",
    "pinpp_val_agnostic",
    "pinpp_val_parts",
    "partimagenet_seg_val",
]


@pytest.fixture(scope="module")
def real_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("real"))
    raw = str(tmp_path_factory.mktemp("raw"))
    prepare_partimagenet(write_partimagenet_release(os.path.join(raw, "pin")), root)
    write_partimagenet_seg_release(os.path.join(raw, "pinseg"))
    prepare_partimagenet_seg(os.path.join(raw, "pinseg"), root)
    write_pascal_part_release(root)
    prepare_pascal_part(root)
    write_cityscapes_parts(root)
    prepare_cityscapes_parts(root, few_shot=())
    write_pinpp_release(os.path.join(raw, "pinpp"))
    prepare_pinpp(os.path.join(raw, "pinpp"), root)
    return root


def test_eval_only_on_each_registered_real_dataset(real_root, tmp_path):
    """One process evaluates a random tiny model on every dataset (imports cost more than eval)."""
    env = dict(os.environ, DETECTRON2_DATASETS=real_root, OMP_NUM_THREADS="1")
    script = (
        "import os, numpy as np, part_d2\n"
        "from PIL import Image\n"
        "from detectron2.data import DatasetCatalog\n"
        "from part_d2.engine.setup import load_config\n"
        "from part_d2.engine.trainer import PartTrainer\n"
        f"for name in [{', '.join(repr(d) for d in DATASETS)}]:\n"
        # the releases ship annotations only: images come from ImageNet / VOC / Cityscapes
        "    for r in DatasetCatalog.get(name):\n"
        "        if not os.path.exists(r['file_name']):\n"
        "            os.makedirs(os.path.dirname(r['file_name']), exist_ok=True)\n"
        "            Image.fromarray(np.zeros((r['height'], r['width'], 3), np.uint8)).save(r['file_name'], 'PNG')\n"
        f"    cfg = load_config({CONFIG!r}, ['DATASETS.TEST', (name,), 'OUTPUT_DIR', {str(tmp_path)!r},\n"
        "        'INPUT.MIN_SIZE_TEST', 96, 'INPUT.MAX_SIZE_TEST', 160])\n"
        "    model = PartTrainer.build_model(cfg)\n"
        "    res = PartTrainer.test(cfg, model)\n"
        "    keys = ('AP', 'AR@10', 'mIoU', 'fwIoU')\n"
        "    print('RESULT', name, sorted(k for k in next(iter(res.values())) if k in keys), flush=True)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT")]
    assert [line.split()[1] for line in lines] == DATASETS
    by_name = {line.split()[1]: line for line in lines}
    for name in DATASETS[:-2]:  # part evaluator
        assert "['AP', 'AR@10']" in by_name[name], by_name[name]
    assert "['AP']" in by_name["pinpp_val_parts"]  # LVIS evaluator (large label space)
    assert "['fwIoU', 'mIoU']" in by_name["partimagenet_seg_val"]
