"""detectron2 hooks running PartDistillation's offline stages inside a training run.

- :class:`PartRankingHook`: after part-proposal training (stage 1b), rank the trained model's
  proposals into class-specific pseudo labels (stage 2) with the trained weights;
- :class:`PixelGroupingHook`: before training, create the pixel-grouping pseudo labels (stage 1a)
  if they are missing, then rebuild the trainer's data loader so that it reads them.

Both resume: finished shards are skipped, so a restarted training run does not redo them.
"""
import logging

from detectron2.engine import HookBase

from part_d2.data.shards import register_stage_output
from part_d2.engine.offline import rank_parts, run_pixel_grouping

logger = logging.getLogger(__name__)


class PartRankingHook(HookBase):
    """Stage 2 at the end of training with ``trainer.model``.

    Args:
        cfg: the training config (its PART_DISTILLATION.RANKING keys and test mapper are used).
        dataset: registered dataset to rank (records with ``objects``).
        output: output directory of the stage.
        register_as: if set, register the output as ``{register_as}_{view}`` datasets.
    """

    def __init__(self, cfg, dataset: str, output: str, register_as: str = ""):
        self.cfg, self.dataset, self.output, self.register_as = cfg, dataset, output, register_as

    def after_train(self):
        rank_parts(self.cfg, self.dataset, self.output, model=self.trainer.model)
        if self.register_as:
            register_stage_output(self.register_as, self.output)


class PixelGroupingHook(HookBase):
    """Stage 1a before training, with a grouper (:class:`part_d2.modeling.pixel_grouping.PixelGrouper`).

    Args:
        grouper: the pixel grouper (its own backbone, e.g. an object-instance model's).
        records: the input records (with ``objects``); object_classes: their names.
        output: output directory; register_as: registered name prefix of the output, which the
            training config's DATASETS.TRAIN should name (e.g. ``{register_as}_agnostic``).
    """

    def __init__(self, grouper, records, object_classes, output: str, register_as: str, shard_size: int = 500,
                 seed: int = 0, max_objects: int = 1):
        self.grouper, self.records, self.object_classes = grouper, records, object_classes
        self.output, self.register_as = output, register_as
        self.shard_size, self.seed, self.max_objects = shard_size, seed, max_objects

    def before_train(self):
        done = run_pixel_grouping(self.grouper, self.records, self.output, self.shard_size, self.object_classes,
                                  self.seed, self.max_objects)
        if not done:
            raise RuntimeError(f"{self.output}: pixel grouping incomplete (shards of other jobs missing)")
        register_stage_output(self.register_as, self.output)
        trainer = self.trainer
        loader = trainer.build_train_loader(trainer.cfg)
        inner = trainer._trainer
        inner.data_loader = loader
        for attr in ("_data_loader_iter", "_data_loader_iter_obj"):
            if attr in vars(inner):
                setattr(inner, attr, iter(loader) if attr == "_data_loader_iter" else None)
        logger.info(f"pixel grouping done; training data reloaded from {self.output}")
