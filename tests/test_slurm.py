"""SLURM submission: per-node argument construction (submitit itself is optional)."""
import pytest

from part_d2.engine.slurm import NodeTask, node_argv, submit


def test_node_argv_sets_distributed_flags_and_keeps_the_rest():
    argv = ["--config-file", "c.yaml", "--num-gpus", "1", "--dist-url=auto", "SOLVER.MAX_ITER", "10"]
    out = node_argv(argv, gpus_per_node=8, num_nodes=2, node_rank=1, master_host="n001", port=1234)
    assert out == ["--num-gpus", "8", "--num-machines", "2", "--machine-rank", "1",
                   "--dist-url", "tcp://n001:1234", "--config-file", "c.yaml", "SOLVER.MAX_ITER", "10"]


def test_requeue_adds_resume_once():
    pytest.importorskip("submitit")
    task = NodeTask("tools/train_net.py", ["--config-file", "c.yaml"], 8, 2, 1234)
    again = task.checkpoint().function.checkpoint().function
    assert again.tool_argv.count("--resume") == 1


def test_submit_without_submitit_says_how_to_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake(name, *a, **k):
        if name == "submitit":
            raise ImportError(name)
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake)
    with pytest.raises(ImportError, match="pip install submitit"):
        submit("tools/train_net.py", [], folder="x", nodes=1, gpus_per_node=1)
