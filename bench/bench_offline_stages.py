"""PartDistillation's offline stages 0, 1a and 2 per image: throughput and peak memory.

Workload: synthetic 480x640 JPEG images (smooth random colour fields), one random elliptic object
each (``PIXEL_GROUPING.MAX_OBJECTS_PER_IMAGE`` 1, the reference's top object), 10 object classes;
8 images per stage at scale 1. Model: the ResNet-50 Mask2Former of
``configs/mask2former/maskformer2_R50_part_agnostic.yaml`` with **random weights** (no weights
can be downloaded here; speed and memory do not depend on the weight values, only what the
proposals look like does). Each stage runs through its driver in :mod:`part_d2.engine.offline`,
shards and all, exactly as its tool does:

- **stage 0** :func:`run_object_masks` with the R50 Mask2Former as the detectron2 object model
  (``DefaultPredictor``, test size 400-666): a stand-in for the paper's Detic (Swin-B), which is
  not installed here;
- **stage 1a** :func:`run_pixel_grouping` with :class:`PixelGrouper` on the R50's res3 + res4
  (1,536 channels at stride 8) at the configured grouping size (``PIXEL_GROUPING.IMAGE_SIZE`` 640),
  k = 4 with 10 restarts, dense CRF on the whole image (the defaults);
- **stage 2** :func:`run_part_ranking` with the R50 proposal model (100 queries, 256-d query
  features): proposals of every object, per-class k-means (8 modes), labels.

Each stage runs in a fresh process (``--child``): the model is built and warmed up on one image
(lazy initialisations), then the stage is timed on the images. Memory: the process's peak resident
set (``VmHWM``, imports and model included) and, on a GPU, ``torch.cuda.max_memory_allocated``.
Rows: seconds per image (no baseline: these are the rates the README's ImageNet projection uses)
and peak RSS against a stated bound of 4 GiB per process (so that one process per core fits a
common 4-GiB-per-core node).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import cv2
import numpy as np
import torch
from bench_pixel_grouping import random_ellipses, smooth_field
from common import check_device, cpu_seconds, ratio_row, repo_path, reset_peak_rss, rss_status_bytes, scaled

from part_d2.data.object_mask_models import build_object_mask_model
from part_d2.engine import offline
from part_d2.engine.setup import load_config
from part_d2.modeling.build import build_part_model
from part_d2.modeling.pixel_grouping import PixelGrouper, select_backbone
from part_d2.structures.masks import mask_to_rle

STAGES = ("stage0", "stage1a", "stage2")
TITLES = {"stage0": "stage 0 object masks", "stage1a": "stage 1a pixel grouping", "stage2": "stage 2 part ranking"}
CONFIG = "configs/mask2former/maskformer2_R50_part_agnostic.yaml"
HEIGHT, WIDTH = 480, 640
NUM_CLASSES = 10
BOUND_MIB = 4096
MIB = 2.0**20


def write_images(folder: str, num_images: int, seed: int) -> str:
    """Seeded JPEG images and their records (one object each) in ``folder``; returns the records' json."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(num_images):
        rgb = np.clip(128 + 60 * smooth_field(rng, 3, (HEIGHT, WIDTH), (6, 8), 0.1), 0, 255).astype(np.uint8)
        path = os.path.join(folder, f"im{i:05d}.jpg")
        cv2.imwrite(path, np.ascontiguousarray(rgb.transpose(1, 2, 0)[:, :, ::-1]))
        c = int(rng.integers(NUM_CLASSES))
        rle = mask_to_rle(random_ellipses(rng, 1, HEIGHT, WIDTH)[0])
        records.append({"file_name": path, "height": HEIGHT, "width": WIDTH, "image_id": i, "object_category_id": c,
                        "objects": [{"segmentation": rle, "category_id": c}]})
    path = os.path.join(folder, "records.json")
    with open(path, "w") as f:
        json.dump(records, f)
    return path


def child(stage: str, records_json: str, output: str, device: str, config: str, seed: int) -> dict:
    """One stage in this fresh process on the records but the first (the warm-up image)."""
    with open(records_json) as f:
        records = json.load(f)
    warm, records = records[0], records[1:]
    names = [f"class{c}" for c in range(NUM_CLASSES)]
    torch.manual_seed(seed)
    # the model is class-agnostic (one class): its vocabulary is one name
    cfg = load_config(config, ["MODEL.WEIGHTS", "", "MODEL.DEVICE", device, "PART_DISTILLATION.SEED", str(seed),
                               "PART_DISTILLATION.OBJECT_MASKS.VOCABULARY", "['object']"])
    pd = cfg.PART_DISTILLATION
    cfg.freeze()
    shard = max(1, len(records) // 2)  # two shards: the shard writing is part of the measurement
    if stage == "stage0":
        model = build_object_mask_model(cfg, names)
        model(warm, offline.read_rgb(warm))

        def run_stage():
            return offline.run_object_masks(model, records, output, shard_size=shard)
    elif stage == "stage1a":
        model = build_part_model(cfg).eval()
        grouper = PixelGrouper(cfg, backbone=select_backbone(model, pd.PIXEL_GROUPING.FEATURE_KEYS))
        offline.run_pixel_grouping(grouper, [warm], output + "-warm", shard_size=1, object_classes=names)

        def run_stage():
            return offline.run_pixel_grouping(grouper, records, output, shard_size=shard, object_classes=names,
                                              seed=seed, max_objects=pd.PIXEL_GROUPING.MAX_OBJECTS_PER_IMAGE)
    else:
        model = build_part_model(cfg).eval()
        predict = offline.build_proposal_predictor(cfg, model)
        predict(warm)
        rk = pd.RANKING

        def run_stage():
            return offline.run_part_ranking(
                predict, records, output, shard_size=shard, object_classes=names, num_modes=pd.NUM_PART_MODES,
                min_area_ratio=rk.MIN_AREA_RATIO, min_score=rk.MIN_SCORE, normalize=rk.NORMALIZE_FEATURES,
                metric=rk.METRIC, n_init=rk.KMEANS_N_INIT, max_iter=rk.KMEANS_MAX_ITER, seed=seed, device=device,
                bucket_mb=rk.BUCKET_MB)
    on_gpu = device.startswith("cuda")
    if on_gpu:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    setup_rss = rss_status_bytes("VmRSS")
    setup_peak = rss_status_bytes("VmHWM")
    reset_peak_rss()
    start, cpu = time.perf_counter(), cpu_seconds()
    done = run_stage()
    if on_gpu:
        torch.cuda.synchronize()
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    outputs = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(output) for f in fs)
    proposals = os.path.join(output, "proposals")  # stage 2: the query features kept for the ranking
    features = sum(np.load(os.path.join(proposals, f), mmap_mode="r").shape[0] for f in os.listdir(proposals)
                   if f.endswith(".npy")) if os.path.isdir(proposals) else None
    return {"stage": stage, "images": len(records), "seconds": seconds, "cpu_seconds": cpu, "complete": bool(done),
            "peak_rss": max(setup_peak, rss_status_bytes("VmHWM")), "stage_peak_rss": rss_status_bytes("VmHWM"),
            "rss_after_setup": setup_rss, "output_bytes": outputs, "ranking_features": features,
            "cuda_peak": torch.cuda.max_memory_allocated() if on_gpu else None,
            "torch_threads": torch.get_num_threads()}


def run_child(stage: str, records_json: str, output: str, device: str, config: str, seed: int) -> dict:
    """:func:`child` in a fresh Python process."""
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p))
    cmd = [sys.executable, os.path.abspath(__file__), "--child", stage, "--records", records_json, "--out", output,
           "--device", device, "--config", config, "--seed", str(seed)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{stage} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(scale: float = 1.0, device: str = "cpu", seed: int = 0, config: str = CONFIG, stages=STAGES) -> dict:
    """Every stage on ``8 x scale`` images (+ 1 warm-up). Returns a case result dict."""
    check_device(device)
    num_images = scaled(8, scale, 2)
    config = repo_path(config)
    root = tempfile.mkdtemp(prefix="bench_offline_")
    try:
        records = write_images(root, num_images + 1, seed)
        results = {s: run_child(s, records, os.path.join(root, s), device, config, seed) for s in stages}
    finally:
        shutil.rmtree(root, ignore_errors=True)
    rows = []
    for s, r in results.items():
        ok = r["complete"]
        quality = "stage complete (manifest written)" if ok else "stage did not complete"
        rows.append(ratio_row(f"{TITLES[s]}: time per image", "s", None, r["seconds"] / r["images"], None, quality, ok))
        rows[-1]["throughput"] = {"images_per_s": r["images"] / r["seconds"]}
        rows.append(ratio_row(f"{TITLES[s]}: process peak RSS (bound {BOUND_MIB} MiB)", "MiB", BOUND_MIB,
                              r["peak_rss"] / MIB, 1.0, quality, ok))
        if r["cuda_peak"] is not None:
            rows.append(ratio_row(f"{TITLES[s]}: CUDA peak memory", "MiB", None, r["cuda_peak"] / MIB, None, quality,
                                  ok))
    notes = [f"{TITLES[s]}: {r['images'] / r['seconds']:.3g} images/s ({r['cpu_seconds'] / r['images']:.3g} CPU-s "
             f"per image); peak RSS {r['peak_rss'] / MIB:.0f} MiB "
             f"({r['rss_after_setup'] / MIB:.0f} MiB after imports + model, {r['stage_peak_rss'] / MIB:.0f} MiB peak "
             f"during the stage); outputs {r['output_bytes'] / r['images'] / 1024:.0f} KiB per image"
             for s, r in results.items()]
    notes.append("R50 Mask2Former with random weights; stage 0 uses it in place of Detic; time rows have no "
                 "baseline or target (their rates feed the ImageNet projection in projects/PartDistillation/README.md)")
    return {
        "case": "offline_stages",
        "title": "Offline stages per image (PartDistillation stages 0, 1a, 2)",
        "params": {"images": num_images, "size": f"{HEIGHT}x{WIDTH}", "objects_per_image": 1, "config": CONFIG,
                   "weights": "random", "device": device, "seed": seed},
        "rows": rows,
        "details": results,
        "notes": notes,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config", default=CONFIG)
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--child", choices=STAGES, help=argparse.SUPPRESS)
    parser.add_argument("--records", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.records, args.out, args.device, args.config, args.seed)))
    else:
        print(json.dumps(run(args.scale, args.device, args.seed, args.config, args.stages.split(",")), indent=2))


if __name__ == "__main__":
    main()
