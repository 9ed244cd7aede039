"""Overhead of the rollout loop: a 64-step rollout against 64 single forward passes.

    python benchmarks/rollout_overhead.py   # the shipped small model on every backend here

The backends are the speed benchmark's: on CPU torch and onnxruntime FP32/FP16; with a GPU also
torch with and without CUDA graphs, autocast and torch.compile, onnxruntime's CUDA provider and
TensorRT engines where installed.

Both sides use the same runner on the same input size; single passes reuse one input (no window
bookkeeping), so the ratio is the cost of the loop itself (window shift, clamp, copies) plus, on
CUDA, what graph replay saves. Target: under 1.05 on every backend.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import torch
from avg_rt.export.verify import random_history

from avg_rt.benchmark.common import RESULTS, environment, median, run_script, save, timed
from avg_rt.benchmark.speed import DEVICE_CHOICES, all_runners, check_devices, ran_as
from avg_rt.predict import rollout
from avg_rt.runners import Runner

SHIPPED = Path(__file__).resolve().parents[1] / "models" / "small" / "checkpoint.pt"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, default=SHIPPED, help="(default: %(default)s)")
    p.add_argument("--height", type=int, default=210)
    p.add_argument("--width", type=int, default=160)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", choices=DEVICE_CHOICES, default="all", help="backends on")
    p.add_argument("--name", default="rollout-overhead")
    p.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    args = p.parse_args(argv)
    check_devices(args.device)

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        shape = (args.batch, args.height, args.width)
        for runner, how in all_runners(args.checkpoint, Path(tmp), *shape, args.device):
            name = runner.name + (" +graph" if how.get("cuda_graph") else "")
            with runner:
                hist = random_history((args.batch, 4, 3, args.height, args.width), 0)
                hist = hist.to(runner.device)
                x = hist.reshape(args.batch, 12, args.height, args.width).contiguous()

                def singles(runner: Runner = runner, x: torch.Tensor = x) -> None:
                    for _ in range(args.steps):
                        runner.predict(x)

                ran: dict[str, str] = {}

                def loop(
                    runner: Runner = runner, hist: torch.Tensor = hist, how=how, ran=ran
                ) -> None:
                    rollout(runner, hist, args.steps, execution=ran, **how)

                # Interleave the two so that drift in machine load hits both alike.
                t_single, t_loop = [], []
                for _ in range(args.repeats):
                    t_single += timed(singles, runner.device, 1, warmup=1)
                    t_loop += timed(loop, runner.device, 1, warmup=1)
                # The median says what a run typically costs; the minimum, which machine noise
                # can only raise, is the steadier estimate of the loop's own cost.
                ratio = median(t_loop) / median(t_single)
                rows.append(
                    {
                        "runner": name,
                        "single_ms": 1e3 * median(t_single) / args.steps,
                        "rollout_ms_per_step": 1e3 * median(t_loop) / args.steps,
                        "ratio": ratio,
                        "ratio_of_minima": min(t_loop) / min(t_single),
                        "steps_ran": ran_as(ran),
                    }
                )
                print(
                    f"{name:22s} {rows[-1]['single_ms']:8.2f} ms/step single, "
                    f"{rows[-1]['rollout_ms_per_step']:8.2f} ms/step in rollout, ratio {ratio:.3f} "
                    f"(of minima {rows[-1]['ratio_of_minima']:.3f})"
                )
            write(args, rows, complete=False)  # a run cut short keeps what it measured
    write(args, rows, complete=True)


def write(args: argparse.Namespace, rows: list[dict[str, Any]], complete: bool) -> None:
    """The report of the runners measured so far (`complete`: all of them)."""
    table = [
        "| runner | single pass (ms) | rollout step (ms) | rollout / 64 singles | same, minima "
        "| steps ran |",
        "|---|---|---|---|---|---|",
    ]
    table += [
        f"| {r['runner']} | {r['single_ms']:.2f} | {r['rollout_ms_per_step']:.2f} | "
        f"{r['ratio']:.3f} | {r['ratio_of_minima']:.3f} | {r['steps_ran']} |"
        for r in rows
    ]
    header = (
        f"Rollout loop overhead, {args.steps} steps at {args.height}x{args.width}, batch "
        f"{args.batch}: medians of {args.repeats} interleaved runs, and their minima.\n\n"
    )
    save(
        args.name,
        {
            "environment": environment(),
            "args": vars(args) | {"checkpoint": str(args.checkpoint), "out": str(args.out)},
            "rows": rows,
        },
        header + "\n".join(table),
        args.out,
        complete,
    )


if __name__ == "__main__":
    run_script(main)
