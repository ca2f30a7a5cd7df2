"""OPS self-supervised loss overhead: (supervised + SS) training step time / supervised step time.

One :class:`SelfSupervisedPartMask2Former` (random init) and one batch of 32 labeled images with
an ``object_mask`` each (the union of their 4 parts); the same model is timed with its
cluster-contrastive loss (K = 10, ``MODEL.OPS.SS_LOSS`` defaults) and without it (``ss_loss``
set to None). On CPU the tiny synthetic config (ResNet-18, width 64) at 128x128 is used; pass
``--config`` and ``--size`` for the full model on a GPU. ``--scale`` shrinks the batch.
"""
import argparse
import json

import torch
from bench_mask2former import fake_inputs, load_cfg
from common import check_device, median_time, ratio_row, scaled
from detectron2.modeling import build_model

import part_d2  # noqa: F401  (registers the meta-architectures)

DEFAULT_CONFIG = "configs/synthetic/mask2former_R_tiny_agnostic.yaml"


def make_batch(num: int, size: int, channels: int):
    """``num`` labeled inputs of ``size`` x ``size`` with 4 parts and their union as object mask."""
    batch = fake_inputs(num, size, size, channels, 4, tensor_masks=False)
    for x in batch:
        x["object_mask"] = x["instances"].gt_masks.tensor.any(dim=0)
    return batch


def run(scale: float = 1.0, device: str = "cpu", seed: int = 0, config: str = DEFAULT_CONFIG, size: int = 128,
        k: int = 10, iters: int = 3) -> dict:
    """Median step times with and without the SS loss. Returns a case result dict."""
    check_device(device)
    num_images = scaled(32, scale, 2)
    cfg = load_cfg(config, device, "SelfSupervisedPartMask2Former")
    cfg.MODEL.OPS.SS_LOSS.ENABLED = True
    cfg.MODEL.OPS.SS_LOSS.K = k
    cfg.MODEL.OPS.SS_LOSS.SEED = seed
    torch.manual_seed(seed)
    model = build_model(cfg).train()
    batch = make_batch(num_images, size, len(cfg.MODEL.PIXEL_MEAN))
    ss_loss = model.ss_loss
    loss_keys = {}

    def step():
        model.zero_grad(set_to_none=True)
        losses = model(batch)
        loss_keys["ss" if model.ss_loss is not None else "sup"] = sorted(losses)
        sum(losses.values()).backward()

    model.ss_loss = None
    sup_time = median_time(step, iters, device)
    model.ss_loss = ss_loss
    ss_time = median_time(step, iters, device)
    has_ss = {"loss_affinity", "loss_contrast"} <= set(loss_keys["ss"]) and "loss_affinity" not in loss_keys["sup"]
    row = ratio_row(f"train step, {num_images} images {size}x{size}, K={k}", "s", sup_time, ss_time, 1.2,
                    "SS step returns loss_affinity + loss_contrast, supervised step does not", has_ss)
    return {
        "case": "ss_loss",
        "title": "OPS self-supervised loss overhead",
        "params": {"config": config, "images": num_images, "size": size, "k": k, "iters": iters,
                   "device": device, "seed": seed},
        "rows": [row],
        "details": {"supervised_step_s": sup_time, "supervised_plus_ss_step_s": ss_time},
        "notes": [f"baseline = supervised step, part_d2 = supervised + SS step; medians of {iters} steps after a "
                  f"warm-up; {config} at {size}x{size}"],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--iters", type=int, default=3)
    args = parser.parse_args()
    print(json.dumps(run(args.scale, args.device, config=args.config, size=args.size, iters=args.iters), indent=2))


if __name__ == "__main__":
    main()
