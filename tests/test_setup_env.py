"""tools/setup_env.sh stops with a one-line error when a pip command fails (e.g. a full disk)."""
import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quiet_pip_filters_warnings_and_stops_on_failure():
    with open(os.path.join(ROOT, "tools", "setup_env.sh")) as f:
        text = f.read()
    start = text.index("quiet_pip() {")
    func = text[start: text.index("\n}\n", start) + 3]
    script = ("set -euo pipefail\n" + func
              + "quiet_pip bash -c 'echo \"WARNING: Location x\"; echo kept'\n"
              + "quiet_pip bash -c 'echo \"WARNING: Location x\"'\n"  # nothing left after the filter: fine
              + "quiet_pip bash -c 'echo \"ERROR: No space left on device\"; exit 3'\n"
              + "echo not-reached\n")
    r = subprocess.run(["bash", "-c", script], capture_output=True, text=True)
    assert r.returncode == 1
    assert "kept" in r.stdout and "No space left" in r.stdout
    assert "WARNING: Location" not in r.stdout and "not-reached" not in r.stdout
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: setup_env.sh: this pip command failed")
