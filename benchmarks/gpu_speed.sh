#!/usr/bin/env bash
# The GPU speed check, one command, under 5 minutes on one GPU: train_speed.py on cuda (MiniLM and a
# bert-base-shaped model: sentence-transformers fp32/bf16 vs our defaults), then encode speed.
# Every output (logs, JSON) goes to $OUT if set, else benchmarks/out/gpu/.
#
#     bash benchmarks/gpu_speed.sh
#
# Without a CUDA GPU it stops at once with one error line (exit 2).
set -euo pipefail
cd "$(dirname "$0")"
DEST="${OUT:-$PWD/out/gpu}"
mkdir -p "$DEST"
PY="${PYTHON:-python}"
if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "error: no CUDA GPU visible to torch ($("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null || echo 'torch missing')); run this on a GPU machine" >&2
    exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$DEST/gpu.csv" 2>&1 || true
run() {  # cap seconds, name, command...: log to $DEST/name.log; the caps add up to 4m40s
    local cap=$1 name=$2; shift 2
    echo "== $name" >&2
    timeout "$cap" "$@" > "$DEST/$name.log" 2>&1 || echo "warning: $name failed or timed out (see $DEST/$name.log)" >&2
    tail -n 20 "$DEST/$name.log"
}
run 120 train_speed_minilm_cuda "$PY" train_speed.py --device cuda --model minilm --steps 30 --repeats 3 --quick
run 120 train_speed_bert-base_cuda "$PY" train_speed.py --device cuda --model bert-base --steps 20 --repeats 3 --quick
run 40 encode_speed_minilm_cuda "$PY" encode_speed.py --device cuda --model minilm --sentences 5000 --repeats 3
cp out/train_speed_*cuda*.json out/encode_speed_*cuda*.json "$DEST/" 2>/dev/null || true
echo "outputs in $DEST" >&2
