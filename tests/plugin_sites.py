"""A pip-installed plugin distribution in a folder of its own, and Python run with that folder on its path: how the
tests see adapterkit as a user sees it after `pip install adapterkit-<plugin>` (entry points and all)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).parents[1]


def install_into(target: Path, distribution: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(distribution)], check=True)
    return target


def python_with(site: Path, *args, **kwargs) -> subprocess.CompletedProcess:
    """``python *args`` with ``site`` first on its path; stdout and stderr captured as text."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, env=env, **kwargs)
