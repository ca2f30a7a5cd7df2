"""part_d2: instance-level part segmentation on Detectron2 (OPS and PartDistillation).

Importing the package registers its datasets, meta-architectures and backbones.
"""
__version__ = "0.1.0"

from . import (
    data,  # noqa: F401,E402  (registers datasets)
    modeling,  # noqa: F401,E402  (registers architectures)
)
