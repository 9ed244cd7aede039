"""Option types shared by several commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")]
DeviceOpt = Annotated[str, typer.Option(help="cpu, cuda, cuda:N or auto (cuda when present).")]
SeedOpt = Annotated[int | None, typer.Option(help="Random seed (default: preset's, 0).")]
OutDirOpt = Annotated[Path, typer.Option("--out", "-o", help="Output folder.")]
ProgressOpt = Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")]
