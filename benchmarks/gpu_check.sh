#!/usr/bin/env bash
# The acquisition benchmark on a CUDA device, capped at 5 minutes: the authors' loop, the
# reference, fast exact and batch-wise engines, plain inference; SAM and ASAM; ResNet-18 at
# 32x32, float32. Writes table.md and results.json under work_dirs/bench_acquisition/gpu_<time>/.
#
#   benchmarks/gpu_check.sh                 # defaults below
#   benchmarks/gpu_check.sh --pool 500      # any bench_acquisition.py option overrides them
#
# Exit codes: 0 done, 2 no CUDA device, 124 the 5-minute cap was hit (rerun with a smaller --pool).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu_check: torch sees no CUDA device (torch.cuda.is_available() is False); nothing was run" >&2
    exit 2
fi
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,memory.used,utilization.gpu --format=csv
fi

OUT=work_dirs/bench_acquisition/gpu_$(date +%Y%m%d_%H%M%S)
# Pool 1000 at chunk 128: about 2-3 minutes on a recent data-centre GPU, most of it the two
# per-sample loops (authors, reference) and process start-ups; 290 s leaves time to write.
timeout 290 "$PY" benchmarks/bench_acquisition.py --device cuda --pool 1000 --chunk 128 \
    --warmup 32 --out "$OUT" "$@"
echo "gpu_check: table in $OUT/table.md"
