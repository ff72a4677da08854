"""MEND's two localities on the fact models, by training setting: efficacy, generalisation, neighbourhood locality
(CounterFact's same-relation prompts, as the ROME paper measures MEND) and unrelated-fact locality (the other
held-out facts of other relations, as MEND's paper measures locality on unrelated inputs), over the 16 held-out
edits of tests/test_mend.py, each edit alone and undone before the next. Each setting trains its own editor as the
test fixture does (tests/editors.py: the same split, `detect`'s hparams with tiny_hparams.yaml's, then the
setting's overrides).

Run: python benchmarks/mend_locality.py --arch gpt2 llama --setting old=loc_unrelated=0,cloc=1 new=loc_unrelated=2,cloc=2
         [--out results.jsonl]
"""
import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import adapterkit  # noqa: E402
from adapterkit.demo.factmodels import load_or_train  # noqa: E402
from adapterkit.editing.metrics import summarise  # noqa: E402
from adapterkit.methods.mend import MEND  # noqa: E402

from editors import both_localities, split, train_editor, with_unrelated_facts  # noqa: E402


def parse_setting(text: str) -> tuple[str, dict]:
    name, _, pairs = text.partition("=")
    overrides = {}
    for pair in filter(None, pairs.split(",")):
        key, _, value = pair.partition("=")
        overrides[key] = json.loads(value)
    return name, overrides


def measure(fact, overrides: dict) -> dict:
    _, _, test = split(fact.facts)
    with tempfile.TemporaryDirectory() as out:
        hp, _ = train_editor(MEND, fact, Path(out), **overrides)
        rows = []
        for record in with_unrelated_facts(test):
            with adapterkit.edited(fact.model, fact.tok, record, hp) as result:
                rows += result.metrics
    return both_localities(summarise(rows))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", nargs="+", default=["gpt2", "gptj", "gpt_neox", "llama", "chatglm3"])
    parser.add_argument("--setting", nargs="+", required=True, help="NAME=KEY=VALUE[,KEY=VALUE...] (values as JSON)")
    parser.add_argument("--cache", default=None, help="fact-model cache (default: ADAPTERKIT_TEST_CACHE or a temporary one)")
    parser.add_argument("--out", default=None, help="append one JSON line per (architecture, setting)")
    args = parser.parse_args()
    import os
    cache = Path(args.cache or os.environ.get("ADAPTERKIT_TEST_CACHE") or tempfile.mkdtemp())
    for arch in args.arch:
        for name, overrides in map(parse_setting, args.setting):
            started = time.perf_counter()
            measured = measure(load_or_train(arch, cache, None, recipe="plain"), overrides)
            line = {"arch": arch, "setting": name, "overrides": overrides, **measured,
                    "seconds": round(time.perf_counter() - started)}
            print(json.dumps(line), flush=True)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
