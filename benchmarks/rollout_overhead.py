"""Overhead of the rollout loop: a 64-step rollout against 64 single forward passes.

    python benchmarks/rollout_overhead.py --checkpoint models/small/checkpoint.pt

Both sides use the same runner on the same input size; single passes reuse one input (no window
bookkeeping), so the ratio is the cost of the loop itself (window shift, clamp, copies) plus, on
CUDA, what graph replay saves. Target: under 1.05 on every backend.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from avg_rt.export.to_onnx import save_onnx, to_onnx
from avg_rt.export.verify import random_history

from avg_rt.benchmark.common import environment, median, save, timed
from avg_rt.checkpoint import load_generator
from avg_rt.predict import rollout
from avg_rt.runners import Runner
from avg_rt.runners.onnxrt import OnnxRuntimeRunner
from avg_rt.runners.pyt import TorchRunner


def runners(checkpoint: Path, onnx_dir: Path) -> list[Runner]:
    """Every backend available on this machine."""
    gen, _ = load_generator(checkpoint)
    fp32 = save_onnx(to_onnx(gen), onnx_dir / "generator.onnx")
    fp16 = save_onnx(to_onnx(gen, fp16=True), onnx_dir / "generator.fp16.onnx")
    found: list[Runner] = [
        TorchRunner(checkpoint),
        OnnxRuntimeRunner(fp32),
        OnnxRuntimeRunner(fp16),
    ]
    if torch.cuda.is_available():
        found.append(TorchRunner(checkpoint, "cuda"))
        import onnxruntime

        if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            found += [OnnxRuntimeRunner(fp32, "cuda"), OnnxRuntimeRunner(fp16, "cuda")]
    return found


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--height", type=int, default=210)
    p.add_argument("--width", type=int, default=160)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--name", default="rollout-overhead")
    args = p.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for runner in runners(args.checkpoint, Path(tmp)):
            with runner:
                hist = random_history((args.batch, 4, 3, args.height, args.width), 0)
                hist = hist.to(runner.device)
                x = hist.reshape(args.batch, 12, args.height, args.width).contiguous()

                def singles(runner: Runner = runner, x: torch.Tensor = x) -> None:
                    for _ in range(args.steps):
                        runner.predict(x)

                def loop(runner: Runner = runner, hist: torch.Tensor = hist) -> None:
                    rollout(runner, hist, args.steps)

                # Interleave the two so that drift in machine load hits both alike.
                t_single, t_loop = [], []
                for _ in range(args.repeats):
                    t_single += timed(singles, runner.device, 1, warmup=1)
                    t_loop += timed(loop, runner.device, 1, warmup=1)
                ratio = median(t_loop) / median(t_single)
                rows.append(
                    {
                        "runner": runner.name,
                        "single_ms": 1e3 * median(t_single) / args.steps,
                        "rollout_ms_per_step": 1e3 * median(t_loop) / args.steps,
                        "ratio": ratio,
                    }
                )
                print(
                    f"{runner.name:22s} {rows[-1]['single_ms']:8.2f} ms/step single, "
                    f"{rows[-1]['rollout_ms_per_step']:8.2f} ms/step in rollout, ratio {ratio:.3f}"
                )
    table = [
        "| runner | single pass (ms) | rollout step (ms) | rollout / 64 singles |",
        "|---|---|---|---|",
    ]
    table += [
        f"| {r['runner']} | {r['single_ms']:.2f} | {r['rollout_ms_per_step']:.2f} | "
        f"{r['ratio']:.3f} |"
        for r in rows
    ]
    header = (
        f"Rollout loop overhead, {args.steps} steps at {args.height}x{args.width}, batch "
        f"{args.batch} (median of {args.repeats}).\n\n"
    )
    save(
        args.name,
        {
            "environment": environment(),
            "args": vars(args) | {"checkpoint": str(args.checkpoint)},
            "rows": rows,
        },
        header + "\n".join(table),
    )


if __name__ == "__main__":
    main()
