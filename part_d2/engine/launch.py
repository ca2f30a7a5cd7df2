"""detectron2's ``launch``, extended to several CPU processes (gloo) on detectron2 v0.6.

detectron2 main already falls back to gloo when no GPU is present; v0.6 asserts CUDA for more than
one process. On GPUs, and on detectron2 versions with CPU support, this defers to detectron2.
"""
import contextlib
import logging
import os
import sys
from datetime import timedelta
from typing import Callable, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.engine import launch as d2_launch
from detectron2.utils import comm

from part_d2.checkpoint import CheckpointMismatchError
from part_d2.engine.config_checks import check_job_args
from part_d2.utils.errors import ConfigError, ImageReadError, PartDatasetError, clean_error_message
from part_d2.utils.output_lock import OutputLockedError, output_lock
from part_d2.utils.provenance import ProvenanceError
from part_d2.utils.safe_checkpoint import CheckpointError

logger = logging.getLogger(__name__)
DEFAULT_TIMEOUT = timedelta(minutes=30)


def _d2_supports_cpu() -> bool:
    """detectron2 versions that create local process groups themselves also support gloo."""
    return hasattr(comm, "create_local_process_group")


def launch(main_func, num_gpus_per_machine, num_machines=1, machine_rank=0, dist_url=None, args=(),
           timeout=DEFAULT_TIMEOUT):
    """Run ``main_func(*args)`` in ``num_gpus_per_machine`` processes per machine.

    Same arguments as :func:`detectron2.engine.launch`; without CUDA, "gpus" are CPU processes.
    """
    world_size = num_machines * num_gpus_per_machine
    if world_size <= 1 or torch.cuda.is_available() or _d2_supports_cpu():
        return d2_launch(main_func, num_gpus_per_machine, num_machines, machine_rank, dist_url, args, timeout=timeout)
    if dist_url == "auto":
        if num_machines != 1:
            raise ValueError("--dist-url auto works on one machine only; give tcp://HOST:PORT")
        from detectron2.engine.launch import _find_free_port

        dist_url = f"tcp://127.0.0.1:{_find_free_port()}"
    mp.spawn(
        _cpu_worker,
        nprocs=num_gpus_per_machine,
        args=(main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, args, timeout),
        daemon=False,
    )


def _cpu_worker(local_rank, main_func, world_size, procs_per_machine, machine_rank, dist_url, args, timeout):
    global_rank = machine_rank * procs_per_machine + local_rank
    dist.init_process_group(backend="gloo", init_method=dist_url, world_size=world_size, rank=global_rank,
                            timeout=timeout)
    for i in range(world_size // procs_per_machine):
        group = dist.new_group(list(range(i * procs_per_machine, (i + 1) * procs_per_machine)))
        if i == machine_rank:
            comm._LOCAL_PROCESS_GROUP = group
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // procs_per_machine))
    comm.synchronize()
    main_func(*args)


def user_error_types(extra: Sequence[type] = ()) -> Tuple[type, ...]:
    """The exception types that mean a bad input, printed as one line ``error: <message>``."""
    return (ConfigError, PartDatasetError, ImageReadError, CheckpointError, CheckpointMismatchError,
            ProvenanceError, OutputLockedError, ImportError) + tuple(extra)


def exit_with_error(message: str) -> None:
    """Print ``error: <message>`` (one line) on stderr and exit with status 1."""
    message = " ".join(clean_error_message(message).split())
    if logger.hasHandlers():  # into the run's log; without handlers Python would print it a second time
        logger.error(message)
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


@contextlib.contextmanager
def exit_on_user_error(extra: Sequence[type] = ()):
    """Within the block, a bad input (:func:`user_error_types`) ends the program with one line
    ``error: <message>`` and exit status 1 (for tools that do not use :func:`launch_tool`)."""
    try:
        yield
    except user_error_types(extra) as e:
        exit_with_error(str(e))


def add_lock_argument(parser) -> None:
    """``--wait-for-lock``: wait for another process that writes the same output folder."""
    parser.add_argument("--wait-for-lock", action="store_true",
                        help="wait when another process writes the same output folder (default: exit with an error)")


def launch_tool(main: Callable, args, user_errors: Sequence[type] = (), output: Optional[Callable] = None,
                lock_name: str = ".lock"):
    """Run a tool's ``main(args)`` with :func:`launch` (detectron2's ``--num-gpus``,
    ``--num-machines``, ``--machine-rank``, ``--dist-url`` in ``args``).

    A bad input (config, dataset, image, checkpoint, provenance, lock or import error, or one of
    ``user_errors``), in this process or in a spawned one, ends the program with one line
    ``error: <message>`` on stderr and exit status 1 instead of a traceback.

    Args:
        output: ``args -> folder`` that this tool writes; the launching process of machine 0 holds
            the lock ``folder/lock_name`` (:func:`part_d2.utils.output_lock.output_lock`) while the
            tool runs, so that a second process on the same folder exits (or waits with
            ``--wait-for-lock``).
    """
    errors = user_error_types(user_errors)
    try:
        _check_launch_args(args)
        with contextlib.ExitStack() as stack:
            folder = output(args) if output is not None else ""
            if folder and getattr(args, "machine_rank", 0) == 0:
                stack.enter_context(output_lock(folder, lock_name, wait=getattr(args, "wait_for_lock", False)))
            return launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
                          dist_url=args.dist_url, args=(args,))
    except errors as e:
        message = str(e)
    except mp.ProcessRaisedException as e:
        last = str(e).strip().splitlines()[-1] if str(e).strip() else ""
        if not any(last.split(":", 1)[0].rsplit(".", 1)[-1] == err.__name__ for err in errors):
            raise
        message = last
    exit_with_error(message)


def _check_launch_args(args) -> None:

    if args.num_gpus < 1 or args.num_machines < 1 or not 0 <= args.machine_rank < args.num_machines:
        raise ConfigError(f"--num-gpus {args.num_gpus} --num-machines {args.num_machines} --machine-rank "
                          f"{args.machine_rank}: need >= 1 process on >= 1 machine and a rank in [0, machines)")
    if hasattr(args, "num_jobs"):
        check_job_args(args.num_jobs, args.job_id)
