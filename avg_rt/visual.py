"""Pictures people would rather see than read: side-by-side comparison animations."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from avg_rt.files import atomic_path

CAPTION_HEIGHT = 14


def side_by_side(
    columns: Sequence[tuple[str, np.ndarray]], caption: str = "step {t}", start: int = 1
) -> np.ndarray:
    """Frames (T, H', W', 3) uint8 showing the columns next to each other with a caption strip.

    Each column is (label, frames (T, H, W, 3) uint8); all columns have the same shape. The
    strip above shows the labels and `caption` formatted with the step number t (from `start`).
    """
    from PIL import Image, ImageDraw

    frames = np.concatenate([f for _, f in columns], axis=2)  # (T, H, W * n, 3)
    t, h, w, _ = frames.shape
    col_w = w // len(columns)
    out = np.zeros((t, h + CAPTION_HEIGHT, w, 3), np.uint8)
    out[:, CAPTION_HEIGHT:] = frames
    for i in range(t):
        img = Image.fromarray(out[i])
        draw = ImageDraw.Draw(img)
        for c, (label, _) in enumerate(columns):
            text = label if c else f"{label} {caption.format(t=i + start)}"
            draw.text((c * col_w + 2, 1), text, fill=(255, 255, 255))
        out[i] = np.asarray(img)
    return out


def write_animation(
    path: str | Path, frames: np.ndarray, fps: float = 8.0, overwrite: bool = False
) -> Path:
    """Write (T, H, W, 3) uint8 frames as a looping GIF or an MP4 (by suffix), atomically."""
    import imageio.v3 as iio

    path = Path(path)
    with atomic_path(path, overwrite) as tmp:
        if path.suffix.lower() == ".gif":
            iio.imwrite(tmp, frames, extension=".gif", duration=1000 / fps, loop=0)
        else:
            iio.imwrite(
                tmp, frames, extension=path.suffix, fps=fps, codec="libx264", macro_block_size=1
            )
    return path
