"""`avg-rt doctor`: what this machine can run, each backend checked by running it."""

from __future__ import annotations

from typing import Annotated

import typer


def doctor(
    cuda: Annotated[
        bool,
        typer.Option(
            "--cuda", help="CUDA is wanted: a missing GPU or CUDA backend is a failure (exit 1)."
        ),
    ] = False,
) -> None:
    """Say what this machine can run: torch and its CUDA, the GPU and driver, onnxruntime and
    its providers, TensorRT; run a tiny generator on every backend and compare it with PyTorch;
    name the package that fixes what is broken or missing (matching torch's CUDA major).

    Exits 1 if something is broken (or, with --cuda, if a CUDA backend cannot run).
    """
    from avg_rt.doctor import BROKEN, diagnose, render

    rows = diagnose(want_cuda=cuda)
    typer.echo(render(rows))
    if any(r.status == BROKEN for r in rows):
        raise typer.Exit(code=1)
