#!/usr/bin/env bash
# Distributed training with torchrun: GPUs with NCCL, or CPU processes with gloo.
#   bash tools/dist_train.sh CONFIG NPROC [train.py args...]
# Several nodes: NNODES=2 NODE_RANK=0 MASTER_ADDR=host0 bash tools/dist_train.sh CONFIG 8
# (and NODE_RANK=1 on the second node).
set -euo pipefail
if [[ $# -lt 2 || "$1" == -h || "$1" == --help ]]; then
  echo "usage: bash tools/dist_train.sh CONFIG NPROC [train.py args...]" >&2
  echo "  e.g. bash tools/dist_train.sh configs/mmdet/mask-rcnn_acmix-r50_fpn_1x_coco.py 8" >&2
  exit 2
fi
exec bash "$(dirname "$0")/dist_launch.sh" train.py "$2" "$1" "${@:3}"
