#!/usr/bin/env bash
# The GPU checks on a CUDA device, each with its own time cap:
# 1. acquisition (5 minutes): the paper's round, 2,000 samples scored by the fast exact and
#    batch-wise B=100 engines, then the authors' loop, the reference, fast exact and
#    batch-wise engines on 500 samples for the ratios to the loop; plain inference in both;
#    SAM and ASAM; ResNet-18 at 32x32, float32. Writes table.md and results.json under
#    work_dirs/bench_acquisition/gpu_<time>/{round,loops}/;
# 2. detection (4 minutes): box-sum SAAL scoring per image over batched inference for SSD300
#    (the paper's detector) and the tiny RetinaNet and Faster R-CNN, with the reference and
#    the batched exact engine, and a training iteration of each (work_dirs/bench_detection/);
# 3. segmentation (4 minutes): the paper's DeepLab-v2 at 640x1280 trained through mmengine's
#    Runner for 300 iterations (RIPU's recipe, LC/NL terms on), then one RI-SAAL selection at
#    the 1024x2048 label resolution over 8 generated target images: it/s, selection s/image,
#    peak GPU memory (work_dirs/bench_seg_training/gpu_<time>/).
#
#   benchmarks/gpu_check.sh                       # all three
#   PARTS=segmentation benchmarks/gpu_check.sh    # some of them (comma-separated)
#   benchmarks/gpu_check.sh --pool 500            # options for bench_acquisition.py
#
# Exit codes: 0 done, 2 no CUDA device, 124 a time cap was hit (rerun that part smaller).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
PARTS=${PARTS:-acquisition,detection,segmentation}

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu_check: torch sees no CUDA device (torch.cuda.is_available() is False); nothing was run" >&2
    exit 2
fi
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,memory.used,utilization.gpu --format=csv
fi
STAMP=$(date +%Y%m%d_%H%M%S)

if [[ ",$PARTS," == *",acquisition,"* ]]; then
    OUT=work_dirs/bench_acquisition/gpu_$STAMP
    # The round's seconds are 2000 / samples/s (the paper's Table 2: 49.6 s per-sample, 8.0 s
    # batch-wise). The two per-sample loops (authors, reference) would take about that long
    # each per perturbation, so they are timed on a quarter of the pool, in a table of their
    # own (each run trains its own model by the same recipe, so compare methods within a
    # table). Both caps together stay under 5 minutes, process start-ups included.
    timeout 110 "$PY" benchmarks/bench_acquisition.py --device cuda --pool 2000 --chunk 128 \
        --warmup 32 --methods fast,batchwise100 --out "$OUT/round" "$@"
    timeout 180 "$PY" benchmarks/bench_acquisition.py --device cuda --pool 500 --chunk 128 \
        --warmup 32 --out "$OUT/loops" "$@"
    echo "gpu_check: tables in $OUT/round/table.md (2,000 samples) and $OUT/loops/table.md"
fi

if [[ ",$PARTS," == *",detection,"* ]]; then
    DET_OUT=work_dirs/bench_detection/gpu_$STAMP
    mkdir -p "$DET_OUT"
    timeout 240 "$PY" benchmarks/bench_detection_scoring.py --device cuda --batch 16 \
        --images 32 --repeats 1 --boxes 10 --train-iters 20 \
        --engines ReferenceEngine FastExactEngine \
        --configs configs/det/ssd_voc_saal.py configs/det/retinanet_tiny_voc_demo.py \
        configs/det/faster_rcnn_tiny_voc_demo.py configs/det/fcos_tiny_voc_demo.py \
        configs/det/atss_tiny_voc_demo.py configs/det/gfl_tiny_voc_demo.py | tee "$DET_OUT/table.md"
    echo "gpu_check: detection table in $DET_OUT/table.md"
fi

if [[ ",$PARTS," == *",segmentation,"* ]]; then
    SEG_OUT=work_dirs/bench_seg_training/gpu_$STAMP
    timeout 240 "$PY" benchmarks/bench_seg_training.py --arch deeplab_v2 --size 640x1280 \
        --units 1024x2048 --iters 300 --after 10 --images 8 --sources 8 --workers 4 \
        --out "$SEG_OUT"
    echo "gpu_check: segmentation results in $SEG_OUT/results.json"
fi
