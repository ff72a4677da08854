"""The fact models the test suite trains, and the trained copies of them the repository ships.

Training them takes CI most of half an hour, so ``tests/data/fact_models/`` holds each one as training wrote it,
in a folder named like its cache entry (``<arch>-<digest>``: the digest covers the data, config and training
settings). conftest lists that folder in load_or_train's PREBUILT_FACT_MODELS, so a model whose current digest is
bundled loads from there, read only; one whose recipe changed gets a new digest and is trained as before, until
``python tests/refresh_fact_models.py`` rewrites the bundled set (test_suite_fact_models.py says when).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

BUNDLED = Path(__file__).parent / "data" / "fact_models"
REFRESH_COMMAND = "python tests/refresh_fact_models.py"
# adapterkit.demo.factmodels.PREBUILT_FACT_MODELS, named here too so that conftest need not import torch to set it
PREBUILT_FACT_MODELS = "ADAPTERKIT_PREBUILT_FACT_MODELS"


@dataclass(frozen=True)
class SuiteFactModel:
    label: str
    arch: str
    options: dict = field(default_factory=dict)  # load_or_train's keyword arguments
    conformance: bool = False  # kept in conformance's cache (its fact-models folder), not the tests' own
    inferred: bool = False  # a family no plugin declares: trained with its inferred declaration

    def entry(self) -> str:
        """The name of its cache entry (and bundled folder) under the current code."""
        from adapterkit.demo.factmodels import cache_entry_name
        from checkpoints import inferred_fact_model_entry

        return inferred_fact_model_entry(self.arch) if self.inferred else cache_entry_name(self.arch, **self.options)

    def cache_folder(self, fact_models: Path, conformance: Path) -> Path:
        """Where load_or_train keeps its entry, given the tests' fact-model cache and conformance's cache."""
        return conformance / "fact-models" if self.conformance else fact_models

    def load(self, cache: Path):
        """Loads it (bundled or cached) or trains it into ``cache``, the folder load_or_train keeps entries in."""
        from adapterkit.demo.factmodels import load_or_train
        from checkpoints import inferred_fact_model

        return inferred_fact_model(self.arch, cache) if self.inferred else load_or_train(self.arch, cache, **self.options)


def suite_fact_models() -> list[SuiteFactModel]:
    """Every fact model the suite's shared caches hold, the longest to train first."""
    from adapterkit.arch.conformance import ConformanceSettings, fact_model_options
    from adapterkit.demo.factmodels import RECIPES
    from checkpoints import TRAINED_INFERRED_FAMILIES
    from conftest import QUALITY_ARCHS

    trained = {recipe: [SuiteFactModel(f"{arch} ({recipe})", arch, {"recipe": recipe}) for arch in QUALITY_ARCHS]
               for recipe in RECIPES}
    inferred = [SuiteFactModel(f"{family} (subject_recall, inferred)", family, inferred=True)
                for family in TRAINED_INFERRED_FAMILIES]
    conformance = [SuiteFactModel(f"gpt2 (conformance, {recipe})", "gpt2",
                                  fact_model_options(ConformanceSettings(), recipe), conformance=True)
                   for recipe in ("subject_recall", "plain")]
    return trained["subject_recall"] + inferred + conformance + trained["plain"]
