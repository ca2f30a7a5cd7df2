#!/usr/bin/env python
"""PartDistillation stage 0: object masks of an object model over an image set.

    python tools/pd_object_masks.py --config-file CFG --dataset imagenet_1k_train \
        --output output/pd/objects MODEL.WEIGHTS model.pth
    python tools/pd_object_masks.py --detic --config-file Detic/configs/Detic_...yaml \
        --dataset D --output OUT MODEL.WEIGHTS detic.pth \
        PART_DISTILLATION.OBJECT_MASKS.VOCABULARY "['dog', 'cat']" \
        PART_DISTILLATION.OBJECT_MASKS.VOCABULARY_EMBEDDINGS vocab_clip.npy

With --detic, Detic is imported from the clone holding the config file (else from PYTHONPATH), with
the compatibility patches of part_d2/compat/detic.py; a vocabulary of names needs CLIP ViT-B/32
weights (PART_DISTILLATION.OBJECT_MASKS.CLIP_WEIGHTS, default ~/.cache/clip/ViT-B-32.pt), one of
embeddings does not (VOCABULARY_EMBEDDINGS). Keeps the top-k detections of each image's own class
(else of any class), see PART_DISTILLATION.OBJECT_MASKS. Output: a sharded part json with ``objects`` (register it with
part_d2.data.shards.register_stage_output) and ``object_masks.json`` for
``INPUT.OBJECT_MASK.SOURCE stored``. Interrupted runs resume.
"""
import functools

import part_d2  # noqa: F401  (registers datasets and architectures)
from part_d2.engine.launch import launch_tool
from part_d2.engine.stages import call_with_args, object_masks, stage_argument_parser, stage_lock_name


def main(argv=None):
    parser = stage_argument_parser(__doc__)
    parser.add_argument("--detic", action="store_true", help="the config is a Detic config (needs Detic)")
    args = parser.parse_args(argv)
    return launch_tool(functools.partial(call_with_args, object_masks), args, output=lambda a: a.output,
                       lock_name=stage_lock_name(args))


if __name__ == "__main__":
    main()
