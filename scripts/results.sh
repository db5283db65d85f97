#!/usr/bin/env bash
# `make results`: every prior, meta-classifier bundle, chain manifest, table and figure in models/
# and docs/results from the repository and ../shared alone (network training, export and
# quantization excluded: docs/segmenter.md). Two groups of chains run side by side, each on one
# core; logs and timings under $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared}
CAMVID=$SHARED/data/camvid
OUT=${RESULTS_OUT:-out/results}
CACHE=$OUT/cache
GRID='0.9 0.95 0.975 0.99 0.995 1'   # the paper's α grid: one meta classifier each
ALPHAS="0 0.5 0.8 $GRID"             # ... and the interpolation curve below it
TAU='0.5 0.3 0.7 0 1'   # 0 keeps every candidate, 1 none (reference fusion: agreeing segments only)
export OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1
mkdir -p "$OUT" docs/results

# --force: these commands rewrite the shipped files (every command refuses to without it).
mf() { echo "+ metafusion $* --force"; python -m metafusion_ros.tools.cli "$@" --force; }

fit_report() {  # NAME FIT-ARGS...: fit a bundle; what fit prints (out-of-fold) -> NAME_fit.md
  local name=$1; shift
  { echo "# Meta classifier bundle: \`metafusion fit\` output (\`make results\`)"; echo
    echo 'Folds grouped by drive; every ROC AUC / AP out-of-fold.'; echo; echo '```'
    mf fit "$@"; echo '```'; } > "docs/results/${name}_fit.md"
}

synthetic() {
  # The embedded default: seeded drives (train for the priors, val + test for the classifier).
  rm -rf "$OUT/synth"
  mf synth --out "$OUT/synth" --drives train=12,val=3,test=3 --frames 30 --size 1024x512 --seed 0
  mf priors --dataset synthetic --root "$OUT/synth" --split train --categories --smoothing 60 \
    --out models/synthetic_toy_priors.npz
  local frames=(--dataset synthetic --root "$OUT/synth" --split val,test
                --model models/synthetic_toy.onnx --priors models/synthetic_toy_priors.npz --cache "$CACHE")
  mf evaluate "${frames[@]}" --alphas $ALPHAS --tau $TAU --out docs/results --name synthetic
  fit_report synthetic "${frames[@]}" --alphas $GRID --out models/synthetic_toy_meta.json
  # The toy on real frames: what a user would get with it on a camera (its chain manifest's mIoU).
  mf miou --dataset camvid --root "$CAMVID" --split val,test --model models/synthetic_toy.onnx \
    --out docs/results/camvid_synthetic_toy_miou.json
  # The shipped bundle, fixed, on a drive of another seed that nothing was fitted on.
  rm -rf "$OUT/heldout"
  mf synth --out "$OUT/heldout" --drives test=1 --frames 30 --size 1024x512 --seed 2
  mf evaluate --dataset synthetic --root "$OUT/heldout" --split test --model models/synthetic_toy.onnx \
    --priors models/synthetic_toy_priors.npz --meta-model models/synthetic_toy_meta.json --cache "$CACHE" \
    --alphas $GRID --tau $TAU --out docs/results --name synthetic_heldout_drive
}

camvid_priors() {  # OUT [priors options...]: category priors (human = Pedestrian + Bicyclist)
  local out=$1; shift
  mf priors --dataset camvid --root "$CAMVID" --split train --categories --smoothing 60 "$@" \
    --out "$out"
}

camvid_chain() {  # NAME MODEL PRIORS SPLITS
  local name=$1 model=$2 priors=$3 splits=$4
  local frames=(--dataset camvid --root "$CAMVID" --split "$splits" --model "$model"
                --priors "$priors" --cache "$CACHE")
  mf evaluate "${frames[@]}" --alphas $ALPHAS --tau $TAU --out docs/results --name "camvid_$name"
  fit_report "camvid_$name" "${frames[@]}" --alphas $GRID --out "models/${name}_meta.json"
  mf miou --dataset camvid --root "$CAMVID" --split val,test --model "$model" \
    --out "docs/results/camvid_${name}_miou.json"
  # A new street chain gets its manifest here; every manifest is refreshed at the end.
  [ -f "models/$name.chain.json" ] || mf models write "$name" --network "$model" \
    --priors "$priors" --meta "models/${name}_meta.json" --kind street \
    --miou "docs/results/camvid_${name}_miou.json" --evaluate "docs/results/camvid_$name.json"
}

cityscapes_chain() {  # NAME: a Cityscapes network of models/ on all 530 CamVid frames
  # It never saw a CamVid frame: its classifier uses all of them (3 drives, leave-one-drive-out).
  camvid_chain "$1" "models/$1.onnx" models/cityscapes_category_priors.npz train,val,test
}

cityscapes() {
  # The 1024x512 ESPNet (the longest chain) and the ESPNetv2 of 512x256.
  cityscapes_chain cityscapes_espnet
  cityscapes_chain cityscapes_espnetv2_s2_512x256
}

others() {
  # The CamVid networks trained on CamVid train: their classifiers use val + test only
  # (docs/segmenter.md); then the §5 protocol on digits.
  synthetic
  camvid_priors models/camvid_category_priors.npz
  camvid_chain camvid_espnet models/camvid_espnet.onnx models/camvid_category_priors.npz val,test
  camvid_chain camvid models/camvid.onnx models/camvid_category_priors.npz val,test
  # The static INT8 Cityscapes network (metafusion quantize, docs/segmenter.md) on val + test.
  mf miou --dataset camvid --root "$CAMVID" --split val,test --model models/cityscapes_espnet.onnx \
    --precision int8 --out docs/results/camvid_cityscapes_espnet_int8_miou.json
  mf digits --out docs/results --left-out 0.9 --folds 5 --tau 0.5 --seed 0
  cityscapes_chain cityscapes_espnetv2_s2_768x384
  cityscapes_chain cityscapes_espnetv2_s1p5
}

timed() {  # NAME: run chain NAME, log to $OUT/NAME.log, print its minutes
  local start=$SECONDS
  "$1" > "$OUT/$1.log" 2>&1 || { echo "results: $1 failed, see $OUT/$1.log" >&2; return 1; }
  echo "results: $1 took $(( (SECONDS - start) / 60 )) min $(( (SECONDS - start) % 60 )) s"
}

start=$SECONDS
# Category priors of every Cityscapes network (human = person + rider), from CamVid train.
camvid_priors models/cityscapes_category_priors.npz --table cityscapes > "$OUT/priors.log" 2>&1
timed cityscapes & first=$!   # the longest chain (1024x512 network on 530 frames)
timed others & second=$!
status=0
wait $first || status=1
wait $second || status=1
# Every chain manifest (models/*.chain.json): member digests and the numbers just measured.
[ $status -ne 0 ] || python -m metafusion_ros.tools.cli models refresh || status=1
echo "results: all done in $(( (SECONDS - start) / 60 )) min $(( (SECONDS - start) % 60 )) s"
exit $status
