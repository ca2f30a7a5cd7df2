"""OPS configs load, and the main training variants build, train one step and evaluate."""
import glob

import pytest

import part_d2  # noqa: F401
from part_d2.data.part_json import register_part_json
from part_d2.engine.setup import load_config
from part_d2.engine.trainer import PartTrainer

CONFIGS = sorted(glob.glob("projects/OPS/configs/*.yaml") + glob.glob("configs/synthetic/ops_*.yaml"))
SMALL = ["MODEL.DEVICE", "cpu", "MODEL.MASK_FORMER.DEC_LAYERS", "2", "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS", "1",
         "MODEL.MASK_FORMER.TRAIN_NUM_POINTS", "256", "INPUT.IMAGE_SIZE", "64", "SOLVER.IMS_PER_BATCH", "2",
         "SOLVER.IMS_PER_BATCH_UNLABELED", "2", "SOLVER.MAX_ITER", "1", "SOLVER.STEPS", "()",
         "DATALOADER.NUM_WORKERS", "0", "TEST.EVAL_PERIOD", "0", "DATASETS.TEST", "('opscfg_parts',)",
         "TEST.PART_EVAL.ORACLE_SEMANTIC", "True"]


@pytest.mark.parametrize("path", CONFIGS)
def test_config_loads(path):
    cfg = load_config(path)
    four = cfg.INPUT.OBJECT_MASK.ENABLED
    assert len(cfg.MODEL.PIXEL_MEAN) == len(cfg.MODEL.PIXEL_STD) == (4 if four else 3)
    if cfg.MODEL.OPS.SS_LOSS.ENABLED:
        assert cfg.MODEL.META_ARCHITECTURE == "SelfSupervisedPartMask2Former" and cfg.DATASETS.UNLABELED


def test_paper_protocols():
    """The OPS rows are scored like the paper's (pre-aware, no post-aware); test adapts on val only."""
    cfgs = {name: load_config(f"projects/OPS/configs/{name}.yaml") for name in (
        "partimagenet_agnostic", "partimagenet_pre_aware", "partimagenet_pre_aware_perfect",
        "partimagenet_post_aware", "partimagenet_pre_post_aware", "partimagenet_ops_val", "partimagenet_ops_test",
        "pascal_part58_ops", "pascal_part108_ops")}
    assert cfgs["partimagenet_agnostic"].DATASETS.TRAIN == ("partimagenet_indomain_train_agnostic",)
    assert cfgs["partimagenet_pre_aware_perfect"].INPUT.OBJECT_MASK.SOURCE == "perfect"
    post = cfgs["partimagenet_post_aware"]
    assert post.TEST.POST_AWARE.ENABLED and not post.INPUT.OBJECT_MASK.ENABLED
    for name in ("partimagenet_ops_val", "partimagenet_ops_test", "pascal_part58_ops", "pascal_part108_ops"):
        cfg = cfgs[name]
        assert not cfg.TEST.POST_AWARE.ENABLED and cfg.INPUT.OBJECT_MASK.ENABLED
        assert cfg.SOLVER.BASE_LR == 1e-6 and cfg.SOLVER.MAX_ITER == 30000 and cfg.SOLVER.STEPS == ()
        assert cfg.MODEL.OPS.PSEUDO_LABEL.SCORE_THRESH == 0.1
    test = cfgs["partimagenet_ops_test"]
    assert test.DATASETS.UNLABELED == ("partimagenet_val_agnostic",)
    assert test.DATASETS.TEST == ("partimagenet_test_parts",)
    assert not any("test" in d for d in test.DATASETS.TRAIN + test.DATASETS.UNLABELED)
    assert "partimagenet_indomain_val_agnostic" in test.DATASETS.TRAIN


@pytest.mark.parametrize("variant", ["aware", "pre_post_imperfect", "ss_st"])
def test_variant_trains_and_evaluates(variant, tiny_part_dataset, tmp_path):
    json_file, root, _ = tiny_part_dataset
    register_part_json("opscfg", json_file, root)
    config = "configs/synthetic/mask2former_R_tiny_agnostic.yaml"
    opts = ["DATASETS.TRAIN", "('opscfg_agnostic',)"]
    if variant == "aware":
        opts = ["DATASETS.TRAIN", "('opscfg_parts',)", "DATASETS.CLASS_AGNOSTIC", "False",
                "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "2"]
    elif variant == "pre_post_imperfect":
        config = "configs/synthetic/ops_object_aware_tiny.yaml"
    else:  # SS + ST: the tiny json doubles as "pseudo labels" and as the unlabeled set
        config = "configs/synthetic/ops_ss_st_tiny.yaml"
        opts = ["DATASETS.PART_JSONS", f"('ops_pseudo:{json_file}:{root}',)",
                "DATASETS.TRAIN", "('opscfg_agnostic', 'ops_pseudo_agnostic')",
                "DATASETS.UNLABELED", "('opscfg_agnostic',)"]
    cfg = load_config(config, SMALL + opts + ["OUTPUT_DIR", str(tmp_path)])
    trainer = PartTrainer(cfg)
    trainer.train()
    results = trainer._last_eval_results  # set by detectron2's EvalHook after the last step
    assert 0 <= results["part_segm"]["AP"] <= 100
    assert set(results["part_sem"]) >= {"mIoU", "fwIoU", "mACC", "pACC"}
    if variant == "ss_st":
        losses = trainer.storage.latest()
        assert "loss_affinity" in losses and "loss_ce" in losses
