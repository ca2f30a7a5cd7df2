#!/usr/bin/env bash
# Prepare, here, the Python packages that bench/gpu_check.py needs on a lent GPU machine. Its image
# has Python 3.12 with torch, numpy, scipy, scikit-learn, scikit-image, opencv, pyyaml, tqdm,
# tabulate, cloudpickle and portalocker, but not detectron2 and its helpers, and it reaches no
# package registry.
#
#   bash bench/gpu_prepare.sh [DIR]      # DIR defaults to .gpu_site (ignored by git)
#
# DIR/site: the pure-Python packages, copied from this project's environment (the Python of
#   $PYTHON, default .venv/bin/python): detectron2 (its sources with part_d2's placeholder _C),
#   fvcore, iopath, yacs, omegaconf, hydra, antlr4, termcolor, lvis.
# DIR/wheels: CPython 3.12 x86-64 wheels of the compiled ones (their versions in
#   requirements/d2-v0.6.lock): pycocotools and faster-coco-eval from the registry; pydensecrf2,
#   which the registry has only as sources, built here with a Python 3.12 ($PYTHON312, default
#   python3.12).
#
# On the GPU machine (DIR carried with the working tree; about 15 MiB):
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu_site/wheels/*.whl \
#     && PYTHONPATH=/tmp/site:$PWD/.gpu_site/site python3 bench/gpu_check.py --output $OUT
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${1:-$ROOT/.gpu_site}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
SITE="$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
LOCK="$ROOT/requirements/d2-v0.6.lock"
mkdir -p "$DIR/site" "$DIR/wheels"
for pkg in detectron2 fvcore iopath yacs omegaconf hydra antlr4 termcolor lvis; do
    if [ ! -d "$SITE/$pkg" ]; then
        echo "error: $pkg not found in $SITE (set PYTHON to the project's environment)" >&2
        exit 1
    fi
    rm -rf "${DIR:?}/site/$pkg"
    cp -r "$SITE/$pkg" "$DIR/site/$pkg"
done
find "$DIR/site" -name __pycache__ -prune -exec rm -rf {} +
spec() { grep -iE "^$1==" "$LOCK" | cut -d' ' -f1; }
for name in pycocotools faster-coco-eval; do
    "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$DIR/wheels" "$(spec "$name")"
done
"${PYTHON312:-python3.12}" -m pip wheel -q --no-deps -w "$DIR/wheels" "$(spec pydensecrf2)"
du -sh "$DIR"
