"""Live frame streams: train on frames as a program produces them, in bounded memory.

A *stream* yields frames and `END` (an episode boundary) for as long as its program runs:
the Atari emulator (`atari:GAME`), raw frames on standard input or a pipe (`raw:-:HxWxC`), or
any Python iterable of frames or of episodes. `LiveFeed` runs the stream beside training (in
its own process where the stream can be pickled and is CPU-bound, the emulator; in a thread
otherwise, which suits pipes and Python generators) and keeps what arrives in a
`SegmentStore`: episodes cut into segments of at most `segment_frames`, the most recent ones
up to a size limit (oldest out first), a fraction held out as the test set. The clip sampler
draws from the store's current segments; nothing is written to disk.

A stream that fails (raises, dies, sends a frame of another size or format, or stalls for
`stall_seconds`) is reported by `LiveFeed.problem()` as one line naming the stream; training
then stops after a final checkpoint. `close()` stops the producer, so no process outlives
training.

Importing this module loads numpy only (a spawned producer process never imports torch).
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing as mp
import os
import queue
import re
import select
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import count
from typing import Any

import numpy as np

from avg_rt.config import ConfigError
from avg_rt.data.frames import RGB8, FrameFormat
from avg_rt.data.sources import Video
from avg_rt.errors import DataError

END = "episode end"  # a stream item: the episode in progress is over
CHUNK = 32  # frames per message from the producer


# --- streams -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AtariStream:
    """Episodes of an ale-py game played live (`avg_rt.data.atari.play`), episode
    `first_episode`, the next, ... until stopped (a resumed run goes on from the episodes it
    had begun); with `episodes` N, episodes 0 to N-1 over and over (the N training episodes
    `avg-rt data atari --episodes N` records, for a like-for-like comparison with them).
    Runs in its own process: the emulator is CPU-bound."""

    cfg: Any  # avg_rt.data.atari.AtariConfig
    first_episode: int = 0
    episodes: int | None = None
    in_process = True

    @property
    def name(self) -> str:
        return f"atari:{self.cfg.game}"

    @property
    def fmt(self) -> FrameFormat:
        return RGB8

    def items(self, stop: threading.Event | None = None) -> Iterator[Any]:
        from avg_rt.data.atari import play

        for begun in count(self.first_episode):
            yield from play(self.cfg, begun % self.episodes if self.episodes else begun)
            yield END


@dataclass(frozen=True)
class RawStream:
    """Raw frames (H, W, C) of `dtype`, row-major, back to back, from a file, a named pipe or
    standard input (`path` "-"), e.g. `ffmpeg ... -f rawvideo -pix_fmt rgb24 -`. Episode
    boundaries: every `episode_frames` frames, or (`marked`) a byte before each frame, 1 where
    a new episode starts and 0 elsewhere."""

    path: str
    shape: tuple[int, int, int]
    dtype: str = "uint8"
    value_range: tuple[float, float] | None = None
    episode_frames: int | None = None
    marked: bool = False
    in_process = False  # reading a pipe waits on I/O, which releases the GIL

    @property
    def name(self) -> str:
        return "raw:" + ("stdin" if self.path == "-" else self.path)

    @property
    def fmt(self) -> FrameFormat:
        return FrameFormat(self.shape[2], self.value_range)

    @property
    def frame_bytes(self) -> int:
        return math.prod(self.shape) * np.dtype(self.dtype).itemsize

    def items(self, stop: threading.Event | None = None) -> Iterator[Any]:
        # The file descriptor, not sys.stdin.buffer: a thread blocked in a buffered read holds
        # its lock, and Python aborts at exit ("could not acquire lock for <stdin>").
        fd = 0 if self.path == "-" else os.open(self.path, os.O_RDONLY)
        try:
            yield from self._read(lambda n: _read_exactly(fd, n, stop))
        finally:
            if fd != 0:
                os.close(fd)

    def _read(self, read: Callable[[int], bytes]) -> Iterator[Any]:
        size = self.frame_bytes
        h, w, c = self.shape
        for i in count():
            if self.marked:
                mark = read(1)
                if not mark:
                    return
                if mark not in (b"\0", b"\1"):
                    raise DataError(
                        self.name,
                        f"byte {i * (size + 1)}: episode mark {mark[0]} is neither 0 nor 1 "
                        "(is the frame size right?)",
                    )
                if mark == b"\1" and i:
                    yield END
            elif self.episode_frames and i and i % self.episode_frames == 0:
                yield END
            data = read(size)
            if not data and not self.marked:
                return
            if len(data) < size:
                raise DataError(
                    self.name,
                    f"the stream ended inside frame {i}: {len(data)} of its {size} bytes "
                    f"({h}x{w}x{c} {self.dtype}); is the frame size right?",
                )
            yield np.frombuffer(data, self.dtype).reshape(h, w, c)


def _read_exactly(fd: int, n: int, stop: threading.Event | None = None) -> bytes:
    """Up to `n` bytes from `fd`, fewer only at the end of the stream (pipes return short
    reads); waits in slices of 0.25 s so that `stop` is seen (raises _Stopped)."""
    parts, got = [], 0
    while got < n:
        if stop is not None:
            while not select.select([fd], [], [], 0.25)[0]:
                if stop.is_set():
                    raise _Stopped
        part = os.read(fd, n - got)
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


@dataclass(frozen=True)
class IterableStream:
    """Frames from Python: an iterable of frames (one endless episode, cut into segments), or
    of episodes (each an iterable of frames, or an array (T, H, W[, C])). Runs in a thread of
    the training process."""

    source: Iterable[Any]
    fmt: FrameFormat = RGB8
    name: str = "stream"
    in_process = False

    def items(self, stop: threading.Event | None = None) -> Iterator[Any]:
        for item in self.source:
            if _is_frame(item):
                yield item
            else:  # an episode
                yield from item
                yield END


def _is_frame(item: Any) -> bool:
    a = item if isinstance(item, np.ndarray) else None
    if a is None and hasattr(item, "__array__"):
        a = np.asarray(item)
    return a is not None and a.ndim in (2, 3)


Stream = AtariStream | RawStream | IterableStream


def parse_stream(spec: str) -> Stream | None:
    """The stream a `--data` value names, or None where it names files.

    `atari:GAME[:key=value...]`, keys as for `avg-rt data atari`: frame-skip, policy,
    stickiness, max-frames, seed, and episodes (N: play episodes 0 to N-1 in a cycle; default:
    new episodes forever). `raw:PATH:HxWxC[:key=value...]` (PATH `-`: standard input),
    keys: dtype (uint8 or float32), range (lo,hi: the declared values, needed for float32),
    episode (frames per episode), marked (1: a 0/1 byte before each frame, 1 = new episode).
    """
    kind, _, rest = spec.partition(":")
    if kind == "atari" and rest:
        return _atari(rest)
    if kind == "raw" and rest:
        return _raw(spec, rest)
    return None


def _options(spec: str, parts: list[str], allowed: set[str]) -> dict[str, str]:
    out = {}
    for part in parts:
        key, eq, value = part.partition("=")
        if not eq or key not in allowed:
            raise ConfigError(f"--data {spec}: {part!r} is not one of {', '.join(sorted(allowed))}")
        out[key] = value
    return out


def _atari(rest: str) -> AtariStream:
    from avg_rt.data.atari import AtariConfig, check_game

    game, *parts = rest.split(":")
    keys = {"frame-skip", "policy", "stickiness", "max-frames", "seed", "episodes"}
    opts = _options(f"atari:{rest}", parts, keys)
    try:
        cfg = AtariConfig(
            game=game,
            frame_skip=int(opts.get("frame-skip", 4)),
            policy=opts.get("policy", "sticky"),  # type: ignore[arg-type]
            stickiness=float(opts.get("stickiness", 0.9)),
            max_frames=int(opts.get("max-frames", 500)),
            seed=int(opts.get("seed", 0)),
        )
        episodes = int(opts["episodes"]) if "episodes" in opts else None
    except ValueError as e:
        raise ConfigError(f"--data atari:{rest}: {e}") from None
    if cfg.policy not in ("random", "sticky"):
        raise ConfigError(f"--data atari:{rest}: policy must be random or sticky")
    if episodes is not None and episodes < 1:
        raise ConfigError(f"--data atari:{rest}: episodes must be >= 1, got {episodes}")
    cfg.validate()
    check_game(game)
    return AtariStream(cfg, episodes=episodes)


def _raw(spec: str, rest: str) -> RawStream:
    parts = rest.split(":")
    i = next((k for k, p in enumerate(parts) if re.fullmatch(r"\d+x\d+x\d+", p)), 0)
    if i == 0:
        raise ConfigError(f"--data {spec}: expected raw:PATH:HxWxC[:options], e.g. raw:-:210x160x3")
    path = ":".join(parts[:i])
    h, w, c = (int(v) for v in parts[i].split("x"))
    parts = parts[i + 1 :]
    if min(h, w, c) < 1:
        raise ConfigError(f"--data {spec}: frame sizes must be positive")
    opts = _options(spec, parts, {"dtype", "range", "episode", "marked"})
    dtype = opts.get("dtype", "uint8")
    if dtype not in ("uint8", "float32"):
        raise ConfigError(f"--data {spec}: dtype must be uint8 or float32, got {dtype!r}")
    value_range = None
    if "range" in opts:
        try:
            lo, hi = (float(v) for v in opts["range"].split(","))
        except ValueError:
            raise ConfigError(f"--data {spec}: range must be LO,HI, e.g. range=-1,2") from None
        value_range = (lo, hi)
    if dtype == "float32" and value_range is None:
        raise ConfigError(f"--data {spec}: float32 frames need their range, e.g. range=-1,2")
    if "episode" in opts and opts.get("marked") == "1":
        raise ConfigError(f"--data {spec}: episodes are marked or every N frames, not both")
    episode = int(opts["episode"]) if "episode" in opts else None
    if episode is not None and episode < 1:
        raise ConfigError(f"--data {spec}: episode must be >= 1")
    return RawStream(path, (h, w, c), dtype, value_range, episode, opts.get("marked", "0") == "1")


# --- the producer side -------------------------------------------------------------------------


def _produce(
    stream: Stream,
    put: Callable[[tuple[Any, ...]], None],
    fmt: FrameFormat,
    max_fps: float | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Run `stream`, sending ("frames", chunk), ("end",), then ("done",), or ("error", line).
    Chunks are frames as the model reads them (`fmt`: RGB becomes luminance for a 1-channel
    model), checked here (the producer pays for it), sent every CHUNK frames, or at once
    from a slow stream (a frame that took over 50 ms to come), so that no frame waits for the
    next. With `max_fps`, a faster stream (an emulator) is paced to it."""
    name = stream.name
    buf: list[Any] = []
    sent = 0
    t0, taken, last = time.monotonic(), 0, time.monotonic()

    def flush() -> None:
        nonlocal buf, sent
        if buf:
            label = f"frames {sent}-{sent + len(buf) - 1}"
            chunk = fmt.conform(_stack(buf, label), label)
            put(("frames", chunk))
            sent += len(buf)
            buf = []

    try:
        for item in stream.items(stop):
            if isinstance(item, str) and item == END:
                flush()
                put(("end",))
                continue
            buf.append(item)
            taken += 1
            now = time.monotonic()
            slow, last = now - last > 0.05, now
            if max_fps is not None and (ahead := taken / max_fps - (now - t0)) > 0:
                time.sleep(ahead)
            if len(buf) == CHUNK or slow:
                flush()
        flush()
        put(("end",))
        put(("done",))
    except DataError as e:
        put(("error", e.problem if e.what == name else str(e)))
    except _Stopped:
        pass
    except Exception as e:  # the user's program: any failure, as one line
        with contextlib.suppress(_Stopped):
            put(("error", f"the producer failed: {type(e).__name__}: {e}".splitlines()[0]))


def _stack(frames: list[Any], label: str) -> np.ndarray:
    arrays = [np.asarray(f) for f in frames]
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise DataError(label, f"frames of different shapes {sorted(shapes)}")
    return np.stack(arrays)


class _Stopped(Exception):
    """The consumer asked the producer to stop."""


def _blocking_put(q: Any, stop: Any, parent: int | None) -> Callable[[tuple[Any, ...]], None]:
    """A put that waits while the queue is full, and gives up when asked to stop or (in a
    child process) when the training process is gone."""

    def put(message: tuple[Any, ...]) -> None:
        while True:
            if stop.is_set() or (parent is not None and os.getppid() != parent):
                raise _Stopped
            try:
                q.put(message, timeout=0.5)
                return
            except queue.Full:
                continue

    return put


def _process_main(
    stream: Stream, q: Any, stop: Any, parent: int, fmt: FrameFormat, max_fps: float | None
) -> None:
    """Entry point of a producer process."""
    try:
        _produce(stream, _blocking_put(q, stop, parent), fmt, max_fps)
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group; training stops us
        pass
    if stop.is_set() or os.getppid() != parent:
        q.cancel_join_thread()  # nobody reads the rest: exit without flushing it


# --- the store ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LiveOptions:
    """Limits of the store. `max_mib` (and `max_frames` where given) bound the training
    segments; `holdout`: the fraction of segments never trained on: the first
    `test_segments` are the test set (the periodic tests and D's held-out accuracy), later
    ones are held out (dropped) as needed to keep the running fraction;
    `stall_seconds` without a frame (before the stream's end) stops training; `max_fps`
    paces a stream that would run faster (an emulator on a machine shared with training);
    `start_frames`: training waits until the store holds this many training frames (or is
    full, or the stream has ended), e.g. so that its first steps do not fit the first episode
    alone."""

    max_mib: float = 1024.0
    max_frames: int | None = None
    holdout: float | None = None  # None: the stream's default (emulator 0.1, others 0)
    test_segments: int = 2
    segment_frames: int = 1000
    stall_seconds: float = 60.0
    ready_timeout: float = 600.0
    max_fps: float | None = None  # pace a stream that could go faster (an emulator)
    start_frames: int = 0

    def validate(self) -> None:
        if self.max_mib <= 0 or (self.max_frames is not None and self.max_frames < 1):
            raise ConfigError("--store-mib and --store-frames must be positive")
        if self.holdout is not None and not 0.0 <= self.holdout < 1.0:
            raise ConfigError(f"--holdout must be in [0, 1), got {self.holdout}")
        if self.max_fps is not None and self.max_fps <= 0:
            raise ConfigError(f"--live-fps must be > 0, got {self.max_fps}")
        if self.segment_frames < 2:
            raise ConfigError(f"--segment-frames must be >= 2, got {self.segment_frames}")
        if self.stall_seconds <= 0:
            raise ConfigError(f"--stall-timeout must be > 0, got {self.stall_seconds}")
        if self.test_segments < 1:
            raise ConfigError(f"test_segments must be >= 1, got {self.test_segments}")
        if self.start_frames < 0:
            raise ConfigError(f"--start-frames must be >= 0, got {self.start_frames}")
        if self.max_frames is not None and self.start_frames > self.max_frames:
            raise ConfigError(
                f"--start-frames {self.start_frames} is more than the store holds "
                f"(--store-frames {self.max_frames})"
            )


@dataclass
class StoreStats:
    frames_received: int = 0
    episodes_begun: int = 0  # episodes of which at least one frame arrived
    segments_received: int = 0
    segments_dropped: int = 0  # too short for a clip
    segments_evicted: int = 0  # oldest out, to keep the store within its limits
    started: float = field(default_factory=time.monotonic)


class SegmentStore:
    """Recent segments in memory. `segments` is replaced, never changed in place, so a reader
    (the sampler) always sees a consistent list without a lock."""

    def __init__(self, opts: LiveOptions, clip_len: int, crop: int, name: str):
        self.opts, self.clip_len, self.crop, self.name = opts, clip_len, crop, name
        self.segments: list[Video] = []
        self.test: list[Video] = []
        self.stats = StoreStats()
        self._pending: list[np.ndarray] = []
        self._pending_frames = 0
        self._frame_shape: tuple[int, ...] | None = None
        self._index = 0  # segments completed so far
        self._held = 0  # segments held out so far (the test set included)
        self._in_episode = False  # frames of the episode in progress have arrived

    def snapshot(self) -> list[Video]:
        return self.segments

    @property
    def frames(self) -> int:
        return sum(len(v.frames) for v in self.segments)

    @property
    def mib(self) -> float:
        return sum(v.frames.nbytes for v in self.segments) / 2**20

    def add(self, chunk: np.ndarray) -> None:
        """Frames of the episode in progress; raises DataError for a frame of another size."""
        if self._frame_shape is None:
            h, w = chunk.shape[1:3]
            if h < self.crop or w < self.crop:
                raise DataError(
                    self.name, f"frames are {h}x{w}, smaller than the {self.crop}x{self.crop} crop"
                )
            self._frame_shape = chunk.shape[1:]
        elif chunk.shape[1:] != self._frame_shape:
            raise DataError(
                self.name,
                f"frame {self.stats.frames_received} is {'x'.join(map(str, chunk.shape[1:]))} "
                f"but the stream's frames are {'x'.join(map(str, self._frame_shape))}",
            )
        if len(chunk) and not self._in_episode:
            self._in_episode = True
            self.stats.episodes_begun += 1
        self.stats.frames_received += len(chunk)
        while len(chunk):
            take = min(len(chunk), self.opts.segment_frames - self._pending_frames)
            self._pending.append(chunk[:take])
            self._pending_frames += take
            chunk = chunk[take:]
            if self._pending_frames == self.opts.segment_frames:
                self.end()

    def episode_end(self) -> None:
        """The episode in progress is over."""
        self._in_episode = False
        self.end()

    def end(self) -> None:
        """The segment in progress is over (its episode ended, or it is full)."""
        pending, n = self._pending, self._pending_frames
        self._pending, self._pending_frames = [], 0
        if n < self.clip_len:
            if n:
                self.stats.segments_dropped += 1
            return
        frames = pending[0] if len(pending) == 1 else np.concatenate(pending)
        i = self._index
        self._index += 1
        self.stats.segments_received += 1
        video = Video(f"{self.name} segment {i}", frames)
        if self.opts.holdout:
            if len(self.test) < self.opts.test_segments:  # the test set comes first
                self.test = [*self.test, video]
                self._held += 1
                return
            if self._held < self.opts.holdout * (i + 1):  # keep the running fraction
                self._held += 1
                return  # held out: never trained on
        kept = [*self.segments, video]
        limit = self.opts.max_mib * 2**20
        total = sum(v.frames.nbytes for v in kept)
        frames_total = sum(len(v.frames) for v in kept)
        while len(kept) > 1 and (
            total > limit
            or (self.opts.max_frames is not None and frames_total > self.opts.max_frames)
        ):
            old = kept.pop(0)
            self.stats.segments_evicted += 1
            total -= old.frames.nbytes
            frames_total -= len(old.frames)
        self.segments = kept

    def ready(self, ended: bool = False) -> bool:
        """Enough to start: a training segment, the test set where one is held out, and
        `start_frames` training frames unless the store is full or the stream has `ended`."""
        need_test = self.opts.test_segments if self.opts.holdout else 0
        enough = self.frames >= self.opts.start_frames or self.stats.segments_evicted > 0
        return bool(self.segments) and len(self.test) >= need_test and (enough or ended)


# --- the feed ----------------------------------------------------------------------------------


class LiveFeed:
    """A stream running beside training, filling a SegmentStore. Use as a context manager."""

    def __init__(
        self,
        stream: Stream,
        opts: LiveOptions,
        clip_len: int,
        crop: int,
        fmt: FrameFormat | None = None,
    ):
        """`fmt`: the frames training reads (default: the stream's own), to which the producer
        converts what it can (RGB to luminance for 1 channel) and refuses the rest."""
        opts.validate()
        self.stream, self.opts = stream, opts
        self.store = SegmentStore(opts, clip_len, crop, stream.name)
        self.name = stream.name
        self.fmt = fmt or stream.fmt
        self._stop = threading.Event()
        self._error: str | None = None
        self._done = False
        self._last = time.monotonic()
        self._process: Any = None
        self._exited = 0.0  # when problem() first saw the producer process gone
        self._threads: list[threading.Thread] = []
        self._queue: Any = None
        self._process_stop: Any = None

    @property
    def episodes_begun(self) -> int:
        """Episodes of the stream begun, counting those a resumed emulator skipped: where the
        next resume goes on (`avg_rt.training.resume_episode`)."""
        return getattr(self.stream, "first_episode", 0) + self.store.stats.episodes_begun

    @property
    def producer_pid(self) -> int | None:
        """The producer process's id (None where it runs in a thread)."""
        return None if self._process is None else self._process.pid

    def __enter__(self) -> LiveFeed:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        if self.stream.in_process:
            ctx = mp.get_context("spawn")  # a fork of a process running torch can deadlock
            self._queue = ctx.Queue(maxsize=16)
            self._process_stop = ctx.Event()
            self._process = ctx.Process(
                target=_process_main,
                args=(
                    self.stream,
                    self._queue,
                    self._process_stop,
                    os.getpid(),
                    self.fmt,
                    self.opts.max_fps,
                ),
                name=f"avg-rt producer {self.name}",
                daemon=True,
            )
            self._process.start()
        else:
            self._queue = queue.Queue(maxsize=16)
            put = _blocking_put(self._queue, self._stop, None)
            producer = threading.Thread(
                target=_produce,
                args=(self.stream, put, self.fmt, self.opts.max_fps, self._stop),
                name="avg-rt producer",
                daemon=True,
            )
            producer.start()
            self._threads.append(producer)
        receiver = threading.Thread(target=self._receive, name="avg-rt receiver", daemon=True)
        receiver.start()
        self._threads.append(receiver)

    def _receive(self) -> None:
        while not self._stop.is_set() and self._error is None and not self._done:
            try:
                message = self._queue.get(timeout=0.25)
            except queue.Empty:
                continue
            self._last = time.monotonic()
            try:
                match message[0]:
                    case "frames":
                        self.store.add(message[1])
                    case "end":
                        self.store.episode_end()
                    case "done":
                        self._done = True
                    case "error":
                        self._error = message[1]
            except DataError as e:
                self._error = e.problem
            except Exception as e:  # e.g. MemoryError: one line, not a dead thread
                self._error = f"receiving frames failed: {type(e).__name__}: {e}".splitlines()[0]

    def problem(self) -> str | None:
        """Why training on this stream cannot go on (one line), or None."""
        if self._error is not None:
            return self._error
        if self._process is not None and not self._done and not self._process.is_alive():
            # (Checked here, not by the receiver: a process killed while writing a message
            # leaves the receiver waiting for the rest of it.) A clean exit sent "done" last:
            # give the receiver a moment to read it.
            code = self._process.exitcode
            self._exited = self._exited or time.monotonic()
            if code != 0 or time.monotonic() - self._exited > 2:
                return f"the producer process exited (code {code}) before the end of its stream"
        idle = time.monotonic() - self._last
        if not self._done and idle > self.opts.stall_seconds:
            return (
                f"no frame for {idle:.0f} s (stalled; --stall-timeout {self.opts.stall_seconds:g})"
            )
        return None

    def wait_ready(self, on_wait: Callable[[SegmentStore], None] | None = None) -> None:
        """Block until the store can feed training; raise DataError naming the stream if the
        stream fails first or ends without enough frames."""
        t0 = time.monotonic()
        while not self.store.ready(ended=self._done):
            if (problem := self.problem()) is not None:
                raise DataError(self.name, problem)
            if self._done:
                raise DataError(
                    self.name,
                    f"the stream ended after {self.store.stats.frames_received} frames, before "
                    f"a training segment of at least {self.store.clip_len} frames"
                    + (" and the held-out test segments" if self.opts.holdout else ""),
                )
            if time.monotonic() - t0 > self.opts.ready_timeout:
                waited = f"not enough frames after {self.opts.ready_timeout:g} s"
                if self.opts.start_frames:
                    waited += f" ({self.store.frames} of --start-frames {self.opts.start_frames})"
                raise DataError(self.name, waited)
            if on_wait is not None:
                on_wait(self.store)
            time.sleep(0.05)

    def stats(self) -> dict[str, float]:
        """Scalars for the training log."""
        s = self.store.stats
        elapsed = max(time.monotonic() - s.started, 1e-9)
        return {
            "live/frames_received": float(s.frames_received),
            "live/frames_per_s": s.frames_received / elapsed,
            "live/store_frames": float(self.store.frames),
            "live/store_mib": self.store.mib,
            "live/store_fill": max(
                self.store.mib / self.opts.max_mib,
                self.store.frames / (self.opts.max_frames or float("inf")),
            ),
            "live/segments": float(len(self.store.segments)),
        }

    def close(self) -> None:
        """Stop the producer and the receiver. A producer process is ended (asked, then
        terminated, then killed); a producer thread stops at its next frame or read (one
        blocked inside a user's generator ends with the program: it is a daemon thread)."""
        if self._process is not None:
            self._process_stop.set()  # the receiver keeps draining while the child exits
            self._process.join(timeout=2)
            if self._process.is_alive():
                self._process.terminate()
                self._process.join(timeout=2)
            if self._process.is_alive():
                self._process.kill()
                self._process.join()
        self._stop.set()
        for t in self._threads:
            t.join(timeout=2)
        if self._process is not None:
            self._queue.close()
