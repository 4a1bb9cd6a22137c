#!/usr/bin/env bash
# FinePseudo on real recorded motion: the UEA/UCR archive's PickupGestureWiimoteZ (10 subjects doing
# 10 gestures with a Nintendo Wiimote, its z-axis accelerometer; 50 training and 50 test recordings
# of unequal length), as the `aeon` package ships it. Runs supervised, confidence PL and FinePseudo
# (examples/compare.sh, FORMAT=ts, examples/sequences.yaml) and the compute-matched control (the same
# self-training epochs without pseudo-labels) over three label splits, then prints each
# arm's mean and spread and its paired difference from the supervised arm.
#
#   examples/motion.sh [RUN_DIR]          (make motion; default runs/motion)
#   DATASET=BasicMotions FRACTION=0.2 examples/motion.sh runs/basicmotions
#
# The data come with the aeon wheel from PyPI (installed without its dependencies: fgar reads the .ts
# files itself and never imports aeon). Environment: DATASET (a folder of aeon/datasets/data, default
# PickupGestureWiimoteZ), FRACTION (labeled share of the training set, default 0.4: 2 of the 5
# recordings of each gesture), SEEDS (label split seeds, default "0 1 2"). Reruns continue.
set -euo pipefail
RUN=${1:-runs/motion}
DATASET=${DATASET:-PickupGestureWiimoteZ}
FRACTION=${FRACTION:-0.4}
SEEDS=${SEEDS:-0 1 2}
HERE=$(dirname "$0")

python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('aeon') is None)" 2>/dev/null \
  || python -m pip install -q --no-deps "aeon==1.6.0"
AEON=$(python -c "import importlib.util; print(importlib.util.find_spec('aeon').submodule_search_locations[0])")
DATA=$AEON/datasets/data/$DATASET
[ -f "$DATA/${DATASET}_TRAIN.ts" ] || { echo "error: $DATA/${DATASET}_TRAIN.ts not found" >&2; exit 2; }

mkdir -p "$RUN"
for seed in $SEEDS; do
  echo; echo "==== label split $seed"
  FORMAT=ts FRACTION=$FRACTION SEED=$seed ANNOTATIONS="$DATA/${DATASET}_TRAIN.ts $DATA/${DATASET}_TEST.ts" \
    bash "$HERE/compare.sh" "$DATA" "$RUN/split_$seed" "${CONFIG:-$HERE/sequences.yaml}" > "$RUN/split_$seed.log" 2>&1 \
    || { echo "error: split $seed failed, see $RUN/split_$seed.log" >&2; exit 1; }
  tail -n 12 "$RUN/split_$seed.log"
  # the compute-matched control: the same self-training epochs on D_l alone, no pseudo-label
  R=$RUN/split_$seed
  [ -f "$R/eval_control/metrics.json" ] || {
    fgar selftrain --config "${CONFIG:-$HERE/sequences.yaml}" --ckpt-e "$R/fit/E.pt" --ckpt-a "$R/fit/A.pt" \
      --source none --out-dir "$R/st_control" --resume \
      && fgar evaluate --config "${CONFIG:-$HERE/sequences.yaml}" --ckpt-e "$R/st_control/E.pt" --out-dir "$R/eval_control"
  } >> "$RUN/split_$seed.log" 2>&1 || { echo "error: control of split $seed failed, see $RUN/split_$seed.log" >&2; exit 1; }
done
python "$HERE/arms_summary.py" "$RUN" $(mkdir -p "$RUN"
for seed in $SEEDS; do echo "$RUN/split_$seed"; done)
