"""Smoke tests of the benchmarks in their quick modes (tiny settings, files in tmp_path)."""

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from avg_rt.benchmark.quality import QualityOptions, paired, run
from avg_rt.cli import app
from avg_rt.errors import InputError

cli = CliRunner()


def test_quality_benchmark_quick(small_checkpoint, onnx_files, tmp_path):
    opts = QualityOptions(
        models={"torch": small_checkpoint, "onnx": onnx_files["fp32"]},
        episodes=1,
        episode_frames=40,
        steps=4,
        stride=5,
        max_clips=3,
        name="q",
        out=tmp_path,
    )
    report = run(opts)
    assert report["clips"] == 3 and report["frame_size"] == [210, 160]
    assert set(report["results"]) == {"torch", "onnx", "copy last frame"}
    for res in report["results"].values():
        for key in ("psnr", "psnr_moving", "sharp_diff", "sharp_diff_moving", "ssim"):
            assert len(res[key]["mean"]) == 4 and len(res[key]["ci95"]) == 4
    a, b = report["results"]["torch"]["psnr"]["mean"], report["results"]["onnx"]["psnr"]["mean"]
    assert max(abs(x - y) for x, y in zip(a, b)) < 0.1  # same model, two backends
    # Per-clip scores at the table's steps (1, 2, 4) give paired differences on the same clips.
    per_clip = report["results"]["torch"]["per_clip"]["psnr"]
    assert len(per_clip) == 3 and all(len(c) == 3 for c in per_clip)
    assert abs(sum(per_clip[2]) / 3 - report["results"]["torch"]["psnr"]["mean"][3]) < 1e-3
    against_copy = paired(report, "torch", "copy last frame", "psnr")
    assert list(against_copy) == [1, 2, 4]
    copy = report["results"]["copy last frame"]["psnr"]["mean"]
    assert abs(against_copy[4]["mean"] - (a[3] - copy[3])) < 1e-3
    assert paired(report, "torch", "torch", "psnr")[1] == {"mean": 0.0, "ci95": 0.0, "n": 3}
    assert set(report["results"]["torch"]["per_clip"]) >= {"psnr_moving", "sharp_diff_moving"}
    margins = report["versus_copy"]["torch"]
    assert len(margins["psnr_moving_margin_median"]) == 4 and len(margins["inexact_clips"]) == 4
    # Copying never damages a still pixel; a model's damage is a percentage of the frame.
    assert report["results"]["copy last frame"]["still_damaged"]["mean"] == [0.0] * 4
    assert all(0 <= v <= 100 for v in report["results"]["torch"]["still_damaged"]["mean"])
    assert "**still_damaged**" in (tmp_path / "q.md").read_text()
    assert "**exact_frames**" in (tmp_path / "q.md").read_text()
    md = (tmp_path / "q.md").read_text()
    assert "| copy last frame |" in md and "step 4" in md and "step 8" not in md
    assert json.loads((tmp_path / "q.json").read_text())["environment"]["torch"]
    for metric in ("psnr", "sharp_diff", "ssim"):
        assert (tmp_path / f"q-{metric}.png").stat().st_size > 0
    import imageio.v3 as iio

    gif = iio.imread(tmp_path / "q.gif", index=None)
    assert gif.shape[0] == 4 and gif.shape[2] == 3 * 160  # torch | onnx | truth

    # One moving mask for every row: the pixels a model changes count for copying too (where
    # copying is exact), so copy's moving-pixel PSNR is at least what it is with no model.
    alone = run(dataclasses.replace(opts, models={}, name="alone"))
    with_models = report["results"]["copy last frame"]["psnr_moving"]["mean"]
    without = alone["results"]["copy last frame"]["psnr_moving"]["mean"]
    assert all(a >= b - 1e-9 for a, b in zip(with_models, without))
    assert any(a > b + 0.01 for a, b in zip(with_models, without))  # the busy model moved pixels

    # Reference rows: the truth d steps late is copying at step d and the truth of step t - d
    # after it, on the same mask as every other row.
    late = run(dataclasses.replace(opts, models={}, late=(1, 2), judge=True, name="late"))[
        "results"
    ]
    copy, one, two = late["copy last frame"], late["truth 1 step late"], late["truth 2 steps late"]
    for metric in ("psnr", "sharp_diff_moving", "ssim", "foreground_hit"):
        assert one[metric]["mean"][0] == copy[metric]["mean"][0]
        assert two[metric]["mean"][1] == copy[metric]["mean"][1]
    assert one["psnr"]["mean"][1] != copy["psnr"]["mean"][1]
    assert "'truth d steps late': a reference" in (tmp_path / "late.md").read_text()
    assert "steps late'" not in (tmp_path / "alone.md").read_text()
    # The judge, per row at the table's steps: 3 clips leave 1 to test on, too few (NaN).
    assert [len(r["judge"]) for r in late.values()] == [3, 3, 3]
    assert (
        np.isnan(one["judge"][0]["accuracy"])
        and "**judge accuracy**" in (tmp_path / "late.md").read_text()
    )


def test_saved_reports_are_strict_json(tmp_path):
    """A clip where nothing moved has no moving-pixel score (NaN in memory): the report says
    null, not the bare NaN that strict JSON readers reject, and paired comparisons read it
    back as a missing score."""
    from avg_rt.benchmark.common import environment, save

    steps = {"steps": 1}
    per_clip = {"a": [[1.0, float("nan"), 3.0]], "b": [[0.5, 2.0, 2.0]]}
    results = {k: {"per_clip": {"psnr_moving": v}} for k, v in per_clip.items()}
    report = {"environment": environment(), "options": steps, "results": results}
    path = save("r", report, "| table |", tmp_path)
    back = json.loads(path.read_text(), parse_constant=pytest.fail)
    assert back["results"]["a"]["per_clip"]["psnr_moving"] == [[1.0, None, 3.0]]
    assert paired(back, "a", "b", "psnr_moving")[1]["n"] == 2
    assert paired(back, "a", "b", "psnr_moving") == paired(report, "a", "b", "psnr_moving")


def test_bench_quality_cli_bad_model_spec(tmp_path):
    result = cli.invoke(app, ["bench", "quality", "--model", "nolabel", "--out", str(tmp_path)])
    assert result.exit_code == 1 and "LABEL=PATH" in result.output


@pytest.mark.parametrize("script", ["quality", "speed"])
def test_benchmark_scripts_print_user_errors_as_one_line(tmp_path, script):
    """The scripts run the root CLI, whose user errors are one line: a diverged checkpoint
    gave a 40-line traceback through `benchmarks/quality.py` before."""
    import subprocess
    import sys

    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    root = Path(__file__).resolve().parents[1]
    args, line = {
        "quality": (["--model", f"x={bad}"], f"{bad}: not a PyTorch checkpoint"),
        "speed": (["--preset", "nope"], "--preset must be one of"),
    }[script]
    run = subprocess.run(
        [sys.executable, str(root / "benchmarks" / f"{script}.py"), *args, "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert run.returncode == 1, run.stderr
    [only] = run.stderr.strip().splitlines()
    assert only.startswith(f"error: {line}"), run.stderr


def test_speed_benchmark_quick(tmp_path):
    from avg_rt.benchmark.speed import SpeedOptions, cpu_has_bf16
    from avg_rt.benchmark.speed import run as run_speed

    opts = SpeedOptions(
        sizes=((32, 32),),
        batches=(1, 2),
        steps=2,
        repeats=2,
        device="cpu",
        train_steps=1,
        train_presets=("small",),  # the paper preset's 4-step training takes ~10 s a step here
        name="s",
        out=tmp_path,
    )
    report = run_speed(opts)
    runners = {r["runner"] for r in report["rows"]}
    expected = {
        "torch-cpu",
        "onnxrt-cpu",
        "onnxrt-cpu-fp16",
        "onnxrt-cpu-int8",
        "onnxrt-cpu-int8-sym",
    }
    if cpu_has_bf16():
        expected.add("torch-cpu-bf16")
    assert runners == expected
    assert len(report["rows"]) == len(expected) * 2
    assert {r["steps_ran"] for r in report["rows"]} == {"eager (CPU)"}  # said, not assumed
    for r in report["rows"]:
        assert r["rollout_fps"] > 0 and r["step_ms_p95"] >= r["step_ms_median"] > 0
        assert 0 < r["fraction_of_peak"] < 10  # INT8 passes the FP32 peak
    assert [t["what"] for t in report["training"]][0] == "clip sampler"
    assert all(t["per_s"] > 0 for t in report["training"])
    md = (tmp_path / "s.md").read_text()
    assert "| onnxrt-cpu-fp16 | 32x32 | 2 |" in md and "Measured on" in md
    assert report["complete"] and "Partial" not in md  # (written after each runner too)


def test_exact_frames_counts_clips_right_to_the_last_pixel():
    """`exact_frames`: 100 for a predicted frame equal to the truth in every pixel and channel,
    0 for one channel of one pixel off by one level; its mean over clips is a percentage."""
    from avg_rt.benchmark.quality import _aggregate, _scores

    rng = np.random.default_rng(0)
    truth = rng.integers(0, 256, (3, 2, 16, 16, 3), np.uint8)
    frames = truth.copy()
    frames[1, 0, 5, 7, 2] ^= 1  # clip 1, step 1: one level of one channel of one pixel
    frames[2, 1] = 255 - truth[2, 1]  # clip 2, step 2: everything wrong
    last = truth[:, 0]
    still = np.ones(last.shape[:-1], bool)
    scores = _scores(frames, truth, np.ones(truth.shape[:-1], bool), last, (last, still))
    assert scores["exact_frames"].tolist() == [[100, 100], [0, 100], [100, 0]]
    assert _aggregate(scores)["exact_frames"]["mean"] == pytest.approx([200 / 3, 200 / 3])
    assert scores["psnr"][1, 0] > 70  # the one-level miss: high PSNR, yet not exact


def test_rollout_overhead_script(small_checkpoint, tmp_path):
    import runpy

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "rollout_overhead.py"
    args = ["--checkpoint", str(small_checkpoint), "--height", "32", "--width", "40"]
    args += ["--steps", "3", "--repeats", "1", "--name", "o", "--out", str(tmp_path)]
    runpy.run_path(str(script))["main"](args)
    report = json.loads((tmp_path / "o.json").read_text())
    rows = report["rows"]
    assert report["complete"] and "Partial" not in (tmp_path / "o.md").read_text()
    names = [r["runner"] for r in rows]
    assert names[0] == "torch-cpu" and {"onnxrt-cpu", "onnxrt-cpu-int8"} <= set(names)
    assert {r["steps_ran"] for r in rows} == {"eager (CPU)"}
    assert all(r["ratio"] > 0 and r["ratio_of_minima"] > 0 and r["single_ms"] > 0 for r in rows)
    assert "| torch-cpu |" in (tmp_path / "o.md").read_text()


def test_benchmark_script_ends_a_user_error_in_one_line(tmp_path, monkeypatch, capsys):
    """A script given a model it cannot use (a stochastic generator, which has no ONNX form)
    ends as the CLI does: one line naming the problem, exit code 1, no traceback."""
    import runpy

    from avg_rt import checkpoint
    from avg_rt.config import PRESETS
    from avg_rt.model import Generator

    cfg = PRESETS["small"]
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, noise_channels=1))
    path = tmp_path / "noise.pt"
    checkpoint.save(path, cfg, 0, {"generator": Generator(cfg.model).state_dict()})
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "rollout_overhead.py"
    args = ["--checkpoint", str(path), "--height", "32", "--width", "40", "--out", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", [str(script), *args])
    with pytest.raises(SystemExit) as ended:
        runpy.run_path(str(script), run_name="__main__")
    assert ended.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "noise" in err[0], err
    assert not list(tmp_path.glob("rollout-overhead*"))


def test_parity_script(small_checkpoint, tmp_path):
    import runpy

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "parity.py"
    args = ["--checkpoint", str(small_checkpoint), "--episodes", "1", "--start", "2"]
    args += ["--steps", "3", "--name", "p", "--out", str(tmp_path)]
    runpy.run_path(str(script))["main"](args)
    report = json.loads((tmp_path / "p.json").read_text())
    assert report["complete"] and "Partial" not in (tmp_path / "p.md").read_text()
    rows = {r["runner"]: r for r in report["rows"]}
    assert list(rows)[0] == "torch-cpu-no-onednn"
    assert {"onnxrt-cpu", "onnxrt-cpu-fp16", "onnxrt-cpu-int8", "onnxrt-cpu-int8-sym"} <= set(rows)
    for name, r in rows.items():
        for kind in ("forced", "rollout"):
            assert len(r[kind]["max_abs"]) == len(r[kind]["psnr"]) == 3
        if r["precision"] == "int8":  # judged by PSNR, as the export judges it
            assert min(r["forced"]["psnr"]) >= 38, name
        else:
            limit = 1e-4 if r["precision"] == "fp32" else 0.1
            assert max(r["forced"]["max_abs"]) < limit, name  # other kernels, same model
    assert "| onnxrt-cpu |" in (tmp_path / "p.md").read_text()
    assert (tmp_path / "p.png").stat().st_size > 0


def test_benchmarks_device_choice_and_reports_written_as_they_go(
    small_checkpoint, tmp_path, monkeypatch
):
    """--device picks the backends (a GPU run need not spend its lease on CPU ones) and a run
    stopped part-way keeps the rows it measured: the report is written after each runner."""
    import runpy

    import torch

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "rollout_overhead.py"
    main = runpy.run_path(str(script))["main"]
    args = ["--checkpoint", str(small_checkpoint), "--height", "32", "--width", "32"]
    args += ["--steps", "2", "--repeats", "1", "--out", str(tmp_path)]

    from avg_rt.benchmark import speed

    real = speed.runners
    measured: list[str] = []

    def two_then_stop(*a, **k):  # the lease ends after two runners
        for i, item in enumerate(real(*a, **k)):
            if i == 2:
                raise KeyboardInterrupt
            measured.append(item[0].name)
            yield item

    monkeypatch.setattr(speed, "runners", two_then_stop)
    with pytest.raises(KeyboardInterrupt):
        main([*args, "--device", "cpu", "--name", "cut"])
    monkeypatch.undo()
    report = json.loads((tmp_path / "cut.json").read_text())
    assert [r["runner"] for r in report["rows"]] == measured and len(measured) == 2
    assert not report["complete"] and "(Partial:" in (tmp_path / "cut.md").read_text()
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="--device cuda: torch sees no CUDA GPU"):
            main([*args, "--device", "cuda", "--name", "g"])
        assert not (tmp_path / "g.json").exists()


def test_generator_forms_script(tiny_dataset, tmp_path):
    import runpy

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "generator_forms.py"
    args = ["--data", str(tiny_dataset), "--steps", "2", "--clips", "6"]
    runpy.run_path(str(script))["main"]([*args, "--name", "g", "--out", str(tmp_path)])
    report = json.loads((tmp_path / "g.json").read_text())
    labels = [r["label"] for r in report["rows"]]
    assert labels[0] == "copy last frame" and "delta, alpha 2" in labels
    assert report["held_out_clips"] == 6
    # Two G-only steps from zero-initialised last layers barely move a delta generator: it is
    # still (nearly) the copy, which the table must show as such.
    rows = {r["label"]: r for r in report["rows"]}
    assert abs(rows["delta, alpha 2"]["psnr"] - rows["copy last frame"]["psnr"]) < 1.0
    assert "| delta, alpha 1 |" in (tmp_path / "g.md").read_text()


def test_gpu_acceptance_script_steps_and_refusal_without_a_gpu(tmp_path, capsys):
    """The acceptance run's steps are real commands of this project; without a GPU it says
    so in one line and exits 1 instead of running CPU substitutes."""
    import runpy

    import torch

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_acceptance.py"
    module = runpy.run_path(str(script))
    steps = dict(module["steps"](tmp_path / "out", tmp_path / "work"))
    assert list(steps) == [
        "doctor", "gpu tests", "runner tests", "export", "live sampler", "parity",
        "rollout overhead", "speed",
    ]  # fmt: skip
    # A lease's minutes go to the CUDA backends: the CPU ones are CI's.
    assert steps["parity"][-4:-2] == steps["rollout overhead"][-4:-2] == ["--device", "cuda"]
    assert steps["live sampler"][1:5] == ["benchmarks/live.py", "sampler", "--device", "cuda"]
    assert steps["doctor"][-2:] == ["doctor", "--cuda"]
    assert "needs_cuda or needs_tensorrt" in steps["gpu tests"]
    assert steps["speed"][-6:] == [
        "--preset", "paper", "--device", "cuda", "--out", str(tmp_path / "out")
    ]  # fmt: skip
    assert "--full" in dict(module["steps"](tmp_path / "out", tmp_path / "work", True))["speed"]
    # A step past its time is stopped with what it started, and reported as exit 124.
    code, output = module["run_step"](
        [sys.executable, "-c", "import time; print('started', flush=True); time.sleep(60)"], 2
    )
    assert code == 124 and "started" in output and "--step-timeout 2 s" in output
    for script_path in ("benchmarks/parity.py", "benchmarks/rollout_overhead.py",
                        "benchmarks/live.py"):  # fmt: skip
        assert (script.parents[1] / script_path).is_file()
    # A step that does not exist is refused before anything runs, naming the ones that do.
    assert module["main"](["--skip", "live sampler", "--skip", "sped"]) == 2
    err = capsys.readouterr().err
    assert "--skip 'sped': no such step" in err and "rollout overhead" in err
    if not torch.cuda.is_available():
        assert module["main"](["--skip", "live sampler"]) == 1
        assert "torch sees no CUDA GPU here" in capsys.readouterr().err


def test_gpu_acceptance_skips_the_steps_it_is_told_to(tmp_path, monkeypatch):
    """`--skip`: the steps named are not run and not in the summary; the others are, in order
    (steps stood in for by quick commands, the GPU by a name)."""
    import runpy

    import torch

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_acceptance.py"
    module = runpy.run_path(str(script))
    main = module["main"]
    names = [name for name, _ in module["steps"](tmp_path, tmp_path)]
    ran = tmp_path / "ran"
    quick = [
        (n, [sys.executable, "-c", f"open({str(ran)!r}, 'a').write({n!r} + '\\n')"]) for n in names
    ]
    monkeypatch.setitem(main.__globals__, "steps", lambda *a: quick)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Fake GPU")
    out = tmp_path / "out"
    assert main(["--out", str(out), "--skip", "live sampler", "--skip", "speed"]) == 0
    kept = [n for n in names if n not in ("live sampler", "speed")]
    assert ran.read_text().splitlines() == kept
    summary = json.loads((out / "summary.json").read_text())
    assert [d["step"] for d in summary["steps"]] == kept and summary["gpu"] == "Fake GPU"


def test_intro_stats_on_a_constructed_intro(tmp_path):
    """`benchmarks/intro.py`: the shared prefix, the exact period and the pixels that no
    history frame holds, on episodes built to have them."""
    import runpy

    from conftest import write_frames

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "intro.py"
    module = runpy.run_path(str(script))
    rng = np.random.default_rng(0)
    cycle = rng.integers(0, 256, (6, 8, 8, 3), np.uint8)  # 6 distinct frames
    intro = np.concatenate([cycle, cycle, cycle[:2]])  # 14 frames, period 6 from frame 6
    episodes = [np.concatenate([intro, rng.integers(0, 256, (3, 8, 8, 3), np.uint8)]) for _ in "ab"]
    stats = module["intro_stats"](episodes)
    assert stats["episodes"] == 2 and stats["shared_frames"] == 14
    rows = {r["frame"]: r for r in stats["frames"]}
    assert [t for t, r in rows.items() if r["period"] == 6] == list(range(6, 14))
    assert rows[5]["period"] is None
    # Frame 5 is new (random), frame 6 repeats frame 0, which is not among frames 2-5.
    assert rows[5]["new"] == rows[5]["changed"] > 0
    assert rows[6]["new"] == rows[6]["changed"]
    # A period within the history: from frame 3 on every changed pixel is in it (new 0); a
    # frame that repeats a history frame in part only has 0 < new < changed.
    short = np.concatenate([cycle[:3]] * 3)  # period 3
    short[7, :2] = cycle[5, :2]  # two rows no earlier frame had
    rows = {r["frame"]: r for r in module["intro_stats"]([short, short.copy()])["frames"]}
    assert [rows[t]["new"] for t in (3, 4, 5, 6, 8)] == [0] * 5
    assert 0 < rows[7]["new"] < rows[7]["changed"]
    for i, ep in enumerate(episodes):
        write_frames(tmp_path / "data" / f"ep{i}", ep)
    module["main"](["--data", str(tmp_path / "data"), "--out", str(tmp_path), "--frames", "20"])
    md = (tmp_path / "intro.md").read_text()
    assert "The first 14 frames are identical in all 2 episodes" in md
    assert "repeat an earlier one exactly: 8, from frame 6 on, periods [6]" in md


def test_intro_errors_on_the_clips_copying_gets_exact():
    """`benchmarks/intro.py --model`: only clips whose frame at the step equals the last input,
    each distinct one once; medians of a model's wrong pixels and of those whose true value a
    history frame had, exact frames, and which clips lie inside the shared intro."""
    import runpy

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "intro.py"
    module = runpy.run_path(str(script))
    rng = np.random.default_rng(0)
    a, b, c, d = rng.integers(0, 256, (4, 6, 6, 3), np.uint8)
    for x, y in ((a, b), (a, c), (a, d), (b, c), (b, d), (c, d)):
        assert (x != y).any(-1).all()  # differ at every pixel
    intro = np.stack([a, b] * 4)
    hist = [a, b, a, b]
    history = np.stack([hist, hist, hist, hist, [d, d, d, b]])
    # Chosen (step 2 equals the last input b): 0 (c is new), 2 (= clip 0), 3 (inside the
    # intro), 4 (d, from its history). Clip 1 ends on c: left out.
    truth = np.stack([[c, b], [a, c], [c, b], [a, b], [d, b]])
    good = truth.copy()
    bad = truth.copy()
    for clip in (0, 2):
        bad[clip, 0, 0, :2] = a[0, :2]  # 2 wrong pixels whose true value (c) no frame had
    bad[3, 0, 1, :4] = b[1, :4]  # 4 wrong, true value a in the history
    bad[4, 0, 2:5, :3] = a[2:5, :3]  # 9 wrong, true value d in the history
    distinct = [0, 3, 4]  # rollouts of the distinct clips only
    rolled = {"good": good[distinct], "bad": bad[distinct]}
    result = module["errors_on_repeats"](history, truth, rolled, 2, intro)
    assert result["clips"] == [0, 2, 3, 4]
    assert result["distinct"] == [0, 3, 4] and result["copies"] == [2, 1, 1]
    assert result["in_intro"] == [False, True, False]
    rows = result["models"]
    # Over the distinct clips (2, 4, 9): median 4; counting clip 2 again would give 3.
    assert [(r["wrong"], r["in_history"], r["exact"]) for r in rows["bad"]] == [
        (4.0, 4.0, 0),
        (0.0, 0.0, 3),
    ]
    assert (rows["bad"][0]["wrong_total"], rows["bad"][0]["in_history_total"]) == (15, 13)
    copying = [(r["wrong"], r["in_history"], r["exact"]) for r in rows["copy last frame"]]
    assert copying == [(36.0, 36.0, 0), (0.0, 0.0, 3)]
    assert rows["copy last frame"][0]["in_history_total"] == 72  # clip 0's c is new
    table = "\n".join(module["repeats_table"](result, 2))
    assert "On the 4 clips" in table and "(3 distinct" in table
    assert "starts with: 1, elsewhere: 3" in table
    assert "| 1 | 36 (36) | 0 (0), 3 exact | 4 (4) |" in table
    assert "| all steps: wrong pixels a history frame had | 67% | 0% | 87% |" in table
    with pytest.raises(ValueError, match="bad: 5 rollouts for 3 clips"):
        module["errors_on_repeats"](history, truth, {"bad": bad}, 2, intro)


def test_intro_successors_say_whether_training_determines_a_clip():
    """`benchmarks/intro.py --successors`: a clip counts as determined only where, at every
    step, its true next frame followed its true window in training more often than any other;
    unseen windows and ties do not count."""
    import runpy

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "intro.py"
    module = runpy.run_path(str(script))
    rng = np.random.default_rng(0)
    a, b, c, d, e, x = rng.integers(0, 256, (6, 4, 4, 3), np.uint8)
    cycle = [a, b, c, d, e] * 3
    # (b, c, d, e) is followed by a 3 times and by x once; (c, d, e, x) by a and b once each.
    episodes = [
        np.stack(cycle),
        np.stack(cycle[:9]),
        np.stack([b, c, d, e, x, a]),
        np.stack([c, d, e, x, b]),
    ]
    table = module["successors"](episodes)
    key = tuple(module["_digest"](f) for f in (b, c, d, e))
    assert sorted(table[key].values()) == [1, 3]
    clips = np.stack(
        [
            [a, b, c, d, e, a, b],  # abcd -> e, bcde -> a (most often), cdea -> b
            [b, c, d, e, x, a, b],  # bcde -> x: the rarer one; cdex -> a: a tie; dexa: unseen
            [x, x, x, x, x, x, x],  # never seen
        ]
    )
    rows = module["determined"](clips, table)
    assert rows[0] == {"steps": 3, "seen": 3, "only": 2, "most": 3, "exact": True}
    assert rows[1] == {"steps": 3, "seen": 2, "only": 0, "most": 0, "exact": False}
    assert rows[2] == {"steps": 3, "seen": 0, "only": 0, "most": 0, "exact": False}
    info = {"distinct": [0, 5, 9], "copies": [2, 1, 1], "in_intro": [True, False, False]}
    text = "\n".join(module["successors_table"](info, rows, 3, 0))
    assert "a lookup answering the training data's most frequent successor" in text
    assert "where copying the last frame is exact at step 3 (3 distinct)" in text
    assert "exact at every step: 2 of the 4 clips" in text
    assert "| 0 | 2 | yes | 3 | 3 | 2 | 3 |" in text
    # The clips behind each distinct one: clips 0 and 5 are copies of distinct clip 0.
    info["clips"], info["group"] = [0, 5, 7, 9], [0, 1, 0, 2]
    assert module["exact_clips"](info, rows) == [0, 7]
    # Squares: each half of a frame cycled in training while the other stood still; both
    # cycling at once is a frame training never saw, but every square's window it did, the
    # right one on the left (a square is looked up wherever it is). Frames 4 x 10: the last
    # column of squares is 4 x 2, and counts.
    p, q = np.zeros((2, 4, 4, 3), np.uint8), np.full((2, 4, 4, 3), 255, np.uint8)
    p[1, 0, 0], q[1, 0, 0] = 9, 9
    edge = np.zeros((4, 2, 3), np.uint8)
    left = np.stack([np.concatenate([p[t % 2], q[0], edge], axis=1) for t in range(8)])
    right = np.stack([np.concatenate([q[t % 2], p[0], edge], axis=1) for t in range(8)])
    both = np.stack([[np.concatenate([p[t % 2], q[t % 2], edge], axis=1) for t in range(6)]])
    assert module["determined"](both, module["successors"]([left]))[0]["seen"] == 0
    squares = module["determined"](both, module["successors"]([left, right], 4), 4)
    assert squares == [{"steps": 6, "seen": 6, "only": 6, "most": 6, "exact": True}]
    assert not module["determined"](both, module["successors"]([left], 4), 4)[0]["exact"]
    # Scored exact: those clips at the report's cap, the others as measured, at step 16 of a
    # 64-step report (table steps 1, 2, 4, 8, 16, 32, 64).
    psnr = [[0.0] * 4] * 7
    psnr[4] = [30.0, 40.0, 30.0, 20.0]
    report = {
        "options": {"steps": 64},
        "environment": {"command": "bench"},
        "db_cap": 100.0,
        "results": {"m": {"per_clip": {"psnr": psnr}}},
    }
    lines = module["if_exact"](report, {"a": [0, 2], "b": [1]}, 16)
    assert "| model | measured | 2 exact (a) | 1 exact (b) |" in lines
    assert "| m | 30.00 | 65.00 | 45.00 |" in lines


def test_live_compare_pairs_runs_by_seed_and_checks_the_margin(tmp_path):
    """`benchmarks/live.py compare`: live-sN minus recorded-sN on the same clips, per seed and
    pooled; 'within 0.3 dB' only where the whole interval is."""
    import runpy

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "live.py"
    module = runpy.run_path(str(script))
    rng = np.random.default_rng(0)
    base = rng.normal(30, 3, size=(2, 50))  # steps 1, 2 x 50 clips: the clips' own spread
    per = {
        "live-s0": base + 0.05,
        "recorded-s0": base,
        "live-s1": base + 0.95,  # one seed far apart
        "recorded-s1": base,
        "live-s2": base,  # no recorded-s2: left out
    }
    results = {k: {"per_clip": {"psnr": v.tolist()}} for k, v in per.items()}
    report = {"options": {"steps": 2}, "clips": 50, "results": results}
    path = tmp_path / "q.json"
    path.write_text(json.dumps(report))
    module["compare"]([path], tmp_path, steps=(1, 2))
    md = (tmp_path / "live-vs-recorded.md").read_text()
    # A seed's interval sees the clips only: no verdict from one pair of runs.
    assert "| seed 0 | +0.05 ± 0.00 | +0.05 ± 0.00 | - |" in md
    assert "| seed 1 | +0.95 ± 0.00 | +0.95 ± 0.00 | - |" in md
    # Over seeds the run is the unit: (0.05, 0.95) -> 0.50 +- 12.706 * 0.636 / sqrt 2.
    assert "| over 2 seeds | +0.50 ± 5.72 | +0.50 ± 5.72 | no |" in md
    assert "seed 2" not in md
    # A series judged as it grew: after 6 looks, a Bonferroni 99.17% interval,
    # t(1 df) = tan(pi (0.5 - 0.05 / 12)) = 76.39 -> 0.45 * 76.39.
    module["compare"]([path], tmp_path, steps=(1, 2), result="looked", looks=6)
    md = (tmp_path / "looked.md").read_text()
    assert "| over 2 seeds (99.17%, 6 looks) | +0.50 ± 34.38 | +0.50 ± 34.38 | no |" in md
    assert "its interval is 99.17% (Bonferroni for 6 looks" in md
    assert json.loads((tmp_path / "looked.json").read_text())["looks"] == 6
    with pytest.raises(SystemExit):  # argparse's error: no interval for zero looks
        module["main"](["compare", "--looks", "0", str(path), "--out", str(tmp_path)])
    # --tag: another recipe's pairs, labelled live-T-sN and recorded-T-sN, in the same report.
    tagged = {k.replace("-s", "-leak-s"): v for k, v in results.items() if k.endswith("s1")}
    path.write_text(json.dumps({**report, "results": {**results, **tagged}}))
    module["compare"]([path], tmp_path, steps=(1, 2), result="tagged", tags=("leak",))
    md = (tmp_path / "tagged.md").read_text()
    assert "| seed 1 | +0.95 ± 0.00 |" in md and "seed 0" not in md
    with pytest.raises(InputError, match="no pair of models labelled live-none-sN"):
        module["compare"]([path], tmp_path, steps=(1, 2), tags=("none",))
    # Several series pooled: each pair a row, named by its series. The interval is over
    # seeds: two series' pairs of one seed (the same initial weights; the recorded arms, the
    # same clip stream) count once, as their mean.
    leak = {"live-leak-s1": base + 0.55, "live-leak-s3": base + 0.35}
    leak |= {"recorded-leak-s1": base, "recorded-leak-s3": base}
    pooled = results | {k: {"per_clip": {"psnr": v.tolist()}} for k, v in leak.items()}
    path.write_text(json.dumps({**report, "results": pooled}))
    module["compare"]([path], tmp_path, steps=(1, 2), result="pooled", tags=("", "leak"))
    md = (tmp_path / "pooled.md").read_text()
    assert "| seed 0 | +0.05" in md and "| seed 1 | +0.95" in md
    assert "| leak seed 1 | +0.55" in md and "| leak seed 3 | +0.35" in md
    assert "pairs of several series with the same seed (the same initial weights" in md
    assert "as counted (mean of their pairs): seed 1 +0.75, +0.75." in md
    # Seeds 0, 1 (0.95 and 0.55: 0.75), 3: (0.05, 0.75, 0.35): mean 0.383, sd 0.351,
    # t 4.303 / sqrt 3 -> 0.87; as 4 independent pairs it would read +0.47 ± 0.60.
    assert "| over 3 seeds | +0.38 ± 0.87 | +0.38 ± 0.87 | no |" in md
    # --arms: a control pair in which neither arm is live reads the same way.
    control = {k.replace("live-", "rotated-"): v for k, v in results.items()}
    path.write_text(json.dumps({**report, "results": control}))
    module["compare"]([path], tmp_path, steps=(1, 2), result="aa", arms=("rotated", "recorded"))
    md = (tmp_path / "aa.md").read_text()
    assert md.startswith("Training on the recorded set drawn from a list rotated")
    assert "| over 2 seeds | +0.50 ± 5.72 | +0.50 ± 5.72 | no |" in md
    with pytest.raises(InputError, match="no pair of models labelled live-sN"):
        module["compare"]([path], tmp_path, steps=(1, 2))
    # From the command line, options before or after the reports, with --tag; an arm that is
    # not a known one is printed as given. A 16-step report: table steps 1, 2, 4, 8, 16.
    base16 = rng.normal(30, 3, size=(5, 50))
    per16 = {"rotB-clip-s0": base16 + 0.25, "recorded-clip-s0": base16}
    res16 = {k: {"per_clip": {"psnr": v.tolist()}} for k, v in per16.items()}
    path.write_text(json.dumps({"options": {"steps": 16}, "clips": 50, "results": res16}))
    argv = ["compare", "--arms", "rotB", "recorded", "--tag", "clip", str(path)]
    module["main"]([*argv, "--out", str(tmp_path)])
    md = (tmp_path / "rotB-vs-recorded-clip.md").read_text()
    assert md.startswith("RotB minus training on a recorded set")
    assert "| seed 0 | +0.25 ± 0.00 | +0.25 ± 0.00 | - |" in md
    path.write_text(json.dumps(report))
    with pytest.raises(InputError, match=r"no per-clip scores at step\(s\) \[16\]"):
        module["compare"]([path], tmp_path, steps=(1, 16))  # a report of 2 steps has no step 16
    # Seeds scored in two runs on the same clips read as one report; other clips are refused.
    first = {**report, "options": {"steps": 2, "models": {}}, "videos": ["a"]}
    second = json.loads(json.dumps(first))
    first["results"] = {k: results[k] for k in ("live-s0", "recorded-s0")}
    second["results"] = {k: results[k] for k in ("live-s1", "recorded-s1")}
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(first))
    b.write_text(json.dumps(second))
    module["compare"]([a, b], tmp_path, steps=(1, 2), result="merged")
    assert (
        "| over 2 seeds | +0.50 ± 5.72 | +0.50 ± 5.72 | no |"
        in (tmp_path / "merged.md").read_text()
    )
    # The same model in two reports (a reference scored with each of its pairs) reads once;
    # under the same label, another checkpoint or other scores are refused.
    second["results"]["recorded-s0"] = results["recorded-s0"]
    first["options"]["models"] = {"recorded-s0": "runs/r0.pt"}
    second["options"]["models"] = {"recorded-s0": "/work/runs/r0.pt"}  # absolute, the same
    a.write_text(json.dumps(first))
    b.write_text(json.dumps(second))
    module["compare"]([a, b], tmp_path, steps=(1, 2), result="merged")
    assert "| over 2 seeds | +0.50 ± 5.72 |" in (tmp_path / "merged.md").read_text()
    second["options"]["models"] = {"recorded-s0": "/work/other/r0.pt"}
    b.write_text(json.dumps(second))
    with pytest.raises(InputError, match="'recorded-s0' is in an earlier report too"):
        module["compare"]([a, b], tmp_path, steps=(1, 2), result="merged")
    second["options"]["models"] = {"recorded-s0": "runs/r0.pt"}
    shifted = (np.asarray(per["recorded-s0"]) + 0.05).tolist()
    second["results"]["recorded-s0"] = {"per_clip": {"psnr": shifted}}
    b.write_text(json.dumps(second))
    with pytest.raises(InputError, match="with another checkpoint or other scores"):
        module["compare"]([a, b], tmp_path, steps=(1, 2), result="merged")
    del second["results"]["recorded-s0"]
    b.write_text(json.dumps({**second, "videos": ["other"]}))
    with pytest.raises(InputError, match="b.json: scored other clips than"):
        module["compare"]([a, b], tmp_path, steps=(1, 2), result="merged")
    # A report that is missing (a pair still being scored) or not JSON: one line naming it.
    with pytest.raises(InputError, match="missing.json: not a readable quality report"):
        module["compare"]([a, tmp_path / "missing.json"], tmp_path, steps=(1, 2))
    b.write_text("{")
    with pytest.raises(InputError, match="b.json: not a readable quality report"):
        module["compare"]([a, b], tmp_path, steps=(1, 2))


def test_quality_scores_in_pieces_equal_scores_at_once():
    # The benchmark scores a few clips x steps at a time to bound its memory; the pieces must
    # give exactly what scoring everything at once gives, ragged last pieces included.
    from avg_rt.benchmark.quality import SCORE_STEPS, _scores, _scores_in_pieces, backgrounds

    rng = np.random.default_rng(0)
    n, s = 3, SCORE_STEPS + 3
    # A still background with a bright sprite moving across it, so that the foreground
    # scores are mostly numbers, not NaN; the prediction's top half is noise.
    truth = np.repeat(rng.integers(0, 100, (n, 1, 16, 16, 3), dtype=np.uint8), s, axis=1)
    for t in range(s):
        truth[:, t, 10:13, t : t + 3] = 255
    frames = truth.copy()
    frames[:, :, :8] = rng.integers(0, 256, (n, s, 8, 16, 3), dtype=np.uint8)
    last = truth[:, 0]
    moving = (truth != last[:, None]).any(-1) | (frames != last[:, None]).any(-1)
    background = backgrounds(truth[:, :2], truth)
    whole = _scores(frames, truth, moving, last, background)
    pieces = _scores_in_pieces(frames, truth, moving, last, background, batch=2)
    assert set(pieces) == set(whole) and {"ssim_moving", "foreground_hit"} <= set(whole)
    assert np.isnan(whole["foreground_hit"]).mean() < 0.2  # scored at most steps
    for k in whole:
        assert pieces[k].shape == (n, s)
        np.testing.assert_allclose(pieces[k], whole[k], rtol=1e-6, atol=1e-6)


def test_foreground_scores_tell_a_faded_sprite_from_a_misplaced_one():
    """A 4x4 sprite moving over a still background with a blinking pixel: copying keeps all of
    the sprite's pixels and hits the part still under it; a prediction that fades it to
    FOREGROUND_LEVELS draws none, as does the background alone (the blinking pixel, which has
    no background, is left out); a 4-frame smear is no sprite; no truth sprite: NaN."""
    from avg_rt.benchmark.quality import FOREGROUND_LEVELS, backgrounds, foreground_scores

    back = np.full((16, 24, 3), 40, np.uint8)
    seq = np.repeat(back[None], 20, axis=0)
    for t in range(20):
        seq[t, 6:10, t : t + 4] = 200  # moves one pixel per frame
        seq[t, 0, 0] = 250 if t % 2 else 0  # blinks, like a power pill
    history, truth = seq[None, :4], seq[None, 4:]
    bg, stable = backgrounds(history, truth)
    np.testing.assert_array_equal(bg[0, 1:], back[1:])  # the sprite covers no pixel for long
    assert not stable[0, 0, 0] and stable[0].sum() == 16 * 24 - 1  # 4 of 20 frames: stable
    copy = np.repeat(history[:, -1:], 16, axis=1)  # the sprite at x 3..6 at every step
    copied = foreground_scores(copy, truth, bg, stable)
    assert copied["foreground_kept"].tolist() == [[100.0] * 16]
    assert copied["foreground_hit"].tolist() == [[75.0, 50.0, 25.0] + [0.0] * 13]
    faded = truth.copy()
    faded[0, :, 6:10] = np.minimum(faded[0, :, 6:10], 40 + FOREGROUND_LEVELS)
    assert foreground_scores(faded, truth, bg, stable)["foreground_kept"].tolist() == [[0.0] * 16]
    empty = np.repeat(bg[:, None], 16, axis=1)
    assert foreground_scores(empty, truth, bg, stable)["foreground_kept"].tolist() == [[0.0] * 16]
    smear = empty.copy()  # 4 places at a quarter of the sprite's contrast (the mean of 4)
    smear[0, :, 6:10, 0:16] = 40 + (200 - 40) // 4
    assert foreground_scores(smear, truth, bg, stable)["foreground_kept"].tolist() == [[0.0] * 16]
    assert np.isnan(foreground_scores(copy, empty, bg, stable)["foreground_kept"]).all()


def test_hard_select_script_picks_one_history_frame_and_restores_the_blend(
    tmp_path, tiny_dataset, capsys
):
    import runpy

    import torch

    import avg_rt.model
    from avg_rt import checkpoint
    from avg_rt.config import PRESETS, with_form
    from avg_rt.model import Generator

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "hard_select.py"
    ns = runpy.run_path(str(script))
    # 3 history frames of 2 channels; pixel (0, 0) picks frame 1, pixel (0, 1) frame 2.
    history = torch.arange(12.0).reshape(1, 6, 1, 2).expand(1, 6, 2, 2).clone()
    logits = torch.zeros(1, 3, 2, 2)
    logits[0, 1, 0, 0] = logits[0, 2, 0, 1] = 1.0
    hard = ns["hard_blend"](history, logits)
    frames = history.unflatten(1, (3, 2))[0]  # (L, C, h, w)
    assert torch.equal(hard[0, :, 0, 0], frames[1, :, 0, 0])
    assert torch.equal(hard[0, :, 0, 1], frames[2, :, 0, 1])
    soft = avg_rt.model.blend_history(history, logits)
    assert not torch.equal(soft, hard)  # the softmax blends, the hard pick does not

    # A generator that only blends (no change) with the oldest history frame's logit highest:
    # the hard pick replays the 4 history frames, so its 4th prediction is the last input
    # exactly and scores as copying does; the soft blend (71% oldest) does not.
    cfg = dataclasses.replace(PRESETS["small"], model=with_form(PRESETS["small"].model, "select"))
    gen = Generator(cfg.model)
    for scale in gen.scales:
        last = scale.convs[-1]
        torch.nn.init.zeros_(last.weight)
        torch.nn.init.zeros_(last.bias)
        with torch.no_grad():
            last.bias[3] = 2.0  # channels: 3 of change, then one logit per frame, oldest first
    path = tmp_path / "select.pt"
    checkpoint.save(path, cfg, 0, {"generator": gen.state_dict()})
    # A select-hard model picks already: its "soft" report would be a second hard one.
    hard_cfg = dataclasses.replace(cfg, model=with_form(cfg.model, "select-hard"))
    checkpoint.save(tmp_path / "hard.pt", hard_cfg, 0, {"generator": gen.state_dict()})
    assert "picks already" in ns["not_select_checkpoint"](tmp_path / "hard.pt")
    assert ns["not_select_checkpoint"](path) is None
    before = avg_rt.model.blend_history
    args = ["--data", str(tiny_dataset / "Test"), "--model", f"m={path}", "--clips", "2"]
    ns["main"]([*args, "--steps", "4", "--name", "h", "--out", str(tmp_path)])
    assert avg_rt.model.blend_history is before
    step4 = {}
    for v in ("soft", "hard"):
        results = json.loads((tmp_path / f"h-{v}.json").read_text())["results"]
        step4[v] = [results[k]["psnr"]["mean"][3] for k in ("m", "copy last frame")]
    assert step4["hard"][0] == step4["hard"][1]
    assert step4["soft"][0] != step4["soft"][1]
    # An exported model or another form would be scored twice unchanged: refused, by name.
    delta = tmp_path / "delta.pt"
    checkpoint.save(
        delta, PRESETS["small"], 0, {"generator": Generator(PRESETS["small"].model).state_dict()}
    )
    for model, message in ((tmp_path / "g.onnx", "not a checkpoint"), (delta, "not a select")):
        with pytest.raises(SystemExit):
            ns["main"](["--data", str(tiny_dataset / "Test"), "--model", f"m={model}"])
        assert f"{model}: {message}" in capsys.readouterr().err


def test_filter_bias_script_on_a_wait_then_go_video(tmp_path):
    """`benchmarks/filter_bias.py`: of the clips with still inputs, the share whose target
    moved, per sampler, on a video whose one such window in 27 is followed by movement."""
    import runpy

    from conftest import moving_frames, write_frames

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "filter_bias.py"
    module = runpy.run_path(str(script))
    go = moving_frames(t=10, h=32, w=32)
    write_frames(tmp_path / "data" / "ep", np.concatenate([np.repeat(go[:1], 30, axis=0), go[1:]]))
    module["main"](["--data", str(tmp_path / "data"), "--out", str(tmp_path), "--clips", "2000"])
    results = json.loads((tmp_path / "filter-bias.json").read_text())["results"]
    moved = {way: r["moved_after_still"] for way, r in results.items()}
    clip, history, data = (moved[w] for w in module["WAYS"])
    assert clip["share"] > 0.5 and history["share"] < 0.15  # 0.74 and 1/27 expected
    assert data["lo"] < 1 / 27 < data["hi"] and data["n"] > 1000
    assert "filter on the 4 inputs (history)" in (tmp_path / "filter-bias.md").read_text()


def test_versus_copy_margins_without_exact_frames():
    """An exact frame scores the 100 dB cap and lifts a mean margin far above what the model
    does elsewhere; the median and the mean over clips neither predicts exactly do not."""
    from avg_rt.benchmark.quality import BASELINE, versus_copy

    model = np.array([[np.inf], [21.0], [31.0], [41.0]])  # clip 0 exact
    copy = np.array([[20.0], [20.0], [30.0], [40.0]])
    scores = {
        "m": {"psnr_moving": model, "exact_frames": np.array([[100.0], [0], [0], [0]])},
        BASELINE: {"psnr_moving": copy, "exact_frames": np.zeros((4, 1))},
    }
    mean = {k: {"mean": [1.0], "ci95": [0.0]} for k in ("psnr", "ssim")}
    results = {
        "m": mean | {"psnr_moving": {"mean": [np.minimum(model, 100).mean()]}},
        BASELINE: mean | {"psnr_moving": {"mean": [copy.mean()]}},
    }
    v = versus_copy(results, scores)["m"]
    assert v["psnr_moving_margin"][0] == pytest.approx(20.75)  # (80 + 1 + 1 + 1) / 4
    assert v["psnr_moving_margin_median"] == [1.0]
    assert v["psnr_moving_margin_inexact"] == [1.0] and v["inexact_clips"] == [3]
    # Paired differences leave out the clips with no score (nothing moved): NaN in JSON.
    report = {
        "options": {"steps": 1},
        "results": {
            k: {"per_clip": {"psnr_moving": [np.minimum(v[:, 0], 100).tolist()]}}
            for k, v in (("m", model), (BASELINE, copy))
        },
    }
    report["results"][BASELINE]["per_clip"]["psnr_moving"][0][1] = float("nan")
    assert paired(report, "m", BASELINE, "psnr_moving")[1] == pytest.approx(
        {"mean": 82 / 3, "ci95": 1.96 * 45.6107 / 3**0.5, "n": 3}, rel=1e-4
    )


def test_train_log_summary(tmp_path, capsys):
    """D's held-out accuracy over the last tenth (tests after 900 of 1000), the adversarial
    share's median per labelled segment (one without values left out), the later record of an
    iteration a resumed run logged twice, non-finite values left out, the run's own clip from
    config.json, the last test; a cut-off last line (a run still writing) is skipped and a
    broken line before it names the file and line."""
    import runpy

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "train_log.py"
    main = runpy.run_path(str(script))["main"]

    def test(step, acc, psnr):
        keys = ("psnr_step1", "psnr_last")
        return {
            "step": step,
            "test/d_accuracy": acc,
            **{f"test/{k}": psnr + i for i, k in enumerate(keys)},
            **{f"test/baseline_{k}": 20.0 + i for i, k in enumerate(keys)},
        }

    records = [test(800, 0.5, 30.0), test(900, 0.1, 31.0), test(950, 0.7, 32.0)]
    shares = {100: 0.01, 200: 0.02, 300: 0.09, 820: 0.5, 830: 0.3, 960: 0.1}
    records += [{"step": s, "grad/adv_share": v, "grad/g_norm": s / 4} for s, v in shares.items()]
    # Resumed at 900: iterations 950 and 1000 logged again; the first 1000 had diverged.
    records += [{"step": 1000, "grad/adv_share": 0.9, "grad/g_norm": float("inf")}]
    records += [test(950, 0.8, 33.0), test(1000, 0.6, 34.0)]
    records += [{"step": 1000, "grad/adv_share": 0.2, "grad/g_norm": float("nan")}]
    log = tmp_path / "run" / "log.jsonl"
    log.parent.mkdir()
    log.write_text("\n".join(json.dumps(r) for r in records) + '\n{"step": 10')
    (log.parent / "config.json").write_text(json.dumps({"clip_grad": 150.0}))
    main([str(log), "--every", "400"])
    row = capsys.readouterr().out.strip().splitlines()[-1]
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert cells[1:3] == ["1000", "0.600 / 0.700 / 0.800"]
    assert cells[3] == "0-400: 2.0%, 800-1200: 25.0%"  # medians, not means
    assert cells[4:6] == ["15.0%", "50%"]  # g_norm 205, 207.5, 240 of 6 above 150
    assert cells[6:] == ["34.00 (20.00) at 1000", "35.00 (21.00) at 1000"]
    log.write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(SystemExit, match=r"log.jsonl:2: not a JSON log line"):
        main([str(log)])


def test_judge_tells_faded_sprites_from_real_ones_but_not_a_moved_sprite():
    """The judge's accuracy: near 1 where the prediction fades its sprite into the background,
    near 0.5 where it draws the sprite sharp somewhere else (placement is not what it
    judges)."""
    from avg_rt.benchmark.quality import judge

    rng = np.random.default_rng(0)
    n, size = 24, 48
    background = rng.integers(0, 80, (n, size, size, 3), dtype=np.uint8)
    sprite = np.zeros((6, 6, 3), np.uint8)
    sprite[::2, ::2, 0] = sprite[1::2, 1::2, 0] = 255  # a sharp red checkerboard

    def frames_with_sprites_at(places):
        out = background.copy()
        for f, (y, x) in zip(out, places):
            f[y : y + 6, x : x + 6] = sprite
        return out

    truth = frames_with_sprites_at(rng.integers(0, size - 6, (n, 2)))
    moved = frames_with_sprites_at(rng.integers(0, size - 6, (n, 2)))
    faded = ((background.astype(np.uint16) * 3 + truth) // 4).astype(np.uint8)
    moving = (truth != background).any(-1) | (moved != background).any(-1)
    told = judge(faded, truth, moving)
    assert told["accuracy"] > 0.8 and told["n"] == 12  # the odd clips
    assert judge(moved, truth, moving)["accuracy"] < 0.65
