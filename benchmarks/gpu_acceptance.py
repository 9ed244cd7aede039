"""GPU acceptance: the first thing to run on a new GPU machine.

    python benchmarks/gpu_acceptance.py            # results in benchmarks/results/gpu/<GPU>/

Runs, in order, and goes on past a failure so that one run says everything:
1. `avg-rt doctor --cuda` (versions, and a tiny generator on every backend);
2. the CUDA and TensorRT tests (`pytest -m "needs_cuda or needs_tensorrt"`) and the runner
   conformance tests;
3. the export of the shipped small model with FP16, plus TensorRT engines where TensorRT is
   installed, verified against PyTorch;
4. the parity, rollout-overhead and speed benchmarks (speed: `--full --device cuda`).
Each step's command, exit status, time and output go to `summary.json` and `summary.md` beside
the benchmarks' own results, with the GPU's name. Exit status: the number of failed steps.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from avg_rt.benchmark.common import RESULTS, environment
from avg_rt.files import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "models" / "small" / "checkpoint.pt"


def steps(out: Path, work: Path) -> list[tuple[str, list[str]]]:
    py = sys.executable
    export = [py, "-m", "avg_rt", "export", str(SHIPPED), "--out", str(work / "export"), "--fp16"]
    if importlib.util.find_spec("tensorrt") is not None:
        export.append("--engine")
    return [
        ("doctor", [py, "-m", "avg_rt", "doctor", "--cuda"]),
        ("gpu tests", [py, "-m", "pytest", "-q", "-rs", "-m", "needs_cuda or needs_tensorrt"]),
        ("runner tests", [py, "-m", "pytest", "-q", "-rs", "tests/runners"]),
        ("export", export),
        ("parity", [py, "benchmarks/parity.py", "--out", str(out)]),
        ("rollout overhead", [py, "benchmarks/rollout_overhead.py", "--out", str(out)]),
        ("speed", [py, "benchmarks/speed.py", "--full", "--device", "cuda", "--out", str(out)]),
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, help="results folder (default: results/gpu/<GPU name>)")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_acceptance: torch sees no CUDA GPU here (run `avg-rt doctor`)", file=sys.stderr)
        return 1
    gpu = torch.cuda.get_device_name(0)
    out = args.out or RESULTS / "gpu" / re.sub(r"[^A-Za-z0-9.-]+", "-", gpu).strip("-")
    out.mkdir(parents=True, exist_ok=True)
    done = []
    with tempfile.TemporaryDirectory(prefix="avg-rt-acceptance-") as tmp:
        for name, cmd in steps(out, Path(tmp)):
            print(f"== {name}: {' '.join(cmd)}", flush=True)
            t0 = time.perf_counter()
            run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
            seconds = time.perf_counter() - t0
            output = run.stdout + run.stderr
            print(output[-3000:], flush=True)
            done.append(
                {
                    "step": name,
                    "command": " ".join(cmd),
                    "returncode": run.returncode,
                    "seconds": round(seconds, 1),
                    "output_tail": output[-6000:],
                }
            )
            if name == "export" and run.returncode == 0:
                verification = Path(tmp) / "export" / "verification.json"
                if verification.is_file():
                    (out / "export-verification.json").write_text(verification.read_text())
    failed = [d["step"] for d in done if d["returncode"] != 0]
    report = {"gpu": gpu, "environment": environment(), "failed": failed, "steps": done}
    atomic_write_text(out / "summary.json", json.dumps(report, indent=2), overwrite=True)
    lines = [
        f"GPU acceptance on {gpu}: {len(done) - len(failed)} of {len(done)} steps passed, "
        "with `python benchmarks/gpu_acceptance.py`.",
        "",
        "| step | exit | seconds | command |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {d['step']} | {d['returncode']} | {d['seconds']} | `{d['command']}` |" for d in done
    ]
    atomic_write_text(out / "summary.md", "\n".join(lines) + "\n", overwrite=True)
    print(f"wrote {out}/summary.json and .md; failed: {', '.join(failed) or 'none'}")
    return len(failed)


if __name__ == "__main__":
    sys.exit(main())
