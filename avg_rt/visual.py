"""Pictures people would rather see than read: side-by-side comparison animations."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from avg_rt.files import atomic_path

CAPTION_HEIGHT = 14


def side_by_side(columns: Sequence[tuple[str, np.ndarray]], start: int = 1) -> np.ndarray:
    """Frames (T, H', W', 3) uint8 showing the columns next to each other with a caption strip.

    Each column is (label, frames (T, H, W, 3) uint8); all columns have the same shape. Labels
    may hold `{t}`, replaced by the step number (counted from `start`).
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
            draw.text((c * col_w + 2, 1), label.format(t=i + start), fill=(255, 255, 255))
        out[i] = np.asarray(img)
    return out


def write_animation(
    path: str | Path, frames: np.ndarray, fps: float = 8.0, overwrite: bool = False
) -> Path:
    """Write (T, H, W, 3) uint8 frames as a looping GIF or an MP4 (by suffix), atomically.

    MP4 frames of odd height or width get one black row or column (H.264 needs even sizes)."""
    import imageio.v3 as iio

    path = Path(path)
    with atomic_path(path, overwrite) as tmp:
        if path.suffix.lower() == ".gif":
            iio.imwrite(tmp, frames, extension=".gif", duration=1000 / fps, loop=0)
        else:
            # H.264 in yuv420p needs even sizes: pad with one black row/column where odd.
            t, h, w, _ = frames.shape
            frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))
            iio.imwrite(
                tmp, frames, extension=path.suffix, fps=fps, codec="libx264", macro_block_size=1
            )
    return path


def plot_per_step(
    path: str | Path,
    curves: Mapping[str, Mapping[str, Sequence[float | None]]],
    title: str = "",
    overwrite: bool = False,
) -> Path:
    """A PNG with one panel per metric, each metric's curves against the rollout step.

    `curves` maps a metric label (e.g. "PSNR (dB)") to {series label: per-step values}; a
    None value (no ground truth, or identical frames) leaves a gap.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 3.4), squeeze=False)
    for ax, (metric, series) in zip(axes[0], curves.items()):
        for label, values in series.items():
            ax.plot(
                range(1, len(values) + 1),
                values,
                label=label,
                marker="." if len(values) < 20 else None,
            )
        ax.set_xlabel("rollout step")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path, overwrite) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path
