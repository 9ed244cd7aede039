"""`avg-rt rollout`: recursive predictions for every video of a folder, with metrics and pictures.

Videos of the same frame size roll out together along the batch dimension. A video that cannot
be used (unreadable, mixed frame sizes, too short) is reported and skipped; the others go on.
Everything is written into a folder assembled beside OUT and renamed into place at the end.
"""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from avg_rt.data.clips import frames_to_model, model_to_frames
from avg_rt.data.frames import RGB8, FrameFormat
from avg_rt.data.sources import Video, load_video, open_source
from avg_rt.errors import DataError, RunnerError
from avg_rt.files import atomic_path, check_writable, strict_json
from avg_rt.metrics import (
    DB_CAP,
    PSNR_CONVENTION,
    SHARP_DIFF_CONVENTION,
    cap_db,
    finite_or_none,
)
from avg_rt.predict import rollout, score
from avg_rt.runners import Runner, frame_format, open_runner
from avg_rt.visual import plot_per_step, side_by_side, write_animation

METRICS = tuple(f"{m}{s}" for s in ("", "_moving") for m in ("psnr", "sharp_diff", "ssim"))
DEFINITIONS = {
    "psnr": PSNR_CONVENTION,
    "sharp_diff": SHARP_DIFF_CONVENTION,
    "ssim": "SSIM (Wang et al. 2004), Gaussian window sigma 1.5, frames in [0, 1], mean over RGB",
    "*_moving": "the same on the pixels that the truth or the prediction changes, relative to "
    "the last input frame",
    "baseline_*": "the same metric for copying the last input frame, on the same pixels",
    "cap": f"PSNR and sharp difference of identical frames (infinite) are given as {DB_CAP:g}",
    "null": "for *_moving: no pixel moves",
}


@dataclass(frozen=True)
class RolloutOptions:
    videos: Path
    model: Path
    out: Path
    steps: int = 64
    start: int = 0
    backend: str = "auto"
    device: str = "cpu"
    tf32: bool = False  # CUDA float32 convolutions in TF32 (torch and onnxruntime)
    feedback_8bit: bool = True  # predictions fed back as 8-bit frames (`predict.rollout`)
    batch: int = 8
    format: str = "gif"  # gif, mp4 or png (frames only)
    fps: float = 8.0
    overwrite: bool = False
    seed: int = 0  # a stochastic generator's noise (`predict.rollout`)


@dataclass
class VideoResult:
    name: str
    folder: str  # output subfolder
    size: tuple[int, int]
    truth_steps: int
    execution: dict[str, str] = field(default_factory=dict)  # captured or eager, and why
    metrics: dict[str, list[float | None]] = field(default_factory=dict)


def _slug(name: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(name).stem or name).strip("_.") or "video"
    slug, i = base, 1
    while slug in taken:
        i += 1
        slug = f"{base}-{i}"
    taken.add(slug)
    return slug


def _write_video(
    folder: Path,
    history: np.ndarray,
    preds: np.ndarray,
    truth: np.ndarray,
    result: VideoResult,
    opts: RolloutOptions,
    fmt: FrameFormat,
) -> None:
    """PNG frames, the comparison animation and the metrics plot of one video; frames that
    are not RGB 8-bit are shown as `fmt.pictures` and their values kept in predictions.npy."""
    from PIL import Image

    (folder / "frames").mkdir(parents=True)
    if fmt != RGB8:
        np.save(folder / "predictions.npy", preds)
        history, preds, truth = fmt.pictures(history), fmt.pictures(preds), fmt.pictures(truth)
    for t, frame in enumerate(preds):
        Image.fromarray(frame).save(folder / "frames" / f"{t + 1:04d}.png")
    if opts.format in ("gif", "mp4"):
        steps = len(preds)
        padded = np.zeros_like(preds)
        padded[: len(truth)] = truth  # black where the video has no more real frames
        columns = [
            ("last input", np.repeat(history[-1:], steps, axis=0)),
            ("prediction, step {t}", preds),
            ("ground truth", padded),
        ]
        write_animation(folder / f"comparison.{opts.format}", side_by_side(columns), opts.fps)
    if result.truth_steps:
        curves = {
            label: {"model": result.metrics[m], "copy last frame": result.metrics[f"baseline_{m}"]}
            for m, label in (("psnr", "PSNR (dB)"), ("sharp_diff", "sharp difference (dB)"))
        }
        plot_per_step(folder / "metrics.png", curves, title=result.name)


def _run_group(
    runner: Runner,
    videos: list[Video],
    opts: RolloutOptions,
    out: Path,
    taken: set[str],
    on_step: Any,
    on_written: Any,
) -> list[VideoResult]:
    L = runner.history_len
    windows = np.stack([np.asarray(v.frames[opts.start : opts.start + L]) for v in videos])
    fmt = frame_format(runner)
    history = frames_to_model(windows, runner.device, fmt)  # (B, L, C, H, W)
    execution: dict[str, str] = {}
    preds = rollout(
        runner,
        history,
        opts.steps,
        on_step=on_step,
        feedback_8bit=opts.feedback_8bit,
        execution=execution,
        seed=opts.seed,
    )
    finite = preds.isfinite().flatten(2).all(dim=2)  # (B, steps)
    if not finite.all():
        first = int((~finite).any(dim=0).nonzero()[0])
        raise RunnerError(
            opts.model, f"its prediction {first + 1} is not finite (NaN or inf): it cannot be used"
        )
    frames = model_to_frames(preds, fmt)  # (B, S, H, W, C)
    results = []
    for i, v in enumerate(videos):
        truth = np.asarray(v.frames[opts.start + L : opts.start + L + opts.steps])
        result = VideoResult(v.name, _slug(v.name, taken), v.size, len(truth), execution)
        if len(truth):
            m = score(
                preds[i : i + 1],
                frames_to_model(truth[None], runner.device, fmt),
                history[i : i + 1, -1],
                fmt,
            )
            result.metrics = {k: finite_or_none(cap_db(k, a[0])) for k, a in m.items()}
        _write_video(out / result.folder, windows[i], frames[i], truth, result, opts, fmt)
        results.append(result)
        on_written()
    return results


def _summary(results: list[VideoResult]) -> dict[str, list[float | None]]:
    """Mean over videos at each step (finite values only) of every metric."""
    scored = [r for r in results if r.truth_steps]
    if not scored:
        return {}
    keys = scored[0].metrics.keys()
    longest = max(r.truth_steps for r in scored)
    mean: dict[str, list[float | None]] = {}
    for k in keys:
        rows = [
            [
                x
                for r in scored
                if t < r.truth_steps and k in r.metrics and (x := r.metrics[k][t]) is not None
            ]
            for t in range(longest)
        ]
        mean[k] = [float(np.mean(v)) if v else None for v in rows]
    return mean


def rollout_videos(opts: RolloutOptions, progress: bool = True) -> dict[str, Any]:
    """Roll out every video under `opts.videos`; returns what metrics.json holds."""
    from rich.progress import Progress

    inputs = (opts.videos, opts.model)
    check_writable(opts.out, opts.overwrite, inputs)
    if opts.format not in ("gif", "mp4", "png"):
        raise DataError("--format", f"must be gif, mp4 or png, got {opts.format!r}")
    for name, value, low in (
        ("--steps", opts.steps, 1),
        ("--start", opts.start, 0),
        ("--batch", opts.batch, 1),
    ):
        if value < low:
            raise DataError(name, f"must be >= {low}, got {value}")
    specs = list(open_source(opts.videos))
    skipped: list[dict[str, str]] = []
    results: list[VideoResult] = []
    with (
        open_runner(opts.model, opts.backend, opts.device, opts.tf32) as runner,
        atomic_path(opts.out, opts.overwrite, inputs) as tmp,
        Progress(disable=not progress) as bar,
    ):
        tmp.mkdir()
        groups: dict[tuple[int, int], list[Video]] = defaultdict(list)
        for spec in specs:
            try:
                L = runner.history_len
                why = f"--start {opts.start} and a {L}-frame history"
                video = load_video(spec, opts.start + L, why=why, fmt=frame_format(runner))
                if min(video.size) < runner.min_frame_size:
                    h, w = video.size
                    m = runner.min_frame_size
                    raise DataError(
                        spec.name, f"frames are {h}x{w}; this model takes at least {m}x{m}"
                    )
            except DataError as e:
                skipped.append({"name": spec.name, "error": str(e)})
                bar.console.print(f"[yellow]skipped[/yellow] {e}", soft_wrap=True)  # one line each
                continue
            groups[video.size].append(video)
        n_videos = sum(len(g) for g in groups.values())
        task = bar.add_task("rollout", total=n_videos * opts.steps)
        writing = bar.add_task(f"writing {opts.format} and metrics", total=n_videos)
        taken: set[str] = set()
        for group in groups.values():
            for i in range(0, len(group), opts.batch):
                chunk = group[i : i + opts.batch]
                done, n = bar.tasks[task].completed, len(chunk)

                def advance(t: int, done: float = done, n: int = n) -> None:
                    bar.update(task, completed=done + t * n)

                results += _run_group(
                    runner, chunk, opts, tmp, taken, advance, lambda: bar.advance(writing)
                )
        report = {
            "model": str(opts.model),
            "backend": runner.name,
            "device": str(runner.device),
            "steps": opts.steps,
            "start": opts.start,
            "feedback": "8-bit frames" if opts.feedback_8bit else "float",
            "definitions": DEFINITIONS,
            "mean_per_step": _summary(results),
            "videos": [vars(r) | {"size": list(r.size)} for r in results],
            "skipped": skipped,
        }
        (tmp / "metrics.json").write_text(strict_json(report))
        with (tmp / "metrics.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            names = [*METRICS, *(f"baseline_{m}" for m in METRICS)]
            writer.writerow(["video", "step", *names])
            for r in results:
                for t in range(r.truth_steps):
                    writer.writerow(
                        [
                            r.name,
                            t + 1,
                            *(r.metrics.get(k, [None] * r.truth_steps)[t] for k in names),
                        ]
                    )
    if not results:
        raise DataError(opts.videos, "no video could be rolled out (see the skipped list above)")
    return report


def print_summary(report: dict[str, Any]) -> None:
    """A rich table: per video, the first and last step against the copy-last baseline."""
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"rollout: {report['backend']} on {report['device']}, {report['steps']} steps "
        f"from frame {report['start']} (PSNR dB; copy: the last frame; moving: the pixels that "
        "the truth or the model changes)"
    )
    columns = {  # header: (metric, step index 0 = first, -1 = last)
        "PSNR 1": ("psnr", 0),
        "copy": ("baseline_psnr", 0),
        "moving 1": ("psnr_moving", 0),
        "copy ": ("baseline_psnr_moving", 0),
        "PSNR last": ("psnr", -1),
        "copy  ": ("baseline_psnr", -1),
        "sharp diff 1": ("sharp_diff", 0),
    }
    for col in ("video", "size", "truth", *columns):
        table.add_column(col.strip())

    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    for v in report["videos"]:
        m = v["metrics"]
        size = "x".join(map(str, v["size"]))
        if not m:
            table.add_row(Path(v["name"]).name, size, "0", *["-"] * len(columns))
            continue
        cells = (fmt(m[k][i]) for k, i in columns.values())
        table.add_row(Path(v["name"]).name, size, str(v["truth_steps"]), *cells)
    mean = report["mean_per_step"]
    last = max((i for i, v in enumerate(mean.get("psnr", [])) if v is not None), default=None)
    if len([v for v in report["videos"] if v["metrics"]]) > 1 and last is not None:
        cells = (fmt(mean[k][last if i == -1 else i]) for k, i in columns.values())
        table.add_row("mean", "", "", *cells, style="bold")
    console = Console()
    if not console.is_terminal:  # a pipe or a file: no 80-column wrapping
        console = Console(width=160)
    console.print(table)
