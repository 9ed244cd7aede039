"""The errors a user can cause, and nothing else (importing this module loads no torch).

Each renders as one line, `<file or option>: <problem>`; the CLI catches `USER_ERRORS` once
and prints `error: <that line>` with exit code 1.
"""

from __future__ import annotations

from pathlib import Path

from avg_rt.config import ConfigError
from avg_rt.files import OutputExistsError, OutputHoldsInputError


class InputError(Exception):
    """Something the user pointed at that cannot be used: `<what>: <problem>`."""

    def __init__(self, what: str | Path, problem: str):
        super().__init__(f"{what}: {problem}")
        self.what, self.problem = str(what), problem


class DataError(InputError):
    """Input data (frames, videos, arrays, emulator games) that cannot be used."""


class CheckpointError(InputError):
    """A file that is not a usable avg-rt checkpoint."""


class RunnerError(InputError):
    """A model file or backend (device, provider, engine) that cannot be used."""


class ExportError(InputError):
    """An export that cannot be done or did not verify."""


USER_ERRORS: tuple[type[Exception], ...] = (
    InputError,
    ConfigError,
    OutputExistsError,
    OutputHoldsInputError,
)
