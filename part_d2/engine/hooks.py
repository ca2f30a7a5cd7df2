"""detectron2 hooks that run the offline stages of PartDistillation and OPS inside a training run.

Enabled by ``PIPELINE.*`` config keys (see :func:`build_pipeline_hooks`), so that one
``tools/train_net.py --config-file ...`` run does what the stage tools do, with the same code and
the same output bytes:

- :class:`PixelGroupingHook` (``PIPELINE.GROUPING``): before training, PartDistillation's stage 1a
  on a registered dataset with objects, with the backbone of ``MODEL.WEIGHTS`` (the instance
  model that initialises the proposal model); the output is registered as
  ``{PREFIX}_{parts,agnostic,objects}``, which DATASETS.TRAIN names: the trainer reads its training
  data only at the first step (:class:`part_d2.engine.trainer.PartTrainer`);
- :class:`PartRankingHook` (``PIPELINE.RANKING``): after training, stage 2 with the trained model
  (per-class clustering with persisted centroids, then labelling), registered as ``{PREFIX}_*``;
- :class:`PseudoLabelHook` (``PIPELINE.PSEUDO_LABELS``): after training, OPS's pseudo labels of a
  registered dataset with the trained model (:func:`part_d2.engine.pseudo_labels.generate_pseudo_labels`),
  registered as ``{PREFIX}_*``.

``PIPELINE.NEXT_CONFIG`` then continues with another training run (e.g. stage 3, or OPS's SS + ST
fine-tuning) in the same process: :func:`part_d2.engine.trainer.train_pipeline`.

Every step resumes: finished stage shards and files are skipped, training resumes from its last
checkpoint (``--resume``), and the after-training hooks run only once training has reached
``SOLVER.MAX_ITER`` (not after a crash). The stages run with the global random state saved and
restored, so the training that follows does not depend on whether they ran in this process.
"""
import contextlib
import logging
import os
import random

import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import HookBase
from detectron2.utils import comm

from part_d2.data.part_json import register_part_json
from part_d2.data.shards import register_stage_output
from part_d2.engine.offline import grouping_provenance, rank_parts, run_pixel_grouping
from part_d2.engine.pseudo_labels import (
    PSEUDO_LABEL_FILE,
    generate_pseudo_labels,
    pseudo_label_fingerprint,
    pseudo_labels_done,
)
from part_d2.modeling.pixel_grouping import PixelGrouper

logger = logging.getLogger(__name__)

FINAL_WEIGHTS = "model_final.pth"


@contextlib.contextmanager
def preserved_random_state():
    """Restore Python's, numpy's and torch's (CPU and CUDA) global random states on exit."""
    state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=list(range(torch.cuda.device_count()))):
        try:
            yield
        finally:
            random.setstate(state[0])
            np.random.set_state(state[1])


def training_finished(trainer) -> bool:
    """Whether ``trainer.train`` reached its last iteration (detectron2 sets ``iter`` past
    ``max_iter - 1`` only then)."""
    return trainer.iter >= trainer.max_iter


def trained_weights_cfg(cfg):
    """``cfg`` with ``MODEL.WEIGHTS`` = this run's final checkpoint (what a stage tool run after
    training is given), so that the stages record the same provenance as the tools."""
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.WEIGHTS = os.path.join(cfg.OUTPUT_DIR, FINAL_WEIGHTS)
    cfg.freeze()
    return cfg


class PixelGroupingHook(HookBase):
    """Stage 1a before training (see the module docstring).

    Args:
        cfg: the training config; its ``MODEL.WEIGHTS`` and ``PART_DISTILLATION.PIXEL_GROUPING``
            keys define the grouper (as ``tools/pd_pixel_grouping.py`` with that config).
        dataset: registered input dataset (records with ``objects``).
        output: output directory; prefix: registered name prefix of the output.
    """

    def __init__(self, cfg, dataset: str, output: str, prefix: str):
        self.cfg, self.dataset, self.output, self.prefix = cfg, dataset, output, prefix

    def before_train(self):
        pd = self.cfg.PART_DISTILLATION
        records = DatasetCatalog.get(self.dataset)
        classes = list(getattr(MetadataCatalog.get(self.dataset), "object_classes", []))
        with preserved_random_state():
            done = run_pixel_grouping(PixelGrouper(self.cfg), records, self.output, shard_size=pd.SHARD_SIZE,
                                      object_classes=classes, seed=pd.SEED,
                                      max_objects=pd.PIXEL_GROUPING.MAX_OBJECTS_PER_IMAGE, source=self.dataset,
                                      provenance=grouping_provenance(self.cfg))
        if not done:
            raise RuntimeError(f"{self.output}: pixel grouping incomplete (shards of other jobs missing)")
        register_stage_output(self.prefix, self.output)
        logger.info(f"pixel grouping done: {self.output} registered as {self.prefix}_*")


class PartRankingHook(HookBase):
    """Stage 2 after training, with ``trainer.model`` (see the module docstring).

    Args:
        cfg: the training config (its PART_DISTILLATION.RANKING keys and test mapper are used).
        dataset: registered dataset to rank (records with ``objects``).
        output: output directory; prefix: registered name prefix of the output.
    """

    def __init__(self, cfg, dataset: str, output: str, prefix: str):
        self.cfg, self.dataset, self.output, self.prefix = cfg, dataset, output, prefix

    def after_train(self):
        if not training_finished(self.trainer):
            return
        model = getattr(self.trainer.model, "module", self.trainer.model)
        saved = model.return_query_embeddings, model.return_mask_probs
        try:
            with preserved_random_state():
                done = rank_parts(trained_weights_cfg(self.cfg), self.dataset, self.output, model=model)
        finally:
            model.return_query_embeddings, model.return_mask_probs = saved
        if not done:
            raise RuntimeError(f"{self.output}: part ranking incomplete (shards of other jobs missing)")
        register_stage_output(self.prefix, self.output)
        logger.info(f"part ranking done: {self.output} registered as {self.prefix}_*")


class PseudoLabelHook(HookBase):
    """OPS's pseudo-labelling after training, with ``trainer.model`` (see the module docstring).

    Args:
        cfg: the training config (``MODEL.OPS.PSEUDO_LABEL.SCORE_THRESH``, test mapper).
        dataset: registered dataset to pseudo-label.
        output: output directory (``pseudo_labels.json``); prefix: registered name prefix.
    """

    def __init__(self, cfg, dataset: str, output: str, prefix: str):
        self.cfg, self.dataset, self.output, self.prefix = cfg, dataset, output, prefix

    def after_train(self):
        if not training_finished(self.trainer):
            return
        cfg = trained_weights_cfg(self.cfg)
        output_file = os.path.join(self.output, PSEUDO_LABEL_FILE)
        thresh = cfg.MODEL.OPS.PSEUDO_LABEL.SCORE_THRESH
        fp = pseudo_label_fingerprint(cfg, self.dataset, thresh)
        if pseudo_labels_done(output_file, fp):
            logger.info(f"{output_file} already holds these pseudo labels; nothing rewritten")
        else:
            with preserved_random_state():
                generate_pseudo_labels(cfg, self.trainer.model, self.dataset, output_file, thresh, fp=fp)
        comm.synchronize()
        register_part_json(self.prefix, output_file, MetadataCatalog.get(self.dataset).get("image_root", ""))
        logger.info(f"pseudo labels done: {output_file} registered as {self.prefix}_*")


def build_pipeline_hooks(cfg):
    """The hooks enabled by ``PIPELINE.{GROUPING,RANKING,PSEUDO_LABELS}.INPUT`` (non-empty)."""
    hooks = []
    for node, cls in ((cfg.PIPELINE.GROUPING, PixelGroupingHook), (cfg.PIPELINE.RANKING, PartRankingHook),
                      (cfg.PIPELINE.PSEUDO_LABELS, PseudoLabelHook)):
        if node.INPUT:
            if not node.OUTPUT or not node.PREFIX:
                raise ValueError(f"{cls.__name__}: INPUT {node.INPUT!r} needs OUTPUT and PREFIX (PIPELINE keys)")
            hooks.append(cls(cfg, node.INPUT, node.OUTPUT, node.PREFIX))
    return hooks
