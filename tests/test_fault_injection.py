"""Every command over a corpus of bad inputs and destructive options. For each line: a
non-zero exit, one line on stderr naming the file or option and the problem, no traceback,
and every file that existed before unchanged. A new bad input is one more line of CORPUS."""

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import HAS_TENSORRT, moving_frames, write_frames
from typer.testing import CliRunner

from avg_rt import checkpoint
from avg_rt.cli import app

# (arguments, what the one line must say); {w} is the workspace below.
CORPUS = [
    # data
    ("data atari --out {w}/d --max-frames 2", "--max-frames must be >= 5"),
    ("data atari --out {w}/d --episodes 0", "--episodes must be >= 1"),
    ("data atari --out {w}/d --game nope", "nope: no such game"),
    ("data atari --out {w}/existing", "already exists (pass --overwrite"),
    # train
    ("train --data {w}/empty --out {w}/r", "no videos found"),
    ("train --data {w}/tiny --out {w}/r", "smaller than the 32x32 crop"),
    ("train --data {w}/data --out {w}/file.txt", "is a file, not a run folder"),
    ("train --data {w}/data --out {w}/data/r", "lies inside"),
    ("train --data {w}/data --out {w}/r --device gpu", "--device gpu: must be cpu"),
    ("train --data {w}/data --out {w}/r --resume", "does not exist"),
    ("train --data {w}/data --out {w}/run", "already exists; choose a new run folder"),
    ("train --data {w}/data --out {w}/run --resume --steps 9", "holds networks only"),
    ("train --data {w}/data --out {w}/r --preset huge", "--preset must be one of"),
    # rollout
    ("rollout {w}/videos --model {w}/pickled.pt --out {w}/o", "pickled Python objects"),
    ("rollout {w}/videos --model {w}/nan.pt --out {w}/o", "non-finite generator weights"),
    ("rollout {w}/videos --model {w}/random.onnx --out {w}/o", "onnxruntime cannot load"),
    ("rollout {w}/videos --model {w}/notes.txt --out {w}/o", "unknown model type"),
    ("rollout {w}/videos --model {w}/missing.pt --out {w}/o", "no such model file"),
    (
        "rollout {w}/videos --model {w}/run/checkpoint.pt --out {w}/videos --overwrite",
        "is {w}/videos,",
    ),
    ("rollout {w}/videos --model {w}/run/checkpoint.pt --out {w} --overwrite", "holds {w}/videos,"),
    ("rollout {w}/videos --model {w}/run/checkpoint.pt --out {w}/existing", "--overwrite"),
    ("rollout {w}/videos --model {w}/run/checkpoint.pt --out {w}/o --steps 0", "--steps: must"),
    ("rollout {w}/videos --model {w}/run/checkpoint.pt --out {w}/o --device gpu", "--device gpu"),
    ("rollout {w}/empty --model {w}/run/checkpoint.pt --out {w}/o", "no videos found"),
    # export
    ("export {w}/pickled.pt --out {w}/e", "pickled Python objects"),
    ("export {w}/nan.pt --out {w}/e", "non-finite generator weights"),
    ("export {w}/notes.txt --out {w}/e", "not a PyTorch checkpoint"),
    ("export {w}/run/checkpoint.pt --out {w}/run --overwrite", "holds {w}/run/checkpoint.pt,"),
    ("export {w}/run/checkpoint.pt --out {w}/existing", "--overwrite"),
    ("export {w}/run/checkpoint.pt --out {w}/e --batch 0:1:2", "--batch"),
    # bench
    ("bench quality --model x={w}/pickled.pt --data {w}/videos --out {w}/b", "pickled"),
]
if not HAS_TENSORRT:
    CORPUS.append(
        ("rollout {w}/videos --model {w}/g.plan --out {w}/o", "TensorRT is not installed")
    )


class _Pickled:
    def __reduce__(self):
        return (print, ("this would have run",))


@pytest.fixture(scope="module")
def workspace(small_checkpoint, tmp_path_factory) -> Path:
    w = tmp_path_factory.mktemp("faults")
    for split in ("Train", "Test"):
        write_frames(w / "data" / split / "v0", moving_frames(t=12))
    write_frames(w / "videos" / "v0", moving_frames(t=40))
    write_frames(w / "tiny" / "v0", moving_frames(t=8, h=16, w=16))
    (w / "empty").mkdir()
    (w / "existing").mkdir()
    (w / "existing" / "mine.txt").write_text("keep me")
    (w / "file.txt").write_text("a file")
    (w / "notes.txt").write_text("not a model")
    (w / "random.onnx").write_bytes(np.random.default_rng(0).bytes(2000))
    (w / "g.plan").write_bytes(b"not an engine")
    torch.save({"generator": _Pickled()}, w / "pickled.pt")
    (w / "run").mkdir()
    shutil.copyfile(small_checkpoint, w / "run" / "checkpoint.pt")
    data = checkpoint.load(small_checkpoint)
    weights = {k: v.clone() for k, v in data["generator"].items()}
    next(v for k, v in weights.items() if k.endswith("weight")).fill_(float("nan"))
    checkpoint.save(w / "nan.pt", data["config"], data["step"], {"generator": weights})
    return w


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else ""
        for p in sorted(root.rglob("*"))
    }


@pytest.mark.parametrize("line, message", CORPUS, ids=[c[0] for c in CORPUS])
def test_bad_input_is_one_line_and_loses_nothing(workspace, line, message):
    before = _snapshot(workspace)
    args = [a.format(w=workspace) for a in line.split()] + ["--no-progress"]
    if args[0] == "bench":
        args.remove("--no-progress")
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # handled, no traceback
    assert "Traceback" not in result.output
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("error: "), result.stderr
    assert message.format(w=workspace) in errors[0], errors[0]
    assert _snapshot(workspace) == before  # nothing changed, nothing created
