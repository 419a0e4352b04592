#!/usr/bin/env bash
# Creates (or reuses) the virtual environment at .venv with the pinned OpenMMLab stack and acmix_mm.
#
# Idempotent: a second run checks the environment and returns in seconds.
# Environment variables:
#   TORCH_SPEC      pip requirement for torch (default: torch==2.13.0, the CPU build; CUDA users
#                   pass e.g. "torch==2.4.1 --index-url https://download.pytorch.org/whl/cu121")
#   TRITON_SPEC     pip requirement for Triton, installed only where torch brings none (the CPU
#                   build; default: triton==3.9.0, for the interpreter tests of the kernels). A
#                   CUDA torch's own Triton is kept: replacing it would break torch.
#   ACMIX_CACHE     where the built mmcv wheel is cached (default: ~/.cache/acmix_mm)
#   PYTHON          interpreter used to create the venv (default: python3)
#   MMCV_WITH_OPS / FORCE_CUDA are passed through to the mmcv build.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
CACHE="${ACMIX_CACHE:-$HOME/.cache/acmix_mm}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
TRITON_SPEC="${TRITON_SPEC:-triton==3.9.0}"
TORCHVISION_FALLBACK=0.16.2
STAMP="$VENV/.acmix_setup_ok"
REQ_HASH="$(cat "$ROOT/requirements.txt" "$ROOT/pyproject.toml" "$0" | sha256sum | cut -c1-16)"

log() { printf '[setup] %s\n' "$*"; }
fail() { printf '[setup] ERROR: %s\n' "$*" >&2; rm -f "$STAMP"; exit 1; }
trap 'fail "set-up failed at line $LINENO; the environment is marked incomplete and the next run retries"' ERR

check_stack() {
  "$PY" - <<'PYEOF'
import torch, mmengine, mmcv, mmdet, mmseg, mmpretrain, acmix_mm
import mmpretrain.models  # needs torchvision
from mmcv.ops import RoIAlign, nms  # compiled ops must be present
assert mmcv.__version__ == '2.1.0', mmcv.__version__
print(f'[setup] ok: torch {torch.__version__}, mmengine {mmengine.__version__}, mmcv {mmcv.__version__} '
      f'(ops), mmdet {mmdet.__version__}, mmseg {mmseg.__version__}, mmpretrain {mmpretrain.__version__}')
PYEOF
}

build_kernels() {
  log "building the C++ CPU kernel of acmix_mm (cached; rebuilt when its source changes)"
  "$PY" -m acmix_mm.layers.kernels.build || fail "the C++ CPU kernel did not build; see above"
}

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$REQ_HASH" ]] && check_stack 2>/dev/null; then
  build_kernels
  exit 0
fi

if [[ ! -x "$PY" ]]; then
  log "creating virtual environment at $VENV"
  "${PYTHON:-python3}" -m venv "$VENV"
fi
PIP=("$PY" -m pip install --disable-pip-version-check -q)

if ! "$PY" -c 'import torch' 2>/dev/null; then
  log "installing $TORCH_SPEC"
  # shellcheck disable=SC2086
  "${PIP[@]}" $TORCH_SPEC
fi
if "$PY" -c 'import triton' 2>/dev/null; then
  log "keeping triton $("$PY" -c 'import triton; print(triton.__version__)') (already installed; torch depends on it where it is a CUDA build)"
else
  log "installing $TRITON_SPEC (torch brings no Triton; the kernel tests run its interpreter)"
  # shellcheck disable=SC2086
  "${PIP[@]}" $TRITON_SPEC
fi
"${PIP[@]}" 'setuptools<81' ninja wheel 'numpy>=2,<3'

TORCH_TAG="$("$PY" -c 'import torch,sys; print(torch.__version__.replace("+","_"), f"py{sys.version_info.major}{sys.version_info.minor}", sep="-")')"
if ! "$PY" -c 'import mmcv, mmcv.ops; assert mmcv.__version__ == "2.1.0"' 2>/dev/null; then
  WHEEL_DIR="$CACHE/mmcv-2.1.0-torch$TORCH_TAG"
  if ! ls "$WHEEL_DIR"/mmcv-2.1.0-*.whl >/dev/null 2>&1; then
    log "building mmcv 2.1.0 from source with its compiled ops (6 to 30 minutes on 2 cores: measured 28 on an AMD EPYC without AVX-512)"
    mkdir -p "$WHEEL_DIR"
    tmp="$(mktemp -d "$WHEEL_DIR.tmp.XXXX")"
    MMCV_WITH_OPS="${MMCV_WITH_OPS:-1}" MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
      "$PY" -m pip wheel --disable-pip-version-check --no-build-isolation --no-deps \
      --no-binary mmcv -w "$tmp" mmcv==2.1.0
    mv "$tmp"/mmcv-2.1.0-*.whl "$WHEEL_DIR"/ && rmdir "$tmp"
  else
    log "reusing cached mmcv wheel from $WHEEL_DIR"
  fi
  "${PIP[@]}" --no-deps "$WHEEL_DIR"/mmcv-2.1.0-*.whl
fi

log "installing the pinned OpenMMLab stack and acmix_mm (editable)"
"${PIP[@]}" -r "$ROOT/requirements.txt"
"${PIP[@]}" --no-build-isolation --no-deps -e "$ROOT"

# mmpretrain 1.2.0 imports torchvision when its heads are imported (for box utilities of its
# multimodal metrics only). PyPI has no torchvision whose compiled ops match the CPU torch 2.13, so
# unless a working torchvision is present (e.g. one matching a CUDA torch), the pure-Python parts
# of torchvision 0.16.2 are installed without its torch pin; nothing here uses its compiled ops.
if ! "$PY" -c 'import torchvision.ops.boxes' 2>/dev/null; then
  log "installing torchvision $TORCHVISION_FALLBACK (pure-Python parts; see tools/setup_env.sh)"
  "${PIP[@]}" --no-deps "torchvision==$TORCHVISION_FALLBACK"
fi

check_stack || fail "the stack does not import; see the error above"
build_kernels
echo "$REQ_HASH" > "$STAMP"
