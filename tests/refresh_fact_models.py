"""Rewrite tests/data/fact_models/ with the fact models the suite trains under the current code.

    python tests/refresh_fact_models.py [--cache DIR]

Each model keeps its bundled copy where its digest is unchanged, else is copied from the test cache (DIR, by
default ADAPTERKIT_TEST_CACHE: the layout a test run with that variable leaves), else is trained into that cache
first. The new set is written beside the old one and swapped in, and holds nothing else: entries of digests the
suite no longer uses go.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from suite_fact_models import BUNDLED, PREBUILT_FACT_MODELS, suite_fact_models  # noqa: E402


def source_of(model, entry: str, cache: Path) -> Path:
    if (BUNDLED / entry / "config.json").is_file():
        return BUNDLED / entry
    folder = model.cache_folder(cache, cache / "conformance")  # the layout a run with ADAPTERKIT_TEST_CACHE=cache leaves
    if not (folder / entry / "config.json").is_file():
        print(f"training {model.label} into {folder} (minutes)", flush=True)
        started = time.perf_counter()
        model.load(folder)
        print(f"trained {model.label} in {time.perf_counter() - started:.0f} s", flush=True)
    return folder / entry


def swap_in(new: Path) -> None:
    """``new`` becomes BUNDLED; the old set is removed only once the new one is in place."""
    old = None
    if BUNDLED.exists():
        old = Path(tempfile.mkdtemp(prefix=".fact_models-old-", dir=BUNDLED.parent))
        os.rename(BUNDLED, old / BUNDLED.name)
    os.rename(new, BUNDLED)
    if old is not None:
        shutil.rmtree(old)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=os.environ.get("ADAPTERKIT_TEST_CACHE"),
                        help="the test cache to copy (or train) missing models from (default: ADAPTERKIT_TEST_CACHE)")
    args = parser.parse_args(argv)
    if args.cache is None:
        parser.error("name the test cache: --cache DIR, or set ADAPTERKIT_TEST_CACHE")
    os.environ.pop(PREBUILT_FACT_MODELS, None)  # a missing model is trained into the cache, never read from elsewhere
    BUNDLED.parent.mkdir(parents=True, exist_ok=True)
    new = Path(tempfile.mkdtemp(prefix=".fact_models-new-", dir=BUNDLED.parent))
    try:
        for model in suite_fact_models():
            entry = model.entry()
            source = source_of(model, entry, args.cache)
            shutil.copytree(source, new / entry, copy_function=shutil.copyfile)
            print(f"{entry}: {model.label}, from {source.parent}")
        new.chmod(0o755)  # mkdtemp's 0700
        swap_in(new)
    finally:
        shutil.rmtree(new, ignore_errors=True)
    total = sum(f.stat().st_size for f in BUNDLED.rglob("*") if f.is_file())
    print(f"{BUNDLED}: {len(list(BUNDLED.iterdir()))} fact models, {total / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
