from .launch import launch, launch_tool  # noqa: F401
from .trainer import PartTrainer, build_evaluator, build_part_model  # noqa: F401
