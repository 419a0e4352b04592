#!/usr/bin/env bash
# Distributed training with torchrun: GPUs with NCCL, or CPU processes with gloo.
#   bash tools/dist_train.sh CONFIG NPROC [train.py args...]
# Several nodes: NNODES=2 NODE_RANK=0 MASTER_ADDR=host0 bash tools/dist_train.sh CONFIG 8
# (and NODE_RANK=1 on the second node).
set -euo pipefail
CONFIG=$1
NPROC=$2
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-$( [ -x "$ROOT/.venv/bin/python" ] && echo "$ROOT/.venv/bin/python" || echo python)}"
exec "$PYTHON" -m torch.distributed.run \
  --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" \
  --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${PORT:-29500}" \
  --nproc_per_node="$NPROC" \
  "$ROOT/tools/train.py" "$CONFIG" --launcher pytorch "${@:3}"
