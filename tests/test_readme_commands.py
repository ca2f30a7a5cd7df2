"""Every shell command of the READMEs runs, at tiny scale (see ``readme_commands_map.py``).

``python tests/readme_commands.py`` lists the commands found per README and how each is checked.
"""
import fnmatch
import os
import re
import shlex
import subprocess
import sys

import pytest
import yaml
from readme_commands import READMES, ROOT, Command, all_commands
from readme_commands_map import FAKE_WEIGHTS, PARSE_ONLY, SUBSTITUTIONS, TINY_CONFIGS

COMMANDS = all_commands()
LINKED = ("tools", "configs", "projects", "bench", "part_d2", "tests")
TIMEOUT = 900


def parse_only_reason(cmd: Command):
    reasons = [r for key, r in PARSE_ONLY.items() if key in cmd.text]
    return reasons[0] if reasons else None


def tiny_overrides(config: str):
    return next(o for pattern, o in TINY_CONFIGS if fnmatch.fnmatch(config, pattern))


def _nested(flat):
    out = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def write_tiny_config(ws: str, config: str) -> str:
    """``tiny/<config>`` in the workspace: ``_BASE_`` the real config, plus its tiny overrides."""
    path = os.path.join(ws, "tiny", config)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    overrides = tiny_overrides(config)
    for value in overrides.values():  # a tiny config naming another one (PIPELINE.NEXT_CONFIG)
        if isinstance(value, str) and value.startswith("tiny/"):
            write_tiny_config(ws, value[len("tiny/"):])
    data = {"_BASE_": os.path.join(ROOT, config), **_nested(overrides)}
    with open(path, "w") as f:
        yaml.safe_dump(data, f)
    return os.path.join("tiny", config)


def rewrite(cmd: Command, ws: str) -> str:
    text = cmd.text
    for pattern, repl, _why in SUBSTITUTIONS:
        text = re.sub(pattern, repl, text)
    text = text.replace("bash tools/setup_env.sh", f"bash {shlex.quote(os.path.join(ROOT, 'tools', 'setup_env.sh'))}")
    return re.sub(r"(--config-file|SEGMENTER\.OBJECT_CONFIG) (\S+\.yaml)",
                  lambda m: f"{m.group(1)} {write_tiny_config(ws, m.group(2))}", text)


# ----------------------------------------------------------------------------- workspaces
def _link(src, dst):
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    if not os.path.lexists(dst):
        os.symlink(src, dst)


def _write_images(json_file: str, image_root: str):
    """Random images of the sizes a prepared part json names (the fixtures carry no pixels)."""
    import json

    import numpy as np
    from PIL import Image

    rng = np.random.RandomState(0)
    for img in json.load(open(json_file))["images"]:
        path = os.path.join(image_root, img["file_name"])
        if not os.path.exists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            Image.fromarray(rng.randint(0, 255, (img["height"], img["width"], 3), dtype=np.uint8)).save(
                path, format="JPEG" if path.lower().endswith((".jpeg", ".jpg")) else "PNG")


def _raw_fixtures(ws: str):
    from fixtures_raw import (
        write_cityscapes_parts,
        write_imagenet,
        write_partimagenet_release,
        write_partimagenet_seg_release,
        write_pascal_part_release,
        write_pinpp_release,
    )

    data = os.path.join(ws, "datasets")
    write_partimagenet_release(os.path.join(ws, "raw"))
    write_partimagenet_seg_release(os.path.join(ws, "raw", "PartImageNet_Seg"))
    write_pinpp_release(os.path.join(ws, "raw", "PartImageNetPP"))
    write_pascal_part_release(data)
    write_cityscapes_parts(data)
    write_imagenet(data)
    import json

    import numpy as np
    import pycocotools.mask as mask_util

    mask = np.zeros((7, 5), np.uint8, order="F")
    mask[1:5, 1:4] = 1
    rle = mask_util.encode(mask)
    with open(os.path.join(ws, "masks.json"), "w") as f:
        json.dump({"n01443537/n01443537_3.JPEG": [{"size": [7, 5], "counts": rle["counts"].decode()}]}, f)


def _prepared_datasets(ws: str):
    """Real datasets prepared from the fixtures, with images, for the method READMEs."""
    from part_d2.data.datasets.partimagenet import prepare_partimagenet
    from part_d2.data.datasets.pascal_part import prepare_pascal_part

    _raw_fixtures(ws)
    data = os.path.join(ws, "datasets")
    for split, path in prepare_partimagenet(os.path.join(ws, "raw", "PartImageNet_OOD.zip"), data).items():
        _write_images(path, os.path.join(data, "partimagenet", "images"))
    prepare_pascal_part(data)


def _fake_weights(ws: str):
    import pickle

    import torch

    from part_d2.engine.setup import load_config
    from part_d2.engine.trainer import PartTrainer

    for path, config in FAKE_WEIGHTS.items():
        cfg = load_config(os.path.join(ws, write_tiny_config(ws, config)), [])
        model = PartTrainer.build_model(cfg)
        out = os.path.join(ws, path)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        if path.endswith(".pth"):  # a detectron2 training checkpoint (PartDistillation's released models)
            torch.save({"model": model.state_dict()}, out)
            continue
        with open(out, "wb") as f:
            pickle.dump({"model": {k: v.numpy() for k, v in model.state_dict().items()},
                         "__author__": "part_d2 tests (random tiny weights in the official layout)"}, f)


SETUP = {
    "README.md": lambda ws: None,
    "datasets/README.md": _raw_fixtures,
    "projects/OPS/README.md": _prepared_datasets,
    "projects/PartDistillation/README.md": lambda ws: (_prepared_datasets(ws), _fake_weights(ws)),
    "docs/ARCHITECTURE.md": lambda ws: None,
    "docs/RELIABILITY.md": lambda ws: None,
    "bench/report_fce_evaluator.md": lambda ws: None,
    "bench/report_mask2former.md": lambda ws: None,
    "bench/report_offline_stages.md": lambda ws: None,
}


# session scope: one workspace per README for the whole run, whichever worker runs its commands
@pytest.fixture(scope="session")
def workspaces(tmp_path_factory):
    cache = {}

    def get(readme):
        if readme not in cache:
            ws = str(tmp_path_factory.mktemp(readme.replace("/", "_").replace(".", "_")))
            for name in LINKED:
                _link(os.path.join(ROOT, name), os.path.join(ws, name))
            for f in os.listdir(os.path.join(ROOT, "datasets")):
                if f.endswith(".py"):
                    _link(os.path.join(ROOT, "datasets", f), os.path.join(ws, "datasets", f))
            _link(sys.prefix, os.path.join(ws, ".venv"))
            old = os.environ.get("DETECTRON2_DATASETS")
            os.environ["DETECTRON2_DATASETS"] = os.path.join(ws, "datasets")
            try:
                SETUP[readme](ws)
            finally:
                if old is None:
                    os.environ.pop("DETECTRON2_DATASETS")
                else:
                    os.environ["DETECTRON2_DATASETS"] = old
            cache[readme] = ws
        return cache[readme]

    return get


def _env(ws):
    env = dict(os.environ, DETECTRON2_DATASETS=os.path.join(ws, "datasets"), OMP_NUM_THREADS="1",
               CUDA_VISIBLE_DEVICES="", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return env


# ----------------------------------------------------------------------------- parse checks
def parse_check(cmd: Command):
    """Without running: the script exists, its parser knows every --flag, config keys exist."""
    words = shlex.split(cmd.text)
    for segment in re.split(r"&&|\|\||;|\|", cmd.text):  # a script's flags are those of its own command
        seg_words = shlex.split(segment)
        for script in (w for w in seg_words if w.endswith(".sh")):
            text = open(os.path.join(ROOT, script)).read()
            for flag in (w for w in seg_words if w.startswith("--")):
                assert f'"{flag}"' in text, f"{cmd.id}: {script} does not handle {flag}"
    scripts = [w for w in words if w.endswith(".py")]
    for script in scripts:
        assert os.path.exists(os.path.join(ROOT, script)), f"{cmd.id}: no such script {script}"
        help_text = subprocess.run([sys.executable, os.path.join(ROOT, script), "--help"], capture_output=True,
                                   text=True, cwd=ROOT, env=_env(ROOT), timeout=300).stdout
        for flag in (w for w in words if w.startswith("--") and w != "--help"):
            assert flag in help_text, f"{cmd.id}: {script} has no option {flag}"
    keys = [w for w in words if re.fullmatch(r"[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+", w)]
    if keys:
        from part_d2.engine.setup import load_config

        cfg = load_config("", [])
        for key in keys:
            node = cfg
            for part in key.split("."):
                assert part in node, f"{cmd.id}: unknown config key {key}"
                node = node[part]


# ----------------------------------------------------------------------------- the tests
def test_every_readme_has_its_commands_found():
    counts = {r: sum(c.readme == r for c in COMMANDS) for r in READMES}
    assert all(counts.values()), counts
    assert len({c.id + c.text for c in COMMANDS}) == len(COMMANDS)


def run_readme_command(cmd: Command, workspaces):
    if parse_only_reason(cmd):
        parse_check(cmd)
        return
    ws = workspaces(cmd.readme)
    text = rewrite(cmd, ws)
    proc = subprocess.run(["bash", "-c", "set -eo pipefail; " + text], cwd=ws, env=_env(ws), capture_output=True,
                          text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, (
        f"{cmd.id} failed (exit {proc.returncode})\ncommand as run: {text}\n--- stderr (end)\n{proc.stderr[-4000:]}"
        f"\n--- stdout (end)\n{proc.stdout[-2000:]}"
    )
    assert "Traceback" not in proc.stderr, proc.stderr[-4000:]


def _readme_tests(readme: str):
    """A test class holding one README's commands, in README order.

    One README's commands share a workspace and run in order (later ones resume or read what
    earlier ones wrote). As a class they are one unit of `pytest -n 2 --dist loadscope`, which sends
    a class's tests to one worker, together.
    """
    mine = [c for c in COMMANDS if c.readme == readme]

    class ReadmeCommands:
        @pytest.mark.parametrize("cmd", mine, ids=[c.id for c in mine])
        def test_command(self, cmd, workspaces):
            run_readme_command(cmd, workspaces)

    ReadmeCommands.__name__ = ReadmeCommands.__qualname__ = "TestReadme_" + re.sub(r"\W", "_", readme)
    return ReadmeCommands


for _readme in READMES:
    _cls = _readme_tests(_readme)
    globals()[_cls.__name__] = _cls
