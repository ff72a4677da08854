"""Shared fixtures: small fact models of every registered architecture, trained once per session.

Use ``fact_model`` with indirect parametrisation over ``ARCHS``::

    @pytest.mark.parametrize("fact_model", ARCHS, indirect=True)
    def test_something(fact_model):
        model, tok, facts, recipe = fact_model

or the ``fact_models`` factory (``fact_models("llama")``). Either way each call loads fresh weights from
the session's cache, so a test may edit its model in place without affecting any other test.
Set ADAPTERKIT_TEST_CACHE to a directory to keep the trained models between sessions.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from adapterkit.errors import AdapterkitError
from adapterkit.registry import get_registry

ARCHS = get_registry().architecture_names()
# What adapterkit ships; tests/test_sync.py keeps these in step with pyproject.toml, plugins/, the registry and CI.
BUILTIN_ARCHS = ("gpt2", "gptj", "gpt_neox", "llama", "chatglm3",
                 "mistral", "ministral", "qwen2", "qwen3", "olmo2", "gemma", "gemma2", "gemma3",  # plugins/llama_style.yaml
                 "phi3", "gpt_neo", "opt", "falcon", "bloom", "qwen2_moe")
BUILTIN_METHODS = ("ROME", "MEMIT", "PMET", "MEND", "SERAC")
# The slow edit-quality suite trains fact models of these five only (each architecture adds minutes of training);
# every built-in architecture still gets the fast tests (detect, templates, update algebra on random models).
QUALITY_ARCHS = ["chatglm3", "gpt2", "gpt_neox", "gptj", "llama"]


def fact_model_unavailable(arch: str) -> str | None:
    """Why no fact model of ``arch`` can be built here (None when one can)."""
    spec = get_registry().architecture(arch)
    if spec.tiny_config is None:
        return f"{arch} declares no tiny_config"
    try:
        spec.model_class(), spec.config_class()
    except AdapterkitError as exc:
        return f"{arch}'s native modeling code is missing: {exc.message}"
    return None


@pytest.fixture(scope="session")
def fact_model_cache(tmp_path_factory) -> Path:
    configured = os.environ.get("ADAPTERKIT_TEST_CACHE")
    return Path(configured) if configured else tmp_path_factory.mktemp("fact-models")


@pytest.fixture(scope="session")
def fact_models(fact_model_cache):
    """fact_models(arch, n_facts=..., recipe=...) -> FactModel(model, tok, facts); trains on the first request only."""
    from adapterkit.demo.factmodels import load_or_train

    def load(arch: str, n_facts: int | None = None, recipe: str = "plain"):
        reason = fact_model_unavailable(arch)
        if reason:
            pytest.skip(reason)
        return load_or_train(arch, fact_model_cache, n_facts, recipe=recipe)

    return load


@pytest.fixture
def fact_model(request, fact_models):
    """The fact model of the architecture given by indirect parametrisation."""
    return fact_models(request.param)


# --- edit quality, gathered into one section at the end of the run ---------------------------------
QUALITY = "edit quality"


@pytest.fixture
def quality(record_property):
    """quality(label, measured): keeps a quality test's measured efficacy / generalisation / locality for the
    run's summary (passed and xfailed alike), so a log shows every number the closing tables cite."""
    def keep(label: str, measured: dict) -> None:
        text = " / ".join(f"{k} {v:.2f}" if v is not None else f"{k} -" for k, v in measured.items())
        print(f"{label}: {text}")
        record_property(QUALITY, f"{label}: {text}")
    return keep


def pytest_terminal_summary(terminalreporter):
    lines = {value for reports in terminalreporter.stats.values() for report in reports
             for name, value in getattr(report, "user_properties", ()) if name == QUALITY}
    if lines:
        terminalreporter.section("edit quality on the fact models")
        for line in sorted(lines):
            terminalreporter.write_line(line)
