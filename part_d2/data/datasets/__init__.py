"""The real part datasets: preparation (used by ``datasets/prepare_*.py``) and registration.

Import :mod:`part_d2.data.datasets.builtin` to register them all.
"""
from .cityscapes_parts import decode_uids, prepare_cityscapes_parts, register_cityscapes_parts  # noqa: F401
from .imagenet import attach_object_masks, prepare_imagenet, register_imagenet  # noqa: F401
from .partimagenet import prepare_partimagenet, prepare_partimagenet_seg, register_partimagenet  # noqa: F401
from .pascal_part import prepare_pascal_part, register_pascal_part  # noqa: F401
from .pinpp import prepare_pinpp, register_pinpp  # noqa: F401
