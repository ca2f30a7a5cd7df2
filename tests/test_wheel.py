"""A normal (non-editable) install is complete: the built wheel holds every module and data file
of ``part_d2`` and imports from a scratch location with no source tree on ``sys.path``."""
import os
import subprocess
import sys
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tracked(prefix):
    cmd = ["git", "ls-files", "--cached", "--others", "--exclude-standard", prefix]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
    return [f for f in out.stdout.split() if os.path.exists(os.path.join(ROOT, f))]


def test_wheel_holds_and_imports_every_module(tmp_path):
    src = tmp_path / "src"
    for f in _tracked("part_d2") + ["setup.py", "README.md"]:
        os.makedirs(src / os.path.dirname(f), exist_ok=True)
        with open(os.path.join(ROOT, f), "rb") as a, open(src / f, "wb") as b:
            b.write(a.read())
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "-w", str(wheels), str(src)], check=True, capture_output=True)
    (wheel,) = wheels.glob("part_d2-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    packaged = (".py", ".json", ".html", ".js", ".css")  # modules, metadata, the web page's files
    missing = [f for f in _tracked("part_d2") if f.endswith(packaged) and f not in names]
    assert not missing, f"files missing from the wheel: {missing}"

    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile",
                    "--disable-pip-version-check", "--target", str(site), str(wheel)], check=True,
                   capture_output=True)
    modules = sorted(f[:-3].replace("/", ".").removesuffix(".__init__") for f in _tracked("part_d2")
                     if f.endswith(".py") and "detectron2_C_placeholder" not in f)
    script = (
        "import importlib, os, sys\n"
        f"site = {str(site)!r}\n"
        "# an editable install of a source tree (easy-install.pth) must not be what is imported\n"
        "sys.path[:] = [p for p in sys.path if not os.path.exists(os.path.join(p or '.', 'setup.py'))]\n"
        f"for name in {modules!r}:\n"
        "    m = importlib.import_module(name)\n"
        "    assert m.__file__.startswith(site), (name, m.__file__)\n"
        "from part_d2.data.synthetic.library import load_library\n"
        "assert load_library().part_kinds  # package data: the synthetic part library json\n"
        "print('imported', len(sys.modules))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(site)
    proc = subprocess.run([sys.executable, "-c", script], cwd=str(tmp_path), env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "imported" in proc.stdout
