"""Placeholder for ``detectron2._C`` written by part_d2's ``tools/setup_env.sh``.

detectron2 installed from the registry's Python sources has no compiled extension, but its
layers import ``_C`` at module level. part_d2 never calls detectron2's compiled operators;
any code that does gets an error naming the operator instead of an import failure.
"""


PLACEHOLDER = "none (Python-only detectron2; part_d2 placeholder for detectron2._C)"


def get_compiler_version():
    """Informational, used by ``detectron2.utils.collect_env``."""
    return PLACEHOLDER


def get_cuda_version():
    """Informational, used by ``detectron2.utils.collect_env``."""
    return PLACEHOLDER


def has_cuda():
    return False


class CompiledOpUnavailable(AttributeError):
    """Raised on access to any compiled detectron2 operator."""


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    raise CompiledOpUnavailable(
        f"detectron2._C.{name} is unavailable: this detectron2 was installed without its "
        "compiled C++/CUDA extension (tools/setup_env.sh). part_d2 does not need it; to use "
        "detectron2 ops such as deformable convolution, rotated boxes or the fast COCO "
        "evaluator, build detectron2 from source (see README.md)."
    )
