#!/usr/bin/env bash
# torchrun around one of tools/*.py with --launcher pytorch; used by dist_train.sh / dist_test.sh.
#   bash tools/dist_launch.sh SCRIPT NPROC [script args...]
# NNODES, NODE_RANK, MASTER_ADDR and PORT select a multi-node run.
set -euo pipefail
usage() { echo "usage: bash tools/dist_launch.sh SCRIPT NPROC [script args...]" >&2; exit 2; }
[[ $# -ge 2 && "$1" != -h && "$1" != --help ]] || usage
SCRIPT=$1
NPROC=$2
shift 2
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
if ! [[ "$NPROC" =~ ^[1-9][0-9]*$ ]]; then
  echo "error: NPROC (processes per node) must be a positive integer, got '$NPROC'" >&2
  usage
fi
if [[ ! -f "$ROOT/tools/$SCRIPT" ]]; then
  echo "error: SCRIPT '$SCRIPT' is not a file under tools/" >&2
  usage
fi
if [[ $# -lt 1 || ! -f "$1" ]]; then
  echo "error: CONFIG '${1:-}' does not exist" >&2
  exit 2
fi
PYTHON="${PYTHON:-$( [ -x "$ROOT/.venv/bin/python" ] && echo "$ROOT/.venv/bin/python" || echo python)}"
exec "$PYTHON" -m torch.distributed.run \
  --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" \
  --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${PORT:-29500}" \
  --nproc_per_node="$NPROC" \
  "$ROOT/tools/$SCRIPT" "$@" --launcher pytorch
