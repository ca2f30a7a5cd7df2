"""Evaluation of part instance segmentation: pycocotools-exact COCO AP/AR and the PartEvaluator."""
from part_d2.evaluation.coco_eval import (
    CocoEvalResult,
    EvalParams,
    evaluate_coco,
    greedy_match,
    per_category_ap,
    summarize,
)
from part_d2.evaluation.ground_truth import dataset_to_coco
from part_d2.evaluation.part_evaluator import PartEvaluator

__all__ = [
    "CocoEvalResult",
    "EvalParams",
    "PartEvaluator",
    "dataset_to_coco",
    "evaluate_coco",
    "greedy_match",
    "per_category_ap",
    "summarize",
]
