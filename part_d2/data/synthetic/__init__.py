"""part_d2's embedded synthetic part dataset: textured objects built from shared part kinds.

Object classes (the library, ``data/metadata/synthetic_parts_library.json``) are split into
disjoint seen ``train`` and unseen ``val`` / ``test`` classes per supercategory, a CPU-scale
stand-in for PartImageNet's open-world protocol. See :mod:`.generate` for the files written.
"""
from .generate import (  # noqa: F401
    DEFAULT_IMAGE_SIZE,
    DEFAULT_NUM_IMAGES,
    annotation_paths,
    default_root,
    ensure_synthetic_parts,
    generate_synthetic_parts,
    image_root,
)
from .library import SPLITS, ObjectClass, PartLibrary, load_library  # noqa: F401
