"""Collecting a ``DatasetEvaluator``'s per-process results on the main process."""
import itertools
from typing import List, Optional

from detectron2.utils import comm


def gather_on_main(items: List, distributed: bool = True) -> Optional[List]:
    """Every process's ``items`` concatenated (process order) on the main process, None on the
    others; ``items`` themselves when not ``distributed``."""
    if not distributed:
        return list(items)
    comm.synchronize()
    gathered = comm.gather(items, dst=0)
    return list(itertools.chain(*gathered)) if comm.is_main_process() else None
