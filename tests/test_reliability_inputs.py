"""Bad inputs not covered elsewhere: errors re-raised from DataLoader workers keep a one-line
message, stage outputs of another run are refused, partial shard files are cleaned, unknown keys
in config files and RLEs of the wrong size are reported, pickled .pth files warn."""
import logging

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from part_d2.checkpoint import PartCheckpointer
from part_d2.data.image_io import ImageReadError
from part_d2.data.part_json import PartDatasetError, clean_error_message, load_part_json
from part_d2.data.shards import ShardStore
from part_d2.engine.offline import finish_stage
from part_d2.engine.setup import ConfigError, load_config
from part_d2.structures.masks import mask_to_rle


class _Failing(Dataset):
    def __init__(self, error):
        self.error = error

    def __len__(self):
        return 2

    def __getitem__(self, i):
        raise self.error("/data/img_7.png: image file not found")


@pytest.mark.parametrize("error", [ImageReadError, PartDatasetError])
def test_worker_errors_keep_a_one_line_message(error):
    with pytest.raises(error) as info:
        next(iter(DataLoader(_Failing(error), num_workers=1)))
    assert str(info.value) == "/data/img_7.png: image file not found"


def test_clean_error_message():
    spawn_line = "part_d2.data.part_json.PartDatasetError: a.json: malformed"
    assert clean_error_message(spawn_line) == "a.json: malformed"
    assert clean_error_message("Traceback (most recent call last):\n  File x\nValueError: bad k") == "bad k"
    assert clean_error_message("x.png: cannot decode image") == "x.png: cannot decode image"
    assert clean_error_message("two\nlines") == "two\nlines"


def test_finish_stage_refuses_another_runs_output_and_rewrites_nothing(tmp_path, caplog):
    store = ShardStore(str(tmp_path), 3, 2)
    for s in range(store.num_shards):
        store.write_json(s, {"shard": s})
    with caplog.at_level(logging.INFO, logger="part_d2"):
        assert finish_stage(store, {"stage": "x", "source": "a"})
        manifest = tmp_path / "manifest.json"
        mtime = manifest.stat().st_mtime_ns
        assert finish_stage(store, {"stage": "x", "source": "a"})
    assert manifest.stat().st_mtime_ns == mtime and "stage already complete, nothing rewritten" in caplog.text
    with pytest.raises(PartDatasetError, match=r"manifest.json: this output directory holds another run's result "
                                               r"\(num_images, source differ\)"):
        finish_stage(ShardStore(str(tmp_path), 4, 2), {"stage": "x", "source": "b"})


def test_clear_partial_removes_only_that_shards_temp_files(tmp_path):
    store = ShardStore(str(tmp_path), 4, 1, subdir="proposals")
    (tmp_path / "proposals").mkdir()
    for name in ("shard-00001.json.tmp12", "shard-00001.npy.tmp12", "shard-00002.json.tmp3", "shard-00001.json"):
        (tmp_path / "proposals" / name).write_text("x")
    assert store.clear_partial(1) == 2
    assert sorted(p.name for p in (tmp_path / "proposals").iterdir()) == ["shard-00001.json", "shard-00002.json.tmp3"]


def test_unknown_key_in_a_config_file_names_the_file(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("MODEL:\n  NOT_A_KEY: 1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: Non-existent config key: MODEL.NOT_A_KEY"):
        load_config(str(cfg))


def test_rle_of_another_size_is_dropped_with_a_count(tiny_part_dataset, rewrite_json, caplog):
    json_file, root, data = tiny_part_dataset
    data["annotations"][0]["segmentation"] = mask_to_rle(np.ones((10, 10), bool))
    rewrite_json(json_file, data)
    with caplog.at_level(logging.WARNING):
        recs = {r["image_id"]: r for r in load_part_json(json_file, root, "parts")}
    assert [a["id"] for a in recs[0]["annotations"]] == [1]
    assert "parts.json: 1 RLEs whose size differs from the image (dropped)" in caplog.text


class _NotATensor:
    pass


def test_pth_with_python_objects_falls_back_to_unpickling_with_a_warning(tmp_path, caplog):
    model = torch.nn.Linear(2, 1)
    path = tmp_path / "objects.pth"
    torch.save({"model": {k: v + 1 for k, v in model.state_dict().items()}, "extra": _NotATensor()}, path)
    with caplog.at_level(logging.WARNING):
        PartCheckpointer(model).load(str(path))
    assert "weights_only loading refuses" in caplog.text and "can execute code" in caplog.text
    plain = tmp_path / "plain.pth"
    torch.save({"model": model.state_dict()}, plain)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        PartCheckpointer(torch.nn.Linear(2, 1)).load(str(plain))
    assert "unpickling" not in caplog.text
