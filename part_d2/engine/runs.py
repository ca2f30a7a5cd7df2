"""Run orchestration shared by the quick start, the method pipelines and the tools.

- :func:`train`: train a config into its ``OUTPUT_DIR`` unless ``model_final.pth`` is there;
- :func:`evaluate`: evaluate weights on ``DATASETS.TEST``, the result cached in a json;
- models with their weights come from :func:`part_d2.modeling.build.load_part_model` (the
  checkpoint loaded with ``INPUT.OBJECT_MASK.INIT``).

A pipeline is a sequence of these calls, each skipped when its output exists, so that an
interrupted pipeline resumes where it stopped.
"""
import logging
import os
from typing import Dict, Optional

from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng

from part_d2.engine.trainer import PartTrainer
from part_d2.modeling.build import load_part_model
from part_d2.utils.io import atomic_write_json, read_json
from part_d2.utils.provenance import cached_json

logger = logging.getLogger(__name__)

FINAL_WEIGHTS = "model_final.pth"


def final_weights(output_dir: str) -> str:
    """Where a training run into ``output_dir`` leaves its final weights."""
    return os.path.join(output_dir, FINAL_WEIGHTS)


def train(cfg, *, resume: bool = False) -> Optional[Dict]:
    """Train ``cfg`` into ``cfg.OUTPUT_DIR``, skipped when its final weights exist; like
    ``tools/train_net.py``, the RNGs are seeded with ``SEED`` (when >= 0) and the config is written
    to ``OUTPUT_DIR/config.yaml``.

    Args:
        resume: continue from the last checkpoint of ``OUTPUT_DIR`` (else start from ``MODEL.WEIGHTS``).
    Returns:
        The evaluation results of the end of training (``DATASETS.TEST``; empty if none), or None
        when the training was skipped.
    """
    final = final_weights(cfg.OUTPUT_DIR)
    if os.path.isfile(final):
        logger.info(f"[skip] {final} exists")
        return None
    if cfg.SEED >= 0:  # as detectron2's default_setup (tools/train_net.py) does with SEED
        seed_all_rng(cfg.SEED + comm.get_rank())
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    if comm.is_main_process():
        with open(os.path.join(cfg.OUTPUT_DIR, "config.yaml"), "w") as f:  # what was trained, for the record
            f.write(cfg.dump())
    trainer = PartTrainer(cfg)
    trainer.resume_or_load(resume=resume)
    if trainer.start_iter >= trainer.max_iter:
        return None
    trainer.train()
    return getattr(trainer, "_last_eval_results", None) or {}


def evaluate(cfg, *, weights: Optional[str] = None, cache: str = "", ingredients: Optional[Dict] = None) -> Dict:
    """Results of ``weights`` (default ``MODEL.WEIGHTS``) on ``DATASETS.TEST`` with ``cfg``'s
    evaluators, as :meth:`PartTrainer.test` gives them (one test dataset: not keyed by its name).

    Args:
        cache: json file holding the results; read instead of evaluating when it holds them, else
            written.
        ingredients: what the results depend on (weights by content, options, test set); with them
            the cache is fingerprinted (:func:`part_d2.utils.provenance.cached_json`) and a cache of
            other ingredients is an error instead of a stale result.
    """
    def compute():
        model = load_part_model(cfg, weights)
        return {k: dict(v) for k, v in PartTrainer.test(cfg, model).items()}

    if cache and ingredients is not None:
        return cached_json(cache, ingredients, compute)
    if cache and os.path.isfile(cache):
        return read_json(cache)
    results = compute()
    if cache:
        atomic_write_json(cache, results)
    return results
