"""`avg-rt export`: options -> ExportOptions -> `avg_rt.export.pipeline.export`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from avg_rt.cli.options import OverwriteOpt, ProgressOpt
from avg_rt.export.shapes import Range, ShapeRanges

Opt = typer.Option


def export(
    checkpoint: Annotated[
        Path, typer.Argument(metavar="CHECKPOINT", help="Training checkpoint (checkpoint.pt).")
    ],
    out: Annotated[Path, Opt("--out", "-o", help="Output folder (new, or --overwrite).")],
    fp16: Annotated[
        bool, Opt(help="Also write generator.fp16.onnx (FP16 graph, FP32 I/O).")
    ] = False,
    int8: Annotated[
        bool,
        Opt(
            help="Also write INT8 graphs (generator.int8.onnx for CPUs, generator.int8-sym.onnx "
            "for TensorRT), calibrated on --calibrate."
        ),
    ] = False,
    calibrate: Annotated[
        Path | None,
        Opt(
            metavar="VIDEO_DIR",
            help="Real frames (a folder of videos or frame folders) to calibrate INT8 on; "
            "half the windows verify it.",
        ),
    ] = None,
    engine: Annotated[
        bool | None,
        Opt(
            "--engine/--no-engine",
            help="Build TensorRT engines (default: when tensorrt and a GPU are present).",
        ),
    ] = None,
    batch: Annotated[str, Opt(help="Batch range MIN:OPT:MAX (or N).")] = str(ShapeRanges().batch),
    height: Annotated[str, Opt(help="Height range MIN:OPT:MAX.")] = str(ShapeRanges().height),
    width: Annotated[str, Opt(help="Width range MIN:OPT:MAX.")] = str(ShapeRanges().width),
    opset: Annotated[int, Opt(help="ONNX opset.")] = 18,
    triton: Annotated[bool, Opt(help="Also write a Triton model_repository/.")] = False,
    verify_steps: Annotated[int, Opt(help="Steps of the verification rollout.")] = 64,
    workspace_gib: Annotated[float, Opt(help="TensorRT builder workspace (GiB).")] = 4.0,
    overwrite: OverwriteOpt = False,
    progress: ProgressOpt = True,
) -> None:
    """Export the generator to ONNX (and TensorRT), verified against PyTorch before writing.

    Example: avg-rt export runs/small/checkpoint.pt --out exported --fp16 --triton

    Example: avg-rt export models/small/checkpoint.pt -o int8 --int8 --calibrate videos/
    """
    from avg_rt.export.pipeline import ExportOptions
    from avg_rt.export.pipeline import export as run

    ranges = ShapeRanges(
        Range.parse(batch, "--batch"),
        Range.parse(height, "--height"),
        Range.parse(width, "--width"),
    )
    start = time.monotonic()

    def stage(what: str) -> None:
        if progress:
            typer.echo(f"[{time.monotonic() - start:5.0f} s] {what}", err=True)

    result = run(
        ExportOptions(
            checkpoint=checkpoint,
            out=out,
            fp16=fp16,
            int8=int8,
            calibrate=calibrate,
            engine=engine,
            ranges=ranges,
            opset=opset,
            triton=triton,
            overwrite=overwrite,
            verify_steps=verify_steps,
            workspace_gib=workspace_gib,
        ),
        on_stage=stage,
    )
    for path in result.artefacts:
        typer.echo(f"wrote {path}")
