#!/usr/bin/env bash
# Everything issue 13 measures on a GPU, in one command (its deadline: 450 s, GPU_SUITE_LIMIT):
#
#   bash tools/analysis_tools/gpu_suite.sh [--dry-run] OUT_DIR
#
#   1. installs the wheelhouse .whl/ (tools/analysis_tools/make_gpu_wheelhouse.sh) into a site
#      folder when the OpenMMLab stack is missing (a lent machine reaches no package registry);
#   2. kernel checks and attention timings: tools/analysis_tools/gpu_check_kernels.py --out OUT_DIR;
#   3. one ACmix layer against its three projections (batch 8, 64 ch 56x56 and 512 ch 7x7) and
#      ACmix-R50 / R50, ACmix-Swin-T / Swin-T (batch 32 at 224): inference, training step and
#      peak memory, float32 and float16 autocast (benchmark_backbones.py --device cuda [--amp]);
#   4. one whole UperNet training iteration (512x512, batch 8), ACmix-Swin-T / Swin-T and
#      ACmix-R50 / R50, float32 and AMP float16, losses checked finite (benchmark_segmentor.py);
#      Mask R-CNN (800x1333, batch 2) only where mmcv's compiled ops are installed;
#   5. OUT_DIR/results.md, results.json (every record, the machine, torch and Triton versions),
#      benchmarks.png, training_iteration.png, suite.log (at most 3 more files: the kernel checks').
#
# Every step runs under its own timeout (and the suite's deadline), so one that fails or hangs
# loses only its own numbers. --dry-run runs every step on the CPU at tiny sizes (the plumbing;
# its numbers mean nothing). Environment variables:
#   PYTHON            interpreter (default: .venv/bin/python if present, else python3)
#   GPU_SUITE_LIMIT   the suite's deadline in seconds (default 450; 1800 for --dry-run, whose
#                     step timeouts are 4 times longer)
#   GPU_SUITE_STEPS   steps to run, space-separated, of: warm kernels layers backbones upernet
#                     mask_rcnn (default: all; the report is always written; warm compiles the
#                     Triton kernels of the other steps named, in parallel, before they measure)
#   GPU_SUITE_WHEELS  the wheelhouse (default: .whl in the repository root)
#   ACMIX_GPU_SITE    where the wheelhouse is installed (default /tmp/acmix_gpu_site)
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# the comment block at the top of this file
usage() {
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"
}
DRY=0
case "${1:-}" in
  -h|--help) usage; exit 0;;
  --dry-run) DRY=1; shift;;
esac
if [[ $# -ne 1 || "$1" == -* ]]; then
  echo "gpu_suite.sh: expected [--dry-run] OUT_DIR, got: ${*:-nothing}" >&2; usage >&2; exit 2
fi
OUT="$1"
mkdir -p "$OUT" || exit 2
OUT="$(cd "$OUT" && pwd)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/acmix_gpu_suite.XXXX")"
trap 'rm -rf "$WORK"' EXIT
exec > >(tee -a "$OUT/suite.log") 2>&1
export PYTHONUNBUFFERED=1
START=$SECONDS
LIMIT="${GPU_SUITE_LIMIT:-$([[ $DRY == 1 ]] && echo 1800 || echo 450)}"
SCALE=$([[ $DRY == 1 ]] && echo 4 || echo 1)  # the CPU is slower: longer step timeouts
STEPS=" ${GPU_SUITE_STEPS:-warm kernels layers backbones upernet mask_rcnn} "
if [[ -n "${PYTHON:-}" ]]; then PY="$PYTHON"
elif [[ -x "$ROOT/.venv/bin/python" ]]; then PY="$ROOT/.venv/bin/python"
else PY=python3; fi
cd "$ROOT" || exit 2
log() { printf '[gpu_suite %4ds] %s\n' "$((SECONDS - START))" "$*"; }

# --- 1. the OpenMMLab stack -------------------------------------------------------------------
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PY" -c 'import mmengine, mmcv, mmdet, mmseg, mmpretrain' 2>/dev/null; then
  SITE="${ACMIX_GPU_SITE:-/tmp/acmix_gpu_site}"
  WHEELS="${GPU_SUITE_WHEELS:-$ROOT/.whl}"
  if ! ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    log "ERROR: the OpenMMLab stack does not import and there is no wheelhouse in $WHEELS"
    log "       (build it with tools/analysis_tools/make_gpu_wheelhouse.sh and carry .whl)"
    exit 3
  fi
  log "installing the wheelhouse $WHEELS into $SITE"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" "$WHEELS"/*.whl || { log "ERROR: the wheelhouse did not install"; exit 3; }
  export PYTHONPATH="$ROOT:$SITE${PYTHONPATH#"$ROOT"}"
  if "$PY" -c 'import sys, transformers; sys.exit(int(transformers.__version__.split(".")[0]) < 5)' \
      2>/dev/null; then
    # mmpretrain 1.2.0 imports its multimodal models when transformers >= 4.28 is installed, and
    # they fail to import with transformers 5; a version-0 record in this site folder (first on
    # the path) makes mmpretrain's check skip them. transformers itself is untouched.
    mkdir -p "$SITE/transformers-0.0.0.dist-info"
    printf 'Metadata-Version: 2.1\nName: transformers\nVersion: 0.0.0\n' \
      > "$SITE/transformers-0.0.0.dist-info/METADATA"
    log "transformers >= 5 here: mmpretrain's multimodal models (which need < 5) are skipped"
  fi
  if [[ ! -e "$SITE/mmcv/_ext.py" ]] && ! "$PY" -c 'import mmcv._ext' 2>/dev/null; then
    # mmdet and mmseg import mmcv.ops at import time; see the placeholder's docstring
    cp tools/analysis_tools/mmcv_ext_placeholder.py "$SITE/mmcv/_ext.py"
    log "mmcv without compiled ops (mmcv-lite): installed a placeholder mmcv._ext whose every"
    log "function raises, so that mmdet and mmseg import; UperNet and the backbones use no mmcv op"
  fi
fi
"$PY" - <<'PYEOF' || { log "ERROR: the stack does not import (above)"; exit 3; }
import torch, mmengine, mmcv, mmdet, mmseg, mmpretrain, acmix_mm
from acmix_mm.testing.train_iteration import mmcv_ops_available
from acmix_mm.utils.device_timing import describe, environment
print('[gpu_suite] ' + describe(environment('cuda' if torch.cuda.is_available() else 'cpu')))
print(f'[gpu_suite] mmengine {mmengine.__version__}, mmcv {mmcv.__version__} (compiled ops: '
      f'{"yes" if mmcv_ops_available() else "no"}), mmdet {mmdet.__version__}, mmseg '
      f'{mmseg.__version__}, mmpretrain {mmpretrain.__version__}')
PYEOF
if [[ $DRY == 1 ]]; then
  DEV=cpu
  log "DRY RUN on the CPU, tiny sizes: checks the plumbing; the numbers mean nothing"
else
  DEV=cuda
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total \
    --format=csv,noheader | sed 's/^/[gpu_suite] /'
  "$PY" -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null \
    || { log "ERROR: no CUDA device visible to torch (use --dry-run for the CPU)"; exit 3; }
fi

# --- steps, each under a timeout ----------------------------------------------------------------
: > "$WORK/steps.tsv"
# step NAME BUDGET_SECONDS COMMAND...: runs COMMAND under min(BUDGET, time left), records status
step() {
  local name="$1" budget="$2" left rc t0=$SECONDS
  shift 2
  left=$((LIMIT - (SECONDS - START)))
  if [[ $left -lt 15 ]]; then
    log "SKIPPED $name: the suite's deadline (${LIMIT}s) is reached"
    printf '%s\tskipped (deadline)\tthe suite ran out of time (GPU_SUITE_LIMIT=%s)\n' "$name" \
      "$LIMIT" >> "$WORK/steps.tsv"; return
  fi
  budget=$((budget * SCALE))
  [[ $budget -gt $left ]] && budget=$left
  log "START $name (timeout ${budget}s): $*"
  timeout -k 10 "$budget" "$@"
  rc=$?
  if [[ $rc == 0 ]]; then status=ok; elif [[ $rc == 124 || $rc == 137 ]]; then status=timeout
  else status="failed (exit $rc)"; fi
  log "END $name: $status after $((SECONDS - t0))s"
  printf '%s\t%s\t%ss\n' "$name" "$status" "$((SECONDS - t0))" >> "$WORK/steps.tsv"
}
wants() { [[ "$STEPS" == *" $1 "* ]]; }
note() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >> "$WORK/steps.tsv"; log "$1: $2 ($3)"; }

BB=(tools/analysis_tools/benchmark_backbones.py --device "$DEV")
SEG=(tools/analysis_tools/benchmark_segmentor.py --device "$DEV")
if [[ $DRY == 1 ]]; then
  KERNEL_ARGS=(--dry-run)
  # --in-process: the path --device cuda takes, on the CPU
  LAYERS=(--cases qkv-1x1-512 acmix-layer-512 --batch 2 --repeat 1 --in-process)
  BACKBONES=(--cases acmix-r50 r50 --batch 2 --infer-size 32 --train-size 32 --repeat 1
             --in-process)
  UPERNET=(--cases upernet_acmix-swin-t --batch 2 --size 32 32 --repeat 1 --warmup 0)
  AMP_MODES=("")  # bfloat16 autocast on the CPU is slow: only the layers run it here
else
  KERNEL_ARGS=(--quick)
  LAYERS=(--cases qkv-1x1-64 acmix-layer-64 qkv-1x1-512 acmix-layer-512 --batch 8 --repeat 30)
  BACKBONES=(--cases acmix-r50 r50 acmix-swin-t swin-t --batch 32 --infer-size 224
             --train-size 224 --repeat 10)
  UPERNET=(--batch 8 --size 512 512 --repeat 3)
  AMP_MODES=("" "--amp")
fi

# A fresh machine compiles every Triton kernel variant (kernel size, stride, head width, dtype)
# on first use, several seconds each, one at a time in a process: the measuring steps found
# their time taken by compilation. The warm step runs the steps' shapes once at batch 2 (and the
# kernel checks one process per dtype), all in parallel, into Triton's on-disk cache.
if wants warm; then
  WARM="$WORK/warm"  # not $WORK itself, whose .json files the report reads as measurements
  mkdir -p "$WARM"
  : > "$WARM/jobs"
  warm_job() {  # warm_job NAME COMMAND...: one line of the jobs file, its output in NAME.log
    local name="$1"
    shift
    printf '%q ' "$@" >> "$WARM/jobs"
    printf '> %q 2>&1 || { echo "warm job %s failed:"; tail -n 5 %q; exit 1; }\n' \
      "$WARM/$name.log" "$name" "$WARM/$name.log" >> "$WARM/jobs"
  }
  if wants kernels; then
    for dtype in float32 float16 bfloat16; do
      warm_job "kernels_$dtype" "$PY" tools/analysis_tools/gpu_check_kernels.py --warm "$dtype" \
        "${KERNEL_ARGS[@]}"
    done
  fi
  for amp in "" "--amp"; do
    tag=$([[ -n $amp ]] && echo amp || echo fp32)
    wants layers && warm_job "layers_$tag" "$PY" "${BB[@]}" "${LAYERS[@]}" $amp --batch 2 \
      --repeat 1 --out "$WARM/layers_$tag"
  done
  for amp in "${AMP_MODES[@]}"; do
    tag=$([[ -n $amp ]] && echo amp || echo fp32)
    wants backbones && warm_job "backbones_$tag" "$PY" "${BB[@]}" "${BACKBONES[@]}" $amp \
      --batch 2 --repeat 1 --out "$WARM/backbones_$tag"
    wants upernet && warm_job "upernet_$tag" "$PY" "${SEG[@]}" "${UPERNET[@]}" $amp --batch 2 \
      --repeat 1 --warmup 0 --out "$WARM/upernet_$tag"
  done
  step warm 150 xargs -d '\n' -P 8 -I JOB bash -c JOB < "$WARM/jobs"
fi
if wants kernels; then
  if [[ -f tools/analysis_tools/gpu_check_kernels.py ]]; then
    step kernels 170 "$PY" tools/analysis_tools/gpu_check_kernels.py --out "$OUT" \
      "${KERNEL_ARGS[@]}"
  else
    note kernels absent "tools/analysis_tools/gpu_check_kernels.py is not in this checkout"
  fi
fi
for amp in "" "--amp"; do
  tag=$([[ -n $amp ]] && echo amp || echo fp32)
  wants layers && step "layers_$tag" 60 "$PY" "${BB[@]}" "${LAYERS[@]}" $amp \
    --out "$WORK/layers_$tag"
done
for amp in "${AMP_MODES[@]}"; do
  tag=$([[ -n $amp ]] && echo amp || echo fp32)
  wants backbones && step "backbones_$tag" 100 "$PY" "${BB[@]}" "${BACKBONES[@]}" $amp \
    --out "$WORK/backbones_$tag"
done
# AMP first: "finite losses under AMP" is the check that must not be cut by the deadline
for ((i = ${#AMP_MODES[@]} - 1; i >= 0; i--)); do
  amp="${AMP_MODES[$i]}"
  tag=$([[ -n $amp ]] && echo amp || echo fp32)
  wants upernet && step "upernet_$tag" 120 "$PY" "${SEG[@]}" "${UPERNET[@]}" $amp \
    --out "$WORK/upernet_$tag"
done
if wants mask_rcnn; then
  # as acmix_mm.testing.train_iteration.mmcv_ops_available, without importing the stack
  if "$PY" -c "import mmcv._ext as e; exit(getattr(e, 'ACMIX_MM_PLACEHOLDER', False))" 2>/dev/null
  then
    if [[ $DRY == 1 ]]; then
      note mask_rcnn skipped "dry run: Mask R-CNN needs no plumbing beyond UperNet's"
    else
      for amp in "" "--amp"; do
        tag=$([[ -n $amp ]] && echo amp || echo fp32)
        step "mask_rcnn_$tag" 120 "$PY" tools/analysis_tools/benchmark_detector.py --device cuda \
          $amp --repeat 3 --out "$WORK/mask_rcnn_$tag"
      done
    fi
  else
    note mask_rcnn "not run" "mmcv's compiled ops (RoIAlign, nms) are not installed here: mmcv \
is mmcv-lite, built without them; Mask R-CNN needs them"
  fi
fi

# --- 5. the report ------------------------------------------------------------------------------
"$PY" tools/analysis_tools/gpu_suite_report.py --work "$WORK" --out "$OUT" \
  --elapsed "$((SECONDS - START))" $([[ $DRY == 1 ]] && echo --dry-run) \
  || { log "ERROR: the report failed (above)"; exit 1; }
log "done in $((SECONDS - START))s; files in $OUT:"
ls -la "$OUT"
if grep -qE "	(failed|timeout|skipped \(deadline)" "$WORK/steps.tsv"; then
  log "some steps failed, timed out or found no time left (see results.md)"
  exit 1
fi
