#!/usr/bin/env bash
# Training on a SLURM cluster: one task per GPU, mmengine's slurm launcher.
#   GPUS=16 bash tools/slurm_train.sh PARTITION JOB_NAME CONFIG [WORK_DIR] [train.py args...]
set -euo pipefail
if [[ $# -lt 3 || "$1" == -h || "$1" == --help ]]; then
  echo "usage: GPUS=16 bash tools/slurm_train.sh PARTITION JOB_NAME CONFIG [WORK_DIR]" \
       "[train.py args...]" >&2
  exit 2
fi
if [[ ! -f "$3" ]]; then
  echo "error: CONFIG '$3' does not exist" >&2
  exit 2
fi
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
WORK_DIR=${4:-work_dirs/$JOB_NAME}
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-$( [ -x "$ROOT/.venv/bin/python" ] && echo "$ROOT/.venv/bin/python" || echo python)}"
srun -p "$PARTITION" --job-name="$JOB_NAME" --gres=gpu:"$GPUS_PER_NODE" --ntasks="$GPUS" \
  --ntasks-per-node="$GPUS_PER_NODE" --cpus-per-task="$CPUS_PER_TASK" --kill-on-bad-exit=1 \
  ${SRUN_ARGS:-} \
  "$PYTHON" -u "$ROOT/tools/train.py" "$CONFIG" --work-dir="$WORK_DIR" --launcher=slurm "${@:5}"
