import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from avg_rt import __version__
from avg_rt.cli import app
from avg_rt.config import PRESETS

runner = CliRunner()


def test_help_does_not_load_torch():
    """`avg-rt --help` and mistyped commands answer at once: torch loads only in commands."""
    code = "import sys, avg_rt.cli; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["data", "atari"],
        ["train"],
        ["export"],
        ["rollout"],
        ["bench", "quality"],
        ["bench", "speed"],
    ],
)
def test_help_shows_defaults(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    if command == ["train"]:
        assert "--preset" in result.output and "small" in result.output
        assert "Steps between checkpoints (default: the preset's)" in " ".join(
            result.output.split()
        )
    assert "<bool>" not in result.output  # plain flags carry no type label


def test_train_dry_run_applies_overrides_to_preset(tmp_path):
    result = runner.invoke(
        app,
        [
            "train",
            "--data",
            str(tmp_path / "data"),
            "--out",
            str(tmp_path / "r"),
            "--preset",
            "paper",
            "--steps",
            "7",
            "--no-adversarial",
            "--lr-g",
            "0.001",
            "--l-num",
            "1",
            "--alpha",
            "1.5",
            "--form",
            "select",
            "--select-window",
            "5",
            "--movement-on",
            "history",
            "--unfiltered-prob",
            "0.2",
            "--free-run",
            "12",
            "--dry-run",
        ],
    )
    assert result.exit_code == 0, result.output
    cfg = json.loads(result.output)
    assert cfg["steps"] == 7 and cfg["adversarial"] is False and cfg["lr_g"] == 0.001
    assert cfg["l_num"] == 1 and cfg["alpha"] == 1.5
    assert cfg["model"]["select"] and cfg["model"]["select_window"] == 5
    assert cfg["movement_on"] == "history" and cfg["unfiltered_prob"] == 0.2
    assert cfg["free_run"] == 12
    assert cfg["lr_d"] == PRESETS["paper"].lr_d  # left to the preset
    assert cfg["model"]["g_maps"][0] == [128, 256, 128]  # the paper's
    assert not (tmp_path / "r").exists()


def test_train_init_from_starts_from_the_checkpoints_config(tmp_path):
    """--init-from: the checkpoint's network and recipe (not the preset's), the options given
    on top, any of them but the network; with --resume, refused."""
    import dataclasses

    from avg_rt import checkpoint
    from avg_rt.config import with_form

    model = dataclasses.replace(with_form(PRESETS["small"].model, "select"), select_window=5)
    saved = dataclasses.replace(PRESETS["small"], model=model, clip_grad=100.0, seed=1)
    ckpt = tmp_path / "model.pt"
    checkpoint.save(ckpt, saved, 12000, {"generator": {}})
    (tmp_path / "data").mkdir()
    base = ["train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "r"), "--init-from"]
    result = runner.invoke(app, [*base, str(ckpt), "--steps", "5", "--seed", "3", "--dry-run"])
    assert result.exit_code == 0, result.output
    cfg = json.loads(result.stdout)
    assert cfg["model"]["select"] and cfg["model"]["select_window"] == 5
    assert cfg["clip_grad"] == 100.0 and cfg["steps"] == 5 and cfg["seed"] == 3
    result = runner.invoke(app, [*base, str(ckpt), "--g-leak", "0.2", "--dry-run"])
    assert result.exit_code != 0 and "network cannot change on --init-from" in result.output
    # Noise channels may be added (widened), then best-of-K needs no repeat of them; not
    # removed, and best-of-K alone on a deterministic checkpoint is refused.
    result = runner.invoke(app, [*base, str(ckpt), "--noise-channels", "2", "--dry-run"])
    assert result.exit_code == 0 and json.loads(result.stdout)["model"]["noise_channels"] == 2
    noisy = tmp_path / "noisy.pt"
    model = dataclasses.replace(model, noise_channels=2)
    checkpoint.save(noisy, dataclasses.replace(saved, model=model), 5, {"generator": {}})
    result = runner.invoke(app, [*base, str(noisy), "--best-of", "4", "--dry-run"])
    assert result.exit_code == 0 and json.loads(result.stdout)["best_of"] == 4, result.output
    result = runner.invoke(app, [*base, str(noisy), "--noise-channels", "1", "--dry-run"])
    assert result.exit_code != 0 and "noise_channels 2 -> 1" in result.output
    result = runner.invoke(app, [*base, str(ckpt), "--best-of", "4", "--dry-run"])
    assert result.exit_code != 0 and "best_of needs a stochastic generator" in result.output
    result = runner.invoke(app, [*base, str(ckpt), "--resume"])
    assert result.exit_code != 0 and "--resume continues one" in result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["train", "--data", "{tmp}/missing", "--out", "{tmp}/r", "--device", "cpu"],
            "{tmp}/missing: no such file or folder",
        ),
        (["train", "--data", "{tmp}", "--out", "{tmp}/r", "--preset", "huge"], "--preset must be"),
        (["train", "--data", "{tmp}", "--out", "{tmp}/r", "--batch", "0"], "batch must be >= 1"),
        (["train", "--data", "{tmp}", "--out", "{tmp}/r", "--free-run", "-1"], "free_run must be"),
        (["train", "--data", "{tmp}", "--out", "{tmp}/r", "--resume"], "checkpoint"),
        (["data", "atari", "--out", "{tmp}", "--game", "nope"], "nope: no such game"),
        (["data", "atari", "--out", "{tmp}/d", "--max-frames", "2"], "--max-frames must be >= 5"),
        (["data", "atari", "--out", "{tmp}/d", "--episodes", "0"], "--episodes must be >= 1"),
        (
            ["train", "--data", "{tmp}/small", "--out", "{tmp}/r", "--device", "gpu"],
            "--device gpu: must",
        ),
        (["train", "--data", "{tmp}", "--out", "{tmp}/file"], "{tmp}/file is a file, not a run"),
        (["train", "--data", "{tmp}", "--out", "{tmp}/r", "--palette", "x"], "auto or none, got"),
        (
            ["train", "--data", "{tmp}", "--out", "{tmp}/r", "--movement-on", "target"],
            "movement_on must be clip or history",
        ),
        (
            ["train", "--data", "{tmp}", "--out", "{tmp}/r", "--select-window", "3"],
            "select_window needs the select form",
        ),
        (
            ["train", "--data", "raw:-:32x32x3", "--out", "{tmp}/r", "--palette", "auto"],
            "a live stream has none",
        ),
        (["train", "--data", "{tmp}/small", "--out", "{tmp}/r"], "smaller than"),
        (["train", "--data", "{tmp}/small", "--out", "{tmp}/small/r"], "lies inside"),
    ],
)
def test_user_errors_are_one_line_with_exit_code_1(tmp_path, args, message):
    from conftest import moving_frames, write_frames

    (tmp_path / "file").write_text("not a folder")
    write_frames(tmp_path / "small" / "v", moving_frames(h=16, w=16))  # below the 32x32 crop
    args = [a.format(tmp=tmp_path) for a in args]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    errors = result.stderr.strip().splitlines()  # (stdout may have said what it found)
    assert len(errors) == 1 and errors[0].startswith("error: ")
    assert message.format(tmp=tmp_path) in errors[0]
    assert not (tmp_path / "r").exists() and not (tmp_path / "d").exists()  # nothing half-made


def test_data_then_train_end_to_end(tmp_path):
    data = tmp_path / "d"
    result = runner.invoke(
        app,
        [
            "data",
            "atari",
            "--out",
            str(data),
            "--episodes",
            "1",
            "--test-episodes",
            "1",
            "--max-frames",
            "12",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    again = runner.invoke(app, ["data", "atari", "--out", str(data), "--no-progress"])
    assert again.exit_code == 1 and "--overwrite" in again.output
    result = runner.invoke(
        app,
        [
            "train",
            "--data",
            str(data),
            "--out",
            str(tmp_path / "run"),
            "--steps",
            "2",
            "--batch",
            "2",
            "--device",
            "cpu",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "checkpoint.pt").is_file()
    # Resuming applies the options given and says which changed; it refuses what would make
    # it another experiment, and a step count the run has already reached.
    base = ["train", "--data", str(data), "--out", str(tmp_path / "run"), "--no-progress"]
    result = runner.invoke(app, [*base, "--resume", "--steps", "3", "--lr-g", "0.0005"])
    assert result.exit_code == 0, result.output
    assert "resuming with steps 2 -> 3, lr_g 0.001 -> 0.0005" in result.output
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["steps"] == 3 and saved["lr_g"] == 0.0005
    for extra, message in (
        (["--steps", "3"], "already at step 3"),
        (["--steps", "4", "--form", "residual"], "network cannot change"),
        (["--steps", "4", "--g-leak", "0.2"], "cannot change on --resume (g_leak 0.0 -> 0.2)"),
        (["--steps", "4", "--d-spectral-norm"], "(d_spectral_norm False -> True)"),
        (["--steps", "4", "--g-leak", "0", "--channels", "1"], "(channels 3 -> 1)"),
        (["--steps", "4", "--seed", "5"], "--seed: cannot change on --resume"),
    ):
        result = runner.invoke(app, [*base, "--resume", *extra])
        assert result.exit_code == 1 and message in result.output, result.output
    assert json.loads((tmp_path / "run" / "config.json").read_text())["steps"] == 3
    # The inference-only deadzone is not the network's structure: it may change on a resume.
    result = runner.invoke(app, [*base, "--resume", "--steps", "4", "--deadzone", "8"])
    assert result.exit_code == 0 and "deadzone 0 -> 8" in result.output, result.output
    assert json.loads((tmp_path / "run" / "config.json").read_text())["model"]["deadzone"] == 8
    result = runner.invoke(app, [*base, "--resume", "--steps", "5", "--preset", "small"])
    assert result.exit_code == 0 and "deadzone" not in result.output, result.output
    assert json.loads((tmp_path / "run" / "config.json").read_text())["model"]["deadzone"] == 8
    # So is the palette, read off the training frames; kept when not given again.
    result = runner.invoke(app, [*base, "--resume", "--steps", "6", "--palette", "auto"])
    assert result.exit_code == 1 and "deadzone 8; at most one of the two" in result.output
    extra = ["--deadzone", "0", "--palette", "auto", "--palette-radius", "40"]
    result = runner.invoke(app, [*base, "--resume", "--steps", "6", *extra])
    assert result.exit_code == 0, result.output
    colours = {tuple(c) for v in (data / "Train").iterdir() for c in _colours(v)}
    assert f"palette: {len(colours)} colours of the training frames" in result.output
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["model"]
    assert {tuple(c) for c in saved["palette"]} == colours and saved["deadzone"] == 0
    assert saved["palette_radius"] == 40
    result = runner.invoke(app, [*base, "--resume", "--steps", "7", "--preset", "small"])
    assert result.exit_code == 0 and "palette" not in result.output, result.output
    from avg_rt.checkpoint import load_generator

    assert {
        tuple(c) for c in load_generator(tmp_path / "run" / "checkpoint.pt")[0].cfg.palette
    } == colours
    # Back from the palette to a deadzone, in one resume.
    extra = ["--palette", "none", "--deadzone", "4"]
    result = runner.invoke(app, [*base, "--resume", "--steps", "8", *extra])
    assert result.exit_code == 0, result.output
    assert f"deadzone 0 -> 4, palette {len(colours)} colours -> none" in result.output
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["model"]
    assert saved["palette"] == [] and saved["deadzone"] == 4 and saved["palette_radius"] == 0


def _colours(video: Path) -> set[tuple[int, ...]]:
    import imageio.v3 as iio
    import numpy as np

    frames = [iio.imread(f)[..., :3].reshape(-1, 3) for f in sorted(video.iterdir())]
    return {tuple(int(v) for v in c) for c in np.unique(np.concatenate(frames), axis=0)}


def test_doctor_reports_this_machine_and_exits_0():
    """On a machine without a GPU, the CUDA rows are 'not here' (not failures)."""
    result = CliRunner().invoke(app, ["doctor"])
    assert result.exit_code == 0, result.output
    rows = {line.split("  ")[0]: line for line in result.output.splitlines() if line}
    assert "ok" in rows["run torch cpu"] and "ok" in rows["run onnxruntime cpu"]
    assert "max |diff| from PyTorch CPU" in rows["run onnxruntime cpu"]
    assert {"torch", "GPU", "onnxruntime", "tensorrt"} <= set(rows)


def test_doctor_names_the_fix_for_onnxruntime_without_cuda(monkeypatch):
    """CUDA asked for and an onnxruntime without the CUDA provider (the CPU package): the
    row is BROKEN and its fix names the package to swap in, for torch's CUDA major."""
    import onnxruntime as ort

    from avg_rt import doctor

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    monkeypatch.setattr(doctor, "cuda_major", lambda: 12)
    rows = {r.part: r for r in doctor.backends(want_cuda=True)}
    row = rows["run onnxruntime cuda"]
    assert row.status == doctor.BROKEN and "has no CUDA provider" in row.detail
    assert row.fix == (
        "pip uninstall -y onnxruntime onnxruntime-gpu && pip install 'avg-rt[gpu-cu12]'"
    )
    assert "fix run onnxruntime cuda: pip uninstall" in doctor.render(list(rows.values()))
