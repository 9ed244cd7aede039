"""The `avg-rt` command line: thin, typed commands over library calls.

User errors (bad data, bad options, unusable model files, outputs that exist) are caught once,
in the root group, and printed as one line `error: <file>: <problem>` with exit code 1.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from avg_rt import __version__
from avg_rt.errors import USER_ERRORS


class _Group(TyperGroup):
    def invoke(self, ctx: Any) -> Any:  # a click Context
        try:
            return super().invoke(ctx)
        except USER_ERRORS as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(code=1) from None


app = typer.Typer(
    cls=_Group,
    help="Multi-scale adversarial video prediction: train, export to ONNX/TensorRT, roll out.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_show_locals=False,
    # Plain help: one line per option that survives pipes and narrow terminals, and no type
    # label after flags (typer's rich help prints `<bool>` there).
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"avg-rt {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """avg-rt: next-frame prediction (Mathieu, Couprie & LeCun 2016) for deployment."""


def _register() -> None:
    # Each command module stays small and imports its heavy dependencies inside the command.
    from avg_rt.cli import bench, data, doctor, export, rollout, train

    app.add_typer(data.app, name="data")
    app.add_typer(bench.app, name="bench")
    app.command(name="train")(train.train)
    app.command(name="export")(export.export)
    app.command(name="rollout")(rollout.rollout)
    app.command(name="doctor")(doctor.doctor)


_register()


def main() -> None:
    """Entry point of the `avg-rt` script."""
    app()
