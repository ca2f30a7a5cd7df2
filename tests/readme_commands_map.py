"""How the README commands run at tiny scale: the one, explicit mapping from paper scale to test scale.

Every command that ``readme_commands.extract`` finds is run by ``tests/test_readme_commands.py``
unless it is listed in ``PARSE_ONLY`` with the reason it cannot run here; those are checked
without running (the script exists, every ``--flag`` is one the script accepts, every ``KEY``
exists in the config, every input path exists or is a documented download).

A run happens in a scratch workspace per README: ``tools``, ``configs``, ``projects``, ``bench``
and the ``datasets/*.py`` scripts are links to this checkout, ``datasets/`` is
``$DETECTRON2_DATASETS`` (filled with the raw-format fixtures of ``tests/fixtures_raw.py`` and
what the commands prepare), ``output/`` is the workspace's own, ``python``/``.venv/bin/python``
are the test's interpreter. Before running, each command is rewritten by:

1. ``SUBSTITUTIONS`` (regex, replacement, why), in order, on the command text;
2. every ``--config-file X.yaml`` becomes ``--config-file tiny/X.yaml``: a generated YAML whose
   ``_BASE_`` is the real ``X.yaml`` and which adds the overrides of the first matching
   ``TINY_CONFIGS`` pattern (tiny model, 2 iterations, small inputs). The command's own
   ``KEY VALUE`` overrides still come last and win;
3. ``FAKE_WEIGHTS``: paper checkpoints named by a command are created in the workspace as randomly
   initialised weights of the tiny variant of the same architecture, in the file format of the
   download (the official ``.pkl`` layout; ``torch.save`` of ``{"model": ...}`` for ``.pth``), so
   the loading path is the real one. ``SEGMENTER.OBJECT_CONFIG X.yaml`` is made tiny like
   ``--config-file``.
"""
from typing import Dict, List, Tuple

# Applied to every command, in this order.
SUBSTITUTIONS: List[Tuple[str, str, str]] = [
    (r"--num-gpus 8", "--num-gpus 1", "one CPU process instead of 8 GPUs"),
    (r"(run_miniature|run_synthetic)\.py --scale (cpu|gpu)", r"\1.py --scale smoke", "the pipelines' plumbing scale"),
    (r"--seeds 0 1 2", "--seeds 0", "one seed"),
    (r"--output output/ops_miniature(_gpu)?$", "--output output/ops_miniature_smoke",
     "the smoke command's folder: these reruns resume it (nothing is retrained)"),
    (r"--dataset synthetic_parts_(\w+) --tune-dataset synthetic_parts_(\w+) --tune-images 50",
     r"--dataset synthetic_parts_mini_\1 --tune-dataset synthetic_parts_mini_\2 --tune-images 2",
     "the mini synthetic dataset, tuned on 2 images"),
    (r"(run_synthetic\.py)$", r"\1 --scale smoke", "the pipeline's plumbing scale"),
    (r"--dataset pd_objects_objects", "--dataset synthetic_parts_mini_val_objects",
     "stage 1a groups the ground-truth objects of the mini synthetic set (stage 0 needs Detic)"),
    (r" DATASETS\.PART_JSONS \"\('pd_objects:output/pd/objects',\)\"", "",
     "no stage-0 output to register (see the line above)"),
    (r"DATASETS\.TEST \"\('partimagenet_val_parts',\)\"", "DATASETS.TEST \"('synthetic_parts_mini_test_parts',)\"",
     "the stage-3 classifier's object classes are the synthetic ones (README: PartImageNet needs OBJECT_CLASS_JSON)"),
    (r"--dataset partimagenet_val_parts --model-classes output/pd/ranked --class-list \S+",
     "--dataset synthetic_parts_mini_test_parts --model-classes output/pd/ranked",
     "stage 3's classes are the synthetic ones here: they match by name, no 21K class list"),
    (r"/path/to/PartImageNet_OOD\.zip", "raw/PartImageNet_OOD.zip", "the fixture in the release's zip format"),
    (r"/path/to/PartImageNet_Seg\.zip", "raw/PartImageNet_Seg", "the fixture in the Seg release's layout"),
    (r"/path/to/PartImageNetPP", "raw/PartImageNetPP", "the fixture in the PartImageNet++ release's layout"),
    (r"datasets/synthetic_parts/", "datasets/synthetic_parts_mini/", "the mini variant of the synthetic dataset"),
    (r"(--cases offline_stages)", r"\1 --offline-config configs/synthetic/mask2former_R_tiny_agnostic.yaml",
     "the offline stages with the tiny model"),
    (r"(bench/run_all\.py)", r"\1 --scale 0.02 --cases evaluator,ss_loss", "two cases at 2% of the workload"),
    (r"'photos/\*\.jpg'", "'datasets/partimagenet/images/**/*.JPEG'",
     "the prepared PartImageNet fixture's images stand in for the user's photos"),
    (r"--vocabulary cat,dog,person ", "", "random weights predict random COCO classes: keep them all"),
    (r"(--object-source model.*)--confidence-threshold 0\.\d+", r"\1--confidence-threshold 0",
     "random 80-class weights score objects near 1/81: keep the detections to exercise the part sources"),
    (r"(tools/quickstart\.py)$", "\\1 --demo-images 2 DATASETS.TRAIN \"('synthetic_parts_mini_train_agnostic',)\" "
     "DATASETS.TEST \"('synthetic_parts_mini_test_agnostic',)\" SOLVER.MAX_ITER 2 SOLVER.IMS_PER_BATCH 2 "
     "DATALOADER.NUM_WORKERS 0", "2 iterations on the mini dataset"),
]

_SHORT = {
    "SOLVER.MAX_ITER": 2,
    "SOLVER.IMS_PER_BATCH": 2,
    "SOLVER.IMS_PER_BATCH_UNLABELED": 2,
    "SOLVER.STEPS": [],
    "SOLVER.WARMUP_ITERS": 0,
    "SOLVER.CHECKPOINT_PERIOD": 100000,
    "SOLVER.AMP.ENABLED": False,
    "TEST.EVAL_PERIOD": 0,
    "DATALOADER.NUM_WORKERS": 0,
    "MODEL.DEVICE": "cpu",
}
_MINI_SYNTHETIC = {
    "DATASETS.TRAIN": ["synthetic_parts_mini_train_agnostic"],
    "DATASETS.TEST": ["synthetic_parts_mini_test_agnostic"],
}
_TINY_MASK2FORMER = {
    "MODEL.WEIGHTS": "",
    "MODEL.SEM_SEG_HEAD.CONVS_DIM": 32,
    "MODEL.SEM_SEG_HEAD.MASK_DIM": 32,
    "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS": 1,
    "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS": 4,
    "MODEL.MASK_FORMER.HIDDEN_DIM": 32,
    "MODEL.MASK_FORMER.NHEADS": 4,
    "MODEL.MASK_FORMER.DIM_FEEDFORWARD": 64,
    "MODEL.MASK_FORMER.DEC_LAYERS": 2,
    "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES": 10,
    "MODEL.MASK_FORMER.TRAIN_NUM_POINTS": 256,
    "INPUT.IMAGE_SIZE": 64,
    "INPUT.MIN_SIZE_TEST": 64,
    "INPUT.MAX_SIZE_TEST": 96,
    "TEST.DETECTIONS_PER_IMAGE": 20,
}
_TINY_RESNET = {"MODEL.RESNETS.DEPTH": 18, "MODEL.RESNETS.RES2_OUT_CHANNELS": 64}
_TINY_SWIN = {
    "MODEL.SWIN.EMBED_DIM": 16,
    "MODEL.SWIN.DEPTHS": [1, 1, 1, 1],
    "MODEL.SWIN.NUM_HEADS": [1, 2, 2, 4],
    "MODEL.SWIN.WINDOW_SIZE": 4,
    "MODEL.SWIN.DROP_PATH_RATE": 0.0,
}

# PartDistillation's configs keep their weights: the fake paper checkpoint below, or the previous stage's.
_PD = {**_SHORT, **{k: v for k, v in _TINY_MASK2FORMER.items() if k != "MODEL.WEIGHTS"}, **_TINY_SWIN}

# First matching pattern (fnmatch on the config path as written in the README) wins.
TINY_CONFIGS: List[Tuple[str, Dict]] = [
    # a foreground (semantic) model has no part evaluation: keep its config's empty test set
    ("configs/synthetic/foreground_*", {**_SHORT, **_MINI_SYNTHETIC, "DATASETS.TEST": []}),
    ("configs/synthetic/*", {**_SHORT, **_MINI_SYNTHETIC}),
    ("projects/OPS/configs/*", {**_SHORT, **_TINY_MASK2FORMER, **_TINY_RESNET}),
    ("projects/PartDistillation/configs/pipeline_swinL.yaml", {
        **_PD, "PIPELINE.GROUPING.INPUT": "synthetic_parts_mini_val_objects",
        "PIPELINE.GROUPING.OUTPUT": "output/pd_pipeline/pixel_groups",
        "PIPELINE.RANKING.OUTPUT": "output/pd_pipeline/ranked", "OUTPUT_DIR": "output/pd_pipeline/proposals",
        "PIPELINE.NEXT_CONFIG": "tiny/projects/PartDistillation/configs/part_distillation_swinL.yaml",
        "PIPELINE.NEXT_OPTS": ["OUTPUT_DIR", "output/pd_pipeline/distill"]}),
    ("projects/PartDistillation/configs/part_distillation_swinL.yaml",
     {**_PD, "DATASETS.TEST": ["synthetic_parts_mini_test_parts"]}),
    ("projects/PartDistillation/configs/*", _PD),
    ("configs/mask2former/*swin*", {**_SHORT, **_TINY_MASK2FORMER, **_TINY_SWIN}),
    ("configs/mask2former/*", {**_SHORT, **_TINY_MASK2FORMER, **_TINY_RESNET}),
    ("configs/*", _SHORT),
]

# Checkpoints the README commands download: created as random tiny weights of that architecture.
FAKE_WEIGHTS: Dict[str, str] = {
    "weights/model_final_3c8ec9.pkl": "configs/mask2former/maskformer2_R50_coco_instance.yaml",
    "weights/part_proposal_model.pth": "projects/PartDistillation/configs/proposal_learning_swinL.yaml",
    "weights/mask2former_swinL_IN21k_384_coco_instance_q200.pkl":
        "configs/mask2former/maskformer2_swin_large_part_agnostic.yaml",
}

# Commands that are not run, by a substring that identifies them, with the reason.
PARSE_ONLY: Dict[str, str] = {
    ".venv/bin/python -m pytest -q -n 2 --dist loadscope": "it is this test suite (CI runs it through .ci/run)",
    "git+https://github.com/facebookresearch/detectron2.git": "builds detectron2 from GitHub, which CI cannot reach",
    "pip install -e .": "installs into the environment; tests/test_wheel.py builds, installs and imports the package",
    "setup_env.sh --refresh-lock": "re-resolves the registry's newest versions and rewrites the committed lock file",
    "tools/numpy2_lane.sh": "builds a second environment (numpy 2, current torch: GBs from the registry) around a "
                            "detectron2 checkout; its test, tests/test_numpy2_lane.py, runs in this suite",
    "python tests/test_faults.py": "rewrites docs/RELIABILITY.md in the checkout; test_faults.py's doc-up-to-date "
                                   "test renders the same catalog and compares",
    "--detic": "needs a Detic checkout, its weights and CLIP (tests/test_detic_adapter.py: a stand-in checkout)",
    "tools/web_demo.py": "starts a server; tests/test_web_demo.py runs the tool's main (server replaced by a "
                         "recorder) and drives the page in a browser",
    "bench/bench_segmenter.py": "times full-size R50 models on a 640-pixel image (about 2 min of CPU); "
                                "tests/test_segmenter.py runs the same API calls with tiny models",
    "bench/bench_mask2former.py": "times full-size R50 models against an official Mask2Former checkout, which CI "
                                  "does not have; tests/test_bench_smoke.py runs the same case at reduced size",
    "--object-source detic": "needs a Detic checkout, its weights and CLIP (tests/test_segmenter.py runs the detic "
                             "object source with a stand-in detector)",
}
