#!/usr/bin/env bash
# Build the Linux one-folder bundle dist/cxr-studio/ from a clean virtual environment.
#
#   packaging/build.sh                         # fresh venv, CPU-only torch, bundle in dist/cxr-studio
#   TORCH=cuda packaging/build.sh              # PyPI's default (CUDA) torch: runs on NVIDIA GPUs, ~4 GB more
#   DIST=/tmp/dist WORK=/tmp/pyi packaging/build.sh --reuse-venv
#
# Environment: VENV (default /tmp/pkgvenv), DIST (dist/), WORK (build/pyinstaller), PYTHON (python3.11),
# TORCH=cpu|cuda, TORCH_PIP_ARGS (what to pip-install for torch instead, e.g. a local wheel path and a
# torchvision of the SAME variant: PyPI torchvision needs PyPI (CUDA) torch). --reuse-venv keeps an existing VENV (faster rebuilds; not a clean build).
# Needs: Python 3.10+ with venv, network access to the package index (or a local one).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-/tmp/pkgvenv}"
DIST="${DIST:-$REPO/dist}"
WORK="${WORK:-$REPO/build/pyinstaller}"
PYTHON="${PYTHON:-python3.11}"
TORCH="${TORCH:-cpu}"
REUSE=0
for arg in "$@"; do
  case "$arg" in
    --reuse-venv) REUSE=1 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "build.sh: unknown argument $arg (see --help)" >&2; exit 2 ;;
  esac
done

step() { printf '\n== %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }

if [[ -z "${TORCH_PIP_ARGS:-}" ]]; then
  case "$TORCH" in
    cpu)  TORCH_PIP_ARGS="torch torchvision --index-url https://download.pytorch.org/whl/cpu" ;;
    cuda) TORCH_PIP_ARGS="torch torchvision" ;;
    *) echo "build.sh: TORCH must be cpu or cuda, not '$TORCH'" >&2; exit 2 ;;
  esac
fi

if [[ $REUSE -eq 0 || ! -x "$VENV/bin/python" ]]; then
  step "clean virtual environment $VENV"
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip wheel
  step "torch: $TORCH_PIP_ARGS"
  # shellcheck disable=SC2086  # the arguments are meant to split
  "$VENV/bin/python" -m pip install --quiet --no-compile $TORCH_PIP_ARGS
  step "cxr-studio (non-editable) and PyInstaller"
  "$VENV/bin/python" -m pip install --quiet --no-compile "$REPO" pyinstaller
fi
"$VENV/bin/python" -c "import torch, PySide6, PyInstaller; print('torch', torch.__version__, '| PySide6', \
PySide6.__version__, '| PyInstaller', PyInstaller.__version__)"

step "icons"
if ! "$VENV/bin/python" "$REPO/packaging/render_icons.py" --check; then
  echo "build.sh: rendered icons are missing or stale: run packaging/render_icons.py and commit them" >&2
  exit 1
fi

step "PyInstaller -> $DIST/cxr-studio"
"$VENV/bin/python" -m PyInstaller --noconfirm --clean --log-level WARN \
  --distpath "$DIST" --workpath "$WORK" "$REPO/packaging/cxr-studio.spec"

cp "$REPO/packaging/install_desktop.sh" "$DIST/cxr-studio/"   # menu entry, icons, DICOM type

step "done"
du -sh "$DIST/cxr-studio"
echo "smoke test: $VENV/bin/python $REPO/packaging/smoke_test.py --bundle $DIST/cxr-studio"
