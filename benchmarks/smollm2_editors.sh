#!/usr/bin/env bash
# MEND and SERAC on SmolLM2-135M-Instruct (the evaluation issue): each editor trained on this model, then measured
# with `adapterkit eval`, single edits each undone before the next.
# - mend-zsre: MEND on zsRE (MEND's format), trained on records 0-849, validated on 850-899, measured on 900-999, as
#   EasyEdit reports zsRE; records without an alternative answer left out (edit success = teacher_forced.rewrite_acc, generalisation = rephrase, locality).
# - mend-cf, serac-cf: trained on CounterFact records that are none of the measured facts, measured on the first N
#   facts the model knows (tests/data/smollm2_known_counterfact.json), plain and in chat form. MEND trains with the
#   fact models' locality settings (loc_unrelated 2, cloc 2).
# Every editor trains at most MAX_ITERS steps (validation every 250). benchmarks/RESULTS.md holds what this printed.
# Run again with the same OUT_DIR, it goes on where it stopped: a trained editor is not trained again, a finished
# measurement is not run again, and a stopped one resumes (`adapterkit eval` resumes its --out).
# Run: bash benchmarks/smollm2_editors.sh MODEL_DIR ZSRE.json COUNTERFACT_TRAIN.json OUT_DIR [N] [MAX_ITERS] [JOBS...]
#      (jobs: mend-zsre mend-cf serac-cf, default all, each in its own process, side by side)
set -euo pipefail
model=$1 zsre=$2 counterfact=$3 out=$4 n=${5:-100} max_iters=${6:-2000}
jobs=(mend-zsre mend-cf serac-cf)
[ $# -gt 6 ] && jobs=("${@:7}")
here=$(cd "$(dirname "$0")/.." && pwd)
device=$(python3 -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')
mkdir -p "$out/data"

python3 - "$here" "$zsre" "$counterfact" "$out/data" <<'PY'
import json, sys
here, zsre, counterfact, data = sys.argv[1:]
records = [r for r in json.load(open(zsre)) if r.get("src") and r.get("subject") and r.get("alt")]  # 2 have no alt
for name, part in (("zsre-train", records[:850]), ("zsre-val", records[850:900]), ("zsre-test", records[900:1000])):
    json.dump(part, open(f"{data}/{name}.json", "w"))
known = json.load(open(f"{here}/tests/data/smollm2_known_counterfact.json"))["records"]
json.dump(known, open(f"{data}/known.json", "w"))
measured = {r.get("case_id") for r in known}
train = [r for r in json.load(open(counterfact)) if r.get("case_id") not in measured]
json.dump(train[:-200], open(f"{data}/cf-train.json", "w"))
json.dump(train[-200:], open(f"{data}/cf-val.json", "w"))
print(f"zsRE 850/50/{len(records) - 900}; CounterFact {len(train) - 200} train, 200 validation, {len(known)} known facts measured")
PY

hparams() {  # method, yaml out, then KEY=VALUE (YAML) over detect's settings
  local method=$1 file=$2; shift 2
  python3 -m adapterkit detect "$model" --method "$method" --out "$file" > /dev/null
  python3 - "$file" "$max_iters" "$@" <<'PY'
import sys, yaml
path, max_iters, *pairs = sys.argv[1:]
hp = yaml.safe_load(open(path))
hp.update(max_iters=int(max_iters), val_every=250, early_stop_patience=int(max_iters))
hp.update({k: yaml.safe_load(v) for k, v in (p.split("=", 1) for p in pairs)})
yaml.safe_dump(hp, open(path, "w"), sort_keys=False)
PY
}

job() {  # name, method, train, val, data measured, forms, then settings
  local name=$1 method=$2 train=$3 val=$4 data=$5 forms=$6; shift 6
  local dir=$out/$name started
  mkdir -p "$dir"
  if ! grep -q "^$name: trained" "$dir/times.txt" 2>/dev/null; then
    hparams "$method" "$dir/hparams.yaml" "$@"
    started=$(date +%s)
    python3 -m adapterkit train "$model" --hparams "$dir/hparams.yaml" --train "$train" --val "$val" \
      --out "$dir/editor" --device "$device" > "$dir/train.log" 2>&1
    echo "$name: trained in $(( $(date +%s) - started )) s" | tee -a "$dir/times.txt"
  fi
  for form in $forms; do
    grep -q "^$name $form: measured" "$dir/times.txt" && continue
    chat=()
    [ "$form" = chat ] && chat=(--chat)
    started=$(date +%s)
    python3 -m adapterkit eval "$model" --hparams "$dir/hparams.yaml" --archive "$dir/editor" --data "$data" --n "$n" \
      --device "$device" "${chat[@]}" --out "$out/$name-$form" >> "$dir/eval-$form.log" 2>&1
    echo "$name $form: measured in $(( $(date +%s) - started )) s" | tee -a "$dir/times.txt"
  done
}

for name in "${jobs[@]}"; do
  case $name in
    mend-zsre) job mend-zsre MEND "$out/data/zsre-train.json" "$out/data/zsre-val.json" "$out/data/zsre-test.json" plain & ;;
    mend-cf) job mend-cf MEND "$out/data/cf-train.json" "$out/data/cf-val.json" "$out/data/known.json" "plain chat" \
               loc_unrelated=2 cloc=2 & ;;
    serac-cf) job serac-cf SERAC "$out/data/cf-train.json" "$out/data/cf-val.json" "$out/data/known.json" "plain chat" & ;;
    *) echo "unknown job $name" >&2; exit 2 ;;
  esac
done
wait
