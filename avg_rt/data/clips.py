"""Training clips sampled on the fly: random crops of consecutive frames.

Replaces the TF project's preprocessing pass (5,000,000 clip files): each clip is drawn when
needed from decoded (or memory-mapped) videos, with the same movement filter.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from avg_rt.data.sources import Video
from avg_rt.errors import DataError


class ClipSampler:
    """Draws uint8 clips (N, clip_len, 3, crop, crop) from `videos`.

    Each clip: a uniformly random video, start frame and crop window. A clip is kept when the
    sum over consecutive frame pairs of the squared difference of its [-1, 1] crops exceeds
    `movement_threshold` (static background dominates Atari frames); after `tries` rejections
    the last candidate is kept. A fraction `unfiltered_prob` of clips skips the filter.
    Randomness comes only from `rng`, so a sampler restored with the same generator state
    draws the same clips.
    """

    def __init__(
        self,
        videos: Sequence[Video],
        clip_len: int,
        crop: int,
        rng: np.random.Generator,
        movement_threshold: float = 100.0,
        tries: int = 100,
        unfiltered_prob: float = 0.05,
    ):
        if not videos:
            raise DataError("<data>", "no videos to sample clips from")
        for v in videos:
            if len(v.frames) < clip_len:
                raise DataError(
                    v.name,
                    f"video has {len(v.frames)} frames, at least {clip_len} needed (history + 1)",
                )
            h, w = v.size
            if h < crop or w < crop:
                raise DataError(v.name, f"frames are {h}x{w}, smaller than the {crop}x{crop} crop")
        self.videos, self.clip_len, self.crop, self.rng = list(videos), clip_len, crop, rng
        self.movement_threshold, self.tries, self.unfiltered_prob = (
            movement_threshold,
            tries,
            unfiltered_prob,
        )

    def _candidate(self) -> np.ndarray:
        v = self.videos[self.rng.integers(len(self.videos))]
        h, w = v.size
        t = self.rng.integers(len(v.frames) - self.clip_len + 1)
        y, x = self.rng.integers(h - self.crop + 1), self.rng.integers(w - self.crop + 1)
        return np.asarray(v.frames[t : t + self.clip_len, y : y + self.crop, x : x + self.crop])

    def movement(self, clip: np.ndarray) -> float:
        """Sum of squared differences between consecutive [-1, 1] frames of a (T, h, w, 3) clip."""
        f = clip.astype(np.float32) / 127.5
        return float(((f[1:] - f[:-1]) ** 2).sum())

    def sample_one(self) -> np.ndarray:
        """One clip (clip_len, crop, crop, 3) uint8."""
        clip = self._candidate()
        if self.rng.random() < self.unfiltered_prob:
            return clip
        for _ in range(self.tries - 1):
            if self.movement(clip) > self.movement_threshold:
                break
            clip = self._candidate()
        return clip

    def sample(self, n: int) -> np.ndarray:
        """`n` clips as (n, clip_len, 3, crop, crop) uint8."""
        return np.stack([self.sample_one() for _ in range(n)]).transpose(0, 1, 4, 2, 3)


def clips_to_float(
    clips: np.ndarray | torch.Tensor, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """uint8 clips (N, T, 3, h, w) -> float (N, T, 3, h, w) in [-1, 1] on `device`. The
    uint8 -> float conversion happens on the device."""
    return torch.as_tensor(clips).to(device, non_blocking=True).float() / 127.5 - 1


def frames_to_model(frames: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 frames (..., H, W, 3) -> float (..., 3, H, W) in [-1, 1] on `device`."""
    x = torch.as_tensor(np.ascontiguousarray(frames)).to(device)
    return x.movedim(-1, -3).float() / 127.5 - 1


def _levels(x: torch.Tensor) -> torch.Tensor:
    # float in [-1, 1] -> the nearest of the 256 levels of an 8-bit frame, as float 0..255
    return ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round()


def round_to_8bit(x: torch.Tensor) -> torch.Tensor:
    """Model frames rounded to the 8-bit grid, still float in [-1, 1]: the frames a user gets
    (`model_to_frames`), in the model's units. Metrics score these."""
    return _levels(x) / 127.5 - 1


def model_to_frames(x: torch.Tensor) -> np.ndarray:
    """float (..., 3, H, W) in [-1, 1] -> uint8 (..., H, W, 3) (the true map, no stretching)."""
    return _levels(x).to(torch.uint8).movedim(-3, -1).cpu().numpy()


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
