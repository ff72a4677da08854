"""Shared fixtures: small fact models of every registered architecture, trained once per session.

Use ``fact_model`` with indirect parametrisation over ``ARCHS``::

    @pytest.mark.parametrize("fact_model", ARCHS, indirect=True)
    def test_something(fact_model):
        model, tok, facts, recipe = fact_model

or the ``fact_models`` factory (``fact_models("llama")``). Either way each call loads fresh weights from
the session's cache, so a test may edit its model in place without affecting any other test.
The models the suite shares are bundled, trained, in tests/data/fact_models/ (tests/suite_fact_models.py): those
load from there, read only, and only a model whose recipe changed since is trained. Set ADAPTERKIT_TEST_CACHE to a
directory to keep the trained models between sessions.
"""
from __future__ import annotations

import collections
import functools
import os
from pathlib import Path

import pytest

from adapterkit.errors import AdapterkitError
from adapterkit.arch.registry import get_registry

ARCHS = get_registry().architecture_names()
# What adapterkit ships; tests/test_sync.py keeps these in step with pyproject.toml, plugins/, the registry and CI.
BUILTIN_ARCHS = ("gpt2", "gptj", "gpt_neox", "llama", "chatglm3",
                 "mistral", "ministral", "qwen2", "qwen3", "olmo2", "gemma", "gemma2", "gemma3",  # plugins/llama_style.yaml
                 "phi3", "gpt_neo", "opt", "falcon", "bloom", "qwen2_moe")
BUILTIN_METHODS = ("ROME", "MEMIT", "AlphaEdit", "PMET", "MEND", "SERAC")
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


def skip_without_fact_model(arch: str) -> None:
    reason = fact_model_unavailable(arch)
    if reason:
        pytest.skip(reason)


XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER")


_CONFIG = None


def pytest_configure(config):
    global _CONFIG
    _CONFIG = config
    from suite_fact_models import BUNDLED, PREBUILT_FACT_MODELS

    # set before xdist starts its workers, so they and every process a test starts find the bundled models too;
    # an empty value set beforehand trains them all
    os.environ.setdefault(PREBUILT_FACT_MODELS, str(BUNDLED))
    if XDIST_WORKER:
        # The fact models are too small for a second thread to pay: one thread per worker (and per subprocess a
        # test starts) keeps n workers on n cores instead of 2n threads taking turns.
        os.environ["OMP_NUM_THREADS"] = "1"
        import torch
        torch.set_num_threads(1)


def shared_cache(root: Path, name: str) -> Path:
    """A cache directory under ``root`` (ADAPTERKIT_TEST_CACHE where that is set) that every xdist worker of a
    run shares: load_or_train locks an entry while it trains, so each model is trained once."""
    configured = os.environ.get("ADAPTERKIT_TEST_CACHE")
    root = Path(configured) if configured else root
    return root if configured and name == "fact-models" else root / name


def run_root(tmp_path_factory) -> Path:
    """This run's base temporary directory: the workers' common parent under xdist."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if XDIST_WORKER else base


def _train_timed(label_and_job) -> str:
    import time

    import torch
    import transformers

    torch.set_num_threads(1)
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    label, job = label_and_job
    started = time.perf_counter()
    job()
    return f"{label} in {time.perf_counter() - started:.0f} s"


def pretrain_jobs(root: Path) -> list[tuple[str, functools.partial]]:
    """(label, job) for the fact models most of the slow suite shares that are not bundled, the longest first."""
    from adapterkit.demo.factmodels import prebuilt_entry
    from suite_fact_models import suite_fact_models

    fact_models, conformance = shared_cache(root, "fact-models"), shared_cache(root, "conformance")
    return [(model.label, functools.partial(model.load, model.cache_folder(fact_models, conformance)))
            for model in suite_fact_models() if prebuilt_entry(model.entry()) is None]


def pytest_sessionstart(session):
    """With xdist workers on the whole suite, train the shared fact models first, one per worker at a time (runs
    before xdist starts its workers: its hook is trylast). Tests that wait on a model another worker is training
    would leave a core idle; trained here, every worker finds them in the cache."""
    config = session.config
    workers = getattr(config.option, "numprocesses", 0) or 0
    if XDIST_WORKER or workers < 2 or config.option.file_or_dir or "not slow" in (config.option.markexpr or ""):
        return
    import concurrent.futures
    import multiprocessing

    jobs = pretrain_jobs(config._tmp_path_factory.getbasetemp())
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    say = reporter.write_line if reporter else print
    if not jobs:
        say("the shared fact models are all bundled (tests/data/fact_models): nothing to train")
        return
    say(f"training {len(jobs)} fact models before the tests, {workers} at a time (cached ones load at once; "
        f"trained from scratch this takes several minutes): {', '.join(label for label, _ in jobs)}")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        for done in concurrent.futures.as_completed([pool.submit(_train_timed, job) for job in jobs]):
            say(f"fact model ready: {done.result()}")
    say("the tests start now")


LONGEST_FILES = ("test_real_model_memit.py", "test_real_model_rome.py")  # minutes on one worker each: start them first


LONG_TEST_SECONDS = 30  # a test that took longer is named when it ends, so a quiet run shows it is moving
_started_files: set[str] = set()


def _say(config, line: str) -> None:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and not XDIST_WORKER:
        reporter.write_line(line)


def pytest_runtest_logstart(nodeid, location):
    name = Path(location[0]).name
    if name in LONGEST_FILES and name not in _started_files and _CONFIG:
        _started_files.add(name)
        _say(_CONFIG, f"started {name}: edits the real SmolLM2-135M-Instruct (several minutes on one worker)")


def pytest_runtest_logreport(report):
    if report.when == "call" and report.duration > LONG_TEST_SECONDS and _CONFIG:
        _say(_CONFIG, f"{report.outcome} in {report.duration:.0f} s: {report.nodeid}")


def pytest_collection_modifyitems(items):
    """xdist hands out whole files in collection order (``--dist loadfile --no-loadscope-reorder``): the longest
    go first, so that no worker starts one of them while the others run out of work, then the files with the most
    tests (xdist's own order, which alone would put the longest two last)."""
    rank = {name: i for i, name in enumerate(LONGEST_FILES)}
    per_file = collections.Counter(item.path for item in items)
    items.sort(key=lambda item: (rank.get(item.path.name, len(rank)), -per_file[item.path]))


@pytest.fixture(scope="session")
def fact_model_cache(tmp_path_factory) -> Path:
    """Where the session's fact models that are not bundled are trained (it stays empty while all are)."""
    cache = shared_cache(run_root(tmp_path_factory), "fact-models")
    cache.mkdir(parents=True, exist_ok=True)
    return cache


@pytest.fixture(scope="session")
def fact_models(fact_model_cache):
    """fact_models(arch, n_facts=..., recipe=...) -> FactModel(model, tok, facts); trains on the first request only."""
    from adapterkit.demo.factmodels import load_or_train

    def load(arch: str, n_facts: int | None = None, recipe: str = "plain"):
        skip_without_fact_model(arch)
        return load_or_train(arch, fact_model_cache, n_facts, recipe=recipe)

    return load


@pytest.fixture
def fact_model(request, fact_models):
    """The fact model of the architecture given by indirect parametrisation."""
    return fact_models(request.param)


# --- checkpoints on disk and the real model ----------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_gpt2_checkpoint(tmp_path_factory) -> Path:
    """The gpt2 declaration's tiny config (4 layers), randomly initialised and saved without a tokenizer."""
    from checkpoints import write_tiny_checkpoint

    return write_tiny_checkpoint("gpt2", tmp_path_factory.mktemp("tiny") / "gpt2")


@pytest.fixture(scope="module")
def smollm2():
    """(model, tok) of SmolLM2-135M-Instruct dequantised from its GGUF (tests/realmodel.py), or a skip; loaded once
    per module, which may edit it."""
    from realmodel import load_smollm2

    return load_smollm2()


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
