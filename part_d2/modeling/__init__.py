"""part_d2 models; importing registers the meta-architectures and backbones."""
from . import backbone, mask2former, rcnn, roi_heads  # noqa: F401
