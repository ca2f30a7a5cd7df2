"""OPS batch mixing: the unlabeled half of every batch comes from DATASETS.UNLABELED."""
import json
import os
import shutil

import pytest

import part_d2  # noqa: F401
from part_d2.data.mixed_loader import MixedBatchLoader, unlabeled_dataset_dicts
from part_d2.data.part_json import register_part_json
from part_d2.engine.setup import load_config
from part_d2.engine.trainer import PartTrainer

TINY = "configs/synthetic/mask2former_R_tiny_agnostic.yaml"


@pytest.fixture
def two_datasets(tiny_part_dataset, tmp_path):
    """``mixlab_*`` (labeled) and ``mixunl_*`` (a copy of the images without any annotation)."""
    json_file, root, data = tiny_part_dataset
    unl_root = tmp_path / "unlabeled"
    shutil.copytree(os.path.join(root, "images"), unl_root / "images")
    unl_json = unl_root / "unlabeled.json"
    unl_json.write_text(json.dumps(dict(data, annotations=[])))
    register_part_json("mixlab", json_file, root)
    register_part_json("mixunl", str(unl_json), str(unl_root))
    return root, str(unl_root)


def test_unlabeled_half_comes_from_its_own_dataset(two_datasets):
    lab_root, unl_root = two_datasets
    cfg = load_config(TINY, [
        "DATASETS.TRAIN", "('mixlab_agnostic',)", "DATASETS.UNLABELED", "('mixunl_agnostic',)",
        "SOLVER.IMS_PER_BATCH", "2", "SOLVER.IMS_PER_BATCH_UNLABELED", "3", "DATALOADER.NUM_WORKERS", "0",
        "INPUT.IMAGE_SIZE", "64",
    ])
    loader = PartTrainer.build_train_loader(cfg)
    assert isinstance(loader, MixedBatchLoader)
    for _, batch in zip(range(3), loader):
        assert len(batch) == 5
        labeled, unlabeled = batch[:2], batch[2:]
        for x in labeled:
            assert x["file_name"].startswith(lab_root + os.sep) and "instances" in x and not x.get("unlabeled")
        for x in unlabeled:
            # from the unlabeled dataset although it has no annotations (never filtered as empty)
            assert x["file_name"].startswith(unl_root + os.sep)
            assert x["unlabeled"] and "instances" not in x


def test_unlabeled_records_drop_annotations_keep_objects(two_datasets):
    records = unlabeled_dataset_dicts("mixlab_parts")
    assert len(records) == 3
    assert all("annotations" not in r and r["unlabeled"] and len(r["objects"]) == 1 for r in records)
    with pytest.raises(ValueError, match="UNLABELED"):
        unlabeled_dataset_dicts(())


def test_mixed_batch_loader_order():
    loader = MixedBatchLoader(iter([[1, 2], [3, 4]]), iter([["a"], ["b"], ["c"]]))
    assert list(loader) == [[1, 2, "a"], [3, 4, "b"]]
