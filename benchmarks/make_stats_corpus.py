"""Offline second-moment corpora for a model whose own pretraining text (Wikipedia, for the published
statistics) is not at hand; one document per line, for `adapterkit stats --corpus` / ``mom2_corpus``.

  counterfact DIR   CounterFact's sentences: every record's prompt, rephrase and neighbourhood prompt with its
                    true answer (``ground_truth`` / ``locality_ground_truth``), deduplicated, in file order
                    (counterfact-train.json, then -val.json), joined into documents of --sentences sentences.
  generated         text the model writes itself: for each seed prompt below (in order, cycled), a sample of
                    --length new tokens (top-k 50, temperature 1, torch seed --seed), batch by batch until
                    --tokens tokens; documents keep their seed prompt.

Run: python benchmarks/make_stats_corpus.py generated --model DIR --tokens 100000 --out FILE
     python benchmarks/make_stats_corpus.py counterfact /work/shared/data/counterfact --out FILE
"""
import argparse
import json
import time
from pathlib import Path

import torch

SEEDS = ("The", "In", "A", "He", "She", "It", "They", "On", "After", "During", "According to", "In 1987,",
         "The city of", "The history of", "The company", "The film", "The river", "The university of",
         "The war", "The album", "The language", "The president of", "The team", "The church", "The village of",
         "The novel", "The museum", "The king", "Born in", "The species", "The election", "The station")
SOURCES = ("counterfact-train.json", "counterfact-val.json")


def counterfact_documents(folder: Path, sentences: int) -> list[str]:
    seen, texts = set(), []
    for name in SOURCES:
        for r in json.loads((folder / name).read_text()):
            for prompt, answer in ((r["prompt"], r["ground_truth"]), (r["rephrase_prompt"], r["ground_truth"]),
                                   (r["locality_prompt"], r["locality_ground_truth"])):
                text = f"{prompt} {answer}.".replace("\n", " ")
                if text not in seen:
                    seen.add(text)
                    texts.append(text)
    return [" ".join(texts[i: i + sentences]) for i in range(0, len(texts), sentences)]


@torch.no_grad()
def generated_documents(model, tok, tokens: int, length: int, batch: int, seed: int, progress_file=None) -> list[str]:
    torch.manual_seed(seed)
    tok.padding_side = "left"
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    docs, made, started, i = [], 0, time.perf_counter(), 0
    while made < tokens:
        seeds = [SEEDS[(i + j) % len(SEEDS)] for j in range(batch)]
        i += batch
        enc = tok(seeds, return_tensors="pt", padding=True)
        out = model.generate(**enc, max_new_tokens=length, do_sample=True, top_k=50, temperature=1.0, pad_token_id=pad)
        for row in out:
            ids = row[row != pad].tolist()
            made += len(ids)
            docs.append(" ".join(tok.decode(ids, skip_special_tokens=True).split()))
        if progress_file is not None:  # a long run keeps what it made so far
            progress_file.write_text("\n".join(docs) + "\n", encoding="utf-8")
        print(f"{made} tokens, {made / (time.perf_counter() - started):.0f} tokens/s", flush=True)
    return docs


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--out", type=Path, required=True)
    sub = parser.add_subparsers(dest="kind", required=True)
    cf = sub.add_parser("counterfact", parents=[common])
    cf.add_argument("folder", type=Path)
    cf.add_argument("--sentences", type=int, default=16)
    gen = sub.add_parser("generated", parents=[common])
    gen.add_argument("--model", type=Path, required=True)
    gen.add_argument("--tokens", type=int, default=100000)
    gen.add_argument("--length", type=int, default=128)
    gen.add_argument("--batch", type=int, default=32)
    gen.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.kind == "counterfact":
        docs = counterfact_documents(args.folder, args.sentences)
    else:
        from select_known_facts import load_model

        model, tok = load_model(args.model)
        docs = generated_documents(model, tok, args.tokens, args.length, args.batch, args.seed,
                                   args.out.with_name(args.out.name + ".partial"))
    args.out.write_text("\n".join(docs) + "\n", encoding="utf-8")
    print(f"{len(docs)} documents, {args.out.stat().st_size} bytes -> {args.out}")


if __name__ == "__main__":
    main()
