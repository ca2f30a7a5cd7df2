"""The quick start's configs: the part model trains with ground-truth object masks and is tested
with the object model's masks (its run end to end is the README command, tests/test_readme_commands.py)."""
import argparse
import os

from tools import quickstart


def _args(tmp_path, *opts):
    return argparse.Namespace(output=str(tmp_path / "q"), dataset="synthetic_parts_mini", opts=list(opts))


def test_configs_train_on_ground_truth_and_test_with_the_object_model(tmp_path):
    objects, train, test = quickstart.build_configs(_args(tmp_path, "SOLVER.MAX_ITER", "7"))
    objects_dir = str(tmp_path / "q" / "objects")
    assert objects.OUTPUT_DIR == objects_dir and objects.DATASETS.TRAIN == ("synthetic_parts_mini_train_objects",)
    assert train.DATASETS.TRAIN == ("synthetic_parts_mini_train_agnostic",) and train.DATASETS.TEST == ()
    assert train.INPUT.OBJECT_MASK.SOURCE == "perfect" and train.INPUT.OBJECT_MASK.ENABLED
    assert test.DATASETS.TEST == ("synthetic_parts_mini_test_agnostic",)
    assert test.INPUT.OBJECT_MASK.SOURCE == "model" and test.INPUT.OBJECT_MASK.ENABLED
    assert test.INPUT.OBJECT_MASK.MODEL_CONFIG == os.path.join(objects_dir, "config.yaml")
    assert test.INPUT.OBJECT_MASK.MODEL_WEIGHTS == os.path.join(objects_dir, "model_final.pth")
    assert objects.SOLVER.MAX_ITER == train.SOLVER.MAX_ITER == 7  # overrides reach both models
    assert quickstart.DEMO_SETTING in quickstart.SETTINGS
    post = quickstart.with_opts(test, quickstart.SETTINGS["pre+post"])
    assert post.TEST.POST_AWARE.ENABLED and not test.TEST.POST_AWARE.ENABLED
