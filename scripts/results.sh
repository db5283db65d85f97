#!/usr/bin/env bash
# `make results`: every prior, meta-classifier bundle, table and figure in models/ and docs/results
# from the repository and ../shared alone (network training excluded). Two chains run side by side
# (the Cityscapes network on CamVid | the rest), each on one core; logs and timings under $OUT.
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

mf() { echo "+ metafusion $*"; python -m metafusion_ros.tools.cli "$@"; }

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
    --out models/synthetic_priors.npz
  local frames=(--dataset synthetic --root "$OUT/synth" --split val,test
                --model models/synthetic.onnx --priors models/synthetic_priors.npz --cache "$CACHE")
  mf evaluate "${frames[@]}" --alphas $ALPHAS --tau $TAU --out docs/results --name synthetic
  fit_report synthetic "${frames[@]}" --alphas $GRID --out models/synthetic_meta.json
  # The shipped bundle, fixed, on a drive of another seed that nothing was fitted on.
  rm -rf "$OUT/heldout"
  mf synth --out "$OUT/heldout" --drives test=1 --frames 30 --size 1024x512 --seed 2
  mf evaluate --dataset synthetic --root "$OUT/heldout" --split test --model models/synthetic.onnx \
    --priors models/synthetic_priors.npz --meta-model models/synthetic_meta.json --cache "$CACHE" \
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
}

cityscapes() {
  # The Cityscapes network never saw a CamVid frame: its classifier uses all 530 (3 drives).
  camvid_priors models/cityscapes_espnet_priors.npz --table cityscapes
  camvid_chain cityscapes_espnet models/cityscapes_espnet.onnx models/cityscapes_espnet_priors.npz \
    train,val,test
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
}

timed() {  # NAME: run chain NAME, log to $OUT/NAME.log, print its minutes
  local start=$SECONDS
  "$1" > "$OUT/$1.log" 2>&1 || { echo "results: $1 failed, see $OUT/$1.log" >&2; return 1; }
  echo "results: $1 took $(( (SECONDS - start) / 60 )) min $(( (SECONDS - start) % 60 )) s"
}

start=$SECONDS
timed cityscapes & first=$!   # the longest chain (1024x512 network on 530 frames)
timed others & second=$!
status=0
wait $first || status=1
wait $second || status=1
echo "results: all done in $(( (SECONDS - start) / 60 )) min $(( (SECONDS - start) % 60 )) s"
exit $status
