"""Registration of part_d2's built-in datasets (importing part_d2 runs it).

Datasets live under ``$DETECTRON2_DATASETS`` (default ``datasets/``). The embedded synthetic part
dataset is generated there on first use; real datasets are registered whether or not their
files exist, and loading a missing one names the preparation command to run.
"""
import os

from part_d2.data.part_json import register_part_json
from part_d2.data.synthetic import ensure_synthetic_parts

SYNTHETIC_SPLITS = ("train", "val", "test")


def datasets_root() -> str:
    return os.environ.get("DETECTRON2_DATASETS", "datasets")


MINI_NUM_IMAGES = {"train": 48, "val": 12, "test": 12}


def _ensure_synthetic(dataset_dir, **kwargs):
    ensure_synthetic_parts(dataset_dir, **kwargs)


def register_synthetic_parts(root: str = None, prefix: str = "synthetic_parts", **generator_kwargs):
    """Register ``{prefix}_{train,val,test}_{parts,agnostic,objects}``, generated on first load
    into ``root/prefix``.

    ``generator_kwargs`` go to :func:`part_d2.data.synthetic.ensure_synthetic_parts` (seed, sizes).
    """
    base = os.path.join(root or datasets_root(), prefix)
    names = []
    for split in SYNTHETIC_SPLITS:
        names += register_part_json(
            f"{prefix}_{split}",
            os.path.join(base, "annotations", f"{split}.json"),
            os.path.join(base, "images", split),
            prepare_hint=f"python datasets/generate_synthetic_parts.py --root {base}",
            ensure_fn=lambda: _ensure_synthetic(base, **generator_kwargs),
            split=split,
        )
    return names


register_synthetic_parts()
# a small variant (same classes and splits, fewer images) for tests and smoke runs
register_synthetic_parts(prefix="synthetic_parts_mini", num_images=MINI_NUM_IMAGES)
