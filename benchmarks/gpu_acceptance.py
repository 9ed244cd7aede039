"""GPU acceptance: the first thing to run on a new GPU machine.

    python benchmarks/gpu_acceptance.py            # results in benchmarks/results/gpu/<GPU>/
    python benchmarks/gpu_acceptance.py --full     # the paper preset up to 1080x1920 (long)

Runs, in order, and goes on past a failure so that one run says everything:
1. `avg-rt doctor --cuda` (versions, and a tiny generator on every backend);
2. the CUDA and TensorRT tests (`pytest -m "needs_cuda or needs_tensorrt"`) and the runner
   conformance tests;
3. the export of the shipped small model with FP16, plus TensorRT engines where TensorRT is
   installed, verified against PyTorch;
4. the live-stream sampler against both presets' training on CUDA (`benchmarks/live.py
   sampler`, needs ale-py); the parity and rollout-overhead benchmarks of the CUDA backends;
5. last, the speed benchmark of the paper preset (rollouts at 32x32 and 210x160, batches 1
   and 8, and adversarial training steps/s of both presets; `--full`: up to 1080x1920, which
   takes far longer than a short GPU lease). It keeps every row it measured when stopped.
Each step's command, exit status, time and output go to `summary.json` and `summary.md` beside
the benchmarks' own results, with the GPU's name, rewritten after every step so that a run cut
short still says what it did; `--step-timeout` stops a step that runs too long (it counts as
failed), and `--skip STEP` (repeatable, e.g. `--skip "live sampler"`) leaves a step out, so a
short lease can go on from where the last one stopped (into another `--out`: a summary
covers one run). Exit status: the number of failed steps.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from avg_rt.benchmark.common import RESULTS, environment, run_script
from avg_rt.files import atomic_write_text, strict_json

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "models" / "small" / "checkpoint.pt"


def steps(out: Path, work: Path, full: bool = False) -> list[tuple[str, list[str]]]:
    py = sys.executable
    export = [py, "-m", "avg_rt", "export", str(SHIPPED), "--out", str(work / "export"), "--fp16"]
    if importlib.util.find_spec("tensorrt") is not None:
        export.append("--engine")
    speed = ["--full"] if full else ["--preset", "paper"]
    cuda = ["--device", "cuda"]
    # Both presets trained on CUDA from the live emulator (ale-py), the sampler beside them.
    live = [py, "benchmarks/live.py", "sampler", "--device", "cuda", "--seconds", "10"]
    live += ["--steps", "100", "--out", str(out)]
    return [
        ("doctor", [py, "-m", "avg_rt", "doctor", "--cuda"]),
        ("gpu tests", [py, "-m", "pytest", "-q", "-rs", "-m", "needs_cuda or needs_tensorrt"]),
        ("runner tests", [py, "-m", "pytest", "-q", "-rs", "tests/runners"]),
        ("export", export),
        ("live sampler", live),
        # The CUDA backends alone (the CPU ones are CI's): parity against torch on CPU.
        ("parity", [py, "benchmarks/parity.py", *cuda, "--out", str(out)]),
        ("rollout overhead", [py, "benchmarks/rollout_overhead.py", *cuda, "--out", str(out)]),
        # Last and the longest: it writes its table after every row, so a step stopped by
        # --step-timeout or the lease still leaves the rows it measured.
        ("speed", [py, "benchmarks/speed.py", *speed, *cuda, "--out", str(out)]),
    ]


def run_step(cmd: list[str], timeout: float | None) -> tuple[int, str]:
    """Exit status and output of one step; a step past `timeout` is stopped with everything
    it started (its own process group) and reported as exit 124. The step runs in its own
    session, so Ctrl-C or a SIGTERM of this script stops it here, before going on up."""
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        output, _ = proc.communicate(timeout=timeout)
        return proc.returncode, output
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        try:  # a grandchild in a session of its own may still hold the pipe
            output, _ = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.stdout.close()  # type: ignore[union-attr]
            output = "[its output was held open by a process it started]"
        return 124, output + f"\n[stopped after --step-timeout {timeout:g} s]\n"
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        raise


def write_summary(out: Path, gpu: str, done: list[dict[str, Any]], command: str) -> list[str]:
    """summary.json and summary.md for the steps done so far; the failed steps' names."""
    failed = [str(d["step"]) for d in done if d["returncode"] != 0]
    report = {"gpu": gpu, "environment": environment(), "failed": failed, "steps": done}
    atomic_write_text(out / "summary.json", strict_json(report), overwrite=True)
    lines = [
        f"GPU acceptance on {gpu}: {len(done) - len(failed)} of {len(done)} steps passed, "
        f"with `{command}`.",
        "",
        "| step | exit | seconds | command |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {d['step']} | {d['returncode']} | {d['seconds']} | `{d['command']}` |" for d in done
    ]
    atomic_write_text(out / "summary.md", "\n".join(lines) + "\n", overwrite=True)
    return failed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, help="results folder (default: results/gpu/<GPU name>)")
    p.add_argument("--full", action="store_true", help="full speed benchmark (hours of GPU time)")
    p.add_argument(
        "--step-timeout", type=float, metavar="SECONDS", help="stop a step after this long"
    )
    p.add_argument(
        "--skip", action="append", default=[], metavar="STEP",
        help="leave out this step (repeatable; e.g. what an earlier lease already ran)",
    )  # fmt: skip
    args = p.parse_args(argv)
    names = [name for name, _ in steps(Path(), Path())]
    unknown = [name for name in args.skip if name not in names]
    if unknown:
        print(
            f"gpu_acceptance: --skip {unknown[0]!r}: no such step (steps: {', '.join(names)})",
            file=sys.stderr,
        )
        return 2
    if not torch.cuda.is_available():
        print("gpu_acceptance: torch sees no CUDA GPU here (run `avg-rt doctor`)", file=sys.stderr)
        return 1
    gpu = torch.cuda.get_device_name(0)
    out = args.out or RESULTS / "gpu" / re.sub(r"[^A-Za-z0-9.-]+", "-", gpu).strip("-")
    out.mkdir(parents=True, exist_ok=True)
    done: list[dict[str, Any]] = []
    failed: list[str] = []
    given = sys.argv[1:] if argv is None else argv
    command = " ".join(["python", "benchmarks/gpu_acceptance.py", *given])
    with tempfile.TemporaryDirectory(prefix="avg-rt-acceptance-") as tmp:
        for name, cmd in steps(out, Path(tmp), args.full):
            if name in args.skip:
                continue
            print(f"== {name}: {' '.join(cmd)}", flush=True)
            t0 = time.perf_counter()
            code, output = run_step(cmd, args.step_timeout)
            print(output[-3000:], flush=True)
            done.append(
                {
                    "step": name,
                    "command": " ".join(cmd),
                    "returncode": code,
                    "seconds": round(time.perf_counter() - t0, 1),
                    "output_tail": output[-6000:],
                }
            )
            if name == "export" and code == 0:
                verification = Path(tmp) / "export" / "verification.json"
                if verification.is_file():
                    (out / "export-verification.json").write_text(verification.read_text())
            failed = write_summary(out, gpu, done, command)
    print(f"wrote {out}/summary.json and .md; failed: {', '.join(failed) or 'none'}")
    return len(failed)


if __name__ == "__main__":
    run_script(main)
