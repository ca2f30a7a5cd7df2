"""The GPU check: part_d2's bench suite on CUDA and the methods' ``--scale gpu`` runs, in one script
sized for one H200 within 10 minutes, recording absolute times.

On a lent GPU machine, whose image has torch but not detectron2 and its helpers: prepare them here
with ``bash bench/gpu_prepare.sh`` (into ``.gpu_site``, ~10 MiB), carry ``.gpu_site`` and run::

    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu_site/wheels/*.whl \
      && PYTHONPATH=/tmp/site:$PWD/.gpu_site/site python3 bench/gpu_check.py --output $OUT --work /tmp/gpu_work

Here::

    python bench/gpu_check.py --dry-run                       # the plan: steps, commands, time limits
    python bench/gpu_check.py --tiny --output output/gpu_tiny # the same plumbing on CPU, tiny workloads

Steps, each a subprocess with its own time limit (the limits add up to 540 s; a step past its limit
is killed and recorded as timed out, the next one runs):

1. ``env``: torch, CUDA device, versions;
2. ``bench``: ``bench/run_all.py --device cuda`` at full scale on every case whose baseline needs no
   extra package (stage 1a/2 k-means, Mask2Former, SS loss, evaluator, stage-3 classifier memory,
   offline stages 0/1a/2 per image);
3. ``streaming``: the streaming ranking case at scale 0.2 (2M features, 2,000 classes) on CUDA;
4. ``ops``: ``projects/OPS/run_miniature.py --scale gpu --tables 1 --seeds 0 --iters-scale 0.025``;
5. ``pd``: ``projects/PartDistillation/run_synthetic.py --scale gpu --seeds 0 --iters-scale 0.1``.

The OPS and PartDistillation steps are cut (``--iters-scale``) to fit the budget: they check that
the GPU recipes run and measure their speed (iterations per second in their logs); their metrics
are not the full-scale ones; each generates the synthetic dataset it needs on first use (~17 CPU-s
for the main one here). The limits are estimates made without a GPU (the first lent GPU measures
the steps' real times). Whole check: at most 540 s plus the package installation, inside one
10-minute device command. Run outputs (checkpoints) go to ``--work``; ``--output`` receives at
most 8 files: ``summary.md`` and ``summary.json`` (per step: command, start and end as UTC times,
seconds, exit status, the end of its log), the two bench reports, and ``logs.txt``.
"""
import argparse
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from typing import Dict, List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GPU_CASES = "pixel_grouping,part_ranking,mask2former,ss_loss,evaluator,classifier_memory,offline_stages"
TAIL = 3000


def plan(work: str, tiny: bool) -> List[Dict]:
    """The steps: name, argv (run from the repository root), time limit in seconds, files to keep.

    ``tiny``: the same commands on CPU with tiny workloads (a plumbing check)."""
    py = sys.executable
    device = "cpu" if tiny else "cuda"
    env_code = ("import json, platform, torch; print(json.dumps({'python': platform.python_version(), "
                "'torch': torch.__version__, 'cuda': torch.version.cuda, 'available': torch.cuda.is_available(), "
                "'device': torch.cuda.get_device_name() if torch.cuda.is_available() else None}))")
    bench = ["--scale", "0.01", "--cases", "evaluator", "--threads", "1"] if tiny else ["--cases", GPU_CASES]
    stream_scale = "0.0005" if tiny else "0.2"
    ops = ["--scale", "smoke", "--iters-scale", "1"] if tiny else ["--scale", "gpu", "--iters-scale", "0.025"]
    pd = ["--scale", "smoke"] if tiny else ["--scale", "gpu", "--iters-scale", "0.1"]
    return [
        {"name": "env", "argv": [py, "-c", env_code], "limit": 20, "keep": {}},
        {"name": "bench", "argv": [py, "bench/run_all.py", "--device", device, "--output", f"{work}/bench"] + bench,
         "limit": 220, "keep": {"bench_report.md": f"{work}/bench/report.md",
                                "bench_report.json": f"{work}/bench/report.json"}},
        {"name": "streaming", "argv": [py, "bench/run_all.py", "--device", device, "--cases", "streaming_ranking",
                                       "--scale", stream_scale, "--output", f"{work}/streaming"],
         "limit": 80, "keep": {"streaming_report.md": f"{work}/streaming/report.md"}},
        {"name": "ops", "argv": [py, "projects/OPS/run_miniature.py", "--tables", "1", "--seeds", "0", "--output",
                                 f"{work}/ops"] + ops, "limit": 100, "keep": {}},
        {"name": "pd", "argv": [py, "projects/PartDistillation/run_synthetic.py", "--seeds", "0", "--output",
                                f"{work}/pd"] + pd, "limit": 120, "keep": {}},
    ]


def utc(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).isoformat(timespec="seconds")


def run_step(step: Dict, log_path: str, env: Dict[str, str]) -> Dict:
    """Run one step with its time limit (the whole process group is killed past it)."""
    start = time.time()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(step["argv"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
        try:
            rc, timed_out = proc.wait(timeout=step["limit"]), False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            rc, timed_out = proc.wait(), True
    end = time.time()
    with open(log_path, "rb") as f:
        tail = f.read()[-TAIL:].decode("utf-8", "replace")
    return {"name": step["name"], "command": " ".join(step["argv"]), "limit_s": step["limit"], "start": utc(start),
            "end": utc(end), "seconds": round(end - start, 1), "rc": rc, "timed_out": timed_out, "log_tail": tail}


def summary_markdown(results: List[Dict], header: Dict) -> str:
    lines = ["# GPU check", "", f"{header['mode']}; started {header['start']}, ended {header['end']} "
             f"({header['seconds']:.0f} s).", "", "| step | start (UTC) | end (UTC) | seconds | limit | status |",
             "|---|---|---|---|---|---|"]
    for r in results:
        status = "timed out" if r["timed_out"] else ("ok" if r["rc"] == 0 else f"exit {r['rc']}")
        lines.append(f"| {r['name']} | {r['start']} | {r['end']} | {r['seconds']} | {r['limit_s']} | {status} |")
    for r in results:
        lines += ["", f"## {r['name']}", "", f"`{r['command']}`", "", "```", r["log_tail"].rstrip(), "```"]
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="output/gpu_check", help="folder of the (at most 8) result files")
    parser.add_argument("--work", default="", help="folder of the run outputs (default: OUTPUT/../gpu_check_work)")
    parser.add_argument("--tiny", action="store_true", help="the same steps on CPU with tiny workloads")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    parser.add_argument("--steps", default="", help="comma-separated subset of the steps (default: all)")
    args = parser.parse_args(argv)
    output = os.path.abspath(args.output)
    work = os.path.abspath(args.work or os.path.join(os.path.dirname(output), "gpu_check_work"))
    steps = plan(work, args.tiny)
    if args.steps:
        names = args.steps.split(",")
        unknown = sorted(set(names) - {s["name"] for s in steps})
        if unknown:
            parser.error(f"--steps: unknown {unknown}; expected a subset of {[s['name'] for s in steps]}")
        steps = [s for s in steps if s["name"] in names]
    if args.dry_run:
        for s in steps:
            print(f"{s['name']} (<= {s['limit']} s): {' '.join(s['argv'])}")
        print(f"total limit {sum(s['limit'] for s in steps)} s")
        return 0
    os.makedirs(output, exist_ok=True)
    os.makedirs(work, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
    start, results = time.time(), []
    for step in steps:
        print(f"[gpu_check] {utc(time.time())} {step['name']} (limit {step['limit']} s)", flush=True)
        results.append(run_step(step, os.path.join(work, f"{step['name']}.log"), env))
        print(f"[gpu_check] {step['name']}: rc {results[-1]['rc']}, {results[-1]['seconds']} s", flush=True)
        for name, path in step["keep"].items():
            if os.path.isfile(path):
                shutil.copyfile(path, os.path.join(output, name))
    end = time.time()
    header = {"mode": "tiny CPU plumbing check" if args.tiny else "GPU", "start": utc(start), "end": utc(end),
              "seconds": end - start}
    with open(os.path.join(output, "summary.json"), "w") as f:
        json.dump(dict(header, steps=results), f, indent=2)
    with open(os.path.join(output, "summary.md"), "w") as f:
        f.write(summary_markdown(results, header))
    with open(os.path.join(output, "logs.txt"), "w") as f:
        for step in steps:
            with open(os.path.join(work, f"{step['name']}.log"), errors="replace") as log:
                f.write(f"===== {step['name']}\n" + log.read()[-200_000:] + "\n")
    return int(any(r["rc"] != 0 or r["timed_out"] for r in results))


if __name__ == "__main__":
    sys.exit(main())
