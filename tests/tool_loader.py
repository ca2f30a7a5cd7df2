"""Load a script of part_d2's ``tools/`` by file path, under a module name of its own.

There is no top-level ``tools`` package to import: an editable detectron2 install puts
detectron2's source tree, which has its own ``tools/``, on ``sys.path``.
"""
import importlib.util
import os
import sys
from types import ModuleType

TOOLS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools")


def load_tool(name: str) -> ModuleType:
    """The module of ``tools/{name}.py``, loaded once as ``part_d2_tools_{name}``."""
    module_name = f"part_d2_tools_{name}"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, os.path.join(TOOLS, f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[module_name]
