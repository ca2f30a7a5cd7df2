"""Stage 0 with Detic: the vocabulary comes from VOCABULARY, a vocabulary file or the dataset's
object classes."""
import json

import pytest

from part_d2.data.object_mask_models import vocabulary_names
from part_d2.data.part_json import PartDatasetError
from part_d2.engine.setup import load_config


def object_masks_cfg(*opts):
    return load_config("", list(opts)).PART_DISTILLATION.OBJECT_MASKS


def test_vocabulary_defaults_to_the_dataset_object_classes():
    assert vocabulary_names(object_masks_cfg(), ["dog", "cat"]) == ["dog", "cat"]
    om = object_masks_cfg("PART_DISTILLATION.OBJECT_MASKS.VOCABULARY", "['car']")
    assert vocabulary_names(om, ["dog", "cat"]) == ["car"]
    with pytest.raises(PartDatasetError, match="Detic needs a vocabulary"):
        vocabulary_names(object_masks_cfg(), [])


@pytest.mark.parametrize("kind", ["txt", "json"])
def test_vocabulary_file(tmp_path, kind):
    path = tmp_path / f"vocab.{kind}"
    names = ["goldfish", "great white shark"]
    path.write_text(json.dumps(names) if kind == "json" else "goldfish\n\ngreat white shark\n")
    om = object_masks_cfg("PART_DISTILLATION.OBJECT_MASKS.VOCABULARY_FILE", str(path))
    assert vocabulary_names(om, ["ignored"]) == ["goldfish", "great white shark"]


def test_unreadable_or_empty_vocabulary_file_is_a_one_line_error(tmp_path):
    (tmp_path / "empty.txt").write_text("\n")
    for name, match in [("missing.txt", "cannot read"), ("empty.txt", "lists no class name")]:
        om = object_masks_cfg("PART_DISTILLATION.OBJECT_MASKS.VOCABULARY_FILE", str(tmp_path / name))
        with pytest.raises(PartDatasetError, match=match):
            vocabulary_names(om)
