"""`avg-rt bench ...`: the benchmarks of benchmarks/ (same code, from the installed package)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from avg_rt.cli.options import DeviceOpt

app = typer.Typer(
    help="Benchmarks: prediction quality per step, speed per backend.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
Opt = typer.Option
DEFAULT_MODELS = [
    "adversarial=models/small/checkpoint.pt",
    "non-adversarial=models/small-noadv/checkpoint.pt",
]


@app.callback()
def _bench() -> None:
    """Benchmarks: prediction quality per step, speed per backend."""


def _models(specs: list[str]) -> dict[str, Path]:
    from avg_rt.config import ConfigError

    models = {}
    for spec in specs:
        label, sep, path = spec.partition("=")
        if not sep or not label or not path:
            raise ConfigError(f"--model: expected LABEL=PATH, got {spec!r}")
        models[label] = Path(path)
    return models


@app.command()
def quality(
    model: Annotated[
        list[str] | None,
        Opt(
            help="LABEL=PATH, repeatable (default: the shipped "
            "adversarial and non-adversarial small models)."
        ),
    ] = None,
    data: Annotated[
        Path | None, Opt(help="Folder of test videos (default: held-out emulator episodes).")
    ] = None,
    full: Annotated[
        bool,
        Opt(
            help="Full mode: 10 episodes, 64 steps, up to 100 clips "
            "(quick: 2 episodes, 16 steps, 16 clips)."
        ),
    ] = False,
    steps: Annotated[
        int | None,
        Opt(help="Rollout steps (default: 64 full, 16 quick); the clips depend on it.", min=1),
    ] = None,
    late: Annotated[
        list[int] | None,
        Opt(
            help="Add a reference row: the true frames D steps late (sharp sprites, D frames "
            "behind), D in 1-4, repeatable.",
            min=1,
            max=4,
        ),
    ] = None,
    judge: Annotated[
        bool,
        Opt(
            help="Add each row's judge accuracy: a classifier trained from scratch to tell "
            "its windows from the true ones (0.5: they look real).",
        ),
    ] = False,
    device: DeviceOpt = "cpu",
    name: Annotated[str | None, Opt(help="Result name (default: quality-quick/-full).")] = None,
    out: Annotated[Path | None, Opt(help="Results folder (default: benchmarks/results).")] = None,
) -> None:
    """Quality per rollout step (PSNR, sharp difference, SSIM; all and moving pixels) of each
    model against copying the last frame, with 95% confidence intervals.

    Example: avg-rt bench quality --full --model mine=runs/x/checkpoint.pt
    """
    from avg_rt.benchmark.common import RESULTS
    from avg_rt.benchmark.quality import FULL, QUICK, QualityOptions, run

    mode: dict[str, Any] = dict(FULL if full else QUICK)
    if steps is not None:
        mode["steps"] = steps
    opts = QualityOptions(
        models=_models(model or DEFAULT_MODELS),
        data=data,
        device=device,
        name=name or f"quality-{'full' if full else 'quick'}",
        out=out or RESULTS,
        late=tuple(late or ()),
        judge=judge,
        **mode,
    )
    report = run(opts)
    typer.echo(f"{report['clips']} clips; wrote {opts.out / opts.name}.json, .md, -*.png, .gif")


@app.command()
def speed(
    full: Annotated[
        bool,
        Opt(
            help="Full mode, 64 steps: on CUDA the paper preset up to "
            "1080x1920, batches 1/8/32; on CPU the small preset up to "
            "480x640, batches 1/8 (quick: small, 32x32 and 210x160, "
            "batches 1/8, 16 steps; quick with --preset paper on CPU: "
            "onnxruntime FP32 and INT8 at 210x160, 4 steps)."
        ),
    ] = False,
    preset: Annotated[
        str | None, Opt(help="Generator preset (default: paper for full on CUDA, else small).")
    ] = None,
    device: DeviceOpt = "auto",
    name: Annotated[str | None, Opt(help="Result name (default: speed-quick/-full).")] = None,
    out: Annotated[Path | None, Opt(help="Results folder (default: benchmarks/results).")] = None,
) -> None:
    """Rollout speed per backend, precision, frame size and batch; sampler and training speed.

    Example: avg-rt bench speed --full --device cuda
    """
    from avg_rt.benchmark.common import RESULTS
    from avg_rt.benchmark.speed import SpeedOptions, run
    from avg_rt.config import PRESETS, ConfigError

    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"--preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    from avg_rt.runners import resolve_device

    gpu = resolve_device(device).type == "cuda"
    mode: dict[str, Any]
    if full and gpu:  # the paper network up to full HD
        mode = dict(
            sizes=((32, 32), (210, 160), (480, 640), (1080, 1920)),
            batches=(1, 8, 32),
            steps=64,
            repeats=20,
            train_steps=5,
        )
    elif full:  # a CPU cannot run the paper network at these sizes in reasonable time
        mode = dict(
            sizes=((32, 32), (210, 160), (480, 640)),
            batches=(1, 8),
            steps=64,
            repeats=10,
            train_steps=3,
        )
    elif preset == "paper" and not gpu:  # seconds per step on a CPU: onnxruntime FP32, INT8
        mode = dict(
            sizes=((210, 160),),
            steps=4,
            repeats=3,
            runners=("onnxrt-cpu", "onnxrt-cpu-int8"),
        )
    else:
        mode = {}
    opts = SpeedOptions(
        preset=preset or ("paper" if full and gpu else "small"),
        device=device,
        name=name or f"speed-{'full' if full else 'quick'}",
        out=out or RESULTS,
        **mode,
    )
    run(opts)
    typer.echo(f"wrote {opts.out / opts.name}.json and .md")
