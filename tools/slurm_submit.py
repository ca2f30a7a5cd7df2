#!/usr/bin/env python
"""Run a part_d2 tool on SLURM nodes through submitit (``pip install submitit``).

    python tools/slurm_submit.py --nodes 2 --gpus-per-node 8 --partition learn --folder jobs/%j \
        tools/train_net.py --config-file configs/mask2former/maskformer2_R50_part_agnostic.yaml SOLVER.IMS_PER_BATCH 32

Each node gets ``--num-gpus/--num-machines/--machine-rank/--dist-url`` for detectron2's launcher;
pre-empted or timed-out jobs are requeued with ``--resume``.
"""
import argparse

from part_d2.engine.slurm import submit


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--gpus-per-node", type=int, default=8)
    p.add_argument("--partition", default="")
    p.add_argument("--account", default="")
    p.add_argument("--constraint", default="")
    p.add_argument("--timeout-min", type=int, default=4320)
    p.add_argument("--cpus-per-task", type=int, default=10)
    p.add_argument("--mem-gb", type=int, default=0)
    p.add_argument("--port", type=int, default=29500)
    p.add_argument("--folder", default="output/slurm/%j", help="submitit logs and pickles")
    p.add_argument("tool", help="e.g. tools/train_net.py")
    p.add_argument("tool_args", nargs=argparse.REMAINDER)
    a = p.parse_args(argv)
    job = submit(a.tool, a.tool_args, folder=a.folder, nodes=a.nodes, gpus_per_node=a.gpus_per_node,
                 partition=a.partition, timeout_min=a.timeout_min, cpus_per_task=a.cpus_per_task,
                 mem_gb=a.mem_gb, port=a.port, account=a.account, constraint=a.constraint)
    print(f"submitted job {job.job_id}; logs in {a.folder}")


if __name__ == "__main__":
    main()
