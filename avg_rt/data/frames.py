"""What a frame is: channels, values, and the map to the model's [-1, 1] and back.

Importing this module loads numpy only (a producer process checks frames without torch).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from avg_rt.errors import DataError

if TYPE_CHECKING:  # torch is not imported here: a producer process reads frames without it
    import torch

    from avg_rt.config import ModelConfig


def _levels(x: torch.Tensor) -> torch.Tensor:
    # float in [-1, 1] -> the nearest of the 256 levels of an 8-bit frame, as float 0..255
    return ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round()


@dataclass(frozen=True)
class FrameFormat:
    """What a frame is, and how it maps to the model's [-1, 1].

    `channels` per frame (3: RGB, 1: grayscale, C: a simulator's fields). `value_range` None:
    8-bit frames, uint8 0..255 (float input in [0, 1] is scaled to it), predictions rounded to
    the 256 levels a user gets; (lo, hi): float frames whose declared range maps linearly onto
    [-1, 1] and back, never rounded. Frames are (..., H, W, C) arrays, model frames
    (..., C, H, W) tensors.
    """

    channels: int = 3
    value_range: tuple[float, float] | None = None

    @classmethod
    def of(cls, cfg: ModelConfig) -> FrameFormat:
        """The format a model was configured for."""
        return cls.of_dict({"channels": cfg.channels, "value_range": cfg.value_range})

    @classmethod
    def of_dict(cls, data: dict[str, Any]) -> FrameFormat:
        """From a model config's JSON form (or any dict with `channels`, `value_range`);
        missing keys (exports older than the option) mean RGB 8-bit."""
        vr = data.get("value_range")
        return cls(
            int(data.get("channels", 3)), None if vr is None else (float(vr[0]), float(vr[1]))
        )

    def to_dict(self) -> dict[str, Any]:
        return {"channels": self.channels, "value_range": self.value_range}

    @property
    def eight_bit(self) -> bool:
        return self.value_range is None

    @property
    def bounds(self) -> tuple[float, float]:
        """The values that map to -1 and 1."""
        return (0.0, 255.0) if self.value_range is None else self.value_range

    def describe(self) -> str:
        """E.g. 'RGB 8-bit', '1-channel 8-bit', '3-channel float in [-1, 2]'."""
        if self.value_range is None:
            return "RGB 8-bit" if self.channels == 3 else f"{self.channels}-channel 8-bit"
        lo, hi = self.value_range
        return f"{self.channels}-channel float in [{lo:g}, {hi:g}]"

    def conform(self, frames: np.ndarray, name: str) -> np.ndarray:
        """Frames (T, H, W[, C']) of any source as (T, H, W, C) uint8 (8-bit) or float32.

        8-bit: uint8 or float in [0, 1] (scaled); for 3 channels, grayscale is repeated and
        alpha dropped; for 1, RGB(A) becomes luminance (ITU-R 601). Float formats: numbers
        within the declared range, exactly C channels. Anything else raises DataError naming
        `name`; frames that already conform are returned as they are (memory maps stay)."""
        a = np.asanyarray(frames)  # a memory map stays one
        if a.ndim == 3:
            a = a[..., None]
        if a.ndim != 4:
            raise DataError(name, f"frames of shape {a.shape[1:]} are not (H, W) or (H, W, C)")
        if a.dtype == np.bool_ or not (
            np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)
        ):
            raise DataError(name, f"frames must be numbers, got {a.dtype}")
        c = a.shape[-1]
        if self.value_range is not None:
            if c != self.channels:
                raise DataError(
                    name, f"frames have {c} channels, the model reads {self.describe()}"
                )
            lo, hi = self.value_range
            if a.size and (np.isnan(a).any() or a.min() < lo or a.max() > hi):
                found = "NaN" if np.isnan(a).any() else f"[{a.min():g}, {a.max():g}]"
                raise DataError(
                    name, f"values {found} lie outside the declared range [{lo:g}, {hi:g}]"
                )
            return a if a.dtype == np.float32 else a.astype(np.float32)
        if a.dtype != np.uint8:
            if not np.issubdtype(a.dtype, np.floating):
                raise DataError(
                    name,
                    f"8-bit frames must be uint8 or float in [0, 1], got {a.dtype} "
                    "(declare a value range for other data)",
                )
            if a.size and (np.isnan(a).any() or a.min() < 0 or a.max() > 1):
                raise DataError(
                    name, "float frames must lie in [0, 1] (declare a value range for other data)"
                )
            a = np.round(a * 255).astype(np.uint8)
        if c == self.channels:
            return a
        if self.channels == 3 and c in (1, 4):
            return np.repeat(a, 3, axis=-1) if c == 1 else np.ascontiguousarray(a[..., :3])
        if self.channels == 1 and c in (3, 4):
            luma = a[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
            return np.round(luma)[..., None].astype(np.uint8)
        raise DataError(name, f"frames have {c} channels, the model reads {self.describe()}")

    def to_model(self, x: torch.Tensor) -> torch.Tensor:
        """Frame values (any dtype, any layout) -> float32 model units in [-1, 1]."""
        lo, hi = self.bounds
        if self.value_range is None:
            return x.float() / 127.5 - 1
        return (x.float() - lo) * (2 / (hi - lo)) - 1

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """Model frames as a user gets them, still in model units: rounded to the 8-bit grid,
        or (float formats) clamped to [-1, 1]."""
        if self.value_range is None:
            return _levels(x) / 127.5 - 1
        return x.detach().float().clamp(-1, 1)

    def from_model(self, x: torch.Tensor) -> np.ndarray:
        """Model frames (..., C, H, W) -> frames (..., H, W, C): uint8 levels (the true map, no
        stretching) or float32 in the declared range."""
        if self.value_range is None:
            return _levels(x).byte().movedim(-3, -1).cpu().numpy()
        lo, hi = self.value_range
        y = (x.detach().float().clamp(-1, 1) + 1) * ((hi - lo) / 2) + lo
        return y.movedim(-3, -1).cpu().numpy()

    def pictures(self, frames: np.ndarray) -> np.ndarray:
        """Frames (..., H, W, C) as RGB uint8 pictures: 8-bit RGB as it is; otherwise the
        first three channels, or the first channel in gray for fewer than three, the declared
        range stretched to 0..255."""
        a = np.asarray(frames)
        if self.value_range is not None:
            lo, hi = self.value_range
            a = np.round((np.clip(a, lo, hi) - lo) * (255 / (hi - lo))).astype(np.uint8)
        return a[..., :3] if a.shape[-1] >= 3 else np.repeat(a[..., :1], 3, axis=-1)


RGB8 = FrameFormat()


def palette_of(
    videos: Iterable[tuple[str, np.ndarray]], fmt: FrameFormat, limit: int
) -> tuple[tuple[int, ...], ...]:
    """The distinct colours, sorted, of 8-bit `videos` ((name, (T, H, W, C) uint8 frames)
    each, conformed to `fmt`): a palette for `ModelConfig.palette`. DataError naming the video
    where the count passes `limit` (camera video, not palette video) or for float frames."""
    c = fmt.channels
    found = np.zeros((0, c), np.uint8)
    for name, frames in videos:
        if not fmt.eight_bit:
            raise DataError(name, f"a palette needs 8-bit frames; these are {fmt.describe()}")
        step = max(1, PALETTE_CHUNK_PIXELS // max(1, math.prod(frames.shape[1:3])))
        for i in range(0, len(frames), step):
            pixels = np.asarray(frames[i : i + step]).reshape(-1, c)
            found = np.unique(np.concatenate([found, _colours(pixels)]), axis=0)
            if len(found) > limit:
                raise DataError(
                    name, f"more than {limit} colours: not palette video (a game, a cartoon)"
                )
    return tuple(tuple(int(v) for v in colour) for colour in found)


# Pixels `palette_of` reads at a time: ~50 MB of working memory at 3 channels.
PALETTE_CHUNK_PIXELS = 2**22


def _colours(pixels: np.ndarray) -> np.ndarray:
    """The distinct rows of (N, C) uint8 `pixels`, (K, C) uint8."""
    c = pixels.shape[1]
    if c > 3:
        return np.unique(pixels, axis=0)
    # Up to 3 channels a colour is one integer below 2^24, and counting beats sorting.
    keys = np.zeros(len(pixels), np.uint32)
    for j in range(c):
        keys |= pixels[:, j].astype(np.uint32) << (8 * j)
    found = np.flatnonzero(np.bincount(keys, minlength=1)).astype(np.uint32)
    return np.stack([(found >> (8 * j)) & 255 for j in range(c)], axis=1).astype(np.uint8)
