"""Training from Python and from the command line: where the frames come from, then the loop.

`open_training_data` is the one place that turns what a user points at into training data:
a folder (the TF layout's Train/ and Test/, or any folder of videos), a video or array file,
arrays in memory, a live stream (`atari:GAME`, `raw:PATH:HxWxC`, see `avg_rt.data.live`) or
any Python iterable of frames or of episodes (streamed too). `train` is `avg-rt train` for
notebooks and programs (`avg_rt.fit`; `avg_rt.train` is the package of the loop).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from avg_rt.config import ConfigError, TrainConfig
from avg_rt.data.frames import FrameFormat
from avg_rt.data.live import AtariStream, IterableStream, LiveFeed, LiveOptions, parse_stream
from avg_rt.data.sources import Video

Data = str | Path | np.ndarray | Iterable[Any]


@dataclass
class TrainingData:
    """Videos (or a started live feed) to train on, held-out videos, and a line saying what."""

    train: Sequence[Video] | LiveFeed
    test: list[Video]
    description: str


def stream_of(data: Data, fmt: FrameFormat, name: str = "stream") -> Any:
    """The live stream `data` names or is (None for files and in-memory arrays)."""
    if isinstance(data, str) and (stream := parse_stream(data)) is not None:
        return stream
    if isinstance(data, (str, Path, np.ndarray)):
        return None
    if isinstance(data, list) and data and all(isinstance(v, np.ndarray) for v in data):
        if all(v.ndim == 4 for v in data):
            return None  # in-memory videos
    return IterableStream(data, fmt, name)


def resume_episode(state: dict[str, Any]) -> int:
    """The emulator episode a resumed live run goes on from: the first it had not begun (0
    for a run of recorded data, or a checkpoint from before this was saved)."""
    return int(json.loads(state["live"])["episodes_begun"]) if "live" in state else 0


def data_format(data: Data) -> FrameFormat | None:
    """The frame format a stream declares (raw frames), else None."""
    stream = parse_stream(data) if isinstance(data, str) else None
    return None if stream is None or isinstance(stream, AtariStream) else stream.fmt


def frame_options(
    data: Data, channels: int | None, value_range: tuple[float, float] | None
) -> tuple[int | None, tuple[float, float] | None, FrameFormat | None]:
    """(channels, value_range) for the model: those given, else what `data` declares (raw
    frames), else None (the preset's); and the declared format, for `check_format`."""
    declared = data_format(data)
    if declared is not None:
        channels = channels if channels is not None else declared.channels
        value_range = value_range or declared.value_range
    return channels, value_range, declared


@contextlib.contextmanager
def open_training_data(
    data: Data,
    cfg: TrainConfig,
    test: str | Path | None = None,
    mmap_cache: bool = False,
    live: LiveOptions | None = None,
    first_episode: int = 0,
) -> Iterator[TrainingData]:
    """What `data` holds, read as `cfg`'s frame format; a live stream runs inside the block
    (its store bounded by `live`; default: 1 GiB; held out by default: a tenth of the
    emulator's segments unless `test` is given, none of other streams'). An emulator starts
    at episode `first_episode` (`resume_episode`: where a resumed run goes on)."""
    from avg_rt.data.sources import load_videos, open_source

    fmt = FrameFormat.of(cfg.model)
    min_frames = cfg.model.history_len + 1
    why = f"a {min_frames - 1}-frame history and a target"
    stream = stream_of(data, fmt)
    if isinstance(stream, AtariStream):
        stream = replace(stream, first_episode=first_episode)
    local = stream is None and isinstance(data, (str, Path))
    # DATA/.avg-rt-cache holds the test videos' cache too (a --test folder may be read-only).
    cache = Path(data) / ".avg-rt-cache" if mmap_cache and local else None  # type: ignore[arg-type]
    test_videos = load_videos(open_source(test), min_frames, cache, why, fmt) if test else []
    if stream is not None:
        live = live or LiveOptions()
        if live.holdout is None:
            emulator = isinstance(stream, AtariStream) and not test
            live = replace(live, holdout=0.1 if emulator else 0.0)
        clip_len = cfg.clip_frames
        with LiveFeed(stream, live, clip_len, cfg.crop, fmt) as feed:
            held = f", {live.holdout:g} of segments held out" if live.holdout else ""
            yield TrainingData(
                feed,
                test_videos,
                f"live stream {stream.name} ({fmt.describe()}; store up to "
                f"{live.max_mib:g} MiB{held})",
            )
        return
    if isinstance(data, (str, Path)):
        root = Path(data)
        train_dir = root / "Train" if (root / "Train").is_dir() else root
        if not test and (root / "Test").is_dir():
            test_videos = load_videos(open_source(root / "Test"), min_frames, cache, why, fmt)
        videos = load_videos(open_source(train_dir), min_frames, cache, why, fmt)
    else:
        videos = load_videos(open_source(data), min_frames, None, why, fmt)
    frames = sum(len(v.frames) for v in videos)
    yield TrainingData(
        videos,
        test_videos,
        f"{len(videos)} training videos ({frames} frames, {fmt.describe()}), "
        f"{len(test_videos)} test videos",
    )


def train(
    data: Data,
    out: str | Path,
    preset: str = "small",
    *,
    test: str | Path | None = None,
    channels: int | None = None,
    value_range: tuple[float, float] | None = None,
    live: LiveOptions | None = None,
    progress: bool = False,
    **overrides: Any,
) -> Path:
    """Train a new run in `out` on `data`; returns the checkpoint's path.

    `data`: a folder, file or spec as for `avg-rt train --data` (e.g. "atari:ms_pacman"), an
    array (T, H, W, C) or a list of them, or any iterable of frames or of episodes, streamed
    while training runs (a simulator). `channels` and `value_range` say what frames are
    (default RGB 8-bit; float frames need their range); `overrides` are TrainConfig fields.

    Example:
        avg_rt.fit(smoke_episodes(), "runs/smoke", channels=3, value_range=(-1, 2),
                     steps=2000)
    """
    from avg_rt.config import resolve_config
    from avg_rt.train.loop import train as run

    channels, value_range, declared = frame_options(data, channels, value_range)
    cfg = resolve_config(preset, None, channels, value_range, **overrides)
    check_format(cfg, declared, str(data))
    with open_training_data(data, cfg, test, live=live) as d:
        return run(cfg, d.train, out, d.test, progress=progress)


def check_format(cfg: TrainConfig, declared: FrameFormat | None, data: str) -> None:
    """Raise ConfigError if a stream declares frames other than the model reads."""
    fmt = FrameFormat.of(cfg.model)
    if declared is not None and declared != fmt:
        raise ConfigError(
            f"--data {data} declares {declared.describe()} frames, the model reads "
            f"{fmt.describe()} (--channels / --value-range)"
        )
