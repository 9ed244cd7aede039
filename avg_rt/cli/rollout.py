"""`avg-rt rollout`: options -> RolloutOptions -> `avg_rt.rollout_videos.rollout_videos`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from avg_rt.cli.options import DeviceOpt, OverwriteOpt, ProgressOpt

Opt = typer.Option


def rollout(
    videos: Annotated[
        Path,
        typer.Argument(
            metavar="VIDEOS",
            help="Folder of videos: frame folders (TF Test/ "
            "layout), video files, or one video's frames.",
        ),
    ],
    model: Annotated[
        Path, Opt("--model", "-m", help="Checkpoint (.pt), ONNX (.onnx) or TensorRT plan (.plan).")
    ],
    out: Annotated[Path, Opt("--out", "-o", help="Output folder (new, or --overwrite).")] = Path(
        "rollout"
    ),
    steps: Annotated[int, Opt(help="Frames to predict recursively.")] = 64,
    start: Annotated[int, Opt(help="Index of the first history frame in each video.")] = 0,
    backend: Annotated[
        str,
        Opt(
            help="auto (from the model file), torch, onnxruntime, onnxruntime-trt (onnxruntime's "
            "TensorRT provider) or tensorrt."
        ),
    ] = "auto",
    device: DeviceOpt = "cpu",
    tf32: Annotated[
        bool,
        Opt(
            "--tf32",
            help="On CUDA, let torch and onnxruntime run float32 convolutions in TF32: faster "
            "on Ampere and newer GPUs, ~1e-3 less exact.",
        ),
    ] = False,
    float_feedback: Annotated[
        bool,
        Opt(
            "--float-feedback",
            help="Feed predictions back as floats, not as 8-bit frames (for data that is "
            "not 8-bit).",
        ),
    ] = False,
    batch: Annotated[int, Opt(help="Videos of the same size rolled out together.")] = 8,
    seed: Annotated[
        int,
        Opt(
            help="A stochastic generator's (--noise-channels) noise: another seed, another "
            "future; each batch starts from it."
        ),
    ] = 0,
    format: Annotated[
        str, Opt(help="Comparison animation: gif, mp4, or png (frames only).")
    ] = "gif",
    overwrite: OverwriteOpt = False,
    progress: ProgressOpt = True,
) -> None:
    """Predict the future of every video recursively; write frames, animations and metrics.

    Each prediction is compared with the real frame when the video has one (PSNR, sharp
    difference, SSIM, and the copy-last-frame baseline), in OUT/metrics.json and metrics.csv.

    Example: avg-rt rollout data/mspacman/Test --model runs/small/checkpoint.pt --out preds
    """
    from avg_rt.rollout_videos import RolloutOptions, print_summary, rollout_videos

    report = rollout_videos(
        RolloutOptions(
            videos=videos,
            model=model,
            out=out,
            steps=steps,
            start=start,
            backend=backend,
            device=device,
            tf32=tf32,
            feedback_8bit=not float_feedback,
            batch=batch,
            seed=seed,
            format=format,
            overwrite=overwrite,
        ),
        progress=progress,
    )
    print_summary(report)
    typer.echo(f"wrote {out}/ ({len(report['videos'])} videos, {len(report['skipped'])} skipped)")
