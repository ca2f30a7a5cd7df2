"""Helpers shared by the benchmark cases: timing, result rows, environment description.

A case returns ``{"case": str, "title": str, "params": dict, "rows": [row, ...], "notes": [str]}``;
each row compares one measurement of a baseline with part_d2 (:func:`speedup_row` for "higher
is better" throughputs, :func:`ratio_row` for "lower is better" times or memory).
"""
import os
import platform
import resource
import statistics
import time
from typing import Callable, Dict, Optional

import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def repo_path(path: str) -> str:
    """``path`` if it exists from the working directory, else the same path under the repository root."""
    return path if not path or os.path.isabs(path) or os.path.exists(path) else os.path.join(REPO_ROOT, path)


def sync(device: str) -> None:
    """Wait for queued GPU work so that wall-clock timings are complete."""
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def timed_once(fn: Callable, device: str = "cpu"):
    """``(result, seconds)`` of one call of ``fn()``."""
    sync(device)
    start = time.perf_counter()
    result = fn()
    sync(device)
    return result, time.perf_counter() - start


def median_time(fn: Callable, iters: int, device: str = "cpu", warmup: int = 1) -> float:
    """Median seconds of ``fn()`` over ``iters`` (>= 1) runs after ``warmup`` untimed runs."""
    for _ in range(warmup):
        fn()
    return statistics.median(timed_once(fn, device)[1] for _ in range(max(1, iters)))


def interleaved_median_times(
    fns: Dict[str, Callable], iters: int, device: str = "cpu", warmup: int = 1
) -> Dict[str, float]:
    """Median seconds of each function, timed in alternation (a, b, a, b, ...) so that a change of
    machine load during the measurement affects all of them alike."""
    timed = {name: (lambda fn=fn: timed_once(fn, device)[1]) for name, fn in fns.items()}
    return interleaved_self_timed(timed, iters, warmup)


def interleaved_self_timed(fns: Dict[str, Callable], iters: int, warmup: int = 1) -> Dict[str, float]:
    """Median seconds of functions that time themselves (each returns its own measured seconds, so
    that untimed per-call setup such as copying inputs it mutates stays out), called in alternation
    like :func:`interleaved_median_times`."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {name: [] for name in fns}
    for _ in range(max(1, iters)):
        for name, fn in fns.items():
            times[name].append(fn())
    return {name: statistics.median(t) for name, t in times.items()}


def scaled(full: int, scale: float, minimum: int = 1) -> int:
    """``round(full * scale)``, at least ``minimum``."""
    return max(minimum, int(round(full * scale)))


def speedup_row(metric: str, unit: str, baseline: float, part_d2: float, target: float,
                quality: str = "", quality_ok: bool = True, baseline_extrapolated: bool = False) -> dict:
    """Row of a throughput-like measurement given as *times* (seconds; lower is better):
    speed-up = baseline / part_d2, met when ``>= target`` and the quality check passed."""
    speedup = baseline / part_d2 if part_d2 > 0 else float("inf")
    return {"metric": metric, "unit": unit, "baseline": baseline, "part_d2": part_d2, "kind": "speedup",
            "value": speedup, "target": target, "met": bool(speedup >= target and quality_ok),
            "quality": quality, "quality_ok": bool(quality_ok), "baseline_extrapolated": baseline_extrapolated}


def ratio_row(metric: str, unit: str, baseline: Optional[float], part_d2: float, target: Optional[float],
              quality: str = "", quality_ok: bool = True, baseline_extrapolated: bool = False) -> dict:
    """Row of a cost (time, memory; lower is better): ratio = part_d2 / baseline, met when
    ``<= target`` and the quality check passed. ``baseline`` None: no comparison possible (a
    measurement reported as is; ``target`` None then)."""
    ratio = part_d2 / baseline if baseline else None
    met = None if ratio is None else bool(ratio <= target and quality_ok)
    return {"metric": metric, "unit": unit, "baseline": baseline, "part_d2": part_d2, "kind": "ratio",
            "value": ratio, "target": target, "met": met, "quality": quality, "quality_ok": bool(quality_ok),
            "baseline_extrapolated": baseline_extrapolated}


def relative_gap(ours: float, reference: float) -> float:
    """``(ours - reference) / reference``: > 0 when ours is larger (e.g. worse inertia)."""
    return (ours - reference) / reference if reference else 0.0


def environment(device: str) -> dict:
    """Versions, CPU and thread counts, the accelerator if any."""
    import numpy
    import sklearn

    env = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "numpy": numpy.__version__,
        "sklearn": sklearn.__version__,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "device": device,
    }
    if str(device).startswith("cuda") and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name()
    return env


def check_device(device: str) -> str:
    """``device`` if usable, else a clear error."""
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"--device {device} requested but torch sees no CUDA device")
    return device


def rss_status_bytes(field: str) -> int:
    """``VmRSS`` or ``VmHWM`` (peak RSS) of this process from /proc/self/status, in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def reset_peak_rss() -> None:
    """Reset the process's peak RSS to its current RSS (Linux >= 4.0), so that transient peaks of
    the imports and setup do not mask the measured step's."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def cpu_seconds() -> float:
    """User + system CPU seconds of this process so far (its threads included): with a shared,
    loaded machine, the work done, where wall time also counts the waits for a core."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
