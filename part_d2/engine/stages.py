"""The entry points of part_d2's tools as functions with keyword-only arguments.

Each ``tools/*.py`` parses its command line and calls one of these (through
:func:`part_d2.engine.launch.launch_tool` for the multi-process ones, see :func:`call_with_args`);
pipelines call them directly, in their own process, so that the datasets they registered are
visible. ``config_file`` + ``opts`` (``KEY VALUE`` overrides) give the config of every stage.
"""
import argparse
import inspect
import logging
import os
from typing import Callable, Optional, Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import default_argument_parser, default_setup
from detectron2.evaluation import verify_results
from detectron2.utils import comm

from part_d2.checkpoint import PartCheckpointer
from part_d2.data.object_classes import object_class_map, read_class_list, unmatched_message, write_object_class_json
from part_d2.data.object_mask_models import build_object_mask_model, load_detic_config
from part_d2.data.shards import read_manifest
from part_d2.engine import offline
from part_d2.engine.config_checks import (
    ConfigError,
    check_datasets,
    check_registered,
    check_threshold,
    dataset_object_classes,
)
from part_d2.engine.launch import add_lock_argument
from part_d2.engine.pseudo_labels import (
    PSEUDO_LABEL_FILE,
    generate_pseudo_labels,
    pseudo_label_fingerprint,
    pseudo_labels_done,
)
from part_d2.engine.setup import load_config, setup_logging
from part_d2.engine.trainer import PartTrainer, train_pipeline
from part_d2.modeling.build import load_part_model
from part_d2.modeling.pixel_grouping import PixelGrouper
from part_d2.utils.provenance import ProvenanceError, model_provenance

logger = logging.getLogger(__name__)


def _setup(config_file: str, opts: Sequence[str], cfg=None, **args):
    """Frozen config of ``config_file`` + ``opts`` (or ``cfg``) with detectron2's default setup
    (output dir, config dump, seeds, logging)."""
    cfg = load_config(config_file, list(opts)) if cfg is None else cfg
    cfg.freeze()
    default_setup(cfg, argparse.Namespace(config_file=config_file, opts=list(opts), **args))
    setup_logging(cfg)
    return cfg


def train_net(*, config_file: str, opts: Sequence[str] = (), eval_only: bool = False, resume: bool = False,
              random_weights: bool = False):
    """Train ``config_file`` and the ``PIPELINE.NEXT_CONFIG`` runs it chains (or, ``eval_only``,
    evaluate ``MODEL.WEIGHTS``, refused when empty unless ``random_weights``; ``resume``: from the
    last checkpoint of ``OUTPUT_DIR``); returns the evaluation results."""
    args = argparse.Namespace(config_file=config_file, opts=list(opts), eval_only=eval_only, resume=resume)
    cfg = _setup(config_file, opts, eval_only=eval_only, resume=resume)
    check_datasets(cfg, ("DATASETS.TEST",) if eval_only else ("DATASETS.TRAIN", "DATASETS.TEST", "DATASETS.UNLABELED"))
    if eval_only:
        resuming = resume and os.path.isfile(os.path.join(cfg.OUTPUT_DIR, "last_checkpoint"))
        if not cfg.MODEL.WEIGHTS and not random_weights and not resuming:
            raise ConfigError("--eval-only with an empty MODEL.WEIGHTS would evaluate a randomly initialised model; "
                              "give MODEL.WEIGHTS path/to/model.pth (or --random-weights to do it on purpose)")
        model = PartTrainer.build_model(cfg)
        PartCheckpointer.from_config(cfg, model, cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=resume)
        res = PartTrainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, res)
        return res
    return train_pipeline(cfg, args)


def pseudo_labels(*, config_file: str, dataset: str, output: str, opts: Sequence[str] = (),
                  score_thresh: Optional[float] = None, name: str = "", on_mismatch: str = "error") -> str:
    """OPS self-training labels: ``OUTPUT/pseudo_labels.json`` of ``MODEL.WEIGHTS`` on ``dataset``
    (parts scoring above ``score_thresh``, default ``MODEL.OPS.PSEUDO_LABEL.SCORE_THRESH``). When
    ``output`` holds another run's labels: an error, or (``on_mismatch`` "new-folder") a new folder
    ``OUTPUT-<fingerprint>``. Returns the json written (or already there)."""
    cfg = _setup(config_file, opts)
    check_registered(dataset, "--dataset")
    thresh = cfg.MODEL.OPS.PSEUDO_LABEL.SCORE_THRESH if score_thresh is None else score_thresh
    check_threshold(thresh, "--score-thresh")
    fp = pseudo_label_fingerprint(cfg, dataset, thresh)
    output_file = os.path.join(output, PSEUDO_LABEL_FILE)
    try:
        done = pseudo_labels_done(output_file, fp)
    except ProvenanceError:
        if on_mismatch != "new-folder":
            raise
        output_file = os.path.join(f"{output.rstrip(os.sep)}-{fp[:8]}", PSEUDO_LABEL_FILE)
        logger.warning(f"{output} holds pseudo labels of another run; writing this run's to {output_file}")
        done = pseudo_labels_done(output_file, fp)
    if done:
        logger.info(f"{output_file} already holds these pseudo labels; nothing rewritten")
        return output_file
    data = generate_pseudo_labels(cfg, load_part_model(cfg), dataset, output_file, thresh, fp=fp)
    if comm.is_main_process():
        name = name or f"{dataset}_pseudo"
        print(f"{len(data['annotations'])} pseudo-labeled parts on {len(data['images'])} images -> {output_file}")
        print(f'train with: DATASETS.PART_JSONS "(\'{name}:{output_file}\',)" and {name}_agnostic in DATASETS.TRAIN')
    return output_file


def object_masks(*, config_file: str, dataset: str, output: str, opts: Sequence[str] = (), detic: bool = False,
                 num_jobs: int = 1, job_id: int = 0, on_mismatch: str = "error") -> bool:
    """PartDistillation stage 0 (``detic``: ``config_file`` is a Detic config); True when complete.
    ``on_mismatch``: when ``output`` holds another run's result, "error" or "new-folder"."""
    cfg = _setup(config_file, opts, load_detic_config(config_file, opts) if detic else None)
    check_registered(dataset, "--dataset")
    classes = list(getattr(MetadataCatalog.get(dataset), "object_classes", []))
    records = DatasetCatalog.get(dataset)
    model = build_object_mask_model(cfg, classes)
    provenance = model_provenance(cfg, ("MODEL", "INPUT", "PART_DISTILLATION.OBJECT_MASKS"))
    return offline.run_object_masks(model, records, output, shard_size=cfg.PART_DISTILLATION.SHARD_SIZE,
                                    num_jobs=num_jobs, job_id=job_id, source=dataset, provenance=provenance,
                                    on_mismatch=on_mismatch)


def pixel_grouping(*, config_file: str, dataset: str, output: str, opts: Sequence[str] = (), num_jobs: int = 1,
                   job_id: int = 0, on_mismatch: str = "error") -> bool:
    """PartDistillation stage 1a with the backbone of ``config_file``'s model; True when complete.
    ``on_mismatch``: when ``output`` holds another run's result, "error" or "new-folder"."""
    cfg = _setup(config_file, opts)
    check_registered(dataset, "--dataset")
    records = DatasetCatalog.get(dataset)
    classes = list(getattr(MetadataCatalog.get(dataset), "object_classes", []))
    pd = cfg.PART_DISTILLATION
    return offline.run_pixel_grouping(
        PixelGrouper(cfg), records, output, shard_size=pd.SHARD_SIZE, object_classes=classes, seed=pd.SEED,
        max_objects=pd.PIXEL_GROUPING.MAX_OBJECTS_PER_IMAGE, num_jobs=num_jobs, job_id=job_id, source=dataset,
        provenance=offline.grouping_provenance(cfg), on_mismatch=on_mismatch)


def rank_parts(*, config_file: str, dataset: str, output: str, opts: Sequence[str] = (), num_jobs: int = 1,
               job_id: int = 0, on_mismatch: str = "error") -> bool:
    """PartDistillation stage 2 with the part-proposal model of ``config_file``; True when complete.
    ``on_mismatch``: when ``output`` holds another run's result, "error" or "new-folder"."""
    cfg = _setup(config_file, opts)
    check_registered(dataset, "--dataset")
    return offline.rank_parts(cfg, dataset, output, num_jobs=num_jobs, job_id=job_id, on_mismatch=on_mismatch)


def model_class_names(source: str):
    """The stage-3 classifier's object classes: from a stage output folder (its manifest), a
    registered dataset (its ``object_classes``) or a class-list json (``[{"name", ...}]``)."""
    if os.path.isdir(source):
        return list(read_manifest(source)["object_classes"])
    if source.endswith(".json") and os.path.isfile(source):
        return [c["name"] for c in read_class_list(source)]
    check_registered(source, "--model-classes")
    classes = dataset_object_classes(source)
    if not classes:
        raise ConfigError(f"--model-classes: dataset '{source}' has no object classes")
    return classes


def object_class_json(*, dataset: str, model_classes: str, output: str, class_list: str = "") -> int:
    """Write ``PART_DISTILLATION.OBJECT_CLASS_JSON`` for ``dataset``: each image's object class as
    an index into the classes of ``model_classes`` (see :func:`model_class_names`), matched by name,
    or by ImageNet wnid through ``class_list`` (``imagenet21k_classes.json``). An image whose class
    matches none is an error listing the classes. Returns the number of images written."""
    check_registered(dataset, "--dataset")
    names = model_class_names(model_classes)
    records = DatasetCatalog.get(dataset)
    mapping, unmatched = object_class_map(records, dataset_object_classes(dataset), names,
                                          read_class_list(class_list) if class_list else ())
    if unmatched:
        hint = "" if class_list else "; give --class-list (e.g. imagenet21k_classes.json) to match wnids"
        raise ConfigError(f"{dataset}: {unmatched_message(unmatched, model_classes)}{hint}")
    write_object_class_json(output, mapping)
    logger.info(f"{output}: object classes of {len(mapping)} images of {dataset} among the {len(names)} classes "
                f"of {model_classes}")
    return len(mapping)


def stage_argument_parser(description: str) -> argparse.ArgumentParser:
    """detectron2's tool arguments (positional ``KEY VALUE`` overrides included) plus
    ``--dataset``, ``--output``, ``--num-jobs``, ``--job-id``, ``--on-mismatch``, ``--wait-for-lock``."""
    parser = default_argument_parser()
    parser.description = description
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--dataset", required=True, help="registered input dataset")
    parser.add_argument("--output", required=True, help="output directory of the stage")
    parser.add_argument("--num-jobs", type=int, default=1, help="independent jobs sharing the work")
    parser.add_argument("--job-id", type=int, default=0, help="this job's index in [0, num-jobs)")
    parser.add_argument("--on-mismatch", choices=offline.ON_MISMATCH, default="error",
                        help="when --output holds another run's result (other input, weights, seed or config): "
                             "'error' (default) or 'new-folder' (write into OUTPUT-<fingerprint>)")
    add_lock_argument(parser)
    return parser


def stage_lock_name(args) -> str:
    """Lock file of one job of a stage (jobs of one run share the output folder)."""
    return f".lock-job{args.job_id}"


def call_with_args(stage: Callable, args: argparse.Namespace):
    """``stage(**kwargs)`` with the keyword arguments it takes read from parsed ``args`` (a
    picklable ``functools.partial(call_with_args, stage)`` is what tools give to ``launch_tool``)."""
    names = inspect.signature(stage).parameters
    return stage(**{k: v for k, v in vars(args).items() if k in names})
