#!/usr/bin/env bash
# The GPU check, on a machine with one CUDA GPU and its own PyTorch (CUDA build), transformers,
# safetensors, pandas and pyyaml: runs benchmarks/gpu_check.py with the package from this
# checkout and prints a table (saved to $OUT/gpu_check.csv when $OUT is set). About 6 minutes
# for the 7B shape. A dry run on a CPU machine: bash benchmarks/gpu_check.sh --size tiny --device cpu
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
"$PY" benchmarks/gpu_check.py "$@"
if [ -n "${OUT:-}" ] && [ -f /tmp/l2s_gpu_check/gpu_check.csv ]; then
  cp /tmp/l2s_gpu_check/gpu_check.csv "$OUT/"
fi
