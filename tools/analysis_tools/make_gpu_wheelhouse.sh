#!/usr/bin/env bash
# Builds the wheelhouse that tools/analysis_tools/gpu_suite.sh installs on a GPU machine that
# reaches no package registry (Python 3.12, x86-64, a CUDA torch with its own Triton, no
# OpenMMLab there).
#
#   bash tools/analysis_tools/make_gpu_wheelhouse.sh [DIR]      # DIR defaults to .whl/ (ignored)
#
# It holds the OpenMMLab packages and those of their needs that such a machine lacks (torch,
# torchvision, numpy, scipy, matplotlib, opencv, pillow, rich, pyyaml, regex, tqdm, six, zipp,
# einops, click and markdown are expected there), and mmcv 2.1.0 built here WITHOUT its compiled
# ops (MMCV_WITH_OPS=0: a pure-Python wheel, named mmcv-lite by mmcv's own setup.py; building the
# ops for a CUDA torch takes far longer than a lent machine's time). The suite says which steps
# need the ops.
# Environment variables:
#   PYTHON              interpreter that downloads and builds (default: .venv/bin/python; it needs
#                       pip, setuptools and wheel, and torch for mmcv's sdist metadata)
#   GPU_PYTHON_VERSION  the target machine's Python (default: 3.12)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DIR="${1:-$ROOT/.whl}"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
PYVER="${GPU_PYTHON_VERSION:-3.12}"
ABI="cp${PYVER/./}"

log() { printf '[wheelhouse] %s\n' "$*"; }
die() { printf '[wheelhouse] ERROR: %s\n' "$*" >&2; exit 1; }

case "${1:-}" in -h|--help)
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0;; esac
[[ $# -le 1 ]] || die "usage: make_gpu_wheelhouse.sh [DIR] (got $# arguments: $*)"
[[ "${1:-}" != -* ]] || die "unknown option '$1' (usage: make_gpu_wheelhouse.sh [DIR])"
[[ -x "$PY" ]] || die "no interpreter at '$PY': run 'make setup' first or set PYTHON"

# Pure-Python packages (any Python) and compiled ones for the target's CPython. Each package's
# Requires-Dist was checked against what the GPU image holds; only the missing ones are here.
PURE=(
  mmengine==0.10.7 mmdet==3.3.0 mmsegmentation==1.2.2 mmpretrain==1.2.0
  addict==2.4.0 yapf==0.43.0 platformdirs==4.14.8 termcolor==3.3.0   # mmengine
  terminaltables==3.1.10                                              # mmdet
  prettytable==3.18.0                                                 # mmseg
  importlib-metadata==8.7.0 mat4py==0.6.0 model-index==0.1.11        # mmpretrain
  ordered-set==4.1.0                                                  # model-index
  ftfy==6.3.1                                                         # mmseg's CLIP tokenizer
  setuptools==80.9.0            # mmengine's get_config needs pkg_resources, gone in setuptools 81
)
COMPILED=(
  pycocotools==2.0.11 shapely==2.2.0                                  # mmdet
  wcwidth==0.9.4                                                      # prettytable, ftfy
)
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64
           manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64)

mkdir -p "$DIR"
rm -f "$DIR"/*.whl
PIP=("$PY" -m pip --disable-pip-version-check)
log "downloading ${#PURE[@]} pure-Python and ${#COMPILED[@]} compiled wheels for CPython $PYVER" \
  "into $DIR"
"${PIP[@]}" download -q --no-deps --only-binary=:all: --python-version "$PYVER" \
  --implementation cp -d "$DIR" "${PURE[@]}"
"${PIP[@]}" download -q --no-deps --only-binary=:all: --python-version "$PYVER" \
  --implementation cp --abi "$ABI" --abi abi3 --abi none "${PLATFORMS[@]/#/--platform=}" \
  -d "$DIR" "${COMPILED[@]}"

log "building mmcv 2.1.0 without its compiled ops (MMCV_WITH_OPS=0)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# The sdist's metadata is read with the ops switched on (its name is mmcv then), the wheel built
# with them off (mmcv's setup.py names that build mmcv-lite; it installs the same `mmcv` package).
MMCV_WITH_OPS=1 "${PIP[@]}" download -q --no-deps --no-binary=:all: --no-build-isolation \
  -d "$tmp" mmcv==2.1.0
MMCV_WITH_OPS=0 "${PIP[@]}" wheel -q --no-deps --no-build-isolation -w "$DIR" \
  "$tmp"/mmcv-2.1.0.tar.gz
wheel="$(ls "$DIR"/mmcv*-2.1.0-*.whl)"
[[ "$wheel" == *-py*-none-any.whl ]] || die "mmcv built as $wheel, not a pure-Python wheel"
if "$PY" -m zipfile -l "$wheel" | grep -E '\.(so|pyd)\b'; then
  die "$wheel holds compiled files (listed above)"
fi

count="$(ls "$DIR"/*.whl | wc -l)"
size="$(du -sm "$DIR" | cut -f1)"
[[ "$size" -lt 30 ]] || die "$DIR is ${size} MB, over the 30 MB budget"
log "ok: $count wheels, ${size} MB in $DIR (no compiled mmcv ops)"
