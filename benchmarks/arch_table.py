"""What each decoder-only causal-LM family of the installed transformers gets from `adapterkit detect`.

For every model type in transformers' causal-LM mapping (encoder-decoders, multimodal wrappers and encoders
used as decoders skipped), a tiny random checkpoint is built from the config class's defaults
(adapterkit.arch.tinyconfig), `detect --method rome` runs on it, and where it succeeds one ROME edit is applied to
the random model with the detected settings: does the new target become the answer (efficacy 1.0)? A random
model does not carry a subject's state to the prompt's last token, so the edit's key is that last token
(fact_token: last): the check is that the templates, weight layout and head work end to end.
Writes the table into docs/architectures.md (the families most used in editing research) and
benchmarks/RESULTS.md (every family). Run: python benchmarks/arch_table.py [--families a,b,...] [--no-write]
"""
from __future__ import annotations

import argparse
import datetime
import platform
import re
import sys
import tempfile
import warnings
from pathlib import Path

import torch
import transformers

import adapterkit
from adapterkit.arch.detect import detect
from adapterkit.errors import AdapterkitError
from adapterkit.demo.factmodels import build_tokenizer, tiny_hparams
from adapterkit.demo.facts import counterfact_sample, record_texts
from adapterkit.arch.registry import get_registry
from adapterkit.requests import normalise_requests
from adapterkit.arch.tinyconfig import tiny_config, write_checkpoint

REPO = Path(__file__).parents[1]
# the families docs/architectures.md shows: the list of what researchers edit today
MAINSTREAM = ["gpt2", "gptj", "gpt_neox", "llama", "qwen2", "qwen3", "mistral", "mixtral", "gemma", "gemma2",
              "gemma3_text", "phi", "phi3", "opt", "falcon", "bloom", "gpt_bigcode", "gpt_neo", "codegen", "stablelm",
              "olmo", "olmo2", "cohere", "starcoder2", "granite", "mpt", "glm", "qwen2_moe", "qwen3_moe", "chatglm"]
TABLE_START, TABLE_END = "<!-- arch-table:start -->", "<!-- arch-table:end -->"


def families() -> list[str]:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return sorted(set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES) | {"chatglm"})


def skip_reason(model_type: str) -> str | None:
    from transformers import AutoConfig

    try:
        config = AutoConfig.for_model(model_type)
    except Exception:  # unknown to transformers, or its defaults do not validate: the row says which
        return None
    if getattr(config, "is_encoder_decoder", False):
        return "encoder-decoder"
    if any(hasattr(config, k) for k in ("text_config", "vision_config", "audio_config")):
        return "multimodal"
    if "is_decoder" in config.to_dict():
        return "encoder used as a decoder"
    return None


def one_rome_edit(path: Path, hparams: dict, tok) -> float:
    """Efficacy of one ROME edit, with the detected templates and layers, on the random model at ``path``."""
    model, _ = adapterkit.load_model(path, dtype=torch.float32, tokenizer=False)
    # random weights give outputs of very different norms by family (a 0.03-norm MLP output under a 1/16 logit
    # scale): no weight decay and a wide clamp, so the check is the mechanics rather than a norm budget
    # (and no context templates: a random model's own generations give keys unlike the bare prompt's)
    hp = {**hparams, **tiny_hparams("ROME"), "mom2_adjustment": False, "context_template_length_params": [],
          "fact_token": "last", "v_weight_decay": 0.0, "clamp_norm_factor": 1000}
    request = normalise_requests(counterfact_sample()[1])
    result = adapterkit.edit(model, tok, request, hp)
    return result.metrics[0]["post"]["rewrite_acc"]


def row(model_type: str, root: Path, tok) -> dict:
    skipped = skip_reason(model_type)
    if skipped:
        return {"family": model_type, "skipped": skipped}
    path = root / model_type
    entry = {"family": model_type, "class": "-"}
    declared = [s for s in get_registry().architectures if model_type in s.model_types and s.tiny_config]
    if declared and declared[0].config_class() is not None:  # a plugin's native classes: its own tiny model
        from adapterkit.checkpoints.build import build_model

        spec = declared[0]
        entry["class"] = spec.model_class().__name__
        torch.manual_seed(0)
        build_model({**spec.tiny_config, spec.declaration["config"]["vocab_size"]: len(tok)}, spec).save_pretrained(path)
    else:
        try:
            config = tiny_config(model_type)
        except AdapterkitError as exc:
            return {**entry, "result": "not built", "why": exc.message}
        for key in ("vocab_size", "padded_vocab_size"):
            if key in config:
                config[key] = max(config[key], len(tok))
        entry["class"] = config["architectures"][0]
        try:
            write_checkpoint(config, path)
        except Exception as exc:  # a tiny config that builds on meta may still fail to initialise
            return {**entry, "result": "not built", "why": f"{type(exc).__name__}: {str(exc).splitlines()[0][:150]}"}
    try:
        hparams = detect(path, method="rome")
    except AdapterkitError as exc:
        why = re.sub(r"^no plugin declares model_type=\S+, and its declaration cannot be inferred: ", "", exc.message)
        return {**entry, "result": "refused", "why": first_sentence(why.replace(str(path), "the checkpoint"))}
    if hparams.declaration_source == "inferred":
        entry.update(result="inferred", why=f"confidence {hparams.inference.confidence}")
    else:
        entry.update(result="built-in", why=f"declaration {hparams.spec.name}")
    entry["rewrite"] = hparams["rewrite_module_tmp"]
    try:
        entry["rome"] = f"{one_rome_edit(path, hparams, tok):.2f}"
    except Exception as exc:  # report, do not hide: the table says the edit failed and how
        entry["rome"] = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
    return entry


def first_sentence(text: str) -> str:
    end = text.find(". ", 40)
    return text if end < 0 else text[: end + 1]


def markdown(rows: list[dict]) -> str:
    lines = ["| family (model_type) | class | detect | ROME template | one ROME edit (efficacy) | why / notes |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        if "skipped" in r:
            continue
        why = r.get("why", "").replace("|", "/")
        lines.append(f"| {r['family']} | {r.get('class', '-')} | {r['result']} | {('`' + r['rewrite'] + '`') if r.get('rewrite') else '-'} "
                     f"| {r.get('rome', '-')} | {why} |")
    return "\n".join(lines)


def counts(rows: list[dict]) -> str:
    shown = [r for r in rows if "skipped" not in r]
    tally = {k: sum(r["result"] == k for r in shown) for k in ("built-in", "inferred", "refused", "not built")}
    edited = sum(r.get("rome") == "1.00" for r in shown)
    return (f"{len(shown)} families: {tally['built-in']} built-in, {tally['inferred']} inferred, {tally['refused']} refused, "
            f"{tally['not built']} without a tiny config that builds; one ROME edit reaches efficacy 1.0 on {edited}")


def write_docs_table(rows: list[dict], header: str) -> None:
    readme = REPO / "docs" / "architectures.md"
    text = readme.read_text()
    table = f"{TABLE_START}\n{header}\n\n{markdown([r for r in rows if r['family'] in MAINSTREAM])}\n{TABLE_END}"
    if TABLE_START not in text:
        raise SystemExit(f"{readme} has no {TABLE_START} ... {TABLE_END} markers for the table")
    readme.write_text(re.sub(re.escape(TABLE_START) + ".*?" + re.escape(TABLE_END), lambda _: table, text, flags=re.S))


def write_results(rows: list[dict], header: str) -> None:
    results = REPO / "benchmarks" / "RESULTS.md"
    text = results.read_text()
    section = f"## arch_table.py — {header}\n\n{counts(rows)}.\n\n{markdown(rows)}\n"
    pattern = r"## arch_table\.py — .*?(?=\n## |\Z)"
    text = re.sub(pattern, lambda _: section, text, flags=re.S) if re.search(pattern, text, flags=re.S) else text.rstrip() + "\n\n" + section
    results.write_text(text)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", help="comma-separated model types (default: every causal-LM family)")
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(1)
    chosen = args.families.split(",") if args.families else families()
    tok = build_tokenizer(record_texts(counterfact_sample()))
    get_registry()
    rows = []
    with tempfile.TemporaryDirectory() as root:
        for model_type in chosen:
            entry = row(model_type, Path(root), tok)
            rows.append(entry)
            print(f"{model_type}: {entry.get('skipped') or entry['result']} {entry.get('rome', '')} {entry.get('why', '')[:100]}",
                  file=sys.stderr, flush=True)
    header = (f"{datetime.date.today().isoformat()}, {platform.machine()} CPU, transformers {transformers.__version__}, "
              f"torch {torch.__version__}; tiny random checkpoints (4 layers, width 64), `detect --method rome`, then one "
              f"ROME edit with the detected templates and layers (on a random model: key at the prompt's last token, no context "
              f"templates, no weight decay; it checks the mechanics, not edit quality)")
    print(counts(rows))
    print(markdown(rows))
    if not args.no_write and not args.families:
        write_docs_table(rows, header)
        write_results(rows, header)
    return 0


if __name__ == "__main__":
    sys.exit(main())
