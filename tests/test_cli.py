import json
import subprocess
import sys

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


def test_train_dry_run_applies_overrides_to_preset(tmp_path):
    result = runner.invoke(
        app,
        [
            "train",
            "--data",
            str(tmp_path),
            "--out",
            str(tmp_path / "r"),
            "--preset",
            "paper",
            "--steps",
            "7",
            "--no-adversarial",
            "--lr-g",
            "0.001",
            "--dry-run",
        ],
    )
    assert result.exit_code == 0, result.output
    cfg = json.loads(result.output)
    assert cfg["steps"] == 7 and cfg["adversarial"] is False and cfg["lr_g"] == 0.001
    assert cfg["lr_d"] == PRESETS["paper"].lr_d  # left to the preset
    assert cfg["model"]["g_maps"][0] == [128, 256, 128]  # the paper's
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["train", "--data", "{tmp}/missing", "--out", "{tmp}/r", "--device", "cpu"],
            "{tmp}/missing: no such file or folder",
        ),
        (["train", "--data", "{tmp}", "--out", "{tmp}/r", "--preset", "huge"], "--preset must be"),
        (["train", "--data", "{tmp}", "--out", "{tmp}/r", "--batch", "0"], "batch must be >= 1"),
        (["train", "--data", "{tmp}", "--out", "{tmp}/r", "--resume"], "checkpoint"),
        (["data", "atari", "--out", "{tmp}", "--game", "nope"], "nope: no such game"),
    ],
)
def test_user_errors_are_one_line_with_exit_code_1(tmp_path, args, message):
    args = [a.format(tmp=tmp_path) for a in args]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert message.format(tmp=tmp_path) in lines[0]


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
