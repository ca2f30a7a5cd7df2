"""``PartTrainer``: detectron2's DefaultTrainer with part_d2's data, evaluation, checkpoints and
the offline stages as hooks (:mod:`part_d2.engine.hooks`); :func:`train_pipeline` chains runs."""
import logging
import os
import weakref

from detectron2.data import MetadataCatalog
from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer, TrainerBase, create_ddp_model, default_setup
from detectron2.evaluation import DatasetEvaluators
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from part_d2.checkpoint import PartCheckpointer
from part_d2.data.build import build_part_test_loader, build_part_train_loader
from part_d2.data.dataset_mapper import PartDatasetMapper
from part_d2.data.mixed_loader import build_mixed_train_loader
from part_d2.engine.config_checks import check_test_object_classes
from part_d2.engine.hooks import build_pipeline_hooks
from part_d2.engine.setup import load_config
from part_d2.evaluation.lvis_eval import LvisEvaluator
from part_d2.evaluation.oracle_semantic_evaluator import OracleSemanticEvaluator
from part_d2.evaluation.part_discovery import PartDiscoveryEvaluator
from part_d2.evaluation.part_evaluator import PartEvaluator
from part_d2.evaluation.sem_seg import InstanceSemSegEvaluator
from part_d2.modeling.build import build_part_model
from part_d2.solver.build import build_optimizer

logger = logging.getLogger(__name__)


def build_evaluator(cfg, dataset_name: str, output_folder=None):
    """The evaluator named by the dataset's ``evaluator_type`` ("part", "sem_seg" or "lvis").

    "part" datasets get the :class:`PartEvaluator`, plus the :class:`OracleSemanticEvaluator`
    when ``TEST.PART_EVAL.ORACLE_SEMANTIC``; ``TEST.PART_DISCOVERY.ENABLED`` selects
    PartDistillation's :class:`PartDiscoveryEvaluator` instead.
    """
    if cfg.TEST.PART_DISCOVERY.ENABLED:
        return PartDiscoveryEvaluator(cfg, dataset_name)
    meta = MetadataCatalog.get(dataset_name)
    kind = getattr(meta, "evaluator_type", "part")
    if kind == "part":
        evaluator = PartEvaluator(
            dataset_name,
            output_dir=output_folder,
            max_dets=tuple(cfg.TEST.PART_EVAL.MAX_DETS),
            class_aware=cfg.TEST.PART_EVAL.CLASS_AWARE,
        )
        if not cfg.TEST.PART_EVAL.ORACLE_SEMANTIC:
            return evaluator
        return DatasetEvaluators([evaluator, OracleSemanticEvaluator(cfg, dataset_name)])
    if kind == "sem_seg":
        return InstanceSemSegEvaluator(dataset_name, distributed=True, output_dir=output_folder)
    if kind == "lvis":
        return LvisEvaluator(cfg, dataset_name, output_folder)
    raise ValueError(f"dataset '{dataset_name}' has evaluator_type={kind!r}, which part_d2 does not handle")


class DeferredLoader:
    """An iterator that builds its data loader at the first ``next``: hooks that run before training
    (stage 1a) can create the training data after the trainer is constructed."""

    def __init__(self, build):
        self._build, self._iter = build, None

    def __iter__(self):
        return self

    def __next__(self):
        if self._iter is None:
            self._iter = iter(self._build())
        return next(self._iter)


class PartTrainer(DefaultTrainer):
    """Trainer for part segmentation models (Cascade Mask R-CNN, Mask2Former, OPS, PartDistillation).

    Differences from DefaultTrainer: :class:`PartDatasetMapper` for train and test data, the part
    evaluator, part_d2's optimizer builder, :class:`PartCheckpointer` (4-channel stems, legacy
    pickles, ``weights_only``), DistributedDataParallel on CPU processes, the training data read at
    the first step (:class:`DeferredLoader`) and the ``PIPELINE`` hooks.
    """

    def __init__(self, cfg):
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = DeferredLoader(lambda: self.build_train_loader(cfg))
        device_ids = [comm.get_local_rank()] if cfg.MODEL.DEVICE.startswith("cuda") else None
        model = create_ddp_model(model, broadcast_buffers=False, device_ids=device_ids,
                                 find_unused_parameters=cfg.MODEL.get("FIND_UNUSED_PARAMETERS", False))
        self._trainer = (AMPTrainer if cfg.SOLVER.AMP.ENABLED else SimpleTrainer)(model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = PartCheckpointer(model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self),
                                             init=cfg.INPUT.OBJECT_MASK.INIT)
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    def build_hooks(self):
        """detectron2's default hooks, then those enabled by ``PIPELINE`` (stage 1a, 2, pseudo labels)."""
        return super().build_hooks() + build_pipeline_hooks(self.cfg)

    def state_dict(self):
        """Also checkpoint the optimizer (detectron2 v0.6's DefaultTrainer does not), so that
        ``--resume`` continues with the same learning rate and momentum."""
        ret = super().state_dict()
        ret["_trainer"] = self._trainer.state_dict()
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if "_trainer" in state_dict:
            self._trainer.load_state_dict(state_dict["_trainer"])

    @classmethod
    def build_model(cls, cfg):
        model = build_part_model(cfg)
        logging.getLogger(__name__).info(
            f"Model: {type(model).__name__} with {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters"
        )
        return model

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_optimizer(cfg, model)

    @classmethod
    def build_train_loader(cls, cfg):
        """``DATASETS.TRAIN`` after few-shot / area selection, skipping unreadable images; with
        ``DATASETS.UNLABELED``, OPS's labeled + unlabeled mix."""
        mapper = PartDatasetMapper(cfg, True)
        if cfg.DATASETS.UNLABELED:
            return build_mixed_train_loader(cfg, mapper)
        return build_part_train_loader(cfg, mapper)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        check_test_object_classes(cfg, dataset_name)
        return build_part_test_loader(cfg, dataset_name)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return DatasetEvaluators([build_evaluator(cfg, dataset_name, output_folder)])


def train_pipeline(cfg, args):
    """Train ``cfg`` (resuming with ``args.resume``), then each ``PIPELINE.NEXT_CONFIG`` in turn in
    this process: its ``MODEL.WEIGHTS`` is the previous run's ``model_final.pth`` and its
    ``MODEL.DEVICE`` the previous run's, unless ``PIPELINE.NEXT_OPTS`` sets them. Returns the last
    run's results."""
    while True:
        trainer = PartTrainer(cfg)
        trainer.resume_or_load(resume=args.resume)
        results = trainer.train()
        if not cfg.PIPELINE.NEXT_CONFIG:
            return results
        weights = os.path.join(cfg.OUTPUT_DIR, "model_final.pth")
        logger.info(f"pipeline: continuing with {cfg.PIPELINE.NEXT_CONFIG} from {weights}")
        inherited = ["MODEL.WEIGHTS", weights, "MODEL.DEVICE", cfg.MODEL.DEVICE]
        cfg = load_config(cfg.PIPELINE.NEXT_CONFIG, inherited + list(cfg.PIPELINE.NEXT_OPTS))
        cfg.freeze()
        default_setup(cfg, args)
