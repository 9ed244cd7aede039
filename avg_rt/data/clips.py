"""Training clips sampled on the fly: random crops of consecutive frames.

Replaces the TF project's preprocessing pass (5,000,000 clip files): each clip is drawn when
needed from decoded (or memory-mapped) videos, with the same movement filter.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from avg_rt.config import TrainConfig
from avg_rt.data.frames import RGB8, FrameFormat
from avg_rt.data.sources import Video
from avg_rt.errors import DataError


def check_video(video: Video, clip_len: int, crop: int) -> None:
    """Raise DataError naming `video` unless it holds a clip_len x crop x crop clip."""
    if len(video.frames) < clip_len:
        raise DataError(
            video.name,
            f"video has {len(video.frames)} frames, at least {clip_len} needed (one training clip)",
        )
    h, w = video.size
    if h < crop or w < crop:
        raise DataError(video.name, f"frames are {h}x{w}, smaller than the {crop}x{crop} crop")


class ClipSampler:
    """Draws clips (N, clip_len, C, crop, crop) from `videos`, in the videos' dtype.

    Each clip: a uniformly random video, start frame and crop window. A clip is kept when the
    sum over consecutive frame pairs of the squared difference of its [-1, 1] crops (`fmt`
    maps frames there) exceeds `movement_threshold` (static background dominates Atari
    frames); after `tries` rejections the last candidate is kept. A fraction `unfiltered_prob`
    of clips skips the filter. With `movement_frames` n the filter measures the clip's first n
    frames only (the history: what the model is given), so that it selects clips by their
    inputs and leaves what follows an input as the data has it; None measures them all.
    Randomness comes only from `rng`, so a sampler restored with the same generator state
    draws the same clips from the same videos.

    `videos` is a sequence, or a callable returning the current one (a live store whose
    segments come and go while training runs: each clip reads it once).
    """

    def __init__(
        self,
        videos: Sequence[Video] | Callable[[], Sequence[Video]],
        clip_len: int,
        crop: int,
        rng: np.random.Generator,
        movement_threshold: float = 100.0,
        tries: int = 100,
        unfiltered_prob: float = 0.05,
        fmt: FrameFormat = RGB8,
        movement_frames: int | None = None,
    ):
        if callable(videos):
            self._videos = videos
        else:
            fixed = list(videos)
            if not fixed:
                raise DataError("<data>", "no videos to sample clips from")
            for v in fixed:
                check_video(v, clip_len, crop)
            self._videos = lambda: fixed
        self.clip_len, self.crop, self.rng = clip_len, crop, rng
        self.movement_threshold, self.tries, self.unfiltered_prob = (
            movement_threshold,
            tries,
            unfiltered_prob,
        )
        if movement_frames is not None and not 2 <= movement_frames <= clip_len:
            raise ValueError(f"movement_frames must be in [2, {clip_len}], got {movement_frames}")
        self.movement_frames = movement_frames
        lo, hi = fmt.bounds
        self._scale = np.float32(2 / (hi - lo))  # frame units -> [-1, 1] units

    def _candidate(self) -> np.ndarray:
        videos = self._videos()
        v = videos[int(self.rng.integers(len(videos)))]
        h, w = v.size
        t = self.rng.integers(len(v.frames) - self.clip_len + 1)
        y, x = self.rng.integers(h - self.crop + 1), self.rng.integers(w - self.crop + 1)
        return np.asarray(v.frames[t : t + self.clip_len, y : y + self.crop, x : x + self.crop])

    def movement(self, clip: np.ndarray) -> float:
        """Sum of squared differences between consecutive [-1, 1] frames of a (T, h, w, C) clip
        (of its first `movement_frames` frames, where set)."""
        f = clip[: self.movement_frames].astype(np.float32) * self._scale
        return float(((f[1:] - f[:-1]) ** 2).sum())

    def sample_one(self) -> np.ndarray:
        """One clip (clip_len, crop, crop, C)."""
        clip = self._candidate()
        if self.rng.random() < self.unfiltered_prob:
            return clip
        for _ in range(self.tries - 1):
            if self.movement(clip) > self.movement_threshold:
                break
            clip = self._candidate()
        return clip

    def sample(self, n: int) -> np.ndarray:
        """`n` clips as (n, clip_len, C, crop, crop)."""
        return np.stack([self.sample_one() for _ in range(n)]).transpose(0, 1, 4, 2, 3)


def training_sampler(
    videos: Sequence[Video] | Callable[[], Sequence[Video]],
    cfg: TrainConfig,
    clip_len: int,
    rng: np.random.Generator,
    fmt: FrameFormat = RGB8,
) -> ClipSampler:
    """The sampler of training clips `cfg` describes (crop, movement filter), clip_len frames
    each: the model's history, then the targets (the free-run frames, `TrainConfig.free_run`,
    then the unrolled ones). The movement filter measures the history ("history") or the
    history and the unrolled frames ("clip"), whatever the free run adds."""
    L = cfg.model.history_len
    return ClipSampler(
        videos,
        clip_len,
        cfg.crop,
        rng,
        cfg.movement_threshold,
        cfg.movement_tries,
        cfg.unfiltered_prob,
        fmt,
        # "clip": the history and the unrolled targets, not the free-run frames (`free_run`)
        L if cfg.movement_on == "history" else min(clip_len, L + cfg.unroll),
    )


def clips_to_float(
    clips: np.ndarray | torch.Tensor, device: torch.device | str = "cpu", fmt: FrameFormat = RGB8
) -> torch.Tensor:
    """Clips (N, T, C, h, w) of `fmt` -> float (N, T, C, h, w) in [-1, 1] on `device`. The
    conversion to float happens on the device."""
    return fmt.to_model(torch.as_tensor(clips).to(device, non_blocking=True))


def frames_to_model(
    frames: np.ndarray, device: torch.device | str = "cpu", fmt: FrameFormat = RGB8
) -> torch.Tensor:
    """Frames (..., H, W, C) of `fmt` -> float (..., C, H, W) in [-1, 1] on `device`."""
    x = torch.as_tensor(np.ascontiguousarray(frames)).to(device)
    return fmt.to_model(x.movedim(-1, -3))


def round_to_8bit(x: torch.Tensor) -> torch.Tensor:
    """Model frames rounded to the 8-bit grid, still float in [-1, 1]: the frames a user gets
    (`model_to_frames`), in the model's units. Metrics score these."""
    return RGB8.quantize(x)


def model_to_frames(x: torch.Tensor, fmt: FrameFormat = RGB8) -> np.ndarray:
    """Model frames (..., C, H, W) in [-1, 1] -> frames (..., H, W, C) of `fmt`."""
    return fmt.from_model(x)


def test_clips(
    videos: Sequence[Video], history_len: int, steps: int, n: int
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Deterministic full-frame test clips: the first `n` videos long enough for
    `history_len + 1` frames, starting in the middle of each (as the Python 3 fork does).

    Returns (name, history (history_len, H, W, 3), truth (s, H, W, 3)) with s <= `steps` (as
    many ground-truth frames as the video has).
    """
    out: list[tuple[str, np.ndarray, np.ndarray]] = []
    for v in videos:
        if len(out) == n:
            break
        free = len(v.frames) - history_len
        if free < 1:
            continue
        s = min(steps, free)
        start = (len(v.frames) - history_len - s) // 2
        clip = np.asarray(v.frames[start : start + history_len + s])
        out.append((v.name, clip[:history_len], clip[history_len:]))
    return out
