"""`avg-rt data ...`: make training data."""

from __future__ import annotations

from typing import Annotated

import typer

from avg_rt.cli.options import OutDirOpt, OverwriteOpt, ProgressOpt

app = typer.Typer(help="Make training data.", no_args_is_help=True, rich_markup_mode=None)


@app.command()
def atari(
    out: OutDirOpt,
    game: Annotated[
        str, typer.Option(help="ale-py ROM id: ms_pacman, breakout, pong, ...")
    ] = "ms_pacman",
    episodes: Annotated[int, typer.Option(help="Training episodes (Train/).")] = 10,
    test_episodes: Annotated[int, typer.Option(help="Held-out episodes (Test/).")] = 2,
    max_frames: Annotated[int, typer.Option(help="Frames per episode at most.")] = 500,
    frame_skip: Annotated[int, typer.Option(help="Emulator frames per recorded frame.")] = 4,
    policy: Annotated[
        str,
        typer.Option(
            help="random: a new action every frame; sticky: "
            "actions held (probability 0.9 per frame)."
        ),
    ] = "sticky",
    seed: Annotated[int, typer.Option(help="Seed of the policy and the emulator.")] = 0,
    overwrite: OverwriteOpt = False,
    progress: ProgressOpt = True,
) -> None:
    """Record Atari episodes from the ale-py emulator in the TF project's layout.

    Writes OUT/Train/<episode>/<frame>.png and OUT/Test/..., 210x160 RGB frames.

    Example: avg-rt data atari --game ms_pacman --episodes 10 --out data/mspacman
    """
    from rich.progress import Progress

    from avg_rt.config import ConfigError
    from avg_rt.data.atari import AtariConfig, check_game, record

    if policy not in ("random", "sticky"):
        raise ConfigError(f"--policy must be random or sticky, got {policy!r}")
    check_game(game)
    cfg = AtariConfig(
        game=game,
        episodes=episodes,
        test_episodes=test_episodes,
        max_frames=max_frames,
        frame_skip=frame_skip,
        policy=policy,  # type: ignore[arg-type]
        seed=seed,
    )
    cfg.validate()
    total = (episodes + test_episodes) * max_frames
    with Progress(disable=not progress) as bar:
        task = bar.add_task(f"recording {game}", total=total)
        record(cfg, out, overwrite=overwrite, on_frame=lambda: bar.advance(task))
    typer.echo(f"wrote {episodes} training and {test_episodes} test episodes to {out}")
