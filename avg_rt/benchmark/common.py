"""What every benchmark result carries: machine, versions, commit, date and the command."""

from __future__ import annotations

import datetime
import json
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avg_rt.files import atomic_write_text, strict_json

# Default output folder: benchmarks/results of the source checkout.
RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


def environment() -> dict[str, Any]:
    """Device names and library versions of this run."""
    env: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join([_script(), *sys.argv[1:]]),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": _cpu_name(),
        "cpu_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }
    for module in ("onnxruntime", "tensorrt"):
        try:
            env[module] = __import__(module).__version__
        except ImportError:
            env[module] = None
    try:
        env["commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        env["commit"] = None
    return env


def _script() -> str:
    arg0 = Path(sys.argv[0])
    return "avg-rt" if arg0.name == "avg-rt" else f"python benchmarks/{arg0.name}"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def timed(
    fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int = 2
) -> list[float]:
    """Seconds per call of `fn`, `repeats` times after `warmup` calls, synchronising the device
    on both sides of each timed call."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


def mean_ci95(values: Any, quantile: float = 1.96) -> dict[str, float]:
    """Mean of a sample and the half-width of its 95% interval, `quantile` standard errors
    (1.96: a normal interval; Student's t for a few samples); NaN half-width for one value."""
    v = np.asarray(values, dtype=float)
    half = quantile * v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else float("nan")
    return {"mean": float(v.mean()), "ci95": float(half), "n": len(v)}


def load_report(path: Path) -> dict[str, Any]:
    """A benchmark's JSON result (what `save` wrote); DataError naming `path` where it is
    missing or not JSON (say, a report still being written)."""
    from avg_rt.errors import DataError

    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(path, f"not a readable quality report ({e})") from None
    return report


# The line under the table of a report written part-way (`complete` false in its JSON): a run
# stopped early (a GPU lease's end, --step-timeout) keeps what it measured, said as such.
PARTIAL = "(Partial: the run stopped before it had measured everything; above is what it had.)"


def save(
    name: str, payload: dict[str, Any], table: str, out: Path = RESULTS, complete: bool = True
) -> Path:
    """Write <out>/<name>.json and <out>/<name>.md (the table plus how it was made);
    `complete` False: a report written part-way, marked so in both (PARTIAL)."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    payload = payload | {"complete": complete}
    if not complete:
        table += f"\n\n{PARTIAL}"
    atomic_write_text(path, strict_json(payload) + "\n", overwrite=True)
    env = payload["environment"]
    where = env["gpu"] or env["cpu"]
    md = (
        f"{table}\n\nMeasured on {where} (torch {env['torch']}, onnxruntime "
        f"{env['onnxruntime']}), commit {env['commit']}, {env['date']}, with "
        f"`{env['command']}`.\n"
    )
    atomic_write_text(out / f"{name}.md", md, overwrite=True)
    return path


def run_script(main: Callable[[], int | None]) -> None:
    """Run a benchmark script's `main` as the `avg-rt` command runs its commands: a user error
    (`avg_rt.errors.USER_ERRORS`: a model that cannot be exported, unusable data) ends it with
    one line `error: <file or option>: <problem>` and exit code 1, not a traceback."""
    from avg_rt.errors import USER_ERRORS

    try:
        code = main()
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        code = 1
    sys.exit(code)
