"""Declared ranges of the dynamic input dimensions (batch, height, width)."""

from __future__ import annotations

from dataclasses import dataclass

from avg_rt.config import ModelConfig
from avg_rt.errors import ExportError


@dataclass(frozen=True)
class Range:
    """min <= opt <= max of one dynamic dimension; `opt` is what TensorRT tunes for."""

    min: int
    opt: int
    max: int

    @classmethod
    def parse(cls, text: str, option: str) -> Range:
        """'MIN:OPT:MAX' or a single fixed value 'N'."""
        try:
            parts = [int(p) for p in text.split(":")]
        except ValueError:
            raise ExportError(option, f"expected MIN:OPT:MAX or N, got {text!r}") from None
        if len(parts) == 1:
            parts *= 3
        if len(parts) != 3:
            raise ExportError(option, f"expected MIN:OPT:MAX or N, got {text!r}")
        lo, opt, hi = parts
        if not lo <= opt <= hi:
            raise ExportError(option, f"needs MIN <= OPT <= MAX, got {text!r}")
        return cls(lo, opt, hi)

    def __str__(self) -> str:
        return f"{self.min}:{self.opt}:{self.max}"


@dataclass(frozen=True)
class ShapeRanges:
    """Declared ranges of the dynamic input dimensions."""

    batch: Range = Range(1, 1, 8)
    height: Range = Range(32, 210, 720)
    width: Range = Range(32, 160, 1280)

    def validate(self, cfg: ModelConfig) -> None:
        """Raise ExportError if a range cannot be served by the generator."""
        if self.batch.min < 1:
            raise ExportError("--batch", f"batch sizes must be >= 1, got {self.batch}")
        for option, r in (("--height", self.height), ("--width", self.width)):
            if r.min < cfg.min_frame_size:
                raise ExportError(
                    option,
                    f"{r.min} is too small: the coarsest of {cfg.n_scales} "
                    f"scales needs frames of at least {cfg.min_frame_size} px",
                )

    def shape(self, which: str, channels: int) -> tuple[int, int, int, int]:
        """The (B, C, H, W) input shape at 'min', 'opt' or 'max'."""
        b, h, w = (getattr(r, which) for r in (self.batch, self.height, self.width))
        return (b, channels, h, w)

    def contains(self, shape: tuple[int, ...]) -> bool:
        b, _, h, w = shape
        return all(
            r.min <= v <= r.max for r, v in zip((self.batch, self.height, self.width), (b, h, w))
        )
