#!/usr/bin/env bash
# The ESPNetv2 INT8 rows of docs/segmenter.md: the default and the fastest chain's networks
# quantized as the shipped ESPNet INT8 was (`metafusion quantize`, defaults, calibrated on CamVid
# train drive 0006R0), scored on CamVid val + test (`metafusion miou`), then timed with their fp32
# files and the shipped ESPNet fp32/INT8 pair in one interleaved run
# (`benchmarks/bench_networks.py`, 2 threads) and profiled operator by operator
# (`benchmarks/bench_ops.py`). About 6 min on the 2-core VM.
# Usage: scripts/int8_networks.sh [OUT_DIR]   (default out/int8)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
OUT=${1:-out/int8}
CAMVID=../shared/data/camvid
MF=(python -m metafusion_ros.tools.cli)
mkdir -p "$OUT"
models=(--model models/cityscapes_espnet.onnx --model models/cityscapes_espnet.int8.onnx)
for name in cityscapes_espnetv2_s2_512x256 cityscapes_espnetv2_s1p5; do
  int8=$OUT/$name.int8.onnx
  [ -f "$int8" ] || "${MF[@]}" quantize --model "models/$name.onnx" --dataset camvid \
    --root "$CAMVID" --split train --drives 0006R0 --out "$int8"
  [ -f "${int8%.onnx}_miou.json" ] || "${MF[@]}" miou --dataset camvid --root "$CAMVID" \
    --split val,test --threads 2 --model "$int8" --out "${int8%.onnx}_miou.json"
  models+=(--model "models/$name.onnx" --model "$int8")
done
python benchmarks/bench_networks.py --runs 15 "${models[@]}" | tee "$OUT/networks.jsonl"
# Where each file's time goes, operator by operator, and Amdahl's bound on INT8 (bench_ops).
python benchmarks/bench_ops.py "${models[@]}" | tee "$OUT/ops.jsonl"
