import json
import math
import os
import subprocess
import sys

import pytest

from avg_rt.files import (
    OutputExistsError,
    OutputHoldsInputError,
    atomic_path,
    atomic_write_text,
    strict_json,
)


def test_atomic_write_replaces_only_when_asked_and_keeps_inputs(tmp_path):
    out = tmp_path / "out.txt"
    atomic_write_text(out, "first")
    with pytest.raises(OutputExistsError):
        atomic_write_text(out, "second")
    atomic_write_text(out, "second", overwrite=True)
    assert out.read_text() == "second"
    folder = tmp_path / "videos"
    (folder / "a").mkdir(parents=True)
    (folder / "a" / "0.png").write_bytes(b"frame")
    for target in (folder, tmp_path):  # the input itself, a folder above it
        with pytest.raises(OutputHoldsInputError, match="which this command reads"):
            with atomic_path(target, overwrite=True, inputs=[folder / "a"]):
                pass
    with pytest.raises(OutputHoldsInputError, match="lies inside"):  # read as input next time
        atomic_write_text(folder / "a" / "out.txt", "x", inputs=[folder / "a"])
    assert (folder / "a" / "0.png").read_bytes() == b"frame"
    assert not (folder / "a" / "out.txt").exists()


def test_failed_write_leaves_the_old_output_and_no_temporary(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep").write_text("old")
    with pytest.raises(RuntimeError), atomic_path(out, overwrite=True) as tmp:
        tmp.mkdir()
        (tmp / "half").write_text("new")
        raise RuntimeError("interrupted")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert (out / "keep").read_text() == "old"


def test_temporaries_of_killed_writers_are_removed(tmp_path):
    # A writer killed before its cleanup (kill -9) leaves `.NAME.PID.*.tmp`; the next write of
    # NAME removes it, but never a live writer's.
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    stale = tmp_path / f".out.txt.{dead}.abc.tmp"
    live = tmp_path / f".out.txt.{os.getpid()}.def.tmp"
    for t in (stale, live):
        t.mkdir()
        (t / "out.txt").write_text("half")
    atomic_write_text(tmp_path / "out.txt", "done")
    assert not stale.exists() and live.exists()
    assert (tmp_path / "out.txt").read_text() == "done"


def test_only_this_names_temporaries_are_cleaned(tmp_path):
    # `.out.777.<pid>.x.tmp` is a live temporary of `out.777`, not a dead one of `out`; a
    # name with a long digit run is no PID at all.
    other = tmp_path / f".out.777.{os.getpid()}.abc.tmp"
    odd = tmp_path / ".out.99999999999999999999.abc.tmp"
    for t in (other, odd):
        t.mkdir()
    atomic_write_text(tmp_path / "out", "done")
    assert other.exists() and odd.exists()


def test_an_output_of_another_kind_is_replaced_or_kept(tmp_path):
    out = tmp_path / "out"
    out.write_text("a file")
    with atomic_path(out, overwrite=True) as tmp:  # a folder replaces a file
        tmp.mkdir()
        (tmp / "x").write_text("new")
    assert (out / "x").read_text() == "new"
    with atomic_path(out, overwrite=True) as tmp:  # and a file a folder
        tmp.write_text("file again")
    assert out.read_text() == "file again"


def test_an_output_that_appears_meanwhile_is_not_replaced(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(OutputExistsError), atomic_path(out) as tmp:
        tmp.write_text("mine")
        out.write_text("another run's")  # written while this one worked
    assert out.read_text() == "another run's"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_strict_json_writes_scores_that_are_not_finite_as_null():
    """json.dumps writes NaN / Infinity bare, which strict JSON readers reject."""
    import numpy as np

    report = {"psnr": [30.5, math.inf], "moving": [[np.float64("nan"), 1.0]], "n": (3, None)}
    text = strict_json(report)
    assert "NaN" not in text and "Infinity" not in text
    back = json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c}"))
    assert back == {"psnr": [30.5, None], "moving": [[None, 1.0]], "n": [3, None]}
