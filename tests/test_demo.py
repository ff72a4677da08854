"""`adapterkit demo`, the README's first command: it runs offline on the bundled data and reports real metrics."""
import pytest

from adapterkit.cli import main
from adapterkit.demo.run import demo_settings, greedy_answer


@pytest.fixture
def demo_cache(tmp_path, fact_model_cache):
    (tmp_path / "fact-models").symlink_to(fact_model_cache, target_is_directory=True)  # reuse the session's models
    return tmp_path


def test_demo_defaults_name_a_registered_architecture_and_method():
    from adapterkit.registry import get_registry

    settings = demo_settings()
    assert settings["architecture"] in get_registry().architecture_names()
    get_registry().method(settings["method"])


def test_demo_edits_and_prints_before_and_after(demo_cache, capsys, fact_models):
    fact = fact_models(demo_settings()["architecture"], recipe="subject_recall")
    record = fact.facts.trained[0]
    assert greedy_answer(fact.model, fact.tok, record["prompt"]) == record["ground_truth"]
    assert main(["demo", "--edits", "2", "--cache-dir", str(demo_cache)]) == 0
    out = capsys.readouterr().out
    assert f"{record['prompt']!r}: {record['ground_truth']!r} -> " in out
    assert "efficacy" in out and "locality" in out and "2 edit(s)" in out


def test_demo_refuses_more_edits_than_known_facts(demo_cache, capsys):
    assert main(["demo", "--edits", "999", "--cache-dir", str(demo_cache)]) == 2
    assert "fact model knows" in capsys.readouterr().err
