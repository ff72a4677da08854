"""Edit quality of `detect`'s settings, and of variations on them, over several batches of CounterFact facts
that SmolLM2-135M-Instruct knows (tests/data/smollm2_known_counterfact.json): one JSON line per (setting, batch)
with efficacy / generalisation / locality, the greedy rate and the seconds. MEMIT edits each batch in one call,
ROME edits its records one at a time (restored between). Statistics: the tests' 500 CounterFact-sentence documents
unless ``--corpus`` says otherwise. benchmarks/RESULTS.md ("MEMIT on SmolLM2-135M-Instruct, six batches of 50")
holds what this printed on an H200.

Run: python benchmarks/smollm2_batches.py MODEL.gguf --method memit --batches 0:50 100:150 \\
         --setting default= --setting lambda3103=mom2_update_weight=3103 --setting traced=layers=[0,1,2,3] [--out FILE]
A setting is NAME=KEY=VALUE[,KEY=VALUE...] with YAML values; ``NAME=`` alone is detect's settings unchanged.
"""
import argparse
import json
import re
import time
from pathlib import Path

import torch
import yaml

import adapterkit
from adapterkit.arch.detect import detect
from adapterkit.checkpoints.loading import load_model
from adapterkit.editing.metrics import greedy_says, summarise

TESTS_DATA = Path(__file__).parents[1] / "tests" / "data"


def parse_setting(text: str) -> tuple[str, dict]:
    name, _, changes = text.partition("=")
    pairs = [c.split("=", 1) for c in re.split(r",(?=\w+=)", changes) if c] if changes else []
    return name, {key: yaml.safe_load(value) for key, value in pairs}


def detected_hparams(model_path: str, method: str, corpus: str, stats_dir: str) -> dict:
    """`detect`'s settings for ``method``, with statistics from every document of ``corpus`` where it uses them."""
    hparams = dict(detect(model_path, method=method))
    if hparams.get("mom2_adjustment"):
        documents = sum(1 for line in open(corpus, encoding="utf-8") if line.strip())
        hparams.update(mom2_corpus=corpus, mom2_dataset=Path(corpus).stem, mom2_n_samples=documents, stats_dir=stats_dir)
    return hparams


def emitter(path: str | None):
    """Print each row as a JSON line and append it to ``path`` too, flushed, so a stopped run keeps its rows."""
    out = open(path, "a", encoding="utf-8") if path else None

    def emit(row: dict) -> None:
        print(json.dumps(row), flush=True)
        if out:
            out.write(json.dumps(row) + "\n")
            out.flush()
    return emit


def run_batch(model, tok, hparams: dict, records: list[dict], method: str) -> dict:
    started = time.perf_counter()
    if method == "MEMIT":
        result = adapterkit.edit(model, tok, records, hparams)
        metrics = result.metrics
        greedy = [greedy_says(model, tok, r["prompt"], r["target_new"]) for r in records]
        result.restore()
    else:
        metrics, greedy = [], []
        for record in records:
            result = adapterkit.edit(model, tok, [record], hparams)
            metrics += result.metrics
            greedy.append(greedy_says(model, tok, record["prompt"], record["target_new"]))
            result.restore()
    return {**{k: round(v, 3) for k, v in summarise(metrics).items()}, "greedy": sum(greedy) / len(greedy),
            "s": round(time.perf_counter() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--method", choices=["rome", "memit"], default="memit")
    parser.add_argument("--batches", nargs="+", default=["0:50"])
    parser.add_argument("--setting", action="append", default=[])
    parser.add_argument("--corpus", default=str(TESTS_DATA / "smollm2_stats_corpus.txt"))
    parser.add_argument("--stats-dir", default="/tmp/smollm2-stats")
    parser.add_argument("--out")
    args = parser.parse_args()
    method = args.method.upper()
    model, tok = load_model(args.model, dtype="float32")
    model = model.to("cuda" if torch.cuda.is_available() else "cpu")
    records = json.loads((TESTS_DATA / "smollm2_known_counterfact.json").read_text())["records"]
    base = detected_hparams(args.model, method, args.corpus, args.stats_dir)
    emit = emitter(args.out)
    for batch in args.batches:
        lo, hi = map(int, batch.split(":"))
        for name, changes in map(parse_setting, args.setting or ["default="]):
            emit({"method": method, "setting": name, "changes": changes, "records": [lo, hi],
                  **run_batch(model, tok, {**base, **changes}, records[lo:hi], method)})

if __name__ == "__main__":
    main()
