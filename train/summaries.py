"""Training summaries: TensorBoard events plus a JSON-lines log anyone can read."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch


class Summaries:
    """Writes scalars to `<run_dir>/tb` (TensorBoard) and `<run_dir>/log.jsonl`, images to
    TensorBoard. With `enabled=False` (non-zero ranks) every call does nothing."""

    def __init__(self, run_dir: Path, enabled: bool = True):
        self.enabled = enabled
        self._writer: Any = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

            self._writer = SummaryWriter(str(run_dir / "tb"))
            self._log = (run_dir / "log.jsonl").open("a")

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """Log `values` (name -> number) at `step`."""
        if not self.enabled:
            return
        for name, v in values.items():
            self._writer.add_scalar(name, v, step)
        self._log.write(json.dumps({"step": step, "time": time.time(), **values}) + "\n")
        self._log.flush()

    def images(self, step: int, tag: str, frames: torch.Tensor) -> None:
        """Log model frames (N, C, H, W) in [-1, 1] as one image strip: the first three
        channels, or the first in gray (as `FrameFormat.pictures` shows them)."""
        if not self.enabled:
            return
        grid = torch.cat(list(frames.detach().float().cpu().clamp(-1, 1)), dim=-1)
        grid = grid[:3] if grid.shape[0] >= 3 else grid[:1].expand(3, -1, -1)
        self._writer.add_image(tag, (grid + 1) / 2, step)

    def close(self) -> None:
        if self.enabled:
            self._writer.close()
            self._log.close()
