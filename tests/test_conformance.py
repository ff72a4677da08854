"""`adapterkit conformance`: a built-in architecture passes every row; a broken declaration fails the row that
names its fault, with the fix, and a non-zero exit."""
import json
from pathlib import Path

import pytest
import yaml

from adapterkit.cli import main
from adapterkit.arch.conformance import METHODS, ConformanceSettings, run_conformance
from adapterkit.demo.factmodels import build_tokenizer  # noqa: F401  (the fact models' dependency, imported early)
from conftest import run_root, shared_cache

REPO = Path(__file__).parents[1]
GPT2 = REPO / "plugins" / "gpt2.yaml"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return shared_cache(run_root(tmp_path_factory), "conformance")


def statuses(report) -> dict:
    (arch,) = report.architectures
    return {c.name: c.status for c in arch.checks}


def row_line(table: str, name: str) -> str:
    return next(line for line in table.splitlines() if line.split("  ")[1:2] == [name])


def broken_gpt2(tmp_path, change) -> Path:
    declaration = yaml.safe_load(GPT2.read_text())
    change(declaration)
    path = tmp_path / "gpt2.yaml"
    path.write_text(yaml.safe_dump(declaration, sort_keys=False))
    return path


def test_gpt2_passes_with_rome_and_memit_and_the_json_holds_the_table(cache, tmp_path, capsys):
    out = tmp_path / "conformance.json"
    code = main(["conformance", GPT2, "--methods", "rome,memit", "--cache-dir", cache, "--json", out])
    printed = capsys.readouterr()
    assert code == 0, printed.out + printed.err[-3000:]
    report = json.loads(out.read_text())
    (arch,) = report["architectures"]
    rows = {c["name"]: c for c in arch["checks"]}
    assert list(rows) == ["declaration", "templates", "weight layout", "norm", "lm head", "ROME", "MEMIT",
                          "restore", "deltas round-trip"]
    assert report["passed"] and all(c["status"] == "pass" for c in rows.values()), rows
    for method in ("ROME", "MEMIT"):
        numbers = rows[method]["numbers"]
        assert numbers["efficacy"] >= ConformanceSettings().min_efficacy > numbers["efficacy_before"], numbers
        assert 0.0 <= numbers["locality"] <= 1.0 and numbers["edits"] >= 2
    assert "conv1d" in rows["weight layout"]["detail"] and "layernorm" in rows["norm"]["detail"]
    assert "tied" in rows["lm head"]["detail"]
    assert "PASS" in row_line(printed.out, "ROME") and "conformance of gpt2" in printed.out  # the table, on stdout
    assert "[conformance] gpt2: ROME" in printed.err  # progress per step, on stderr


def test_a_wrong_rewrite_template_fails_the_templates_row_and_exits_non_zero(tmp_path, capsys):
    path = broken_gpt2(tmp_path, lambda d: d["modules"]["layer"].update(mlp_out="mlp.c_out"))
    code = main(["conformance", path, "--cache-dir", tmp_path / "cache", "--json", tmp_path / "r.json"])
    printed = capsys.readouterr().out
    assert code == 1
    rows = {c["name"]: c for c in json.loads((tmp_path / "r.json").read_text())["architectures"][0]["checks"]}
    assert rows["templates"]["status"] == "fail"
    assert "'transformer.h.{}.mlp.c_out' (role mlp_out) matches no tensor" in rows["templates"]["detail"]
    assert "fix: correct modules for 'mlp_out'" in rows["templates"]["detail"]
    assert rows["declaration"]["status"] == "fail"  # validate's meta-device check finds it too
    assert all(rows[m]["status"] == "skip" for m in METHODS)  # nothing is trained for a declaration that cannot work
    assert rows["ROME"]["detail"].startswith("templates") and "failed: fix the declaration first" in rows["ROME"]["detail"]
    assert "FAIL" in row_line(printed, "templates")


def test_a_wrong_weight_layout_fails_the_layout_row_with_the_fix(tmp_path):
    path = broken_gpt2(tmp_path, lambda d: d.update(weight_layout="linear"))
    report = run_conformance(path, ConformanceSettings(methods=("ROME",), cache_dir=tmp_path), say=lambda _: None)
    rows = {c.name: c for c in report.architectures[0].checks}
    assert not report.passed and rows["weight layout"].status == "fail"
    assert "weight_layout is 'linear', but transformer.h.0.attn.c_proj (role attn_out) computes x @ W (Conv1D" in rows["weight layout"].detail
    assert "fix: set weight_layout: conv1d" in rows["weight layout"].detail
    assert rows["ROME"].status == "skip"


def test_a_wrong_norm_or_head_fails_its_own_row(tmp_path):
    def break_both(declaration):
        declaration.update(norm="rmsnorm", tied_lm_head=False)
        declaration["config"]["tied_lm_head"] = None  # the family default decides: untied, but gpt2's head is tied

    report = run_conformance(broken_gpt2(tmp_path, break_both), ConformanceSettings(methods=("ROME",), cache_dir=tmp_path),
                             say=lambda _: None)
    rows = {c.name: c for c in report.architectures[0].checks}
    assert statuses(report)["templates"] == "pass" and statuses(report)["weight layout"] == "pass"
    assert rows["norm"].status == "fail" and "subtracts the mean, as LayerNorm" in rows["norm"].detail
    assert "fix: set norm: layernorm" in rows["norm"].detail
    assert rows["lm head"].status == "fail" and "shares the embedding's tensor" in rows["lm head"].detail
    assert rows["ROME"].status == "skip" and "norm and lm head failed" in rows["ROME"].detail


def test_a_declaration_that_fails_its_schema_skips_everything_else(tmp_path, capsys):
    path = broken_gpt2(tmp_path, lambda d: d.update(weight_layout="diagonal"))
    assert main(["conformance", path, "--cache-dir", tmp_path]) == 1
    printed = capsys.readouterr().out
    assert "FAIL" in row_line(printed, "declaration") and "#/weight_layout" in printed
    assert "the declaration does not validate" in printed


def test_bad_targets_and_methods_are_refused_with_the_fix(tmp_path, capsys):
    assert main(["conformance", tmp_path]) == 2
    assert "not a plugin distribution" in capsys.readouterr().err
    assert main(["conformance", GPT2, "--methods", "rome,knn"]) == 2
    err = capsys.readouterr().err
    assert "unknown method(s) KNN" in err and "fix: a comma-separated subset of rome,memit,pmet,mend,serac" in err


def test_a_checkpoint_directory_of_an_inferred_family_passes_with_the_inferred_settings(tmp_path):
    """stablelm, which no plugin declares: a third inferred family whose trained fact model ROME edits with the
    inferred declaration (phi: tests/test_inference.py; starcoder2: new-plugin's own conformance test)."""
    from adapterkit.arch.tinyconfig import tiny_config, write_checkpoint

    checkpoint = write_checkpoint(tiny_config("stablelm"), tmp_path / "stablelm")
    report = run_conformance(checkpoint, ConformanceSettings(methods=("ROME",), cache_dir=tmp_path / "cache"),
                             say=lambda _: None)
    (arch,) = report.architectures
    rows = {c.name: c for c in arch.checks}
    assert arch.architecture == "stablelm" and "inferred" in report.table()
    assert all(row.status == "pass" for row in rows.values()), {n: (r.status, r.detail) for n, r in rows.items()}
    assert rows["ROME"].numbers["efficacy"] >= ConformanceSettings().min_efficacy > rows["ROME"].numbers["efficacy_before"]


@pytest.mark.slow
def test_gpt2_every_method(cache, tmp_path):
    """All five methods: the locate-then-edit ones on the subject-recall fact model, the trained editors (MEND, SERAC:
    200 editor steps) on the plain one, one edit at a time. Measured here: MEND efficacy 0.75 / generalisation 0.75 /
    locality 0.00 on single edits with the default locality training on unrelated prompts (1.00 / 1.00 / 0.00 with
    the neighbourhood prompt alone; 0.00 / 0.00 / 0.00 with the four edits in one call, as conformance ran it
    before), SERAC 1.00 / 1.00 / 1.00 (0.5 on the subject-recall model)."""
    report = run_conformance(GPT2, ConformanceSettings(cache_dir=cache), say=print)
    rows = {c.name: c for c in report.architectures[0].checks}
    print(report.table())
    for name, row in rows.items():
        assert row.status == "pass", (name, row.detail)
    assert {"ROME", "MEMIT", "PMET", "MEND", "SERAC"} <= set(rows)
