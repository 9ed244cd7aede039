"""Writing results without losing what was there: atomic files and folders, no silent overwrite."""

from __future__ import annotations

import contextlib
import glob
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any


class OutputExistsError(FileExistsError):
    """The output path exists and overwriting was not asked for."""

    def __init__(self, path: Path):
        super().__init__(f"{path}: already exists (pass --overwrite to replace it)")
        self.path = path


class OutputHoldsInputError(ValueError):
    """The output is, holds or lies inside an input of the same command."""

    def __init__(self, path: Path, source: Path, relation: str):
        super().__init__(
            f"{path}: {relation} {source}, which this command reads (choose an output outside it)"
        )
        self.path = path


def check_outside(path: Path, inputs: Sequence[Path]) -> None:
    """Raise OutputHoldsInputError if output `path` is one of `inputs`, lies inside one, or
    (when it exists) holds one: replacing it could delete what the command reads, and an
    output inside an input folder would be read as input next time."""
    here = Path(path).resolve()
    for source in inputs:
        there = Path(source).resolve()
        if there == here:
            raise OutputHoldsInputError(path, Path(source), "is")
        if there in here.parents:
            raise OutputHoldsInputError(path, Path(source), "lies inside")
        if here in there.parents and Path(path).exists():
            raise OutputHoldsInputError(path, Path(source), "holds")


def check_writable(path: Path, overwrite: bool, inputs: Sequence[Path] = ()) -> None:
    """Raise OutputHoldsInputError (see `check_outside`), then OutputExistsError if `path`
    exists and `overwrite` is false."""
    check_outside(path, inputs)
    if Path(path).exists() and not overwrite:
        raise OutputExistsError(Path(path))


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
    except (PermissionError, OverflowError):
        return True  # someone else's process, or not a PID: leave it alone
    return True


def _remove_stale_temporaries(path: Path) -> None:
    """Remove temporaries of `path` (exactly `.NAME.PID.xxx.tmp`, not those of a longer name)
    left by a writer on this host that no longer runs (a `kill -9` or a power loss skips the
    cleanup)."""
    own = re.compile(rf"\.{re.escape(path.name)}\.(\d+)\.[A-Za-z0-9_]+\.tmp")
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        match = own.fullmatch(tmp.name)
        if match and not _pid_alive(int(match.group(1))):
            shutil.rmtree(tmp, ignore_errors=True)


def _replace(target: Path, path: Path, overwrite: bool, tmp: Path) -> None:
    """Move `target` to `path`. A file replaces a file atomically; anything else (a folder,
    or another kind than before) moves the old entry aside first and puts it back if the
    move fails. Checked again here, at the end of possibly minutes of work: an output that
    appeared meanwhile is not replaced without `overwrite`."""
    exists = path.exists() or path.is_symlink()
    if exists and not overwrite:
        raise OutputExistsError(path)
    if not exists or (path.is_file() and not path.is_symlink() and target.is_file()):
        os.replace(target, path)
        return
    old = tmp / ".old"
    path.rename(old)
    try:
        os.replace(target, path)
    except BaseException:
        old.rename(path)
        raise


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
        _replace(target, path, overwrite, tmp)
        _fsync(path.parent)  # the rename itself
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_bytes(
    path: str | Path, data: bytes, overwrite: bool = False, inputs: Sequence[Path] = ()
) -> None:
    """Write `data` to `path` atomically (temporary file + rename; see `atomic_path` for
    `inputs`)."""
    with atomic_path(path, overwrite, inputs) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(
    path: str | Path, text: str, overwrite: bool = False, inputs: Sequence[Path] = ()
) -> None:
    """Write `text` (UTF-8) to `path` atomically (see `atomic_path` for `inputs`)."""
    atomic_write_bytes(path, text.encode(), overwrite, inputs)


def strict_json(obj: Any, indent: int | None = 2) -> str:
    """`obj` as strict JSON: every float that is not finite (NaN: no score, as on a clip
    where nothing moved; inf: identical frames' PSNR) written as null, where json.dumps would
    write the bare NaN / Infinity that other JSON readers reject."""

    def finite(x: Any) -> Any:
        if isinstance(x, float):
            return x if math.isfinite(x) else None
        if isinstance(x, dict):
            return {k: finite(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [finite(v) for v in x]
        return x

    return json.dumps(finite(obj), indent=indent, allow_nan=False)
