#!/usr/bin/env bash
# Distributed training with torchrun: GPUs with NCCL, or CPU processes with gloo.
#   bash tools/dist_train.sh CONFIG NPROC [train.py args...]
# Several nodes: NNODES=2 NODE_RANK=0 MASTER_ADDR=host0 bash tools/dist_train.sh CONFIG 8
# (and NODE_RANK=1 on the second node).
set -euo pipefail
exec bash "$(dirname "$0")/dist_launch.sh" train.py "$2" "$1" "${@:3}"
