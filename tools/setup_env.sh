#!/usr/bin/env bash
# Create or reuse the project environment `.venv/` at the repository root and install
# everything part_d2 needs from the package registries. Safe to rerun: each step is skipped
# when what it installs is already importable.
#
#   bash tools/setup_env.sh            # CPU / CI machines
#   PART_D2_PYTHON=python3.12 bash tools/setup_env.sh
#
# detectron2: an already installed detectron2 (e.g. built from source for GPUs, see README)
# is used as is. Otherwise the registry package `pb1-detectron2==0.6` (the Python sources of
# upstream detectron2 v0.6, without its C++ sources) is unpacked into the environment with a
# placeholder `detectron2._C`; part_d2 never needs detectron2's compiled operators.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY_BOOT="${PART_D2_PYTHON:-python3}"
log() { echo "[setup_env] $*"; }

if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV with $($PY_BOOT --version 2>&1)"
    "$PY_BOOT" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip install -q --disable-pip-version-check)

have() { "$PY" -c "import $1" >/dev/null 2>&1; }

# pip < 24.1: later versions refuse to read the metadata of the pb1-detectron2 sdist (it
# declares a direct-URL extra), which `pip download` below needs.
"${PIP[@]}" "pip>=23,<24.1" "setuptools<81" wheel 2>&1 | grep -v "^WARNING: Location" || true

# torch + torchvision: a matching pair of the registry's standard wheels. Never exactly
# torch==2.13.0: a local CPU-only 2.13.0 wheel would win and torchvision's ops fail on it.
if ! "$PY" -c "import torch, torchvision; torchvision.ops.nms" >/dev/null 2>&1; then
    log "installing torch + torchvision"
    "${PIP[@]}" "torch>=2.6,!=2.13.0,<2.13" "torchvision>=0.21,<0.28" 2>&1 | grep -v "^WARNING: Location" || true
fi

D2_FROM_REGISTRY=0
if ! have detectron2 || [ -f "$("$PY" -c 'import sysconfig;print(sysconfig.get_paths()["purelib"])')/detectron2/.part_d2_placeholder" ]; then
    D2_FROM_REGISTRY=1
fi

COMMON=(fvcore pycocotools scikit-learn scikit-image opencv-python-headless lvis tqdm pytest
        pydensecrf2 matplotlib termcolor yacs tabulate cloudpickle tensorboard "omegaconf>=2.1"
        "hydra-core>=1.1" pyyaml shapely)
if [ "$D2_FROM_REGISTRY" = 1 ]; then
    # detectron2 v0.6 uses np.int (removed in numpy 1.24) and Image.LINEAR (removed in Pillow 10).
    COMMON+=("numpy<1.24" "pillow<10" "iopath>=0.1.7,<0.1.10" "fvcore>=0.1.5,<0.1.6")
fi
log "installing dependencies"
"${PIP[@]}" "${COMMON[@]}" 2>&1 | grep -v "^WARNING: Location" || true

if [ "$D2_FROM_REGISTRY" = 1 ] && ! have detectron2; then
    log "installing detectron2 v0.6 Python sources from the registry (pb1-detectron2==0.6)"
    TMP="$(mktemp -d)"
    trap 'rm -rf "$TMP"' EXIT
    # The sdist's setup.py imports torch, hence --no-build-isolation; only the archive is used.
    "$PY" -m pip download -q --disable-pip-version-check --no-deps --no-build-isolation \
        -d "$TMP" "pb1-detectron2==0.6" 2>&1 | grep -v "^WARNING: Location" || true
    tar -xzf "$TMP"/pb1-detectron2-0.6.tar.gz -C "$TMP"
    SITE="$("$PY" -c 'import sysconfig;print(sysconfig.get_paths()["purelib"])')"
    rm -rf "$SITE/detectron2"
    cp -r "$TMP/pb1-detectron2-0.6/detectron2" "$SITE/detectron2"
    cp "$ROOT/part_d2/compat/detectron2_C_placeholder.py" "$SITE/detectron2/_C.py"
    touch "$SITE/detectron2/.part_d2_placeholder"
fi

# Checked from / so that the current directory does not shadow the installed package.
if [ "$(cd / && "$PY" -c 'import part_d2,os;print(os.path.dirname(os.path.dirname(part_d2.__file__)))' 2>/dev/null)" != "$ROOT" ]; then
    log "installing part_d2 (editable)"
    "${PIP[@]}" --no-deps --no-build-isolation -e "$ROOT" 2>&1 | grep -v "^WARNING: Location" || true
fi

cd / && "$PY" -c "import torch, torchvision, detectron2, part_d2, pydensecrf.densecrf; \
print('[setup_env] ready: torch', torch.__version__, '| torchvision', torchvision.__version__, \
'| detectron2', detectron2.__version__, '| part_d2', part_d2.__version__)"
