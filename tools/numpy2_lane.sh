#!/usr/bin/env bash
# The numpy-2 lane: the stack GPU users get when they build detectron2 from source (its main
# branch brings numpy 2 and a current Pillow), in a second environment, then part_d2's tests.
#
#   bash tools/numpy2_lane.sh DETECTRON2_CHECKOUT [PYTEST ARGS ...]
#
# DETECTRON2_CHECKOUT: a detectron2 source tree (e.g. `git clone https://github.com/facebookresearch/detectron2`).
# Its Python package is copied into the environment without compiling its C++ part, with
# part_d2's placeholder `detectron2._C` (as tools/setup_env.sh does for v0.6); part_d2 itself is
# used from this checkout (PYTHONPATH). The environment is NUMPY2_VENV (default .venv-numpy2/ at
# the repository root); reruns reuse it. Without PYTEST ARGS it runs tests/test_numpy2_lane.py;
# give `tests/` for the full suite.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ $# -lt 1 ] || [ ! -d "$1/detectron2" ]; then
    echo "error: tools/numpy2_lane.sh: give a detectron2 source checkout (a directory holding detectron2/), got '${1:-}'" >&2
    exit 2
fi
D2_SRC="$(cd "$1" && pwd)"
shift
VENV="${NUMPY2_VENV:-$ROOT/.venv-numpy2}"
PY_BOOT="${PART_D2_PYTHON:-python3}"
log() { echo "[numpy2_lane] $*"; }

if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV with $($PY_BOOT --version 2>&1)"
    "$PY_BOOT" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip install -q --disable-pip-version-check)

if ! "$PY" -c "import numpy, PIL, torch, torchvision, pycocotools, cv2, pydensecrf.densecrf, fvcore, submitit
assert int(numpy.__version__.split('.')[0]) >= 2 and int(PIL.__version__.split('.')[0]) >= 10" >/dev/null 2>&1; then
    log "installing numpy 2, Pillow >= 10, torch and the dependencies"
    "${PIP[@]}" "numpy>=2" "pillow>=10" torch torchvision black submitit -r "$ROOT/requirements/d2-main.txt" \
        2>&1 | grep -v "^WARNING: Location" || true
    # lvis: only the reference that the LVIS-style evaluation tests compare with
    "${PIP[@]}" --no-deps lvis 2>&1 | grep -v "^WARNING: Location" || true
fi

SITE="$("$PY" -c 'import sysconfig;print(sysconfig.get_paths()["purelib"])')"
log "installing detectron2's Python package from $D2_SRC (no C++ build)"
rm -rf "$SITE/detectron2"
cp -r "$D2_SRC/detectron2" "$SITE/detectron2"
cp "$ROOT/part_d2/compat/detectron2_C_placeholder.py" "$SITE/detectron2/_C.py"
touch "$SITE/detectron2/.part_d2_placeholder"
# detectron2's model zoo configs live outside the package in a source tree
if [ -d "$D2_SRC/configs" ] && [ ! -e "$SITE/detectron2/model_zoo/configs" ]; then
    cp -r "$D2_SRC/configs" "$SITE/detectron2/model_zoo/configs"
fi

cd "$ROOT"
export PYTHONPATH="$ROOT" OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
"$PY" -c "import numpy, PIL, torch, detectron2; print('[numpy2_lane] numpy', numpy.__version__, '| Pillow', \
PIL.__version__, '| torch', torch.__version__, '| detectron2', detectron2.__version__)"
if [ $# -eq 0 ]; then
    set -- tests/test_numpy2_lane.py
fi
exec "$PY" -m pytest -p no:cacheprovider -q "$@"
