#!/usr/bin/env bash
# `adapterkit eval` on SmolLM2-135M-Instruct: each locate-then-edit method on N CounterFact facts the model knows
# (tests/data/smollm2_known_counterfact.json), plain and in chat form, then one comparison table.
# ROME edits one request at a time (undone before the next); MEMIT, AlphaEdit and PMET edit the N in one batch.
# Statistics: the tests' 500 CounterFact-sentence documents. benchmarks/RESULTS.md ("adapterkit eval on
# SmolLM2-135M-Instruct") holds what this printed on the GPU.
# Run: bash benchmarks/smollm2_eval_table.sh MODEL.gguf OUT_DIR [N] [METHODS...]   (default N 100, methods: all four)
# Streams: DATA=counterfact.json BATCH=100 FORMS=plain EVAL_ARGS="--sequential --every 200" bash ... 1000 alphaedit memit
set -euo pipefail
gguf=$1 out=$2 n=${3:-100}
methods=(rome memit alphaedit pmet)
[ $# -gt 3 ] && methods=("${@:4}")
here=$(cd "$(dirname "$0")/.." && pwd)
work=${WORK:-/tmp/smollm2-eval}
device=$(python3 -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')
mkdir -p "$work" "$out"

[ -d "$work/model" ] || python3 -m adapterkit convert "$gguf" --out "$work/model"
python3 - "$here" "$work" <<'PY'
import json, sys
here, work = sys.argv[1:]
records = json.load(open(f"{here}/tests/data/smollm2_known_counterfact.json"))["records"]
json.dump(records, open(f"{work}/known.json", "w"))
PY

for method in "${methods[@]}"; do
  python3 - "$here" "$work" "$method" <<'PY'
import sys, yaml
sys.path.insert(0, f"{sys.argv[1]}/benchmarks")
from smollm2_batches import detected_hparams
here, work, method = sys.argv[1:]
hparams = detected_hparams(f"{work}/model", method, f"{here}/tests/data/smollm2_stats_corpus.txt", f"{work}/stats")
yaml.safe_dump(hparams, open(f"{work}/{method}.yaml", "w"), sort_keys=False)
PY
  batch=1
  [ "$method" = rome ] || batch=$n
  batch=${BATCH:-$batch}
  for form in ${FORMS:-plain chat}; do
    chat=()
    [ "$form" = chat ] && chat=(--chat)
    started=$(date +%s)
    # shellcheck disable=SC2086
    python3 -m adapterkit eval "$work/model" --hparams "$work/$method.yaml" --data "${DATA:-$work/known.json}" --n "$n" \
      --batch "$batch" --device "$device" "${chat[@]}" ${EVAL_ARGS:-} --out "$out/$method-$form"
    echo "$method $form: $(( $(date +%s) - started )) s"
  done
done
mapfile -t runs < <(ls -d "$out"/*-plain "$out"/*-chat 2>/dev/null)
python3 -m adapterkit report "${runs[@]}" --out "$out/compare"
