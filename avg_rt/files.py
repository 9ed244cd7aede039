"""Writing results without losing what was there: atomic files and folders, no silent overwrite."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


class OutputExistsError(FileExistsError):
    """The output path exists and overwriting was not asked for."""

    def __init__(self, path: Path):
        super().__init__(f"{path}: already exists (pass --overwrite to replace it)")
        self.path = path


def check_writable(path: Path, overwrite: bool) -> None:
    """Raise OutputExistsError if `path` exists and `overwrite` is false."""
    if path.exists() and not overwrite:
        raise OutputExistsError(path)


@contextlib.contextmanager
def atomic_path(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed to `path`.

    Works for a file or a folder written at the yielded path. On an exception the temporary
    is removed and `path` is untouched; an existing `path` is replaced only with `overwrite`.
    """
    path = Path(path)
    check_writable(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    target = tmp / path.name
    try:
        yield target
        if path.is_dir() and not path.is_symlink():
            # A folder cannot be replaced by a rename: move the old one aside first.
            old = tmp / ".old"
            path.rename(old)
        os.replace(target, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_bytes(path: str | Path, data: bytes, overwrite: bool = False) -> None:
    """Write `data` to `path` atomically (temporary file + rename)."""
    with atomic_path(path, overwrite) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str, overwrite: bool = False) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    atomic_write_bytes(path, text.encode(), overwrite)
