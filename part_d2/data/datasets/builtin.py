"""Register every real part dataset of part_d2 under ``$DETECTRON2_DATASETS`` (importing this
module does it). Datasets whose files are absent are registered too: loading them raises an
error naming the preparation command to run.
"""
from typing import List, Optional

from .cityscapes_parts import register_cityscapes_parts
from .imagenet import register_imagenet
from .partimagenet import register_partimagenet
from .pascal_part import register_pascal_part
from .pinpp import register_pinpp


def register_all_real_datasets(root: Optional[str] = None) -> List[str]:
    """(Re-)register all real datasets under ``root`` (default ``$DETECTRON2_DATASETS``)."""
    names = []
    for register in (register_partimagenet, register_pinpp, register_pascal_part, register_cityscapes_parts,
                     register_imagenet):
        names += register(root)
    return names


register_all_real_datasets()
