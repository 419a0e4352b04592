#!/usr/bin/env bash
# Distributed testing with torchrun: GPUs with NCCL, or CPU processes with gloo.
#   bash tools/dist_test.sh CONFIG CHECKPOINT NPROC [test.py args...]
# Several nodes: as tools/dist_train.sh (NNODES, NODE_RANK, MASTER_ADDR, PORT).
set -euo pipefail
if [[ $# -lt 3 || "$1" == -h || "$1" == --help ]]; then
  echo "usage: bash tools/dist_test.sh CONFIG CHECKPOINT NPROC [test.py args...]" >&2
  exit 2
fi
exec bash "$(dirname "$0")/dist_launch.sh" test.py "$3" "$1" "$2" "${@:4}"
