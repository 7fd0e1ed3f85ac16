#!/usr/bin/env bash
# The GPU figures in one run (< 8 minutes on one H100/H200). Writes JSON beside the README's tables:
#   bash bench/gpu_check.sh [OUT_DIR]          (default: bench/gpu)
# Needs torch with CUDA; real Fashion-MNIST for the end-to-end ticket in data/fashion-mnist/ or
# $RST_DATA_DIR (the IDX files; without them that step is skipped and says so).
# Each step has its own time limit and the script goes on after a failure; summary.json lists them.
set -u
cd "$(dirname "$0")/.."
OUT="${1:-bench/gpu}"
mkdir -p "$OUT"
PY="${PYTHON:-python}"
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python
export RST_DATA_DIR="${RST_DATA_DIR:-$PWD/data}"
declare -a RESULTS=()

step() {   # step NAME SECONDS COMMAND...
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  echo "== $name (limit ${limit}s): $*"
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  tail -n 8 "$OUT/$name.log"
  RESULTS+=("{\"step\": \"$name\", \"rc\": $rc, \"seconds\": $((SECONDS - t0))}")
  echo "-- $name: rc=$rc in $((SECONDS - t0)) s"
}

"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU'; print(torch.__version__, torch.cuda.get_device_name(0))" \
  | tee "$OUT/device.txt" || exit 1

# 1. search step, ours vs the reference recipe (same attack budget): fp32, then the auto fast path (bf16 + channels_last)
step search-fp32 60  "$PY" -m rst.bench search --device cuda --precision fp32 --json "$OUT/search-fp32.json"
step search-fast 60  "$PY" -m rst.bench search --device cuda --json "$OUT/search-fast.json"
step search-fmnist 60 "$PY" -m rst.bench search --device cuda --arch fmnist_conv4 --width 1.0 --batch-size 256 \
  --attack-steps 7 --json "$OUT/search-fmnist.json"
# 2. transfer matrix, K = 8
step transfer 90 "$PY" -m rst.bench transfer --device cuda --k 8 --json "$OUT/transfer.json"
# 3. K tickets in one batched pass vs one at a time; bf16 through vmap's BatchNorm backward (issue: CUDA readiness)
step tickets 60 "$PY" -m rst.bench tickets --device cuda --json "$OUT/tickets.json"
step tickets-bf16 60 "$PY" -m rst.bench tickets --device cuda --precision bf16 --json "$OUT/tickets-bf16.json"
# 4. one ticket of the fmnist recipe end to end (30 epochs, PGD-7, 55k images), then the full test set
if ls "$RST_DATA_DIR"/fashion-mnist/*idx* >/dev/null 2>&1 || ls "$RST_DATA_DIR"/*idx* >/dev/null 2>&1; then
  step fmnist-ticket 240 "$PY" -m rst search --preset fmnist --keep-ratio 0.1 --device cuda --quiet \
    --out "$OUT/fmnist-ticket"
else
  echo "== fmnist-ticket: skipped (no Fashion-MNIST IDX files under $RST_DATA_DIR)"
  RESULTS+=("{\"step\": \"fmnist-ticket\", \"rc\": null, \"skipped\": \"no data\"}")
fi
# 5. the CUDA-only tests (skipped on CPU machines), if pytest is there
if "$PY" -c "import pytest" 2>/dev/null; then
  step cuda-tests 90 "$PY" -m pytest -q -p no:cacheprovider -k "cuda" tests/test_data.py tests/test_device.py tests/test_distributed.py
fi

( IFS=,; echo "[${RESULTS[*]}]" ) > "$OUT/summary.json"
echo "summary: $OUT/summary.json"
