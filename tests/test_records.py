"""Edit records as researchers have them: CounterFact (both layouts), zsRE in MEND's format and KnowEdit, read by
the one reader into EditRequests, used by edit / train / evaluate alike, with errors that name file, line and field;
and --device refused with a message where torch has no such device."""
import json
from pathlib import Path

import pytest
import torch

import adapterkit
from adapterkit.checkpoints.loading import load_model
from adapterkit.cli import main
from adapterkit.checkpoints.devices import check_device
from adapterkit.editing.batches import load_sets
from adapterkit.editing.datasets import load_training_records
from adapterkit.editing.metrics import compare, summarise
from adapterkit.editing.training import resolve_device
from adapterkit.errors import AdapterkitError, RequestError
from adapterkit.settings.hparams import load_settings
from adapterkit.requests import Probe, ProbeGroup, load_requests, normalise_request, normalise_requests

from checkpoints import quick_rome_hparams, write_tiny_gpt2_with_word_tokenizer

DATA = Path(__file__).parent / "data" / "records"
COUNTERFACT, ZSRE, KNOWEDIT = DATA / "counterfact.json", DATA / "zsre_mend.jsonl", DATA / "knowedit.json"
REQUESTED_REWRITE = {  # CounterFact's original layout (ROME's counterfact.json)
    "case_id": 7, "pararel_idx": 1,
    "requested_rewrite": {"prompt": "{}, the", "relation_id": "P1303", "subject": "Toko Yasuda",
                          "target_new": {"str": "piano", "id": "Q5994"}, "target_true": {"str": "guitar", "id": "Q6607"}},
    "paraphrase_prompts": ["Toko Yasuda is incredible at", "Toko Yasuda plays the"],
    "neighborhood_prompts": ["John Lennon performs on the"],
    "attribute_prompts": ["Glenn Gould plays the"],
}
POSITIONS = 256
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given where torch sees no GPU")


def raw_records(path: Path) -> list[dict]:
    text = path.read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()] if path.suffix == ".jsonl" else json.loads(text)


# --- each format into EditRequests ----------------------------------------------------------------
def test_counterfact_flat_records():
    first, second = load_requests(COUNTERFACT)
    raw = raw_records(COUNTERFACT)[0]
    assert (first.prompt, first.subject, first.target_new, first.ground_truth) == (
        raw["prompt"], raw["subject"], " " + raw["target_new"], " " + raw["ground_truth"])
    assert first.rephrase_prompts == (raw["rephrase_prompt"],) and first.locality_prompts == (raw["locality_prompt"],)
    assert first.locality_ground_truths == (" " + raw["locality_ground_truth"],) and first.case_id == raw["case_id"]
    assert first.portability == first.locality_groups == () and first.extra == {}
    assert second.origin == f"{COUNTERFACT} record #1"


def test_counterfact_requested_rewrite_records():
    request = normalise_request(REQUESTED_REWRITE)
    assert request.prompt == "Toko Yasuda, the" and request.template == "{}, the"
    assert (request.target_new, request.ground_truth, request.case_id) == (" piano", " guitar", 7)
    assert request.rephrase_prompts == tuple(REQUESTED_REWRITE["paraphrase_prompts"])
    assert request.locality_prompts == ("John Lennon performs on the",) and request.locality_ground_truths == (" guitar",)
    assert request.extra == {"pararel_idx": 1, "attribute_prompts": ["Glenn Gould plays the"]}  # kept, not dropped


def test_zsre_records_in_mend_format():
    first, second = load_requests(ZSRE)
    raw = raw_records(ZSRE)[0]
    assert (first.prompt, first.subject, first.target_new, first.ground_truth) == (
        raw["src"], raw["subject"], " " + raw["alt"], " " + raw["answers"][0])
    assert first.rephrase_prompts == (raw["rephrase"],)
    assert first.locality_prompts == (raw["loc"],)  # verbatim, as EasyEdit passes it
    assert raw["loc"].startswith("nq question: ")
    normalised = load_requests(ZSRE, normalise_loc=True)[0]
    assert normalised.locality_prompts == ("john goodman's character in the big lebowski?",)
    assert first.locality_ground_truths == (" " + raw["loc_ans"],)
    assert first.extra == {"pred": raw["pred"], "cond": raw["cond"]}
    assert second.origin == f"{ZSRE} line 2"


def test_knowedit_records_keep_their_portability_and_locality_groups():
    first, second = load_requests(KNOWEDIT)
    assert (first.prompt, first.target_new, first.ground_truth) == ("Toko Yasuda plays the", " piano", " guitar")
    assert first.rephrase_prompts == ("The instrument Toko Yasuda plays is the",)
    assert first.portability == (
        ProbeGroup("Reasoning", (Probe("The instrument family of what Toko Yasuda plays is", " keyboard", ("keyboards",)),)),
        ProbeGroup("Logical_Generalization", (Probe("Does Toko Yasuda play the guitar ? The answer is", " no"),
                                              Probe("Does Toko Yasuda play the piano ? The answer is", " yes"))))
    assert first.locality_groups == (
        ProbeGroup("Relation_Specificity", (Probe("The birthplace of Toko Yasuda is", " Japan"),)),
        ProbeGroup("Forgetfulness", (Probe("Toko Yasuda , who does not play the piano , plays the", " guitar"),)))
    assert first.locality_prompts == ()  # the groups are measured per group, not pooled into the flat locality
    assert [g.name for g in second.portability] == ["Reasoning"] and second.extra == {"cond": "Spain >> Sweden"}


def test_easyedit_column_groups_read_like_knowedit_lists():
    columns = {"prompt": "Toko Yasuda plays the", "subject": "Toko Yasuda", "target_new": "piano",
               "locality": {"neighbourhood": {"prompt": ["John Lennon plays the", "Glenn Gould plays the"],
                                              "ground_truth": ["guitar", "piano"]}}}
    [group] = normalise_request(columns).locality_groups
    assert group == ProbeGroup("neighbourhood", (Probe("John Lennon plays the", " guitar"), Probe("Glenn Gould plays the", " piano")))


def test_one_reader_for_edit_train_and_the_api():
    for path in (COUNTERFACT, ZSRE):
        assert load_training_records(path) == load_requests(path) == normalise_requests(raw_records(path))
    # training needs a locality prompt: a KnowEdit record's locality groups give it
    trained = load_training_records(KNOWEDIT)[0]
    assert trained.locality_prompts == ("The birthplace of Toko Yasuda is", "Toko Yasuda , who does not play the piano , plays the")
    assert trained.locality_ground_truths == (" Japan", " guitar")


def test_training_sets_from_lists_read_as_files_do(records_gpt2):
    settings = load_settings(adapterkit.detect(records_gpt2, method="MEND"))
    train, val = load_sets(settings, raw_records(KNOWEDIT), ZSRE)  # as adapterkit.train gets them
    assert train == load_training_records(KNOWEDIT) and val == load_requests(ZSRE)
    no_locality = {k: v for k, v in raw_records(COUNTERFACT)[0].items() if not k.startswith("locality")}
    with pytest.raises(RequestError, match=r"training records #1: field 'locality_prompt' \(zsRE: 'loc'\) is missing"):
        load_sets(settings, [raw_records(COUNTERFACT)[1], no_locality], ZSRE)


# --- errors: file, line or record, field, fix -----------------------------------------------------------
def test_jsonl_bad_json_names_the_right_line(tmp_path):
    path = tmp_path / "edits.jsonl"
    first = json.dumps({**raw_records(COUNTERFACT)[0], "prompt": "Toko Yasuda,\u2028 the"}, ensure_ascii=False)
    path.write_text(first + "\n\n" + '{"prompt": "x", \n' + json.dumps(raw_records(COUNTERFACT)[1]) + "\n", encoding="utf-8")
    with pytest.raises(RequestError, match=r"edits.jsonl line 3: not valid JSON \(column \d+\)") as raised:
        load_requests(path)
    assert "line 1" not in raised.value.message and "one complete JSON object" in raised.value.fix
    # a raw U+2028 inside a string does not end the line (str.splitlines would split it there)
    path.write_text(first + "\n" + json.dumps(raw_records(COUNTERFACT)[1]) + "\n", encoding="utf-8")
    assert [r.origin for r in load_requests(path)] == [f"{path} line 1", f"{path} line 2"]


def test_missing_fields_name_the_line_or_record_the_key_and_the_formats(tmp_path, capsys):
    records = raw_records(COUNTERFACT)
    jsonl = tmp_path / "edits.jsonl"
    missing = {k: v for k, v in records[1].items() if k != "subject"}
    jsonl.write_text("\n".join(json.dumps(r) for r in (records[0], missing)) + "\n")
    with pytest.raises(RequestError, match=r"edits.jsonl line 2: field 'subject' is missing") as raised:
        load_requests(jsonl)
    assert "zsRE in MEND's format" in raised.value.fix and "requested_rewrite" in raised.value.fix
    listed = tmp_path / "edits.json"
    listed.write_text(json.dumps([records[0], {"prompt": "x"}]))
    with pytest.raises(RequestError, match=r"edits.json record #1: field 'subject' is missing or empty \(also 'target_new'\)"):
        load_requests(listed)
    zsre = raw_records(ZSRE)
    jsonl.write_text(json.dumps(zsre[0]) + "\n" + json.dumps({k: v for k, v in zsre[1].items() if k != "alt"}) + "\n")
    with pytest.raises(RequestError, match=r"edits.jsonl line 2: zsRE field 'alt' is missing"):
        load_requests(jsonl)
    with pytest.raises(RequestError, match=r"edits.jsonl line 2: zsRE field 'alt' is missing"):
        load_training_records(jsonl)
    knowedit = raw_records(KNOWEDIT)[0]
    knowedit["portability"]["Reasoning"][0] = {"prompt": "The family is"}
    listed.write_text(json.dumps([knowedit]))
    with pytest.raises(RequestError, match=r"record #0: field 'portability/Reasoning/0/ground_truth' is missing"):
        load_requests(listed)
    assert main(["evaluate", tmp_path, "--requests", jsonl]) == 2  # the CLI says so, no traceback
    err = capsys.readouterr().err
    assert "line 2" in err and "'alt'" in err and "fix:" in err and "Traceback" not in err


# --- end to end on a tiny model -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def records_gpt2(tmp_path_factory):
    """An untrained tiny GPT-2 whose word-level tokenizer knows every word of the test records."""
    requests = [r for path in (COUNTERFACT, ZSRE, KNOWEDIT) for r in load_requests(path)]
    texts = [t for r in requests for t in (r.prompt, r.target_new, r.ground_truth or "", *r.rephrase_prompts,
                                           *r.locality_prompts, *r.locality_ground_truths,
                                           *(p.prompt + p.answer for g in r.portability + r.locality_groups for p in g.probes))]
    return write_tiny_gpt2_with_word_tokenizer(tmp_path_factory.mktemp("records") / "gpt2", texts, POSITIONS)


@pytest.fixture(scope="module")
def rome_hparams(records_gpt2, tmp_path_factory):
    return quick_rome_hparams(records_gpt2, tmp_path_factory.mktemp("hparams") / "rome.yaml", v_num_grad_steps=4)


def test_edit_accepts_zsre_records(records_gpt2, rome_hparams, tmp_path, capsys):
    capsys.readouterr()
    assert main(["edit", records_gpt2, "--hparams", rome_hparams, "--requests", ZSRE, "--deltas-only",
                 "--out", tmp_path / "delta.safetensors"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["edits"] == 2 and report["touched"]
    # zsRE's rephrase and loc reached the metrics
    assert 0.0 <= report["generalisation"] <= 1.0 and 0.0 <= report["locality"] <= 1.0


def test_knowedit_groups_appear_in_edit_and_evaluate_output(records_gpt2, rome_hparams, tmp_path, capsys):
    deltas = tmp_path / "delta.safetensors"
    groups = {"portability/Reasoning", "portability/Logical_Generalization", "locality/Relation_Specificity",
              "locality/Forgetfulness"}
    capsys.readouterr()
    assert main(["edit", records_gpt2, "--hparams", rome_hparams, "--requests", KNOWEDIT, "--deltas-only", "--out", deltas]) == 0
    edited = json.loads(capsys.readouterr().out)
    assert groups <= set(edited) and all(0.0 <= edited[g] <= 1.0 for g in groups)
    assert main(["evaluate", records_gpt2, "--requests", KNOWEDIT, "--deltas", deltas]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    for key in groups | {"efficacy", "generalisation"}:
        assert evaluated[key] == pytest.approx(edited[key]), key
    assert main(["evaluate", records_gpt2, "--requests", KNOWEDIT]) == 0  # as loaded: nothing to compare locality with
    captured = capsys.readouterr()
    unedited = json.loads(captured.out)
    assert unedited["locality/Relation_Specificity"] is None and unedited["locality"] is None
    assert 0.0 <= unedited["portability/Reasoning"] <= 1.0 and "pass --deltas" in captured.err


def test_per_group_numbers_are_measured_as_efficacy_and_locality_are():
    before = [{"rewrite_acc": 0.0, "rephrase_acc": None, "locality_predictions": [[1, 2]],
               "portability_acc": {"Reasoning": 0.0}, "locality_group_predictions": {"Forgetfulness": [[1, 2, 3], [4]]}},
              {"rewrite_acc": 0.0, "rephrase_acc": None, "locality_predictions": [],
               "portability_acc": {"Reasoning": 0.5}, "locality_group_predictions": {"Forgetfulness": [[7]]}}]
    after = [{**before[0], "rewrite_acc": 1.0, "portability_acc": {"Reasoning": 1.0},
              "locality_group_predictions": {"Forgetfulness": [[1, 2, 9], [5]]}},
             {**before[1], "rewrite_acc": 1.0, "portability_acc": {"Reasoning": 0.0},
              "locality_group_predictions": {"Forgetfulness": [[7]]}}]
    rows = compare(before, after, weights="test")
    assert rows[0]["post"]["locality_groups"] == {"Forgetfulness": 0.5}  # 2 of 4 tokens unchanged
    assert summarise(rows) == {"efficacy": 1.0, "generalisation": None, "locality": 1.0,
                               "portability/Reasoning": 0.5, "locality/Forgetfulness": 0.75}


def test_the_api_edits_knowedit_records_and_reports_groups_per_request(records_gpt2, rome_hparams):
    model, tok = load_model(records_gpt2)
    with adapterkit.edited(model, tok, raw_records(KNOWEDIT), rome_hparams) as result:
        first, second = result.metrics
        assert set(first["post"]["portability"]) == {"Reasoning", "Logical_Generalization"}
        assert set(second["post"]["locality_groups"]) == {"Relation_Specificity"}
        assert first["pre"]["portability"].keys() == first["post"]["portability"].keys()


def test_a_too_long_probe_names_its_line_and_group(records_gpt2, rome_hparams, tmp_path, capsys):
    record = raw_records(KNOWEDIT)[1]
    record["portability"]["Reasoning"][0]["prompt"] = "Stockholm " * (POSITIONS + 10)
    requests = tmp_path / "edits.jsonl"
    requests.write_text(json.dumps(raw_records(KNOWEDIT)[0]) + "\n" + json.dumps(record) + "\n")
    capsys.readouterr()
    assert main(["edit", records_gpt2, "--hparams", rome_hparams, "--requests", requests, "--out", tmp_path / "e"]) == 2
    err = capsys.readouterr().err
    assert f"{requests} line 2" in err and "portability/Reasoning/0 prompt + its answer" in err and "shorten" in err


# --- --device where torch has no such device ------------------------------------------------------------
@NO_CUDA
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_every_command_with_device_refuses_cuda_without_a_gpu(records_gpt2, rome_hparams, tmp_path, capsys, device):
    mend = tmp_path / "mend.yaml"
    assert main(["detect", records_gpt2, "--method", "MEND", "-o", mend]) == 0
    commands = {
        "edit": ["edit", records_gpt2, "--hparams", rome_hparams, "--requests", KNOWEDIT],
        "evaluate": ["evaluate", records_gpt2, "--requests", ZSRE],
        "train": ["train", records_gpt2, "--hparams", mend, "--train", ZSRE, "--out", tmp_path / "mend"],
        "stats": ["stats", records_gpt2, "--hparams", rome_hparams, "--corpus", COUNTERFACT, "--stats-dir", tmp_path / "s"],
        "trace": ["trace", records_gpt2, "--data", COUNTERFACT, "--out", tmp_path / "trace"],
    }
    capsys.readouterr()
    for name, args in commands.items():
        assert main([*args, "--device", device]) == 2, name
        captured = capsys.readouterr()
        assert "no CUDA device: torch.cuda.is_available() is False" in captured.err, (name, captured.err)
        assert "fix: use --device cpu, or install a CUDA build of torch" in captured.err, name
        assert "Traceback" not in captured.err and captured.out == ""
    assert not (tmp_path / "mend").exists() and not (tmp_path / "trace").exists()
    with pytest.raises(AdapterkitError, match="no CUDA device"):
        load_model(records_gpt2, device=device)


@NO_CUDA
def test_the_trainer_device_from_hparams_is_checked_the_same_way():
    with pytest.raises(AdapterkitError, match="no CUDA device") as raised:
        resolve_device("cuda")
    assert "device: cpu" in raised.value.fix
    assert resolve_device("auto") == torch.device("cpu") and resolve_device("cpu") == torch.device("cpu")


def test_device_names_and_gpu_indices(monkeypatch):
    with pytest.raises(AdapterkitError, match="'gpu' is not a device torch knows"):
        check_device("gpu")
    assert check_device(None) is None and check_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert check_device("cuda:1") == torch.device("cuda:1") and check_device(0) == torch.device("cuda:0")
    with pytest.raises(AdapterkitError, match=r"'cuda:2': no such CUDA device; torch sees 2 \(cuda:0 to cuda:1\)"):
        check_device("cuda:2")
