"""Validation of configs and tool arguments: each problem is a :class:`ConfigError` naming the file
or the key, which the tools print as one line ``error: ...`` (see :func:`part_d2.engine.launch_tool`).
"""
import difflib
import math
import os
from typing import List, Sequence, Tuple

import yaml
from detectron2.data import DatasetCatalog, MetadataCatalog

import part_d2.data.builtin  # noqa: F401  (registers the builtin datasets)
from part_d2.data.object_classes import check_object_classes
from part_d2.data.object_masks import OBJECT_MASK_SOURCES
from part_d2.modeling.backbone.input_channels import INIT_MODES
from part_d2.utils.errors import ConfigError


def _base_path(config_file: str, base: str) -> str:
    """``_BASE_`` resolved as detectron2 does: relative to the including file unless absolute/URL."""
    if base.startswith(("~", "/", "https://", "http://")):
        return os.path.expanduser(base)
    return os.path.join(os.path.dirname(config_file), base)


def check_config_file(config_file: str, chain: Tuple[str, ...] = ()) -> None:
    """Check a YAML config and its ``_BASE_`` chain: files exist, parse, are mappings, no cycle."""
    real = os.path.realpath(config_file)
    if real in chain:
        names = [os.path.basename(p) for p in chain + (real,)]
        raise ConfigError(f"{config_file}: _BASE_ cycle {' -> '.join(names)}")
    if not os.path.isfile(config_file):
        where = f"{chain[-1]}: _BASE_ " if chain else ""
        raise ConfigError(f"{where}{config_file}: config file not found")
    try:
        with open(config_file, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except (yaml.scanner.ScannerError, yaml.parser.ParserError) as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{config_file}: YAML syntax error{at} ({e.problem or e.context})") from None
    except yaml.YAMLError:
        return  # e.g. python tags that detectron2's unsafe fallback loader reads
    except UnicodeDecodeError as e:
        raise ConfigError(f"{config_file}: not a text YAML file ({e.reason})") from None
    if data is None:
        return
    if not isinstance(data, dict):
        raise ConfigError(f"{config_file}: expected a mapping of config keys, got a {type(data).__name__}")
    bases = data.get("_BASE_") or []
    for base in [bases] if isinstance(bases, str) else bases:
        if not isinstance(base, str):
            raise ConfigError(f"{config_file}: _BASE_ must name config files, got {bases!r}")
        check_config_file(_base_path(config_file, base), chain + (real,))


def config_value(cfg, key: str):
    """The value of a dotted ``key`` (e.g. ``SEGMENTER.TOPK``) in ``cfg``, or None when absent."""
    node = cfg
    for part in key.split("."):
        if part not in node:
            return None
        node = node[part]
    return node


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# (key, check, what it must be)
_RANGES = [
    ("SOLVER.MAX_ITER", lambda v: v >= 0, "an integer >= 0"),
    ("SOLVER.IMS_PER_BATCH", lambda v: v >= 1, "an integer >= 1"),
    ("SOLVER.BASE_LR", lambda v: _is_number(v) and v >= 0, "a finite number >= 0"),
    ("SOLVER.CHECKPOINT_PERIOD", lambda v: v >= 1, "an integer >= 1"),
    ("SOLVER.WARMUP_ITERS", lambda v: v >= 0, "an integer >= 0"),
    ("SOLVER.STEPS", lambda v: all(_is_number(s) and s >= 0 for s in v), "a list of iterations >= 0"),
    ("DATALOADER.NUM_WORKERS", lambda v: v >= 0, "an integer >= 0"),
    ("TEST.EVAL_PERIOD", lambda v: v >= 0, "an integer >= 0"),
    ("SEGMENTER.OBJECT_SCORE_THRESHOLD", lambda v: 0 <= v <= 1, "a score in [0, 1]"),
    ("SEGMENTER.PART_SCORE_THRESHOLD", lambda v: 0 <= v <= 1, "a score in [0, 1]"),
    ("SEGMENTER.TOPK", lambda v: v >= 1, "an integer >= 1"),
    ("SEGMENTER.MAX_OBJECTS", lambda v: v >= 1, "an integer >= 1"),
    ("MODEL.ROI_HEADS.SCORE_THRESH_TEST", lambda v: 0 <= v <= 1, "a score in [0, 1]"),
    ("MODEL.ROI_HEADS.NMS_THRESH_TEST", lambda v: 0 <= v <= 1, "an IoU in [0, 1]"),
    ("MODEL.OPS.PSEUDO_LABEL.SCORE_THRESH", lambda v: 0 <= v <= 1, "a score in [0, 1]"),
    ("PART_DISTILLATION.SHARD_SIZE", lambda v: v >= 1, "an integer >= 1"),
    ("MODEL.PIXEL_STD", lambda v: all(_is_number(s) and s > 0 for s in v), "positive numbers"),
    ("MODEL.PIXEL_MEAN", lambda v: all(_is_number(s) for s in v), "finite numbers"),
]


def validate_config(cfg) -> None:
    """Value ranges and cross-key consistency of a merged part_d2 config.

    Raises:
        ConfigError: naming the key, its value and what it must be.
    """
    for key, ok, what in _RANGES:
        value = config_value(cfg, key)
        if value is not None and not ok(value):
            raise ConfigError(f"{key}={value!r}: must be {what}")
    mean, std = list(cfg.MODEL.PIXEL_MEAN), list(cfg.MODEL.PIXEL_STD)
    channels = 4 if cfg.INPUT.OBJECT_MASK.ENABLED else 3
    if len(mean) != len(std):
        raise ConfigError(f"MODEL.PIXEL_MEAN has {len(mean)} values but MODEL.PIXEL_STD has {len(std)}")
    if len(mean) != channels:
        why = "RGB + object mask (INPUT.OBJECT_MASK.ENABLED True)" if channels == 4 else \
            "RGB (INPUT.OBJECT_MASK.ENABLED False)"
        raise ConfigError(f"MODEL.PIXEL_MEAN has {len(mean)} values but the input has {channels} channels ({why}); "
                          "give one PIXEL_MEAN and PIXEL_STD value per channel")
    om = cfg.INPUT.OBJECT_MASK
    if om.SOURCE not in OBJECT_MASK_SOURCES:
        raise ConfigError(f"INPUT.OBJECT_MASK.SOURCE={om.SOURCE!r}: expected one of {sorted(OBJECT_MASK_SOURCES)}")
    if om.INIT not in INIT_MODES:
        raise ConfigError(f"INPUT.OBJECT_MASK.INIT={om.INIT!r}: expected one of {list(INIT_MODES)}")


def check_registered(name: str, what: str) -> None:
    """Raise :class:`ConfigError` when ``name`` is not a registered dataset (``what``: the key or
    option that named it), suggesting close names."""
    names = list(DatasetCatalog.list())
    if name in names:
        return
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else "; register it with DATASETS.PART_JSONS"
    raise ConfigError(f"{what}: '{name}' is not a registered dataset{hint}")


def check_datasets(cfg, keys: Sequence[str] = ("DATASETS.TRAIN", "DATASETS.TEST", "DATASETS.UNLABELED")) -> None:
    """Every dataset named by ``keys`` is registered, except those that a pipeline hook registers
    during the run (``PIPELINE.*.PREFIX``: e.g. stage 1a's ``pd_groups_*`` before training)."""
    pipeline = cfg.get("PIPELINE")
    produced = tuple(f"{node.PREFIX}_" for node in (pipeline.values() if pipeline else ())
                     if hasattr(node, "INPUT") and node.INPUT and node.PREFIX)
    for key in keys:
        for name in config_value(cfg, key) or ():
            if not (produced and name.startswith(produced)):
                check_registered(name, key)


def dataset_object_classes(name: str) -> List[str]:
    """The object classes of a registered dataset (loading it when its metadata lacks them), or []."""
    if name not in DatasetCatalog.list():
        return []
    if not MetadataCatalog.get(name).get("object_classes"):
        DatasetCatalog.get(name)  # part_d2 datasets set their classes when loaded
    return list(MetadataCatalog.get(name).get("object_classes", []))


def check_test_object_classes(cfg, dataset: str) -> None:
    """A stage-3 model (per-object classifier) reading the evaluated records' ``object_category_id``
    (``TEST_OBJECT_CLASS record``) needs the evaluated dataset's object classes to be its training
    dataset's; otherwise :class:`ConfigError` (the classes would silently index other classes' rows)."""
    pd = cfg.PART_DISTILLATION
    if pd.CLASSIFIER != "per_object" or pd.TEST_OBJECT_CLASS != "record" or not cfg.DATASETS.TRAIN:
        return
    train = cfg.DATASETS.TRAIN[0]
    problem = check_object_classes(dataset_object_classes(dataset), dataset_object_classes(train), dataset,
                                   f"trained on '{train}'")
    if problem:
        raise ConfigError(problem)


def check_job_args(num_jobs: int, job_id: int) -> None:
    if num_jobs < 1:
        raise ConfigError(f"--num-jobs {num_jobs}: must be >= 1")
    if not 0 <= job_id < num_jobs:
        raise ConfigError(f"--job-id {job_id}: must be in [0, --num-jobs {num_jobs})")


def check_threshold(value: float, option: str) -> float:
    if not (_is_number(value) and 0.0 <= value <= 1.0):
        raise ConfigError(f"{option} {value}: must be a score in [0, 1]")
    return value


def split_opts(opts: Sequence[str]) -> List[Tuple[str, str]]:
    """KEY VALUE pairs of a command-line override list (ConfigError for an odd length)."""
    opts = list(opts)
    if len(opts) % 2:
        raise ConfigError(f"command-line overrides: {len(opts)} items, expected KEY VALUE pairs "
                          f"(last key {opts[-1]!r} has no value)")
    return list(zip(opts[0::2], opts[1::2]))
