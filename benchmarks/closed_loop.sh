#!/usr/bin/env bash
# The paper's loop on the embedded model: generate a dataset, fine-tune on it, and evaluate base
# against tuned on the SuperNI test subset. Both evaluations go through the transformers backend
# on the same dequantized weights, so the adapter is the only difference.
#   bash benchmarks/closed_loop.sh [N_INSTRUCTIONS] [INSTANCES_PER_TASK]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100}
K=${2:-10}
OUT=${OUT:-runs/closed-loop}
export SELFINSTRUCT_CACHE_DIR=${SELFINSTRUCT_CACHE_DIR:-$PWD/.cache} HF_HUB_OFFLINE=1
SI=.venv/bin/selfinstruct
TASKS=../shared/data/superni_test/tasks
time $SI run --out "$OUT/data" -n "$N" --no-progress
time $SI finetune "$OUT/data" --base embedded --out "$OUT/tuned" --no-progress
time $SI evaluate superni --tasks $TASKS --max-instances "$K" --out "$OUT/eval-base" \
    --backend transformers --model-path embedded --no-progress
time $SI evaluate superni --tasks $TASKS --max-instances "$K" --out "$OUT/eval-tuned" \
    --backend transformers --model-path embedded --adapter "$OUT/tuned/adapter" --no-progress
python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
base = json.load(open(f"{out}/eval-base/superni_metrics.json"))["overall"]
tuned = json.load(open(f"{out}/eval-tuned/superni_metrics.json"))["overall"]
print(f"SuperNI ({base['tasks']} tasks, {base['instances']} instances): "
      f"base ROUGE-L {base['rougeL']:.2f} EM {base['exact_match']:.2f} | "
      f"tuned ROUGE-L {tuned['rougeL']:.2f} EM {tuned['exact_match']:.2f}")
PY
