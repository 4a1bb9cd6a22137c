#!/usr/bin/env bash
# The GPU checks of issue 14, as one short script for a lent GPU machine (`run` of the device tool):
#   1. the CUDA tests (soft-DTW kernels compiled for the real GPU, not the simulator);
#   2. benchmarks/softdtw.py: fgar's kernels against pysdtw's CUDA path (training B = 256, T = 32,
#      F = 128; the 15,000 x 480 gallery at T = 16), ns per DP cell and ratios in one run;
#   3. one fit-labeled epoch under torchrun on the GPU (nccl), on a small embedded benchmark.
# Figures go to $OUT (default runs/gpu_check) and belong in docs/PERFORMANCE.md, with the machine.
#
#   bash benchmarks/gpu_check.sh            # about 5 minutes on an H200 once torch is installed
set -euo pipefail
OUT=${OUT:-runs/gpu_check}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
"$PY" -c "import fgar_cli, torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__)"
echo "== 1. CUDA tests"
"$PY" -m pytest -q tests/test_softdtw_cuda.py 2>&1 | tee "$OUT/cuda_tests.txt" | tail -3
echo "== 2. soft-DTW benchmark"
"$PY" benchmarks/softdtw.py --repeats 5 2>&1 | tee "$OUT/softdtw.txt"
echo "== 3. fit-labeled under torchrun on the GPU"
DATA="$OUT/data"
[ -f "$DATA/index.json" ] || {
  fgar synth --out-dir "$DATA/videos" --classes 12 --videos-per-class 40 --frames 48 --size 64 --seed 11
  fgar data index --format diving48 --root "$DATA/videos" --out "$DATA/index.json"
  fgar data split --index "$DATA/index.json" --fraction 0.2 --seed 0 --out "$DATA/split.json"
}
start=$(date +%s.%N)
torchrun --standalone --nproc-per-node "$(nvidia-smi -L | wc -l)" "$(command -v fgar)" fit-labeled \
  --config examples/demo.yaml --index "$DATA/index.json" --split "$DATA/split.json" --out-dir "$OUT/fit" \
  --epochs-e 1 --epochs-a 1 --device cuda --force 2>&1 | tail -20 | tee "$OUT/fit.txt"
echo "fit-labeled, one epoch of each encoder: $(echo "$(date +%s.%N) - $start" | bc) s" | tee -a "$OUT/fit.txt"
