"""OPS batch mixing: every training step takes a labeled batch and an unlabeled batch.

The labeled half comes from ``DATASETS.TRAIN`` (``SOLVER.IMS_PER_BATCH`` images, e.g. labeled +
pseudo-labeled datasets), the unlabeled half from ``DATASETS.UNLABELED``
(``SOLVER.IMS_PER_BATCH_UNLABELED`` images) — its own datasets, unlike the OPS reference code,
which built the unlabeled loader from ``DATASETS.TRAIN`` again. Unlabeled records lose their
``annotations`` before mapping (so they carry no ``"instances"``) but keep their ``objects`` for
object-mask sources; they are never filtered for empty annotations.
"""
import logging
from typing import Dict, Iterable, Iterator, List

from detectron2.data import get_detection_dataset_dicts

from part_d2.data.build import build_part_train_loader

logger = logging.getLogger(__name__)


def unlabeled_dataset_dicts(names) -> List[Dict]:
    """Records of the datasets ``names`` without annotations, each marked ``"unlabeled": True``.

    Args:
        names: registered dataset names (any view; annotations are ignored).
    """
    if isinstance(names, str):
        names = [names]
    if not names:
        raise ValueError("DATASETS.UNLABELED is empty: name at least one registered dataset")
    records = get_detection_dataset_dicts(list(names), filter_empty=False)
    out = []
    for rec in records:
        rec = {k: v for k, v in rec.items() if k != "annotations"}
        rec["unlabeled"] = True
        out.append(rec)
    logger.info(f"Unlabeled training data: {len(out)} images from {list(names)}")
    return out


class MixedBatchLoader:
    """Iterate over two batch loaders in lockstep, yielding ``labeled + unlabeled`` lists.

    Both loaders are infinite (detectron2 training loaders); each step concatenates one labeled
    batch and one unlabeled batch, labeled first.
    """

    def __init__(self, labeled: Iterable[List[Dict]], unlabeled: Iterable[List[Dict]]):
        self.labeled = labeled
        self.unlabeled = unlabeled

    def __iter__(self) -> Iterator[List[Dict]]:
        for labeled, unlabeled in zip(self.labeled, self.unlabeled):
            yield list(labeled) + list(unlabeled)


def build_mixed_train_loader(cfg, mapper) -> MixedBatchLoader:
    """The OPS training loader: ``DATASETS.TRAIN`` batches mixed with ``DATASETS.UNLABELED`` ones.

    Args:
        cfg: config with ``DATASETS.TRAIN``, ``DATASETS.UNLABELED``, ``SOLVER.IMS_PER_BATCH`` and
            ``SOLVER.IMS_PER_BATCH_UNLABELED`` (totals over all workers).
        mapper: the training dataset mapper, used for both halves.
    """
    labeled = build_part_train_loader(cfg, mapper)
    unlabeled = build_part_train_loader(
        cfg, mapper, unlabeled_dataset_dicts(cfg.DATASETS.UNLABELED), cfg.SOLVER.IMS_PER_BATCH_UNLABELED
    )
    return MixedBatchLoader(labeled, unlabeled)
