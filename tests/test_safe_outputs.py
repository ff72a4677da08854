"""Outputs survive a kill at any step (the previous or the new output at its path, the next write succeeding with
no leftovers), never delete a live writer's partial, and get the permissions the umask gives."""
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from adapterkit.files import atomic as fileio
from adapterkit.errors import AdapterkitError


class FakeModel:
    """What save_pretrained_atomic needs of a model: save_pretrained writing a few files."""

    def __init__(self, text: str):
        self.text = text

    def save_pretrained(self, directory):
        for name in ("config.json", "model.safetensors"):
            (Path(directory) / name).write_text(f"{self.text}:{name}")


def contents(out: Path) -> str | None:
    """The output's one text if it is complete (every file from one writer), else None."""
    texts = {p.read_text().split(":")[0] for p in out.iterdir()} if out.is_dir() else set()
    complete = out.is_dir() and sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    return texts.pop() if complete and len(texts) == 1 else None


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name != out.name)


class Killed(BaseException):
    """Stands for a kill in the middle of a write (not an Exception: nothing may swallow it)."""


# --- kills inside this process: the exception unwinds through the write ------------------------------
REPLACE_STEPS = ["out -> .old", "partial -> out", ".old -> trash"]


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("step", range(len(REPLACE_STEPS)), ids=REPLACE_STEPS)
def test_overwrite_killed_at_each_rename_leaves_an_intact_output_and_the_next_overwrite_works(tmp_path, monkeypatch, step, when):
    out = tmp_path / "edited"
    fileio.save_pretrained_atomic(FakeModel("old"), None, out)
    real_replace, calls = os.replace, []

    def replace(src, dst):
        calls.append((src, dst))
        if len(calls) - 1 == step and when == "before":
            raise Killed
        real_replace(src, dst)
        if len(calls) - 1 == step and when == "after":
            raise Killed
    monkeypatch.setattr(fileio.os, "replace", replace)
    with pytest.raises(Killed):
        fileio.save_pretrained_atomic(FakeModel("new"), None, out, overwrite=True)
    monkeypatch.setattr(fileio.os, "replace", real_replace)
    assert contents(out) in ("old", "new")
    if step == 0 or (step == 1 and when == "before"):
        assert contents(out) == "old"  # the new output never reached `out`
    fileio.save_pretrained_atomic(FakeModel("newer"), None, out, overwrite=True)
    assert contents(out) == "newer" and leftovers(out) == []


def test_overwrite_killed_while_saving_keeps_the_previous_output(tmp_path):
    out = tmp_path / "edited"
    fileio.save_pretrained_atomic(FakeModel("old"), None, out)

    class Dies(FakeModel):
        def save_pretrained(self, directory):
            super().save_pretrained(directory)
            raise Killed
    with pytest.raises(Killed):
        fileio.save_pretrained_atomic(Dies("new"), None, out, overwrite=True)
    assert contents(out) == "old" and leftovers(out) == []


@pytest.mark.parametrize("when", ["writing", "before-rename", "after-rename"])
def test_atomic_file_killed_at_each_step_keeps_one_whole_file(tmp_path, monkeypatch, when):
    path = tmp_path / "delta.safetensors"
    fileio.write_text_atomic(path, "old")
    real_replace = os.replace

    def replace(src, dst):
        if when == "before-rename":
            raise Killed
        real_replace(src, dst)
        raise Killed
    if when != "writing":
        monkeypatch.setattr(fileio.os, "replace", replace)
    with pytest.raises(Killed), fileio.atomic_path(path) as tmp:
        tmp.write_text("new")
        if when == "writing":
            raise Killed
    monkeypatch.setattr(fileio.os, "replace", real_replace)
    assert path.read_text() == ("new" if when == "after-rename" else "old")
    fileio.write_text_atomic(path, "newer")
    assert path.read_text() == "newer" and leftovers(path) == []


# --- real kills: a child process dies (os._exit) at each step; nothing of it cleans up -----------------
CHILD = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    from adapterkit.files import atomic as fileio

    out, kind, step, when = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
    real_replace, calls = os.replace, []

    def replace(src, dst):
        calls.append(1)
        if len(calls) - 1 == step and when == "before":
            os._exit(9)
        real_replace(src, dst)
        if len(calls) - 1 == step and when == "after":
            os._exit(9)
    os.replace = replace

    class Model:
        def save_pretrained(self, directory):
            for name in ("config.json", "model.safetensors"):
                (Path(directory) / name).write_text("new:" + name)
            if step < 0:
                os._exit(9)

    if kind == "dir":
        fileio.save_pretrained_atomic(Model(), None, out, overwrite=True)
    else:
        with fileio.atomic_path(out) as tmp:
            tmp.write_text("new")
            if step < 0:
                os._exit(9)
""")


def run_and_kill(out: Path, kind: str, step: int, when: str) -> None:
    proc = subprocess.run([sys.executable, "-c", CHILD, str(out), kind, str(step), when], capture_output=True, text=True)
    assert proc.returncode == 9, proc.stderr  # it died where it was told to


DIR_KILLS = [(-1, "during"), (0, "before"), (0, "after"), (1, "before"), (1, "after"), (2, "before"), (2, "after")]


@pytest.mark.parametrize("step,when", DIR_KILLS, ids=[f"{w}-{REPLACE_STEPS[s] if s >= 0 else 'save'}" for s, w in DIR_KILLS])
def test_a_killed_overwrite_is_recovered_by_the_next_one(tmp_path, step, when):
    out = tmp_path / "edited"
    fileio.save_pretrained_atomic(FakeModel("old"), None, out)
    run_and_kill(out, "dir", step, when)
    left = leftovers(out)
    if (step, when) in [(0, "after"), (1, "before")]:  # killed between the two renames: the previous output is hidden
        assert contents(out) is None and f".{out.name}.old" in left
        with pytest.raises(AdapterkitError, match="already exists"):
            fileio.save_pretrained_atomic(FakeModel("x"), None, out)  # a plain write first recovers, then refuses
        assert contents(out) == "old"
    else:
        assert contents(out) == ("old" if step < 1 else "new")
    fileio.save_pretrained_atomic(FakeModel("newer"), None, out, overwrite=True)
    assert contents(out) == "newer" and leftovers(out) == []


@pytest.mark.parametrize("step,when", [(-1, "during"), (0, "before"), (0, "after")])
def test_a_killed_file_write_leaves_a_partial_that_the_next_write_removes(tmp_path, step, when):
    path = tmp_path / "stats.npz"
    fileio.write_text_atomic(path, "old")
    run_and_kill(path, "file", step, when)
    assert path.read_text() == ("new" if when == "after" else "old")
    assert (leftovers(path) != []) == (when != "after")  # a dead writer's partial, until the next write
    fileio.write_text_atomic(path, "newer")
    assert path.read_text() == "newer" and leftovers(path) == []


# --- what is never deleted --------------------------------------------------------------------------
def test_a_live_writers_partials_are_kept(tmp_path):
    path = tmp_path / "model"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        other_writer = tmp_path / f".model.{sleeper.pid}-abcd1234.partial"
        other_writer.mkdir()
        with fileio.atomic_path(path) as mine:
            mine.write_text("x")
            assert fileio.remove_stale_partials(path) == []  # neither this write's partial nor the live one
            assert mine.exists()
        assert other_writer.exists() and path.read_text() == "x"
    finally:
        sleeper.kill()
        sleeper.wait()
    assert fileio.remove_stale_partials(path) == [other_writer]  # its writer is gone now


def test_partials_of_other_names_and_fresh_ones_without_a_pid_are_kept(tmp_path):
    path = tmp_path / "model"
    other_output = tmp_path / ".model.1.99999999-abcd1234.partial"  # of `model.1`
    old_style_fresh = tmp_path / ".model.k2j4h5g6.partial"
    old_style_stale = tmp_path / ".model.a1b2c3d4.partial"
    for p in (other_output, old_style_fresh, old_style_stale):
        p.write_text("x")
    long_ago = time.time() - 3600
    os.utime(old_style_stale, (long_ago, long_ago))
    fileio.write_text_atomic(path, "y")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["model", other_output.name, old_style_fresh.name])


# --- permissions ------------------------------------------------------------------------------------
@pytest.fixture
def umask():
    previous = os.umask(0o022)
    try:
        yield lambda mask: os.umask(mask)
    finally:
        os.umask(previous)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002])
def test_outputs_follow_the_umask(tmp_path, umask, mask):
    umask(mask)
    assert fileio.current_umask() == mask
    assert fileio.current_umask() == mask  # reading it does not change it
    file, directory = tmp_path / "delta.safetensors", tmp_path / "edited"
    fileio.write_text_atomic(file, "x")
    fileio.save_pretrained_atomic(FakeModel("x"), None, directory)
    assert file.stat().st_mode & 0o777 == 0o666 & ~mask
    assert directory.stat().st_mode & 0o777 == 0o777 & ~mask
    assert (directory / "config.json").stat().st_mode & 0o777 == 0o666 & ~mask
