#!/usr/bin/env python
"""Write PART_DISTILLATION.OBJECT_CLASS_JSON: the object class of each evaluated image in the
stage-3 classifier's class list, for evaluating a stage-3 model on a dataset whose object classes
are not its training classes (PartImageNet's 158 wnids against ImageNet-21K's classes).

    python tools/pd_object_class_json.py --dataset partimagenet_val_parts --model-classes output/pd/ranked \
        --class-list datasets/imagenet/imagenet21k_classes.json --output output/pd/partimagenet_val_object_classes.json

``--model-classes``: the stage-3 training data's classes, from a stage output folder (its
manifest), a registered dataset or a class-list json. Classes match by name (case, ``_`` and
spaces ignored), or by ImageNet wnid through ``--class-list`` (written by
``datasets/prepare_imagenet.py``). Then evaluate with ``PART_DISTILLATION.TEST_OBJECT_CLASS stored
PART_DISTILLATION.OBJECT_CLASS_JSON <output>``.
"""
import argparse
import logging

import part_d2  # noqa: F401  (registers datasets)
from part_d2.engine.launch import exit_on_user_error
from part_d2.engine.stages import object_class_json


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="the evaluated dataset (registered name)")
    parser.add_argument("--model-classes", required=True,
                        help="stage output folder, registered dataset or class-list json of the stage-3 classes")
    parser.add_argument("--class-list", default="", help="json [{'wnid', 'name'}] translating wnids to class names")
    parser.add_argument("--output", required=True, help="the json to write")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(name)s] %(message)s")
    with exit_on_user_error():
        return object_class_json(dataset=args.dataset, model_classes=args.model_classes, output=args.output,
                                 class_list=args.class_list)


if __name__ == "__main__":
    main()
