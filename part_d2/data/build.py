"""Data loaders: detectron2's, with part_d2's record selection and bad-image retries (training)
and part_d2's mapper (test)."""
import logging
from typing import Dict, List, Optional

from detectron2.data import build_detection_test_loader, build_detection_train_loader, get_detection_dataset_dicts
from detectron2.data.common import DatasetFromList, MapDataset
from detectron2.data.samplers import RepeatFactorTrainingSampler, TrainingSampler

from part_d2.data.dataset_mapper import PartDatasetMapper
from part_d2.data.few_shot import select_training_records

logger = logging.getLogger(__name__)


class RetryingMapDataset(MapDataset):
    """``MapDataset`` that, when the mapper returns None (an unreadable image), maps another
    random record instead, never retrying a known-bad one.

    detectron2 v0.6's own fallback samples from a ``set`` with ``random.sample``, which Python
    3.11 rejects, so one bad image would stop training.
    """

    def __init__(self, dataset, map_func):
        super().__init__(dataset, map_func)
        self._bad = set()

    def __getitem__(self, idx):
        cur = int(idx)
        for attempt in range(1, len(self._dataset) + 1):
            data = self._map_func(self._dataset[cur])
            if data is not None:
                return data
            self._bad.add(cur)
            if len(self._bad) == len(self._dataset):
                break
            cur = self._rng.randrange(len(self._dataset))
            while cur in self._bad:
                cur = self._rng.randrange(len(self._dataset))
            if attempt % 10 == 0:
                logger.warning(f"{attempt} unreadable training images in a row; {len(self._bad)} skipped so far")
        raise RuntimeError("every training image failed to load (see the warnings above)")


def build_train_sampler(cfg, dataset: List[Dict]):
    """``DATALOADER.SAMPLER_TRAIN``: "TrainingSampler" or "RepeatFactorTrainingSampler" (LVIS-style
    repeat factors from category frequencies, ``DATALOADER.REPEAT_THRESHOLD``)."""
    name = cfg.DATALOADER.SAMPLER_TRAIN
    if name == "TrainingSampler":
        return TrainingSampler(len(dataset))
    if name == "RepeatFactorTrainingSampler":
        factors = RepeatFactorTrainingSampler.repeat_factors_from_category_frequency(
            dataset, cfg.DATALOADER.REPEAT_THRESHOLD
        )
        return RepeatFactorTrainingSampler(factors)
    raise ValueError(f"DATALOADER.SAMPLER_TRAIN={name!r}: expected TrainingSampler or RepeatFactorTrainingSampler")


def build_part_train_loader(cfg, mapper, dataset: Optional[List[Dict]] = None, total_batch_size: Optional[int] = None):
    """detectron2's training loader over ``dataset`` (default: ``DATASETS.TRAIN`` after
    :func:`select_training_records`), mapped with :class:`RetryingMapDataset`."""
    if dataset is None:
        dataset = get_detection_dataset_dicts(
            cfg.DATASETS.TRAIN,
            filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
            min_keypoints=0,
            proposal_files=None,
        )
        dataset = select_training_records(cfg, dataset)
    mapped = RetryingMapDataset(DatasetFromList(dataset, copy=False), mapper)
    return build_detection_train_loader(
        mapped,
        mapper=None,
        sampler=build_train_sampler(cfg, dataset),
        total_batch_size=total_batch_size or cfg.SOLVER.IMS_PER_BATCH,
        aspect_ratio_grouping=cfg.DATALOADER.ASPECT_RATIO_GROUPING,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
    )


def build_part_test_loader(cfg, dataset_name: str, mapper=None):
    """detectron2's test loader of ``dataset_name`` with ``mapper`` (default: the test-time
    :class:`part_d2.data.dataset_mapper.PartDatasetMapper`) and ``SOLVER.NUM_WORKERS_EVAL`` workers."""
    mapper = PartDatasetMapper(cfg, False) if mapper is None else mapper
    return build_detection_test_loader(cfg, dataset_name, mapper=mapper, num_workers=cfg.SOLVER.NUM_WORKERS_EVAL)
