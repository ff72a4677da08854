"""Atomic, crash-safe writes: an interrupted run leaves the previous output (or the new one) intact at its path.

A write goes to a sibling ``.NAME.<pid>-<random>.partial`` and is renamed into place. Every write first removes
partials of NAME that earlier runs left behind: those whose writer process is gone (the pid in the name), and
those of an older naming without a pid that are older than this process. A live writer's partial is never touched.

Replacing a directory (``save_pretrained_atomic(..., overwrite=True)``) takes four steps: write the partial,
rename ``out`` to ``.NAME.old``, rename the partial to ``out``, rename ``.NAME.old`` to a partial of ours and
delete it. A run killed between them is recovered by the next write of ``out``: when ``out`` is missing and
``.NAME.old`` exists, the previous output is restored (the killed run never reported success, so its output is
discarded with its partial); when both exist, the swap had finished and ``.NAME.old`` is removed.

Outputs get the permissions the umask gives (mkstemp / mkdtemp alone would make them private).
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
from pathlib import Path

from ..errors import AdapterkitError, OutputError

PARTIAL_SUFFIX = ".partial"
_PROCESS_STARTED = time.time()
_writing: set[str] = set()  # partials this process is writing now (other threads' too)
_writing_lock = threading.Lock()
_umask_lock = threading.Lock()


# --- permissions --------------------------------------------------------------------------------
def current_umask() -> int:
    """The process umask, without the window of a plain os.umask(0) / os.umask(old) swap where files would be
    created world-writable: /proc where there is one, else a swap through the most private mask."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _umask_lock:
        old = os.umask(0o077)
        os.umask(old)
    return old


def follow_umask(path: str | os.PathLike, *, directory: bool) -> None:
    """Give a file (0o666) or directory (0o777) made by mkstemp / mkdtemp the mode a plain open / mkdir gives."""
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


# --- partials -----------------------------------------------------------------------------------
def _partial_pattern(name: str) -> re.Pattern:
    return re.compile(rf"\.{re.escape(name)}\.(?:(\d+)-)?[A-Za-z0-9_]+{re.escape(PARTIAL_SUFFIX)}")


def _writer_gone(pid: int) -> bool:
    if pid == os.getpid():
        return False  # this process: only partials it is not writing now are stale (checked by the caller)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # PermissionError: alive, another user's
        return False
    return False


def _is_stale(entry: Path, pid: str | None) -> bool:
    if str(entry) in _writing:
        return False
    if pid is None:  # the naming before pids: stale when older than this run
        try:
            return entry.lstat().st_mtime < _PROCESS_STARTED
        except FileNotFoundError:
            return False
    return int(pid) == os.getpid() or _writer_gone(int(pid))


def remove_stale_partials(path: str | os.PathLike) -> list[Path]:
    """Delete the partials of ``path`` that earlier, ended runs left beside it; returns what was removed."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    pattern, removed = _partial_pattern(path.name), []
    with _writing_lock:
        for entry in path.parent.iterdir():
            match = pattern.fullmatch(entry.name)
            if match and _is_stale(entry, match.group(1)):
                _remove(entry)
                removed.append(entry)
    return removed


def _remove(entry: Path) -> None:
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            entry.unlink()


@contextlib.contextmanager
def _partial(path: Path, *, directory: bool):
    """A new partial beside ``path``, registered as being written while the block runs; removed if it fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(path)
    prefix, where = f".{path.name}.{os.getpid()}-", path.parent
    with _writing_lock:
        if directory:
            tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=PARTIAL_SUFFIX, dir=where))
        else:
            fd, name = tempfile.mkstemp(prefix=prefix, suffix=PARTIAL_SUFFIX, dir=where)
            os.close(fd)
            tmp = Path(name)
        _writing.add(str(tmp))
    try:
        follow_umask(tmp, directory=directory)
        yield tmp
    except BaseException as exc:
        written = _size(tmp)
        _remove(tmp)
        if out_of_space(exc):

            needed = f"more than {human_size(written)} needed, " if written else ""
            raise OutputError(f"{path}: no space left on the device while writing it ({needed}"
                              f"{human_size(free_space(path))} free); nothing was written",
                              fix="free space there, or write the output to another file system") from None
        raise
    finally:
        with _writing_lock:
            _writing.discard(str(tmp))


# --- free space ---------------------------------------------------------------------------------
def out_of_space(exc: BaseException) -> bool:
    """A write that failed for want of space: ENOSPC / EDQUOT, or a library's error that only says so in words
    (safetensors' SafetensorError)."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return isinstance(exc, Exception) and "No space left on device" in str(exc)


def human_size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _existing_ancestor(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def free_space(path: str | os.PathLike) -> int:
    return shutil.disk_usage(_existing_ancestor(Path(path))).free


def check_free_space(path: str | os.PathLike, needed: int, *, what: str) -> None:
    """Refuse, before any work, an output of ``needed`` bytes where the file system has less free."""
    free = free_space(path)
    if needed > free:

        raise OutputError(f"{path}: the {what} needs about {human_size(needed)}, and {human_size(free)} is free on "
                          f"its file system ({_existing_ancestor(Path(path))})",
                          fix="free space there, or write the output to another file system")


def _size(path: Path) -> int:
    try:
        if path.is_dir():
            return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        return path.stat().st_size
    except OSError:
        return 0


def _fsync_directory(directory: Path) -> None:
    """Make renames in ``directory`` durable (where the platform allows opening a directory)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _flock(path: Path, flags: int):
    """Hold an exclusive flock on ``path`` opened with ``flags``; a no-op where flock is unavailable."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    fd = os.open(path, flags, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _directory_lock(directory: Path):
    """Serialise recovery and swaps of outputs in ``directory`` between processes (flock on the directory itself,
    so no lock file is left behind)."""
    return _flock(directory, os.O_RDONLY)


def exclusive(lock_file: str | os.PathLike):
    """Hold an exclusive lock on ``lock_file`` (created if missing) between processes, so that work one process
    does for a shared cache entry is not done again by another waiting for it."""
    lock_file = Path(lock_file)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    return _flock(lock_file, os.O_RDWR | os.O_CREAT)


# --- files --------------------------------------------------------------------------------------
@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename."""
    path = Path(path)
    with _partial(path, directory=False) as tmp:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    _fsync_directory(path.parent)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


# --- directories --------------------------------------------------------------------------------
def backup_path(out: Path) -> Path:
    return out.with_name(f".{out.name}.old")


def recover_interrupted_swap(out: str | os.PathLike) -> str | None:
    """Finish what a killed overwrite of ``out`` left: restore the previous output, or drop the finished swap's
    backup. Returns what was done ("restored" / "cleaned") or None. Call with the directory lock held."""
    out = Path(out)
    backup = backup_path(out)
    if not backup.exists():
        return None
    if not out.exists():
        os.replace(backup, out)
        _fsync_directory(out.parent)
        return "restored"
    _discard(backup, out)
    return "cleaned"


def _discard(backup: Path, out: Path) -> None:
    """Rename the backup to a partial of this process first, so that a kill while deleting it leaves a stale partial
    (removed by the next run), never a half-deleted ``.NAME.old`` that recovery could restore."""
    trash = out.with_name(f".{out.name}.{os.getpid()}-{secrets.token_hex(4)}old{PARTIAL_SUFFIX}")
    os.replace(backup, trash)
    _fsync_directory(out.parent)
    _remove(trash)


def save_pretrained_atomic(model, tok, out, overwrite: bool = False) -> None:
    """save_pretrained into a sibling partial directory, then swap it into place (see the module docstring)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with _directory_lock(out.parent):
        recover_interrupted_swap(out)
    if out.exists() and not overwrite:
        raise AdapterkitError(f"{out} already exists", fix="choose another --out, or pass --overwrite")
    with _partial(out, directory=True) as tmp:
        model.save_pretrained(tmp)
        if tok is not None:
            tok.save_pretrained(tmp)
        with _directory_lock(out.parent):
            _swap_into_place(tmp, out)


def _swap_into_place(tmp: Path, out: Path) -> None:
    recover_interrupted_swap(out)  # another process may have been killed mid-swap while we wrote
    if not out.exists():
        os.replace(tmp, out)
        _fsync_directory(out.parent)
        return
    backup = backup_path(out)
    try:
        os.replace(out, backup)
        os.replace(tmp, out)
    except BaseException:
        recover_interrupted_swap(out)  # the previous output back at ``out``, or the swap finished
        raise
    _fsync_directory(out.parent)
    _discard(backup, out)


def check_writable(out, *, what: str, directory: bool, overwrite: bool = True) -> None:
    """Refuse, before any work, an output that cannot be written: create and remove a probe file where it goes."""
    out = Path(out)
    if out.exists():
        if not overwrite:
            raise OutputError(f"{out} already exists", fix="choose another --out, or pass --overwrite")
        if out.is_dir() != directory:
            kind = "a directory" if out.is_dir() else "a file"
            raise OutputError(f"{out} is {kind}, and the {what} is written as {'a directory' if directory else 'a file'}",
                              fix="choose another --out")
    ancestor = out.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputError(f"{out}: {ancestor} is not a directory, so the {what} cannot be written there",
                          fix="choose an --out inside a writable directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=".adapterkit-probe.", dir=ancestor)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"{out}: cannot write in {ancestor} ({exc.strerror or exc})",
                          fix="choose an --out inside a writable directory, or fix its permissions") from None
