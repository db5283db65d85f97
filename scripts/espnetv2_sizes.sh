#!/usr/bin/env bash
# The ESPNetv2 input-size table of docs/segmenter.md from ../shared alone (about 1 h on the 2-core
# VM): each of the authors' three Cityscapes files exported at each size (`metafusion espnet`),
# scored on CamVid val + test (`metafusion miou`, 2 threads), then every export timed against the
# shipped ESPNet in one interleaved run (`benchmarks/bench_networks.py`).
# Usage: scripts/espnetv2_sizes.sh [OUT_DIR]   (default out/espnetv2_sizes; needs torch)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
OUT=${1:-out/espnetv2_sizes}
WEIGHTS=../shared/pretrained/espnetv2
CAMVID=../shared/data/camvid
SIZES=${SIZES:-1024x512 768x384 640x320 512x256 384x192 640x480 512x384}
MF=(nice -n 10 python -m metafusion_ros.tools.cli)
declare -A FILE=([s2]=espnetv2_s_2.0_city_1024x512.pth [s1p5]=espnetv2_s_1.5_city_512x256.pth
                 [s1]=espnetv2_s_1.0_city_1024x512.pth)
declare -A WHICH=([s2]=cityscapes-v2-s2.0 [s1p5]=cityscapes-v2-s1.5 [s1]=cityscapes-v2-s1.0)
mkdir -p "$OUT"
models=(--model models/cityscapes_espnet.onnx)
for net in s2 s1p5 s1; do
  for size in $SIZES; do
    model=$OUT/${net}_$size.onnx
    [ -f "$model" ] || "${MF[@]}" espnet "${WHICH[$net]}" --weights "$WEIGHTS/${FILE[$net]}" \
      --size "$size" --output "$model" --check-image "$CAMVID/test/0001TP_008550.png"
    [ -f "${model%.onnx}_miou.json" ] || "${MF[@]}" miou --dataset camvid --root "$CAMVID" \
      --split val,test --threads 2 --model "$model" --out "${model%.onnx}_miou.json"
    models+=(--model "$model")
  done
done
nice -n 10 python benchmarks/bench_networks.py --runs 15 "${models[@]}" | tee "$OUT/networks.jsonl"
