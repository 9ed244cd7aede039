"""The one error type for unusable input data."""

from __future__ import annotations

from pathlib import Path


class DataError(Exception):
    """Input data that cannot be used; renders as one line, `<path>: <problem>`."""

    def __init__(self, path: str | Path, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem
