from . import builtin  # noqa: F401,E402  (registers the synthetic datasets)
from .datasets import builtin as _real_datasets  # noqa: F401,E402  (registers the real datasets)
from .part_json import LABEL_VIEWS, PartDatasetError, load_part_json, register_part_json  # noqa: F401
