"""The StarCoder2 plugin, installed: it is registered, and it passes `adapterkit conformance` (ROME and MEMIT here,
to stay fast; `adapterkit conformance examples/adapterkit-starcoder2` runs all five)."""
from pathlib import Path

from adapterkit.arch.conformance import ConformanceSettings, run_conformance
from adapterkit.arch.registry import get_registry

DISTRIBUTION = Path(__file__).parents[1]


def test_the_installed_plugin_is_registered():
    assert get_registry().architecture("starcoder2").distribution == "adapterkit-starcoder2"


def test_the_distribution_passes_adapterkit_conformance(tmp_path):
    report = run_conformance(DISTRIBUTION, ConformanceSettings(methods=("ROME", "MEMIT"), cache_dir=tmp_path),
                             say=lambda line: None)
    rows = {c.name: c for c in report.architectures[0].checks}
    assert report.passed, report.table()
    assert rows["ROME"].numbers["efficacy"] == 1.0 and rows["MEMIT"].numbers["efficacy"] == 1.0
