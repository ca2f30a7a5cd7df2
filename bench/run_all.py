"""Run part_d2's performance suite and write ``report.md`` and ``report.json``.

Every case times a baseline and part_d2 side by side in this run on identical seeded inputs and
reports their ratio (see each ``bench/bench_*.py`` module for its workload and baseline)::

    OMP_NUM_THREADS=2 python bench/run_all.py                  # full scale, writes bench/report.*
    python bench/run_all.py --scale 0.05 --output /tmp/bench   # quick check
    python bench/run_all.py --device cuda --output bench/cuda  # same suite on a GPU
    python bench/run_all.py --cases evaluator,part_ranking --reference /path/to/Mask2Former

``--scale`` shrinks every workload proportionally (instances, classes, images; the Mask2Former
image sides by its square root). A failing case is reported with its error and makes the exit
status 1; the other cases still run.
"""
import argparse
import importlib
import json
import logging
import os
import sys
import time
import traceback
from typing import Dict, List, Optional

import torch
from common import check_device, environment, repo_path

logger = logging.getLogger(__name__)

CASES = {
    "pixel_grouping": "bench_pixel_grouping",
    "part_ranking": "bench_part_ranking",
    "mask2former": "bench_mask2former",
    "linear": "bench_linear",
    "ss_loss": "bench_ss_loss",
    "evaluator": "bench_evaluator",
    "lvis_evaluator": "bench_lvis_evaluator",
    "fce_evaluator": "bench_fce_evaluator",
    "classifier_memory": "bench_classifier_memory",
    "streaming_ranking": "bench_streaming_ranking",
    "offline_stages": "bench_offline_stages",
}


def case_kwargs(name: str, args) -> Dict:
    """Runner options that a case takes besides scale, device and seed."""
    if name == "pixel_grouping":
        return {"channels": args.pg_channels}
    if name == "mask2former":
        return {"config": repo_path(args.m2f_config), "reference": args.reference, "detectron2": args.detectron2}
    if name == "ss_loss":
        return {"config": repo_path(args.ss_config), "size": args.ss_size}
    if name == "offline_stages":
        return {"config": repo_path(args.offline_config)}
    return {}


def run_case(name: str, args) -> Dict:
    """One case's result dict, or ``{"case", "error"}`` when it raised."""
    module = importlib.import_module(CASES[name])
    start = time.perf_counter()
    try:
        result = module.run(scale=args.scale, device=args.device, seed=args.seed, **case_kwargs(name, args))
    except Exception:
        logger.exception(f"case {name} failed")
        return {"case": name, "title": name, "error": traceback.format_exc(), "wall_s": time.perf_counter() - start}
    result["wall_s"] = time.perf_counter() - start
    return result


def fmt(value: Optional[float]) -> str:
    if value is None:
        return "n/a"
    if value == 0 or 1e-3 <= abs(value) < 1e5:
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return f"{value:.2e}"


def with_unit(value: Optional[float], unit: str) -> str:
    return "n/a" if value is None else f"{fmt(value)} {unit}"


def row_markdown(row: Dict) -> str:
    base = with_unit(row["baseline"], row["unit"]) + (" (extrapolated)" if row.get("baseline_extrapolated") else "")
    if row["target"] is None:
        value, target = fmt(row["value"]), "n/a"
    elif row["kind"] == "speedup":
        value, target = f"{fmt(row['value'])}x", f">= {fmt(row['target'])}x"
    else:
        value, target = f"{fmt(row['value'])}", f"<= {fmt(row['target'])}"
    met = {True: "yes", False: "**no**", None: "n/a"}[row["met"]]
    quality = row["quality"] + ("" if row["quality_ok"] else " **(failed)**")
    return (f"| {row['metric']} | {base} | {with_unit(row['part_d2'], row['unit'])} | {value} | "
            f"{target} | {met} | {quality} |")


def markdown(report: Dict) -> str:
    env = report["environment"]
    lines = [
        "# part_d2 performance report",
        "",
        f"Scale {report['scale']}, device {env['device']}, seed {report['seed']}; torch {env['torch']} with "
        f"{env['torch_threads']} threads on {env['cpu_count']} CPUs ({env['processor']}); "
        f"OMP_NUM_THREADS={env['omp_num_threads']}; total {report['wall_s']:.0f} s.",
        "Each ratio is measured side by side in this run on identical seeded inputs. Speed-up = baseline time / "
        "part_d2 time; ratio = part_d2 / baseline (time or memory).",
        "",
    ]
    for case in report["cases"]:
        lines += [f"## {case['title']}", ""]
        if "error" in case:
            lines += ["**failed**:", "", "```", case["error"].rstrip(), "```", ""]
            continue
        params = ", ".join(f"{k}={v}" for k, v in case["params"].items())
        lines += [f"Parameters: {params}; wall time {case['wall_s']:.0f} s.", "",
                  "| Measurement | Baseline | part_d2 | Ratio / speed-up | Target | Met? | Quality check |",
                  "|---|---|---|---|---|---|---|"]
        lines += [row_markdown(r) for r in case["rows"]]
        lines += [""] + [f"- {note}" for note in case.get("notes", [])] + [""]
    return "\n".join(lines)


def parse_args(argv: Optional[List[str]] = None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="workload scale (1 = the specified sizes)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i] for part_d2 (baselines stay on CPU)")
    parser.add_argument("--output", default=os.path.dirname(os.path.abspath(__file__)),
                        help="directory of report.md and report.json (default: bench/)")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {list(CASES)}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--reference", default="", help="official Mask2Former checkout for the mask2former case")
    parser.add_argument("--detectron2", default="", help="detectron2 checkout (its PointRend project) for --reference")
    parser.add_argument("--m2f-config", default="configs/mask2former/maskformer2_R50_part_agnostic.yaml")
    parser.add_argument("--ss-config", default="configs/synthetic/mask2former_R_tiny_agnostic.yaml")
    parser.add_argument("--ss-size", type=int, default=128, help="image side of the ss_loss case")
    parser.add_argument("--pg-channels", type=int, default=1152, help="feature channels of pixel_grouping")
    parser.add_argument("--offline-config", default="configs/mask2former/maskformer2_R50_part_agnostic.yaml",
                        help="model of the offline_stages case (random weights)")
    args = parser.parse_args(argv)
    names = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = sorted(set(names) - set(CASES))
    if unknown or not names:
        parser.error(f"--cases: unknown {unknown}; expected a subset of {list(CASES)}")
    args.cases = names
    if args.scale <= 0:
        parser.error("--scale must be > 0")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    """Run the selected cases, write the reports. Returns the exit status (1 if a case failed)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_args(argv)
    check_device(args.device)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    results = []
    for name in args.cases:
        logger.info(f"running {name} at scale {args.scale} on {args.device}")
        results.append(run_case(name, args))
    report = {"scale": args.scale, "seed": args.seed, "argv": sys.argv[1:] if argv is None else list(argv),
              "environment": environment(args.device), "wall_s": time.perf_counter() - start, "cases": results}
    os.makedirs(args.output, exist_ok=True)
    with open(os.path.join(args.output, "report.json"), "w") as f:
        json.dump(report, f, indent=2)
    with open(os.path.join(args.output, "report.md"), "w") as f:
        f.write(markdown(report) + "\n")
    logger.info(f"wrote {args.output}/report.md and report.json")
    return int(any("error" in r for r in results))


if __name__ == "__main__":
    sys.exit(main())
