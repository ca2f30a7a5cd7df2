"""Time PartMask2Former (random init): inference on one 400x600 image and one training step
(forward + backward) on two 512x512 images, optionally against the official Mask2Former.

Example::

    python bench/bench_mask2former.py --config configs/mask2former/maskformer2_R50_part_agnostic.yaml \
        --iters 3 --output bench_m2f.json
    python bench/bench_mask2former.py --reference /path/to/Mask2Former   # also time the official one

``--reference`` imports the ``mask2former`` package of that checkout (its dependencies, e.g. timm
and detectron2's PointRend project, must be importable) and times its ``MaskFormer`` with the same
configuration and weights. Timings are medians over ``--iters`` runs after one warm-up.
"""
import argparse
import json
import statistics
import sys
import time

import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Instances

import part_d2.modeling.backbone  # noqa: F401
import part_d2.modeling.mask2former  # noqa: F401
from part_d2.config import add_part_d2_config


def load_cfg(path: str, device: str, meta_arch: str = None):
    cfg = get_cfg()
    add_part_d2_config(cfg)
    cfg.merge_from_file(path)
    cfg.MODEL.DEVICE = device
    cfg.MODEL.WEIGHTS = ""
    if meta_arch:
        cfg.MODEL.META_ARCHITECTURE = meta_arch
    return cfg


def fake_inputs(num: int, height: int, width: int, channels: int, parts: int, tensor_masks: bool):
    """``num`` random images with ``parts`` random rectangle masks each."""
    gen = torch.Generator().manual_seed(0)
    batch = []
    for _ in range(num):
        masks = torch.zeros(parts, height, width, dtype=torch.bool)
        for k in range(parts):
            y0, x0 = torch.randint(0, height // 2, (1,), generator=gen).item(), torch.randint(0, width // 2, (1,), generator=gen).item()
            masks[k, y0: y0 + height // 4, x0: x0 + width // 4] = True
        inst = Instances((height, width))
        inst.gt_classes = torch.zeros(parts, dtype=torch.int64)
        inst.gt_masks = masks if tensor_masks else BitMasks(masks)
        image = torch.randint(0, 256, (channels, height, width), dtype=torch.uint8, generator=gen)
        batch.append({"image": image, "instances": inst, "height": height, "width": width})
    return batch


def timed(fn, iters: int, device: str) -> float:
    """Median seconds of ``fn()`` over ``iters`` runs after one warm-up."""
    fn()
    times = []
    for _ in range(iters):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench(model, args, channels: int, tensor_masks: bool):
    infer_inputs = fake_inputs(1, 400, 600, channels, 0, tensor_masks)
    train_inputs = fake_inputs(2, 512, 512, channels, 8, tensor_masks)

    def infer():
        model.eval()
        with torch.no_grad():
            model(infer_inputs)

    def train_step():
        model.train()
        model.zero_grad(set_to_none=True)
        sum(model(train_inputs).values()).backward()

    return {"inference_400x600_s": timed(infer, args.iters, args.device),
            "train_step_2x512_s": timed(train_step, args.iters, args.device)}


def reference_model(args, weights):
    sys.path.insert(0, args.reference)
    import mask2former  # noqa: F401  (official package: registers MaskFormer)

    model = build_model(load_cfg(args.config, args.device, "MaskFormer"))
    model.load_state_dict(weights)
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/mask2former/maskformer2_R50_part_agnostic.yaml")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--reference", default="", help="path of an official Mask2Former checkout")
    parser.add_argument("--output", default="", help="write the timings as JSON here")
    args = parser.parse_args()
    torch.manual_seed(0)
    cfg = load_cfg(args.config, args.device)
    model = build_model(cfg)
    channels = len(cfg.MODEL.PIXEL_MEAN)
    results = {"config": args.config, "device": args.device, "torch_threads": torch.get_num_threads(),
               "part_d2": bench(model, args, channels, tensor_masks=False)}
    if args.reference:
        official = reference_model(args, model.state_dict())
        results["official"] = bench(official, args, channels, tensor_masks=True)
    print(json.dumps(results, indent=2))
    if args.output:
        with open(args.output, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
