#!/usr/bin/env bash
# FinePseudo on the real Diving48 V2 with the paper's protocol: 10% labels, 3 label splits, mean top-1.
#
#   examples/diving48.sh DIVING48_ROOT RUN_DIR
#
# DIVING48_ROOT holds Diving48_V2_train.json, Diving48_V2_test.json, Diving48_vocab.json and rgb/.
# Needs a GPU for reasonable run times. Settings: examples/diving48.yaml. As in the paper, f_E starts
# from TCLR: set INIT_E to TCLR's released R(2+1)D-18 Kinetics-400 weights (a local file; nothing is
# downloaded), or leave it unset to pretrain f_E with TCLR's losses on each split's unlabeled videos.
# Several GPUs: NPROC=8 examples/diving48.sh ...; several nodes: also NNODES, NODE_RANK, MASTER_ADDR
# (and MASTER_PORT), the same command on every node (docs/DISTRIBUTED.md). Batch sizes are per process.
set -euo pipefail
if [ $# -lt 2 ]; then echo "usage: $0 DIVING48_ROOT RUN_DIR" >&2; exit 2; fi
ROOT=$1
RUN=$2
HERE=$(dirname "$0")
mkdir -p "$RUN"
# Index once (it opens every video), then share the index across the three splits.
[ -f "$RUN/index.json" ] || fgar data index --format diving48 --root "$ROOT" --out "$RUN/index.json"
for seed in 0 1 2; do
  mkdir -p "$RUN/split$seed"
  [ -f "$RUN/split$seed/index.json" ] || cp "$RUN/index.json" "$RUN/split$seed/index.json"
  FRACTION=${FRACTION:-0.1} SEED=$seed bash "$HERE/compare.sh" "$ROOT" "$RUN/split$seed" "$HERE/diving48.yaml"
done
python - "$RUN" <<'PY'
import json, sys, statistics
from pathlib import Path
runs = sorted(Path(sys.argv[1]).glob("split*/summary.json"))
arms = {}
for r in runs:
    for arm, row in json.loads(r.read_text()).items():
        arms.setdefault(arm, []).append(row["top1"])
for arm, values in arms.items():
    print(f"{arm:15s} mean top-1 over {len(values)} splits: {statistics.mean(values):.4f}")
PY
