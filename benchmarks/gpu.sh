#!/usr/bin/env bash
# GPU speed benchmark: training-step ratios (LoRSP v2, LoR-VP, ANN twin, bare backbone) and images
# per second on CUDA with AMP, ViT-B/16 from timm and EfficientNet-Lite0 (random weights) at 224 px,
# batch 64. Writes
# benchmarks/results/gpu.json and prints the table; finishes well under 6 minutes (hard limit
# GPU_BENCH_LIMIT_S, default 330 s). Refuses without CUDA; `bash benchmarks/gpu.sh --cpu-dry-run`
# checks the script on a CPU in seconds. Other arguments go to benchmarks.gpu_speed
# (e.g. --backbone resnet50 --batch 128).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PY:-.venv/bin/python}"
LIMIT="${GPU_BENCH_LIMIT_S:-330}"
if [[ ! -x "$PY" ]]; then
    echo "error: $PY not found: run 'make setup' first (or set PY=/path/to/python)" >&2
    exit 2
fi
status=0
timeout --kill-after=10 "$LIMIT" "$PY" -m benchmarks.gpu_speed "$@" || status=$?
if [[ $status -eq 124 ]]; then
    echo "error: benchmarks.gpu_speed exceeded ${LIMIT} s; lower --batch or --reps" >&2
fi
exit "$status"
