import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from conftest import HAS_CUDA, HAS_TENSORRT, moving_frames, needs_cuda, write_frames
from PIL import Image
from typer.testing import CliRunner

import avg_rt
from avg_rt.checkpoint import load_generator
from avg_rt.cli import app
from avg_rt.data.clips import round_to_8bit
from avg_rt.predict import rollout
from avg_rt.runners.pyt import TorchRunner
from avg_rt.visual import CAPTION_HEIGHT

cli = CliRunner()


@pytest.mark.parametrize("feedback_8bit", [True, False])
def test_rollout_is_the_recursion(small_checkpoint, feedback_8bit):
    """Each step sees the last 4 frames, its own predictions fed back as 8-bit frames (the
    default) or as clamped floats."""
    gen, _ = load_generator(small_checkpoint)
    hist = torch.rand(2, 6, 3, 24, 40) * 2 - 1
    with TorchRunner(gen) as runner:
        preds = rollout(runner, hist, steps=3, feedback_8bit=feedback_8bit)
    window = list(hist[:, -4:].unbind(1))
    with torch.inference_mode():
        for t in range(3):
            y = gen(torch.cat(window[-4:], dim=1))
            torch.testing.assert_close(preds[:, t], y)
            window.append(round_to_8bit(y) if feedback_8bit else y.clamp(-1, 1))
    assert not torch.equal(preds[:, 0], round_to_8bit(preds[:, 0]))  # the raw floats come out


def test_a_stochastic_generator_rolls_out_reproducibly_by_seed():
    """A generator with noise channels gives the same rollout for the same seed and another
    for another seed; the caller's random state is left as it was; an export is refused."""
    import dataclasses

    from avg_rt.export.to_onnx import to_onnx
    from conftest import SMALL, busy_generator

    from avg_rt.errors import ExportError
    from avg_rt.model import Generator

    gen = busy_generator(dataclasses.replace(SMALL, noise_channels=1))
    for s in gen.scales:
        torch.nn.init.normal_(s.convs[0].weight, std=0.1)
    hist = torch.rand(2, 4, 3, 24, 40) * 2 - 1
    with TorchRunner(gen) as runner:
        state = torch.get_rng_state()
        a, b = rollout(runner, hist, 3), rollout(runner, hist, 3)
        c = rollout(runner, hist, 3, seed=1)
        assert torch.equal(torch.get_rng_state(), state)
    torch.testing.assert_close(a, b)
    assert (a - c).abs().amax() > 0.01
    with pytest.raises(ExportError, match=r"^noise_channels 1: a stochastic generator"):
        to_onnx(Generator(gen.cfg))


def test_rollout_rejects_bad_history(small_checkpoint):
    with TorchRunner(small_checkpoint) as runner:
        with pytest.raises(ValueError, match="needs 4"):
            rollout(runner, torch.zeros(1, 3, 3, 16, 16), 2)
        with pytest.raises(ValueError, match=r"\(B, T, 3, H, W\)"):
            rollout(runner, torch.zeros(1, 12, 16, 16), 2)


def test_python_api_with_ground_truth(small_checkpoint):
    frames = moving_frames(t=7)
    result = avg_rt.rollout(small_checkpoint, frames[:4], steps=5, truth=frames[4:])
    assert result.predictions.shape == (5, 40, 48, 3) and result.predictions.dtype == np.uint8
    names = {f"{m}{s}" for m in ("psnr", "sharp_diff", "ssim") for s in ("", "_moving")}
    assert set(result.metrics) == names | {f"baseline_{n}" for n in names}
    assert result.metrics["psnr"].shape == (3,)  # only 3 real future frames
    # Moving pixels are scored alike for the model and for copying: on the same pixels, so
    # copying is exact wherever the truth is still, and the square moves in every frame.
    m = result.metrics
    assert np.all(m["baseline_psnr_moving"] <= m["baseline_psnr"])
    assert np.all(np.isfinite(m["psnr_moving"]))
    batch = avg_rt.rollout(small_checkpoint, np.stack([frames[:4]] * 2), steps=2)
    assert batch.predictions.shape == (2, 2, 40, 48, 3) and batch.metrics == {}


@pytest.fixture
def video_dir(tmp_path):
    root = tmp_path / "videos"
    write_frames(root / "small", moving_frames(t=10, h=40, w=48))
    write_frames(root / "other", moving_frames(t=6, h=40, w=48, seed=3))  # 2 true frames
    write_frames(root / "wide", moving_frames(t=9, h=33, w=70))
    mixed = write_frames(root / "mixed", moving_frames(t=8))
    Image.fromarray(moving_frames(t=1, h=20)[0]).save(mixed / "005.png")
    broken = write_frames(root / "broken", moving_frames(t=8))
    (broken / "003.png").write_bytes((broken / "003.png").read_bytes()[:60])
    return root


@pytest.mark.parametrize("fmt", ["gif", "mp4", "png"])
def test_rollout_cli_outputs(small_checkpoint, video_dir, tmp_path, fmt):
    out = tmp_path / "out"
    result = cli.invoke(
        app,
        [
            "rollout",
            str(video_dir),
            "--model",
            str(small_checkpoint),
            "--out",
            str(out),
            "--steps",
            "4",
            "--format",
            fmt,
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "metrics.json").read_text())
    assert sorted(v["folder"] for v in report["videos"]) == ["other", "small", "wide"]
    skipped = {s["name"].split("/")[-1]: s["error"] for s in report["skipped"]}
    assert set(skipped) == {"mixed", "broken"}
    assert "mixed/005.png: frame is 20x48" in skipped["mixed"]
    assert "broken/003.png: unreadable image" in skipped["broken"]
    assert report["backend"] == "torch-cpu" and "psnr" in report["definitions"]
    by_name = {v["folder"]: v for v in report["videos"]}
    assert by_name["small"]["truth_steps"] == 4 and by_name["other"]["truth_steps"] == 2
    assert len(by_name["other"]["metrics"]["baseline_psnr"]) == 2
    assert len(report["mean_per_step"]["psnr"]) == 4
    rows = (out / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith(
        "video,step,psnr,sharp_diff,ssim,psnr_moving,sharp_diff_moving,ssim_moving,baseline_psnr"
    )
    assert len(rows) == 1 + 4 + 2 + 4
    for name, (h, w) in (("small", (40, 48)), ("wide", (33, 70))):
        pngs = sorted((out / name / "frames").glob("*.png"))
        assert len(pngs) == 4 and iio.imread(pngs[0]).shape == (h, w, 3)
        assert iio.imread(out / name / "metrics.png").ndim == 3
        animation = out / name / f"comparison.{fmt}"
        if fmt == "png":
            assert not animation.exists()
        else:
            frames = iio.imread(animation, index=None)
            assert frames.shape[0] == 4
            pad = (0, 0) if fmt == "gif" else ((h + CAPTION_HEIGHT) % 2, (3 * w) % 2)
            assert frames.shape[1:3] == (h + CAPTION_HEIGHT + pad[0], 3 * w + pad[1])


def test_rollout_cli_errors(small_checkpoint, video_dir, tmp_path):
    def run(*args):
        return cli.invoke(app, ["rollout", str(video_dir), "--no-progress", *args])

    out = tmp_path / "o"
    out.mkdir()
    r = run("--model", str(small_checkpoint), "--out", str(out))
    assert r.exit_code == 1 and "--overwrite" in r.output
    before = sorted(p.name for p in video_dir.rglob("*"))
    for target in (video_dir, video_dir.parent, video_dir / "out"):  # is, holds, lies inside
        r = run("--model", str(small_checkpoint), "--out", str(target), "--overwrite")
        assert r.exit_code == 1 and "which this command reads" in r.output, r.output
    assert sorted(p.name for p in video_dir.rglob("*")) == before
    (tmp_path / "m.txt").write_text("x")
    r = run("--model", str(tmp_path / "m.txt"), "--out", str(tmp_path / "o2"))
    assert r.exit_code == 1 and "unknown model type '.txt'" in r.output
    if not HAS_CUDA:
        r = run("--model", str(small_checkpoint), "--device", "cuda", "--out", str(tmp_path / "o3"))
        assert r.exit_code == 1 and "no CUDA GPU" in r.output
    if not HAS_TENSORRT:
        r = run(
            "--model",
            str(small_checkpoint),
            "--backend",
            "tensorrt",
            "--device",
            "cpu",
            "--out",
            str(tmp_path / "o4"),
        )
        assert r.exit_code == 1 and ("CUDA only" in r.output or "not installed" in r.output)
    (tmp_path / "g.plan").write_bytes(b"x")
    r = run("--model", str(tmp_path / "g.plan"), "--tf32", "--out", str(tmp_path / "o5"))
    assert r.exit_code == 1 and "TF32 is not a runtime choice" in r.output
    assert not any((tmp_path / f"o{i}").exists() for i in (2, 3, 4, 5))


def test_rollout_cli_onnx_matches_checkpoint(small_checkpoint, onnx_files, video_dir, tmp_path):
    outs = {}
    # --tf32 only matters on CUDA; here it must reach the runner and its report.
    for name, model, flags in (
        ("torch", small_checkpoint, []),
        ("onnx", onnx_files["fp32"], ["--tf32"]),
    ):
        outs[name] = tmp_path / name
        r = cli.invoke(
            app,
            [
                "rollout",
                str(video_dir / "small"),
                "--model",
                str(model),
                "--out",
                str(outs[name]),
                "--steps",
                "6",
                "--no-progress",
                *flags,
            ],
        )
        assert r.exit_code == 0, r.output
    a = json.loads((outs["torch"] / "metrics.json").read_text())["videos"][0]["metrics"]
    report = json.loads((outs["onnx"] / "metrics.json").read_text())
    assert report["backend"] == "onnxrt-cpu-tf32"
    b = report["videos"][0]["metrics"]
    np.testing.assert_allclose(a["psnr"], b["psnr"], atol=1e-3)


def test_unusable_models_stop_with_one_line(small_checkpoint, onnx_files, video_dir, tmp_path):
    import onnx

    from avg_rt import checkpoint

    def run(model, out):
        args = ["rollout", str(video_dir / "small"), "--model", str(model), "--out", str(out)]
        return cli.invoke(app, [*args, "--no-progress"])

    # A diverged training's checkpoint: NaN weights would roll out black frames scored "inf".
    data = checkpoint.load(small_checkpoint)
    weights = dict(data["generator"])
    name = next(k for k in weights if k.endswith("weight"))
    weights[name] = torch.full_like(weights[name], float("nan"))
    checkpoint.save(tmp_path / "nan.pt", data["config"], data["step"], {"generator": weights})
    r = run(tmp_path / "nan.pt", tmp_path / "o1")
    assert (
        r.exit_code == 1
        and f"non-finite generator weights (NaN or inf) in 1 tensors, first {name}" in r.output
    )

    # An ONNX file whose avg-rt metadata disagrees with its input.
    proto = onnx.load(onnx_files["fp32"])
    for p in proto.metadata_props:
        if p.key == "history_len":
            p.value = "1"
    onnx.save(proto, tmp_path / "meta.onnx")
    r = run(tmp_path / "meta.onnx", tmp_path / "o2")
    assert r.exit_code == 1 and "its input has 12 channels" in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_non_finite_predictions_stop_the_rollout(
    small_checkpoint, video_dir, tmp_path, monkeypatch
):
    def nan_predict(self, history):
        return torch.full_like(history[:, :3], float("nan"))

    monkeypatch.setattr(TorchRunner, "predict", nan_predict)
    args = ["rollout", str(video_dir / "small"), "--model", str(small_checkpoint)]
    r = cli.invoke(app, [*args, "--out", str(tmp_path / "o"), "--no-progress"])
    assert r.exit_code == 1 and "prediction 1 is not finite" in r.output, r.output
    assert not (tmp_path / "o").exists()


def test_videos_the_model_cannot_take_are_skipped_by_name(small_checkpoint, tmp_path):
    videos = tmp_path / "videos"
    write_frames(videos / "tiny", moving_frames(t=8, h=4, w=4))
    write_frames(videos / "short", moving_frames(t=3))
    write_frames(videos / "fine", moving_frames(t=8))
    args = ["rollout", str(videos), "--model", str(small_checkpoint), "--no-progress"]
    r = cli.invoke(app, [*args, "--out", str(tmp_path / "o"), "--steps", "2"])
    assert r.exit_code == 0, r.output
    skipped = {
        Path(s["name"]).name: s["error"]
        for s in json.loads((tmp_path / "o" / "metrics.json").read_text())["skipped"]
    }
    assert skipped["tiny"].endswith("frames are 4x4; this model takes at least 8x8")
    assert skipped["short"].endswith(
        "3 frames, at least 4 needed (--start 0 and a 4-frame history)"
    )
    r = cli.invoke(app, [*args, "--out", str(tmp_path / "o2"), "--steps", "0"])
    assert r.exit_code == 1 and "--steps: must be >= 1, got 0" in r.output


def test_rollout_says_how_its_steps_ran(small_checkpoint, video_dir, tmp_path):
    args = ["rollout", str(video_dir / "small"), "--model", str(small_checkpoint)]
    r = cli.invoke(app, [*args, "--out", str(tmp_path / "o"), "--steps", "2", "--no-progress"])
    assert r.exit_code == 0, r.output
    video = json.loads((tmp_path / "o" / "metrics.json").read_text())["videos"][0]
    assert video["execution"] == {"steps": "eager", "why": "CPU"}


@needs_cuda
def test_cuda_rollout_is_captured_and_says_so(small_checkpoint):
    execution: dict[str, str] = {}
    hist = torch.rand(1, 4, 3, 32, 32, device="cuda") * 2 - 1
    with TorchRunner(small_checkpoint, "cuda") as runner:
        rollout(runner, hist, steps=3, execution=execution)
    assert execution == {"steps": "cuda-graph"}
