#!/usr/bin/env bash
# Streams on SmolLM2-135M-Instruct, side by side on one GPU (benchmarks/smollm2_stream.py, one process each):
# MEMIT and AlphaEdit one edit at a time for up to 1,000 edits; AlphaEdit (published null-space threshold 0.02, and
# 0.01) and MEMIT in batches of 100 for up to 2,000. Each process stops after the batch that passes SECONDS_EACH
# (default 470), keeps what it printed and leaves a checkpoint in OUT_DIR/ck; run the same command again and the
# stopped streams go on from their checkpoints (a finished one is skipped).
# benchmarks/RESULTS.md ("Streams on SmolLM2-135M-Instruct") holds what this printed.
# Run: bash benchmarks/smollm2_streams.sh MODEL_DIR COUNTERFACT.json OUT_DIR
set -euo pipefail
model=$1 records=$2 out=$3
seconds=${SECONDS_EACH:-470}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
mkdir -p "$out/ck"
run() {  # name, then smollm2_stream.py arguments
  local name=$1; shift
  grep -q '"kind": "finished"' "$out/$name.jsonl" 2>/dev/null && return
  OMP_NUM_THREADS=2 python3 "$here/smollm2_stream.py" "$model" --records "$records" --max-seconds "$seconds" \
    --checkpoint "$out/ck/$name" --stats-dir "$out/stats-$name" --out "$out/$name.jsonl" "$@" >> "$out/$name.log" 2>&1 &
}
run memit-1 --method memit --batch 1 --n 1000 --every 100
run alphaedit-1 --method alphaedit --batch 1 --n 1000 --every 100
run alphaedit-100 --method alphaedit --batch 100 --n 2000 --every 200
run alphaedit-100-t01 --method alphaedit --batch 100 --n 2000 --every 200 --set nullspace_threshold=0.01
run memit-100 --method memit --batch 100 --n 2000 --every 200
wait
