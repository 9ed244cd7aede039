"""Writing results without losing what was there: atomic files and folders, no silent overwrite."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path


class OutputExistsError(FileExistsError):
    """The output path exists and overwriting was not asked for."""

    def __init__(self, path: Path):
        super().__init__(f"{path}: already exists (pass --overwrite to replace it)")
        self.path = path


class OutputHoldsInputError(ValueError):
    """Replacing the output would delete an input of the same command."""

    def __init__(self, path: Path, source: Path):
        super().__init__(
            f"{path}: holds {source}, which this command reads; --overwrite would delete it "
            "(choose another output)"
        )
        self.path = path


def check_writable(path: Path, overwrite: bool, inputs: Sequence[Path] = ()) -> None:
    """Raise OutputExistsError if `path` exists and `overwrite` is false, and
    OutputHoldsInputError if replacing `path` would delete one of `inputs` (when `path` is,
    or is a folder above, one of them)."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(path)
    if path.exists():
        here = path.resolve()
        for source in inputs:
            there = Path(source).resolve()
            if there == here or here in there.parents:
                raise OutputHoldsInputError(path, Path(source))


def _fsync(path: Path) -> None:
    """Flush one file or folder entry to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    """Flush a file, or a folder and everything under it, to the disk."""
    for p in [*path.rglob("*"), path] if path.is_dir() else [path]:
        if not p.is_symlink():
            _fsync(p)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_temporaries(path: Path) -> None:
    """Remove temporaries beside `path` left by a writer on this host that no longer runs
    (a `kill -9` or a power loss skips the cleanup)."""
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = tmp.name[len(path.name) + 2 :].split(".", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_path(
    path: str | Path, overwrite: bool = False, inputs: Sequence[Path] = ()
) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is flushed to the disk and renamed
    to `path`.

    Works for a file or a folder written at the yielded path. On an exception the temporary
    is removed and `path` is untouched; an existing `path` is replaced only with `overwrite`,
    and never when that would delete one of `inputs` (see `check_writable`).
    """
    path = Path(path)
    check_writable(path, overwrite, inputs)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    prefix = f".{path.name}.{os.getpid()}."
    tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=path.parent))
    target = tmp / path.name
    try:
        yield target
        _fsync_tree(target)
        if path.is_dir() and not path.is_symlink():
            # A folder cannot be replaced by a rename: move the old one aside first.
            old = tmp / ".old"
            path.rename(old)
        os.replace(target, path)
        _fsync(path.parent)  # the rename itself
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_bytes(path: str | Path, data: bytes, overwrite: bool = False) -> None:
    """Write `data` to `path` atomically (temporary file + rename)."""
    with atomic_path(path, overwrite) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str, overwrite: bool = False) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    atomic_write_bytes(path, text.encode(), overwrite)
