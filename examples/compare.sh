#!/usr/bin/env bash
# Compare supervised, confidence-only self-training and FinePseudo on one dataset.
#
#   examples/compare.sh DATA_DIR RUN_DIR [CONFIG]
#   FORMAT=folder TEST_FRACTION=0.2 examples/compare.sh my_videos/ my_run/ examples/quickstart.yaml
#
# DATA_DIR is in the layout FORMAT names (`fgar data index --format`, default diving48:
# Diving48_V2_train.json, Diving48_V2_test.json, Diving48_vocab.json and rgb/*.mp4, the real dataset
# or `fgar synth --out-dir DATA_DIR`; folder: DATA_DIR/<class>/<video> plus DATA_DIR/unlabeled/; list:
# ANNOTATIONS names the list files, space-separated). TEST_FRACTION holds out that share of each class
# as the test set, for data without one. FORMAT=ts reads a UEA/UCR folder (NAME_TRAIN.ts, NAME_TEST.ts)
# and FORMAT=npz a folder of .npy/.npz sequences with ANNOTATIONS=its CSV (docs/DATA.md); both default
# CONFIG to examples/sequences.yaml. CONFIG (default examples/demo.yaml) holds the options of
# each stage. Every step writes files into RUN_DIR and is skipped when its result is
# already there, so a rerun after an interruption continues where it stopped.
# Environment: FRACTION (labeled fraction, default 0.1), SEED (split seed, default 0), INIT_E (weights
# to start f_E from instead of pretraining it here, e.g. TCLR's released R(2+1)D-18 file; CONFIG's
# fit_labeled table then says how to read them, see examples/diving48.yaml), PRETRAIN_E=0 (f_E from
# scratch: no TCLR pretraining, no --init-e; the comparison docs/RESULTS.md makes). NPROC (processes
# per node, default 1) and NNODES (nodes, default 1; then NODE_RANK, MASTER_ADDR, MASTER_PORT) run the
# training and inference stages under torchrun (docs/DISTRIBUTED.md); batch sizes are per process.
set -euo pipefail

if [ $# -lt 2 ]; then
  echo "usage: $0 DATA_DIR RUN_DIR [CONFIG]" >&2
  exit 2
fi
DATA=$1
RUN=$2
FORMAT=${FORMAT:-diving48}
case "$FORMAT" in
  ts | npz) DEFAULT_CONFIG=$(dirname "$0")/sequences.yaml ;;  # sequence indexes: tcn f_E, mlp f_A
  *) DEFAULT_CONFIG=$(dirname "$0")/demo.yaml ;;
esac
CONFIG=${3:-$DEFAULT_CONFIG}
FRACTION=${FRACTION:-0.1}
SEED=${SEED:-0}
INDEX_ARGS=()
for file in ${ANNOTATIONS:-}; do INDEX_ARGS+=(--annotations "$file"); done
SPLIT_ARGS=()
[ -z "${TEST_FRACTION:-}" ] || SPLIT_ARGS=(--test-fraction "$TEST_FRACTION")
mkdir -p "$RUN"

step() { echo; echo "== $*"; }

# A stage in one process, or under torchrun with NPROC processes on each of NNODES nodes.
NPROC=${NPROC:-1}
NNODES=${NNODES:-1}
stage() {
  if [ "$NPROC" = 1 ] && [ "$NNODES" = 1 ]; then
    fgar "$@"
  elif [ "$NNODES" = 1 ]; then
    torchrun --standalone --nproc-per-node "$NPROC" "$(command -v fgar)" "$@"
  else
    torchrun --nnodes "$NNODES" --node-rank "${NODE_RANK:?NODE_RANK: this node's number, 0 to NNODES-1}" \
      --nproc-per-node "$NPROC" --rdzv-backend c10d --rdzv-id "fgar-$(basename "$RUN")" \
      --rdzv-endpoint "${MASTER_ADDR:?MASTER_ADDR: node 0's address}:${MASTER_PORT:-29500}" "$(command -v fgar)" "$@"
  fi
}

step "index and split"
[ -f "$RUN/index.json" ] || fgar data index --format "$FORMAT" --root "$DATA" "${INDEX_ARGS[@]}" --out "$RUN/index.json"
[ -f "$RUN/split.json" ] || fgar data split --index "$RUN/index.json" --fraction "$FRACTION" --seed "$SEED" \
  "${SPLIT_ARGS[@]}" --out "$RUN/split.json"

step "pretrain f_A (GITDL) on the unlabeled split"
[ -f "$RUN/pretrain/A0.pt" ] || stage pretrain --config "$CONFIG" --index "$RUN/index.json" --split "$RUN/split.json" \
  --out-dir "$RUN/pretrain" --resume

INIT_E=${INIT_E:-}
INIT_E_ARGS=()
if [ "${PRETRAIN_E:-1}" = 0 ]; then
  INIT_E=""
elif [ -z "$INIT_E" ]; then
  step "pretrain f_E (TCLR) on the unlabeled split, so that every arm starts from it, as in the paper"
  [ -f "$RUN/pretrain_action/E0.pt" ] || stage pretrain --encoder action --config "$CONFIG" --index "$RUN/index.json" \
    --split "$RUN/split.json" --out-dir "$RUN/pretrain_action" --resume
  INIT_E=$RUN/pretrain_action/E0.pt
fi
[ -z "$INIT_E" ] || INIT_E_ARGS=(--init-e "$INIT_E")

step "fit f_E and f_A on the labeled split"
[ -f "$RUN/fit/A.pt" ] || stage fit-labeled --config "$CONFIG" --index "$RUN/index.json" --split "$RUN/split.json" \
  --init-a "$RUN/pretrain/A0.pt" "${INIT_E_ARGS[@]}" --out-dir "$RUN/fit" --resume

step "arm 1: supervised (f_E from fit-labeled)"
[ -f "$RUN/eval_supervised/metrics.json" ] || stage evaluate --config "$CONFIG" --ckpt-e "$RUN/fit/E.pt" \
  --ckpt-a "$RUN/fit/A.pt" --out-dir "$RUN/eval_supervised"

step "arm 2: confidence-only self-training (--source action: f_E alone, so f_A is not given)"
[ -f "$RUN/st_confidence/selftrain.json" ] || stage selftrain --config "$CONFIG" \
  --ckpt-e "$RUN/fit/E.pt" --source action --out-dir "$RUN/st_confidence" --resume
[ -f "$RUN/eval_confidence/metrics.json" ] || stage evaluate --config "$CONFIG" --ckpt-e "$RUN/st_confidence/E.pt" \
  --out-dir "$RUN/eval_confidence"

step "arm 3: FinePseudo self-training (--source collab)"
[ -f "$RUN/st_finepseudo/selftrain.json" ] || stage selftrain --config "$CONFIG" --ckpt-a "$RUN/fit/A.pt" \
  --ckpt-e "$RUN/fit/E.pt" --source collab --out-dir "$RUN/st_finepseudo" --resume
[ -f "$RUN/eval_finepseudo/metrics.json" ] || stage evaluate --config "$CONFIG" --ckpt-e "$RUN/st_finepseudo/E.pt" \
  --ckpt-a "$RUN/st_finepseudo/A.pt" --out-dir "$RUN/eval_finepseudo"

step "summary, and the report (tables, pseudo-labels per round, theta sweep, confusion matrices)"
fgar summary "$RUN"
fgar report "$RUN"
