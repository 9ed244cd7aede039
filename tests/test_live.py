"""Live streams (issue 14): frames from a running program, any channel count, float frames,
bounded memory, and failures that stop training with one line and a checkpoint."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from avg_rt.train.loop import train

import avg_rt
from avg_rt.checkpoint import load_generator
from avg_rt.config import PRESETS
from avg_rt.data.frames import FrameFormat
from avg_rt.data.live import (
    END,
    AtariStream,
    IterableStream,
    LiveFeed,
    LiveOptions,
    RawStream,
    SegmentStore,
    parse_stream,
)
from avg_rt.errors import DataError
from avg_rt.training import open_training_data, resume_episode

# A short run: every interval small, so that logs, tests and checkpoints all happen.
QUICK = dict(
    steps=4,
    unroll=2,
    unroll_ramp=0,
    adv_start=0,
    batch=4,
    summary_interval=1,
    image_interval=2,
    test_interval=2,
    save_interval=2,
    test_clips=1,
    test_recursions=3,
    device="cpu",
)
SIM = FrameFormat(3, (-1.0, 2.0))


def smoke(episodes: int = 4, frames: int = 30, size: int = 64, seed: int = 0):
    """A simulator-like stream: episodes of (size, size, 3) float32 fields in [-1, 2], a
    density blob drifting with its velocity (channels: density, and velocity y, x scaled to
    [-1, 1] where the blob is)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    for _ in range(episodes):
        cy, cx = rng.uniform(16, size - 16, 2)
        vy, vx = rng.uniform(-1.5, 1.5, 2)
        episode = []
        for _ in range(frames):
            d = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 60.0)
            field = [3 * d - 1, vy / 1.5 * d, vx / 1.5 * d]
            episode.append(np.stack(field, -1).astype(np.float32))
            cy, cx = (cy + vy) % size, (cx + vx) % size
        yield episode


def test_simulator_stream_trains_exports_and_rolls_out(tmp_path):
    ckpt = avg_rt.fit(
        smoke(), tmp_path / "run", channels=3, value_range=(-1, 2), progress=False, **QUICK
    )
    G, cfg = load_generator(ckpt)
    assert (cfg.model.channels, cfg.model.value_range) == (3, (-1.0, 2.0))
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").open()]
    assert log[-1]["live/frames_received"] == 4 * 30
    assert log[-1]["data/sampler_clips_per_s"] > 0
    # The checkpoint says how many episodes the stream had begun, where a resume goes on.
    from avg_rt import checkpoint
    from avg_rt.training import resume_episode

    assert resume_episode(checkpoint.load(ckpt)) == 4

    from avg_rt.export.pipeline import ExportOptions, export
    from avg_rt.export.shapes import Range, ShapeRanges

    ranges = ShapeRanges(Range(1, 1, 2), Range(32, 64, 64), Range(32, 64, 64))
    result = export(ExportOptions(ckpt, tmp_path / "export", ranges=ranges, verify_steps=4))
    onnx_path = tmp_path / "export" / "generator.onnx"
    assert onnx_path in result.artefacts
    import onnx

    graph = onnx.load(onnx_path).graph
    dims = [
        [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim]
        for v in (graph.input[0], graph.output[0])
    ]
    assert dims[0][1] == 12 and dims[1][1] == 3  # 4 frames of 3 float channels in, 1 out
    meta = {p.key: p.value for p in onnx.load(onnx_path).metadata_props}
    assert "x in [-1, 2] maps to 2 (x - -1) / 3 - 1" in meta["value_range"]

    episode = np.stack(next(smoke(1, 12, seed=7)))
    for model in (ckpt, onnx_path):
        out = avg_rt.rollout(model, episode[:4], steps=8, truth=episode[4:12])
        assert out.predictions.shape == (8, 64, 64, 3) and out.predictions.dtype == np.float32
        assert np.isfinite(out.metrics["psnr"]).all() and out.metrics["psnr"].shape == (8,)

    # `avg-rt rollout` on float arrays: pictures for people, the values in predictions.npy.
    from avg_rt.rollout_videos import RolloutOptions, rollout_videos

    (tmp_path / "videos").mkdir()
    np.save(tmp_path / "videos" / "sim.npy", episode)
    summary = rollout_videos(
        RolloutOptions(tmp_path / "videos", onnx_path, tmp_path / "out", steps=6), progress=False
    )
    assert summary["mean_per_step"]["psnr"][0] is not None
    saved = np.load(tmp_path / "out" / "sim" / "predictions.npy")
    assert saved.shape == (6, 64, 64, 3) and saved.dtype == np.float32


def test_float_frames_outside_their_declared_range_are_refused():
    frames = np.stack(next(smoke(1, 6)))
    with pytest.raises(DataError, match=r"outside the declared range \[-1, 1\]"):
        FrameFormat(3, (-1.0, 1.0)).conform(frames, "sim")
    with pytest.raises(DataError, match="frames have 3 channels, the model reads 1-channel"):
        FrameFormat(1, (-1.0, 2.0)).conform(frames, "sim")
    with pytest.raises(DataError, match="declare a value range"):
        FrameFormat().conform(frames, "sim")  # floats outside [0, 1] as 8-bit frames


def test_grayscale_model_reads_one_channel_end_to_end(tmp_path):
    from avg_rt.export.pipeline import ExportOptions, export
    from avg_rt.export.shapes import Range, ShapeRanges

    from avg_rt.data.atari import AtariConfig, play

    rgb = np.stack(list(play(AtariConfig(max_frames=40, seed=3), 0)))[:, :64, :64]
    gray = FrameFormat(1).conform(rgb, "video")  # ITU-R 601 luminance
    assert gray.shape == (40, 64, 64, 1)
    r, g, b = rgb[5, 10, 10].astype(float)
    assert gray[5, 10, 10, 0] == round(0.299 * r + 0.587 * g + 0.114 * b)
    ckpt = avg_rt.fit([gray], tmp_path / "run", channels=1, progress=False, **QUICK)
    ranges = ShapeRanges(Range(1, 1, 2), Range(32, 64, 64), Range(32, 64, 64))
    opts = ExportOptions(ckpt, tmp_path / "export", ranges=ranges, verify_steps=4, triton=True)
    export(opts)
    import onnx

    graph = onnx.load(tmp_path / "export" / "generator.onnx").graph
    assert [v.type.tensor_type.shape.dim[1].dim_value for v in (*graph.input, *graph.output)] == [
        4,
        1,
    ]
    pbtxt = tmp_path / "export" / "model_repository" / "avg_rt_fp32_onnx" / "config.pbtxt"
    text = pbtxt.read_text()
    assert "dims: [ 4, -1, -1 ]" in text and "dims: [ 1, -1, -1 ]" in text
    out = avg_rt.rollout(tmp_path / "export" / "generator.onnx", gray[:4], 6, truth=gray[4:10])
    assert out.predictions.shape == (6, 64, 64, 1) and out.predictions.dtype == np.uint8
    assert out.metrics["psnr"].shape == (6,) and not np.isnan(out.metrics["psnr"]).any()


def test_store_keeps_recent_segments_within_its_limit_and_holds_out_a_fraction():
    frame_mib = 32 * 32 * 3 / 2**20
    opts = LiveOptions(
        max_mib=10 * 20 * frame_mib, holdout=0.25, test_segments=1, segment_frames=20
    )
    store = SegmentStore(opts, clip_len=5, crop=32, name="s")
    for _ in range(40):  # 40 episodes of 25 frames: a full segment of 20 and one of 5
        store.add(np.zeros((25, 32, 32, 3), np.uint8))
        store.end()
    store.add(np.zeros((4, 32, 32, 3), np.uint8))
    store.end()  # shorter than a clip: dropped
    assert store.stats.frames_received == 1004 and store.stats.segments_received == 80
    assert store.stats.segments_dropped == 1
    assert len(store.test) == 1 and store.test[0].name == "s segment 0"
    assert store.mib <= opts.max_mib and 175 < store.frames <= 200  # the newest that fit
    names = [v.name for v in store.segments]
    assert names[-1] == "s segment 79" and all(int(n.split()[-1]) % 4 for n in names)
    with pytest.raises(
        DataError, match="frame 1004 is 16x32x3 but the stream's frames are 32x32x3"
    ):
        store.add(np.zeros((1, 16, 32, 3), np.uint8))
    # Any fraction below 1 leaves segments to train on: the test set first, then the rest.
    most = SegmentStore(dataclasses.replace(opts, holdout=0.8, test_segments=2), 5, 32, "m")
    for _ in range(10):
        most.add(np.zeros((20, 32, 32, 3), np.uint8))
    assert most.ready() and len(most.test) == 2 and len(most.segments) == 2  # 8 of 10 held


def test_training_waits_for_start_frames_unless_the_store_is_full_or_the_stream_ended():
    frame_mib = 32 * 32 * 3 / 2**20
    opts = LiveOptions(start_frames=50, segment_frames=20, max_mib=1000 * frame_mib)
    store = SegmentStore(opts, clip_len=5, crop=32, name="s")
    for _ in range(2):
        store.add(np.zeros((20, 32, 32, 3), np.uint8))
    assert not store.ready() and store.ready(ended=True)  # 40 of 50: only a stream at its end
    store.add(np.zeros((10, 32, 32, 3), np.uint8))
    store.end()
    assert store.ready()
    # A store that evicts before it holds start_frames is as full as it gets: start.
    small = SegmentStore(dataclasses.replace(opts, max_mib=30 * frame_mib), 5, 32, "t")
    for _ in range(3):
        small.add(np.zeros((20, 32, 32, 3), np.uint8))
    assert small.frames == 20 and small.stats.segments_evicted == 2 and small.ready()
    from avg_rt.config import ConfigError

    with pytest.raises(ConfigError, match="--start-frames 50 is more than the store holds"):
        LiveOptions(start_frames=50, max_frames=40).validate()


def test_episodes_are_counted_as_begun_and_a_resumed_emulator_goes_on_from_there(
    monkeypatch,
):
    store = SegmentStore(LiveOptions(segment_frames=20), clip_len=5, crop=32, name="s")
    for frames in (25, 30):  # two episodes, each cut into segments
        store.add(np.zeros((frames, 32, 32, 3), np.uint8))
        store.episode_end()
    store.add(np.zeros((3, 32, 32, 3), np.uint8))  # the third has begun, not ended
    assert store.stats.episodes_begun == 3 and store.stats.segments_received == 4
    assert resume_episode({}) == 0  # recorded data, or a checkpoint from before
    assert resume_episode({"live": json.dumps({"episodes_begun": 3})}) == 3

    with open_training_data("atari:ms_pacman:max-frames=6", PRESETS["small"], None, False,
                            LiveOptions(), 2) as data:  # fmt: skip
        stream = data.train.stream
    assert isinstance(stream, AtariStream) and stream.first_episode == 2
    # (Every Ms. Pac-Man episode opens with the same frames: ask which episodes it plays.)
    played = []
    monkeypatch.setattr(
        "avg_rt.data.atari.play", lambda cfg, episode: played.append(episode) or iter([])
    )
    items = stream.items()
    assert [next(items), next(items)] == [END, END] and played == [2, 3]
    # episodes=N replays the N episodes a recording of N training episodes holds, in a cycle,
    # and a resumed run goes on in the cycle.
    cycled = parse_stream("atari:ms_pacman:max-frames=6:episodes=3")
    assert isinstance(cycled, AtariStream) and cycled.episodes == 3
    played.clear()
    items = dataclasses.replace(cycled, first_episode=2).items()
    assert [next(items) for _ in range(5)] == [END] * 5 and played == [2, 0, 1, 2, 0]
    # A run resumed at episode 2 that begins 3 more saves 5 (not 3): a second resume goes on.
    feed = LiveFeed(stream, LiveOptions(), clip_len=5, crop=32)
    for _ in range(3):
        feed.store.add(np.zeros((6, 32, 32, 3), np.uint8))
        feed.store.episode_end()
    assert feed.episodes_begun == 5


def test_stream_specs_parse_and_bad_ones_say_what_is_wrong():
    raw = parse_stream("raw:-:64x64x3:dtype=float32:range=-1,2:episode=50")
    assert isinstance(raw, RawStream) and raw.fmt == SIM and raw.episode_frames == 50
    assert parse_stream("raw:/tmp/a:b/pipe:210x160x3").path == "/tmp/a:b/pipe"
    assert parse_stream("data/mspacman") is None
    from avg_rt.config import ConfigError

    for spec, problem in (
        ("raw:-:64x64x3:dtype=float32", "need their range"),
        ("raw:-:64x64", "expected raw:PATH:HxWxC"),
        ("raw:-:64x64x3:fps=3", "'fps=3' is not one of"),
        ("atari:ms_pacman:policy=smart", "policy must be random or sticky"),
        ("atari:ms_pacman:episodes=0", "episodes must be >= 1"),
    ):
        with pytest.raises(ConfigError, match=problem):
            parse_stream(spec)
    with pytest.raises(DataError, match="no such game"):
        parse_stream("atari:no_such_game")


def _raw_writer(
    frames: int, shape: tuple[int, int, int], wait_for: Path | None = None, tail: int = 0
):
    """Python code that writes `frames` moving uint8 frames of `shape` to stdout, then, once
    `wait_for` exists, `tail` more bytes (a partial frame), then exits."""
    return (
        "import sys, time, numpy as np, pathlib\n"
        f"h, w, c = {shape}\n"
        "out = sys.stdout.buffer\n"
        f"for i in range({frames}):\n"
        "    f = np.zeros((h, w, c), np.uint8); f[8:16, (2 * i) % (w - 8):][:, :8] = 250\n"
        "    out.write(f.tobytes())\n"
        "out.flush()\n"
        f"wait = {str(wait_for)!r} if {wait_for is not None} else None\n"
        "t = time.time()\n"
        "while wait and not pathlib.Path(wait).exists() and time.time() - t < 120:\n"
        "    time.sleep(0.1)\n"
        f"out.write(bytes({tail})); out.flush()\n"
    )


def _train_command(data: str, run: Path, *extra: str) -> list[str]:
    """`avg-rt train` for a few quick steps: small batches, tests every 2 steps."""
    quick = "--batch 4 --unroll 2 --unroll-ramp 0 --adv-start 0 --test-interval 2".split()
    return [sys.executable, "-m", "avg_rt", "train", "--data", data, "--out", str(run),
            "--no-progress", *quick, *extra]  # fmt: skip


def _train_cli(data: str, run: Path, stdin_code: str | None, extra: tuple[str, ...] = ()):
    cmd = _train_command(data, run, "--save-interval", "2", *extra)
    writer = None
    if stdin_code is not None:
        writer = subprocess.Popen([sys.executable, "-c", stdin_code], stdout=subprocess.PIPE)
    proc = subprocess.run(
        cmd,
        stdin=writer.stdout if writer else None,
        capture_output=True,
        text=True,
        timeout=240,
    )
    if writer is not None:
        writer.kill()  # (one may still be writing: training need not read a stream to its end)
        writer.wait(timeout=30)
        writer.stdout.close()
    return proc


def test_raw_frames_on_stdin_train(tmp_path):
    # The writer keeps its end open after 100 frames: training ends at --steps while its
    # reader waits for more, and exits cleanly (a blocked buffered read of sys.stdin would
    # abort the interpreter at exit).
    writer = _raw_writer(100, (32, 48, 3), wait_for=tmp_path / "never")
    proc = _train_cli("raw:-:32x48x3:episode=20", tmp_path / "run", writer, ("--steps", "3"))
    assert proc.returncode == 0, proc.stderr
    assert "Fatal Python error" not in proc.stderr
    assert "live stream raw:stdin (RGB 8-bit" in proc.stdout
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").open()]
    assert log[-1]["step"] == 3 and log[-1]["live/frames_received"] == 100


def test_a_wrongly_sized_stream_stops_with_one_line_and_a_checkpoint(tmp_path):
    # 30 good frames, then (training under way, a checkpoint written) a stream that ends
    # inside a frame.
    code = _raw_writer(30, (32, 48, 3), wait_for=tmp_path / "run" / "checkpoint.pt", tail=100)
    proc = _train_cli("raw:-:32x48x3:episode=10", tmp_path / "run", code, ("--steps", "100000"))
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert errors[0].startswith(
        "error: raw:stdin: the stream ended inside frame 30: 100 of its "
        "4608 bytes (32x48x3 uint8); is the frame size right?"
    )
    assert "at step" in errors[0] and "--resume" in errors[0]
    G, _ = load_generator(tmp_path / "run" / "checkpoint.pt")  # usable
    assert G(torch.zeros(1, 12, 32, 48)).shape == (1, 3, 32, 48)


def test_marked_raw_streams_split_episodes_and_a_bad_mark_stops_them():
    import io

    frame = bytes(2 * 2 * 1)
    good = io.BytesIO(b"\1" + frame + b"\0" + frame + b"\1" + frame)
    stream = RawStream("-", (2, 2, 1), marked=True)
    items = list(stream._read(good.read))
    assert [i if isinstance(i, str) else i.shape for i in items] == [
        (2, 2, 1),
        (2, 2, 1),
        END,
        (2, 2, 1),
    ]
    bad = io.BytesIO(b"\1" + frame + b"\7" + frame)  # e.g. frames longer than declared
    with pytest.raises(DataError, match="byte 5: episode mark 7 is neither 0 nor 1"):
        list(stream._read(bad.read))


def test_a_stall_stops_training_but_a_slow_stream_does_not(tmp_path):
    frames = np.stack(next(smoke(1, 60)))

    def slow_then_silent():
        yield from frames[:30]  # at once
        for f in frames[30:45]:  # 5 frames/s: slower than a chunk, faster than the timeout
            time.sleep(0.2)
            yield f
        time.sleep(30)  # silent

    cfg = _sim_config(steps=100_000)
    opts = LiveOptions(segment_frames=20, stall_seconds=1.5)
    with LiveFeed(IterableStream(slow_then_silent(), SIM, "sim"), opts, 6, 32) as feed:
        with pytest.raises(DataError, match=r"^sim: no frame for \d+ s \(stalled; --stall-timeout"):
            train(cfg, feed, tmp_path / "run", progress=False)
        assert feed.store.stats.frames_received == 45  # the slow frames arrived as they came


def _sim_config(**changes):
    cfg = dataclasses.replace(PRESETS["small"], **(QUICK | changes))
    return dataclasses.replace(
        cfg, model=dataclasses.replace(cfg.model, channels=3, value_range=(-1.0, 2.0))
    )


def test_a_dying_producer_stops_training_with_one_line_and_a_checkpoint(tmp_path):
    def frames():
        yield from np.stack(next(smoke(1, 40)))
        raise RuntimeError("simulator diverged")

    cfg = _sim_config(steps=100_000)
    opts = LiveOptions(segment_frames=20, stall_seconds=30)

    def slow(n):  # the first steps run before the failure arrives
        time.sleep(0.0 if n > 3 else 0.5)

    stream = IterableStream(_delayed(frames(), after=30, seconds=4.0), SIM, "sim")
    with LiveFeed(stream, opts, 6, 32) as feed, pytest.raises(DataError) as e:
        train(cfg, feed, tmp_path / "run", progress=False, after_step=lambda s, G, D: slow(s))
    assert str(e.value).startswith(
        "sim: the producer failed: RuntimeError: simulator diverged; "
        f"saved {tmp_path / 'run' / 'checkpoint.pt'} at step"
    )
    assert load_generator(tmp_path / "run" / "checkpoint.pt")[1].model.channels == 3


def _delayed(frames, after: int, seconds: float):
    for i, f in enumerate(frames):
        if i == after:
            time.sleep(seconds)
        yield f


def test_a_killed_emulator_process_is_reported(tmp_path):
    pytest.importorskip("ale_py")
    cfg = dataclasses.replace(PRESETS["small"], **(QUICK | {"steps": 100_000}))
    stream = parse_stream("atari:ms_pacman:max-frames=60")

    def kill_at_step_2(step, G, D):
        if step == 2:
            os.kill(feed.producer_pid, signal.SIGKILL)

    with LiveFeed(stream, LiveOptions(holdout=0.1, test_segments=1), 6, 32) as feed:
        with pytest.raises(
            DataError,
            match=r"atari:ms_pacman: the producer process exited "
            r"\(code -9\) before the end of its stream; saved",
        ):
            train(cfg, feed, tmp_path / "run", progress=False, after_step=kill_at_step_2)
    load_generator(tmp_path / "run" / "checkpoint.pt")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in state  # a zombie has exited


def test_live_emulator_writes_only_its_run_folder_and_ctrl_c_leaves_no_process(tmp_path):
    pytest.importorskip("ale_py")
    sandbox = tmp_path / "sandbox"
    (sandbox / "home").mkdir(parents=True)
    (sandbox / "tmp").mkdir()
    env = {
        **os.environ,
        "HOME": str(sandbox / "home"),
        "TMPDIR": str(sandbox / "tmp"),
        "XDG_CACHE_HOME": str(sandbox / "home" / ".cache"),
        "MPLCONFIGDIR": str(sandbox / "mpl"),
    }
    before = {p for p in sandbox.rglob("*")}
    run = sandbox / "run"
    cmd = _train_command(
        "atari:ms_pacman:max-frames=60", run, "--steps", "100000", "--test-recursions", "2"
    )
    proc = subprocess.Popen(
        cmd,
        env=env,
        cwd=sandbox,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        children: set[int] = set()
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            kids = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
            if kids.exists():
                children |= {int(p) for p in kids.read_text().split()}
            log = run / "log.jsonl"
            if log.exists() and sum(1 for _ in log.open()) >= 2:
                break
            time.sleep(0.2)
        assert children, "the emulator should run in a child process"
        os.killpg(proc.pid, signal.SIGINT)  # as Ctrl-C in a terminal: the whole group
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGINT, err
    assert "stopped by SIGINT" in err
    time.sleep(0.5)
    assert not [pid for pid in children if _alive(pid)]
    created = {p for p in sandbox.rglob("*") if p.is_file()} - before
    assert created and all(run in p.parents for p in created), sorted(created)
