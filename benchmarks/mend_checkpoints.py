"""MEND's editor at every validation of one training run, each measured on the held-out edits of
tests/test_mend.py (efficacy, generalisation, neighbourhood and unrelated-fact locality, as
benchmarks/mend_locality.py), beside the validation metrics of that step: which checkpoint each early_stop_key
would keep, from one run per setting. The run trains on to max_iters whatever the key (early_stop_patience is far
above max_iters in tiny_hparams.yaml), so one run answers for every key.

Run: python benchmarks/mend_checkpoints.py --arch gptj llama --setting base= cloc15=cloc=1.5 [--out curves.jsonl]
"""
import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import adapterkit  # noqa: E402
from adapterkit.demo.factmodels import load_or_train  # noqa: E402
from adapterkit.editing import training  # noqa: E402
from adapterkit.editing.archive import EDITOR_FILE, save_archive  # noqa: E402
from adapterkit.editing.metrics import summarise  # noqa: E402
from adapterkit.methods.mend import MEND  # noqa: E402

from editors import both_localities, split, train_editor, with_unrelated_facts  # noqa: E402
from mend_locality import parse_setting  # noqa: E402

KEYS = ("loss/total_edit_val", "loss/edit_val", "edit/acc_val", "loc/acc_val")


def keep_every_validation():
    """The trainer saves only improving checkpoints; this also saves each validated editor under step<N>/."""
    checkpoint = training._validate_and_checkpoint

    def and_keep(task, optimizer, val_requests, settings, out_dir, done):
        checkpoint(task, optimizer, val_requests, settings, out_dir, done)
        save_archive(out_dir / f"step{done.step}" / EDITOR_FILE, task.editor, {**task.archive_metadata(), "step": done.step})
    training._validate_and_checkpoint = and_keep


def curve(fact, overrides: dict) -> list[dict]:
    _, _, test = split(fact.facts)
    with tempfile.TemporaryDirectory() as out:
        hp, result = train_editor(MEND, fact, Path(out), **overrides)
        points = []
        for validation in result.history:
            rows = []
            at_step = {**hp, "archive": str(Path(out) / f"step{validation['step']}")}
            for record in with_unrelated_facts(test):
                with adapterkit.edited(fact.model, fact.tok, record, at_step) as edited:
                    rows += edited.metrics
            points.append({**validation, **both_localities(summarise(rows))})
    return points


def kept_by(points: list[dict], key: str) -> dict:
    """The point early stopping on ``key`` keeps: the first best (the trainer saves on strict improvement only)."""
    minimise = any(word in key for word in ("loss", "ppl"))
    best = points[0]
    for point in points[1:]:
        if (point[key] < best[key]) if minimise else (point[key] > best[key]):
            best = point
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", nargs="+", default=["gpt2", "gptj", "gpt_neox", "llama", "chatglm3"])
    parser.add_argument("--setting", nargs="+", required=True, help="NAME=KEY=VALUE[,KEY=VALUE...] (values as JSON)")
    parser.add_argument("--out", default=None, help="append one JSON line per (architecture, setting, step)")
    args = parser.parse_args()
    cache = Path(os.environ.get("ADAPTERKIT_TEST_CACHE") or tempfile.mkdtemp())
    keep_every_validation()
    for arch in args.arch:
        for name, overrides in map(parse_setting, args.setting):
            started = time.perf_counter()
            points = curve(load_or_train(arch, cache, None, recipe="plain"), overrides)
            for point in points:
                line = {"arch": arch, "setting": name, "overrides": overrides, **point}
                print(json.dumps(line), flush=True)
                if args.out:
                    with open(args.out, "a") as f:
                        f.write(json.dumps(line) + "\n")
            for key in KEYS:
                kept = kept_by(points, key)
                print(f"{arch} {name} early_stop_key {key}: step {kept['step']}, efficacy {kept['efficacy']:.2f}, "
                      f"unrelated locality {kept['unrelated_locality']:.2f}", flush=True)
            print(f"{arch} {name}: {time.perf_counter() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
