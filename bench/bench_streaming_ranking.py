"""PartDistillation stage 2 at ImageNet-21K scale: streaming per-class k-means in bounded memory.

Workload (synthetic, seeded): 10,000 object classes, 10M part-query features of 256 dimensions
(the proposal model's query width, ``MODEL.MASK_FORMER.HIDDEN_DIM``), each drawn around one of 8
random unit modes of its class (per-dimension noise 0.05), classes uniform at random, stored as
float16 ``.npy`` shards of 100,000 features plus an int32 ``.npy`` of their classes (5.1 GB of
features at full scale). k = 8, k-means++ with 10 restarts, at most 300 iterations (the
``PART_DISTILLATION.RANKING`` defaults).

- **part_d2 streaming**: :func:`part_d2.modeling.part_ranking.cluster_part_modes_streaming` over
  the memory-mapped shards with ranges of ``BUCKET_MB`` = 512 MiB (the ``RANKING.BUCKET_MB``
  default), in a fresh process whose peak resident set (``VmHWM``, imports included) is measured.
- **in memory**: :func:`part_d2.modeling.part_ranking.cluster_part_modes` on every feature at
  once, run only on the 10x smaller workload (1M features) where it fits; at 10M it would need
  the 10 GB float32 array plus its float32 copy (computed, not run).

Rows: the streaming run's peak RSS at 10M against the stated bound (2 GiB); its peak at 10M
against its peak at 1M (bounded regardless of N: ratio <= 1.25); its time against the in-memory
clustering's at 1M (overhead of the disk passes: ratio <= 1.5). Quality: at 1M the streaming
centroids equal the in-memory ones to 1e-4 and the counts are identical. ``--scale`` shrinks
features and classes proportionally. The shards and range files live under a temporary folder
(``workdir``) that is removed at the end.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from common import check_device, cpu_seconds, ratio_row, rss_status_bytes, scaled

from part_d2.modeling.part_ranking import cluster_part_modes, cluster_part_modes_streaming

K = 8
DIM = 256
N_INIT = 10
MAX_ITER = 300
SHARD = 100_000
BUCKET_MB = 512
BOUND_MIB = 2048
MIB = 2.0**20


def write_shards(folder: str, num_features: int, num_classes: int, seed: int) -> int:
    """Seeded float16 feature shards ``f-*.npy`` and int32 class shards ``c-*.npy`` in ``folder``;
    returns the number of shards."""
    os.makedirs(folder, exist_ok=True)
    modes = np.random.default_rng(seed).standard_normal((num_classes, K, DIM), dtype=np.float32)
    modes /= np.linalg.norm(modes, axis=2, keepdims=True)
    shards = (num_features + SHARD - 1) // SHARD
    for s in range(shards):
        rng = np.random.default_rng([seed, s])
        n = min(SHARD, num_features - s * SHARD)
        cls = rng.integers(num_classes, size=n)
        x = modes[cls, rng.integers(K, size=n)] + 0.05 * rng.standard_normal((n, DIM), dtype=np.float32)
        np.save(os.path.join(folder, f"f-{s:05d}.npy"), x.astype(np.float16))
        np.save(os.path.join(folder, f"c-{s:05d}.npy"), cls.astype(np.int32))
    return shards


def shard_chunks(folder: str):
    """``() -> iterator of (memory-mapped float16 features, classes)`` of the shards in ``folder``."""
    names = sorted(f for f in os.listdir(folder) if f.startswith("f-"))

    def chunks():
        for name in names:
            yield (np.load(os.path.join(folder, name), mmap_mode="r"),
                   np.load(os.path.join(folder, "c-" + name[2:])))

    return chunks


def child(mode: str, folder: str, num_classes: int, seed: int, result: str, device: str = "cpu") -> dict:
    """One clustering ("stream" or "memory") in this fresh process; saves the centroids and counts to
    ``result`` (.npz) and returns seconds and memory."""
    names = [f"c{i}" for i in range(num_classes)]
    chunks = shard_chunks(folder)
    start_rss = rss_status_bytes("VmRSS")
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    start, cpu = time.perf_counter(), cpu_seconds()
    if mode == "stream":
        out = cluster_part_modes_streaming(chunks, names, K, os.path.join(folder, "buckets"), N_INIT, MAX_ITER,
                                           seed, device=device, budget_bytes=BUCKET_MB * 2**20)
    else:
        feats, classes = zip(*[(np.asarray(f), c) for f, c in chunks()])
        out = cluster_part_modes(np.concatenate(feats), np.concatenate(classes), names, K, N_INIT, MAX_ITER, seed,
                                 device=device)
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    np.savez(result, centroids=out.centroids, counts=out.counts)
    return {"mode": mode, "seconds": seconds, "cpu_seconds": cpu, "peak_rss": rss_status_bytes("VmHWM"),
            "rss_after_imports": start_rss,
            "cuda_peak": torch.cuda.max_memory_allocated() if device.startswith("cuda") else None}


def run_child(mode: str, folder: str, num_classes: int, seed: int, result: str, device: str) -> dict:
    """:func:`child` in a fresh Python process (its peak RSS is its own)."""
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p))
    cmd = [sys.executable, os.path.abspath(__file__), "--child", mode, "--folder", folder, "--classes",
           str(num_classes), "--seed", str(seed), "--result", result, "--device", device]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} clustering of {folder} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(scale: float = 1.0, device: str = "cpu", seed: int = 0, workdir: str = "", fresh_processes: bool = True
        ) -> dict:
    """Generate the shards, run the three clusterings, compare. Returns a case result dict.

    ``fresh_processes`` False: the clusterings run in this process (a plumbing check: the peak RSS
    figures are then this process's)."""
    check_device(device)
    big_n, classes = scaled(10_000_000, scale, 1000), scaled(10_000, scale, 2)
    small_n = max(classes, big_n // 10)
    root = tempfile.mkdtemp(prefix="bench_streaming_", dir=workdir or None)
    try:
        start = time.perf_counter()
        write_shards(os.path.join(root, "small"), small_n, classes, seed)
        write_shards(os.path.join(root, "big"), big_n, classes, seed)
        gen_s = time.perf_counter() - start
        disk = sum(os.path.getsize(os.path.join(root, "big", f)) for f in os.listdir(os.path.join(root, "big")))
        res = {m: os.path.join(root, f"{m}.npz") for m in ("small_stream", "small_memory", "big_stream")}
        measure = run_child if fresh_processes else child
        small_stream = measure("stream", os.path.join(root, "small"), classes, seed, res["small_stream"], device)
        small_memory = measure("memory", os.path.join(root, "small"), classes, seed, res["small_memory"], device)
        big = measure("stream", os.path.join(root, "big"), classes, seed, res["big_stream"], device)
        a, b = np.load(res["small_stream"]), np.load(res["small_memory"])
        diff = float(np.abs(a["centroids"] - b["centroids"]).max())
        same_counts = bool((a["counts"] == b["counts"]).all())
        big_counts = np.load(res["big_stream"])["counts"]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    quality = (f"at {small_n} features: streaming vs in-memory centroids max |diff| {diff:.2e} (limit 1e-4), "
               f"counts {'identical' if same_counts else 'DIFFER'}")
    ok = diff <= 1e-4 and same_counts and int(big_counts.sum()) == big_n
    rows = [
        ratio_row(f"streaming peak RSS, {big_n} x {DIM}-d float16 features, {classes} classes (bound {BOUND_MIB} MiB)",
                  "MiB", BOUND_MIB, big["peak_rss"] / MIB, 1.0, quality, ok),
        ratio_row(f"streaming peak RSS at {big_n} vs at {small_n} features", "MiB", small_stream["peak_rss"] / MIB,
                  big["peak_rss"] / MIB, 1.25, quality, ok),
        ratio_row(f"streaming vs in-memory time at {small_n} features", "s", small_memory["seconds"],
                  small_stream["seconds"], 1.5, quality, ok),
    ]
    in_memory_need = 2 * big_n * DIM * 4 / MIB
    return {
        "case": "streaming_ranking",
        "title": "Streaming part ranking at 10M features (PartDistillation stage 2)",
        "params": {"features": big_n, "small_features": small_n, "classes": classes, "dim": DIM, "k": K,
                   "n_init": N_INIT, "max_iter": MAX_ITER, "shard": SHARD, "bucket_mb": BUCKET_MB,
                   "device": device, "seed": seed},
        "rows": rows,
        "details": {"small_stream": small_stream, "small_memory": small_memory, "big_stream": big,
                    "generation_s": gen_s, "feature_shards_bytes": disk, "centroid_max_diff": diff,
                    "features_per_s": big_n / big["seconds"], "in_memory_need_mib": in_memory_need},
        "notes": [
            f"streaming at {big_n} features: {big['seconds']:.0f} s ({big_n / big['seconds']:.3g} features/s; "
            f"{big['cpu_seconds']:.0f} CPU-s), "
            f"peak RSS {big['peak_rss'] / MIB:.0f} MiB of which {big['rss_after_imports'] / MIB:.0f} MiB after the "
            f"imports; the in-memory clustering would hold at least {in_memory_need:.0f} MiB (the float32 features "
            "and cluster_part_modes' float32 copy; computed, not run)",
            f"shards: {disk / 1e9:.2f} GB of float16 features + int32 classes, written in {gen_s:.0f} s (not timed); "
            "the range files take as much again while the ranking runs",
        ],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default="", help="folder of the temporary shards (default: the system's)")
    parser.add_argument("--child", choices=("stream", "memory"), help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--classes", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.folder, args.classes, args.seed, args.result, args.device)))
    else:
        print(json.dumps(run(args.scale, args.device, args.seed, args.workdir), indent=2))


if __name__ == "__main__":
    main()
