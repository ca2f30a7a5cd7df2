"""Part instance segmentation evaluator: class-agnostic (and optionally class-aware) mask AP/AR."""
import json
import logging
import os
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

from detectron2.config import configurable
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils.file_io import PathManager
from detectron2.utils.logger import create_small_table

from part_d2.evaluation.coco_eval import EvalParams, evaluate_coco, per_category_ap, summarize
from part_d2.evaluation.distributed import gather_on_main
from part_d2.evaluation.ground_truth import AGNOSTIC_ID, dataset_to_coco
from part_d2.structures.masks import masks_to_rles

logger = logging.getLogger(__name__)

PREDICTIONS_FILE = "part_predictions.json"


class PartEvaluator(DatasetEvaluator):
    """COCO-style mask AP/AR of part instances, with pycocotools' semantics (no compiled ops).

    Every ground-truth part and every prediction count as one class ("class-agnostic"): keys
    AP, AP50, AP75, APs, APm, APl, ``AR@{m}`` per max detections m, and ARs/ARm/ARl at the
    largest. With ``class_aware`` the same summary per part class (pycocotools ``useCats=1``)
    is added under ``cls_``-prefixed keys, with ``cls_AP-{class name}`` per class.

    Images evaluated are those processed (as detectron2's COCOEvaluator does); category ids are
    the dataset's contiguous ids, in the records and in ``part_predictions.json``.
    """

    @configurable
    def __init__(
        self,
        dataset_name: str,
        output_dir: Optional[str] = None,
        max_dets: Sequence[int] = (1, 10, 100, 200),
        class_aware: bool = False,
        distributed: bool = True,
    ):
        """
        Args:
            dataset_name: a DatasetCatalog name whose records hold ``image_id``, ``height``,
                ``width`` and ``annotations`` (``segmentation``, contiguous ``category_id``,
                ``iscrowd``, optional ``area``).
            output_dir: where ``part_predictions.json`` (COCO results with RLE) is written.
            max_dets: detections per image at which AR is reported; AP uses the largest.
            class_aware: also report per-class AP/AR.
            distributed: gather predictions from all processes and evaluate on the main one.
        """
        self._dataset_name = dataset_name
        self._output_dir = output_dir
        self._max_dets = tuple(sorted(int(m) for m in max_dets))
        self._class_aware = class_aware
        self._distributed = distributed
        self._predictions: List[Dict] = []

    @classmethod
    def from_config(cls, cfg, dataset_name: str, output_dir: Optional[str] = None):
        return {
            "dataset_name": dataset_name,
            "output_dir": output_dir,
            "max_dets": tuple(cfg.TEST.PART_EVAL.MAX_DETS),
            "class_aware": cfg.TEST.PART_EVAL.CLASS_AWARE,
        }

    def reset(self):
        self._predictions = []

    def process(self, inputs, outputs):
        """Encode each image's predicted masks as COCO results.

        Args:
            inputs: dicts with ``image_id``.
            outputs: dicts whose ``instances`` have ``pred_masks`` (N, H, W) bool or float
                (foreground where >= 0.5) at the original resolution, ``scores`` (N,) and
                ``pred_classes`` (N,).
        """
        for inp, out in zip(inputs, outputs):
            if "instances" not in out:
                raise ValueError(f"PartEvaluator: the output of image {inp['image_id']!r} has no 'instances'")
            inst = out["instances"].to("cpu")
            missing = [f for f in ("pred_masks", "scores", "pred_classes") if not inst.has(f)]
            if missing:
                raise ValueError(
                    f"PartEvaluator: the instances of image {inp['image_id']!r} lack {missing} "
                    f"(fields: {sorted(inst.get_fields())}); mask AP needs pred_masks, scores and pred_classes"
                )
            masks = inst.pred_masks.numpy()
            masks = masks if masks.dtype == bool else masks >= 0.5
            results = [
                {"image_id": inp["image_id"], "category_id": int(c), "score": float(s), "segmentation": rle}
                for rle, s, c in zip(masks_to_rles(masks), inst.scores.tolist(), inst.pred_classes.tolist())
            ]
            self._predictions.append({"image_id": inp["image_id"], "results": results})

    def evaluate(self):
        """Returns ``OrderedDict(part_segm={metric: value in percent})`` on the main process."""
        predictions = gather_on_main(self._predictions, self._distributed)
        if predictions is None:  # not the main process
            return {}
        if not predictions:
            logger.warning("PartEvaluator: no predictions were processed; nothing to evaluate")
            return {}
        results = [r for p in predictions for r in p["results"]]
        if self._output_dir:
            PathManager.mkdirs(self._output_dir)
            path = os.path.join(self._output_dir, PREDICTIONS_FILE)
            with PathManager.open(path, "w") as f:
                json.dump(results, f)
            logger.info(f"Saved {len(results)} part predictions to {path}")
        gt = dataset_to_coco(self._dataset_name)
        img_ids = {p["image_id"] for p in predictions}
        if len(img_ids) < len(gt["images"]):
            logger.warning(
                f"PartEvaluator: evaluating {len(img_ids)} of the {len(gt['images'])} images of {self._dataset_name}"
            )
        metrics = self._evaluate_agnostic(gt, results, img_ids)
        if self._class_aware:
            metrics.update(self._evaluate_class_aware(gt, results, img_ids))
        logger.info(f"Part segmentation results on {self._dataset_name}:\n" + create_small_table(metrics))
        return OrderedDict(part_segm=metrics)

    def _evaluate_agnostic(self, gt: Dict, results: List[Dict], img_ids) -> Dict[str, float]:
        agnostic_gt = dict(
            gt,
            categories=[{"id": AGNOSTIC_ID, "name": "part"}],
            annotations=[dict(a, category_id=AGNOSTIC_ID) for a in gt["annotations"]],
        )
        agnostic_results = [dict(r, category_id=AGNOSTIC_ID) for r in results]
        params = EvalParams(use_cats=False, max_dets=self._max_dets)
        return summarize(evaluate_coco(agnostic_gt, agnostic_results, params, img_ids=img_ids))

    def _evaluate_class_aware(self, gt: Dict, results: List[Dict], img_ids) -> Dict[str, float]:
        result = evaluate_coco(gt, results, EvalParams(use_cats=True, max_dets=self._max_dets), img_ids=img_ids)
        metrics = {f"cls_{k}": v for k, v in summarize(result).items()}
        names = {c["id"]: c["name"] for c in gt["categories"]}
        metrics.update({f"cls_AP-{names[c]}": ap for c, ap in per_category_ap(result).items()})
        return metrics
