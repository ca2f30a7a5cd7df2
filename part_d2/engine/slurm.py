"""Multi-node jobs on SLURM through ``submitit`` (optional dependency: ``pip install submitit``).

One SLURM task per node runs a part_d2 tool (``tools/train_net.py`` or any offline stage that takes
detectron2's ``--num-gpus/--num-machines/--machine-rank/--dist-url``); each task spawns one process
per GPU through detectron2's launcher. Pre-empted or timed-out training jobs are requeued with
``--resume``.
"""
import os
import runpy
import sys
from typing import List, Sequence

DIST_FLAGS = ("--num-gpus", "--num-machines", "--machine-rank", "--dist-url")


def node_argv(tool_argv: Sequence[str], gpus_per_node: int, num_nodes: int, node_rank: int,
              master_host: str, port: int) -> List[str]:
    """The tool's arguments for one node: user flags first, distributed flags, then KEY VALUE opts.

    Distributed flags given by the user are replaced. Everything after the first argument that
    does not start with ``-`` and follows a flag's value is kept in order.
    """
    argv, skip = [], False
    for a in tool_argv:
        if skip:
            skip = False
            continue
        if a in DIST_FLAGS:
            skip = True
            continue
        if any(a.startswith(f + "=") for f in DIST_FLAGS):
            continue
        argv.append(a)
    dist = ["--num-gpus", str(gpus_per_node), "--num-machines", str(num_nodes),
            "--machine-rank", str(node_rank), "--dist-url", f"tcp://{master_host}:{port}"]
    return dist + argv


class NodeTask:
    """The callable submitit runs on every node (picklable; checkpointable for requeueing)."""

    def __init__(self, tool: str, tool_argv: Sequence[str], gpus_per_node: int, num_nodes: int, port: int):
        self.tool, self.tool_argv = tool, list(tool_argv)
        self.gpus_per_node, self.num_nodes, self.port = gpus_per_node, num_nodes, port

    def __call__(self):
        import submitit

        env = submitit.JobEnvironment()
        argv = node_argv(self.tool_argv, self.gpus_per_node, self.num_nodes, env.node, env.hostnames[0], self.port)
        sys.argv = [self.tool] + argv
        runpy.run_path(self.tool, run_name="__main__")

    def checkpoint(self):
        import submitit

        argv = self.tool_argv if "--resume" in self.tool_argv else ["--resume"] + self.tool_argv
        return submitit.helpers.DelayedSubmission(
            NodeTask(self.tool, argv, self.gpus_per_node, self.num_nodes, self.port)
        )


def submit(tool: str, tool_argv: Sequence[str], *, folder: str, nodes: int, gpus_per_node: int,
           partition: str = "", timeout_min: int = 4320, cpus_per_task: int = 10, mem_gb: int = 0,
           port: int = 29500, account: str = "", constraint: str = "", name: str = "part_d2"):
    """Submit ``tool`` with ``tool_argv`` as a SLURM job of ``nodes`` nodes; returns the job."""
    try:
        import submitit
    except ImportError:
        raise ImportError("SLURM submission needs submitit: pip install submitit") from None
    if not os.path.isfile(tool):
        raise FileNotFoundError(f"{tool}: tool script not found")
    executor = submitit.AutoExecutor(folder=folder, slurm_max_num_timeout=30)
    params = dict(nodes=nodes, gpus_per_node=gpus_per_node, tasks_per_node=1, cpus_per_task=cpus_per_task,
                  timeout_min=timeout_min, name=name)
    if mem_gb:
        params["mem_gb"] = mem_gb
    slurm = {k: v for k, v in (("slurm_partition", partition), ("slurm_account", account),
                               ("slurm_constraint", constraint)) if v}
    executor.update_parameters(**params, **slurm)
    return executor.submit(NodeTask(os.path.abspath(tool), tool_argv, gpus_per_node, nodes, port))
