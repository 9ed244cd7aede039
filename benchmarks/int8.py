"""INT8 choices by measurement: calibration method, layers kept in floating point, and form.

    python benchmarks/int8.py            # the shipped small model, onnxruntime CPU

Every variant of `avg_rt.export.to_int8.quantize` is calibrated on 32 windows of one
Ms. Pac-Man game (emulator seed 2000) and judged on 8 clips of other games (seed 1000, the
quality benchmark's): PSNR of its output against the FP32 graph's at each of 16 teacher-forced
steps (both fed the FP32 trajectory, as 8-bit frames; worst and mean step), and its step time at
210x160, batch 1 and 8, as a ratio to FP32 onnxruntime timed in the same run, interleaved.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from avg_rt.export.to_int8 import METHODS, calibration_windows, quantize
from avg_rt.export.to_onnx import save_onnx, to_onnx

from avg_rt.benchmark.common import RESULTS, environment, run_script, save
from avg_rt.benchmark.quality import clips, held_out_videos
from avg_rt.checkpoint import load_generator
from avg_rt.config import PRESETS
from avg_rt.data.atari import AtariConfig, play
from avg_rt.data.clips import frames_to_model, round_to_8bit
from avg_rt.data.sources import Video
from avg_rt.metrics import psnr, to_unit
from avg_rt.model import Generator
from avg_rt.runners.onnxrt import OnnxRuntimeRunner

SHIPPED = Path(__file__).resolve().parents[1] / "models" / "small" / "checkpoint.pt"
VARIANTS = [("cpu", m, "last") for m in METHODS] + [
    ("cpu", "minmax", "ends"),
    ("cpu", "minmax", "none"),
    ("tensorrt", "minmax", "last"),
]


def _session(path: Path, threads: int) -> Any:
    """The onnxruntime session the project's CPU runner makes for `path` (same options)."""
    return OnnxRuntimeRunner(path, threads=threads).__enter__().session


def forced_psnr(reference: Any, candidate: Any, start: np.ndarray, steps: int) -> list[float]:
    """Per-step PSNR (dB, mean over clips) of `candidate` against `reference`, both fed the
    reference's own trajectory as 8-bit frames."""
    window, out = start, []
    for _ in range(steps):
        a = torch.from_numpy(reference.run(None, {"history": window})[0])
        b = torch.from_numpy(candidate.run(None, {"history": window})[0])
        out.append(psnr(to_unit(b), to_unit(a)).mean().item())
        window = np.concatenate([window[:, 3:], round_to_8bit(a).numpy()], axis=1)
    return out


def step_times(sessions: dict[str, Any], batch: int, repeats: int) -> dict[str, float]:
    """Median seconds per call of each session, the sessions interleaved call by call."""
    x = np.random.default_rng(0).uniform(-1, 1, (batch, 12, 210, 160)).astype(np.float32)
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for s in sessions.values():
        s.run(None, {"history": x})
    for _ in range(repeats):
        for k, s in sessions.items():
            t0 = time.perf_counter()
            s.run(None, {"history": x})
            times[k].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) for k, v in times.items()}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, default=SHIPPED)
    p.add_argument(
        "--preset",
        help="time an untrained generator of this preset instead (speed; its agreement with "
        "FP32 is that of random weights)",
    )
    p.add_argument("--default-only", action="store_true", help="only the default variant")
    p.add_argument("--threads", type=int, default=0, help="onnxruntime threads (0: all cores)")
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--name", default="int8-choices")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    command = " ".join(["python benchmarks/int8.py", *(sys.argv[1:] if argv is None else argv)])

    if args.preset:
        torch.manual_seed(0)
        gen = Generator(PRESETS[args.preset].model).eval()
    else:
        gen, _ = load_generator(args.checkpoint)
    variants = [("cpu", "minmax", "none")] if args.default_only else VARIANTS
    frames = np.stack(list(play(AtariConfig(max_frames=400, seed=2000), 0)))
    windows = calibration_windows([Video("seed 2000", frames)], gen.cfg.history_len, 32)
    history, _ = clips(held_out_videos(2, 300, 1000), args.steps, 10, 8)
    start = frames_to_model(history, "cpu").flatten(1, 2).numpy()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = save_onnx(to_onnx(gen), Path(tmp) / "generator.onnx")
        sessions = {"fp32": _session(fp32, args.threads)}
        for flavour, method, keep in variants:
            label = f"{flavour} {method} keep-float={keep}"
            path = Path(tmp) / f"{flavour}-{method}-{keep}.onnx"
            quantize(fp32, path, windows, flavour, method, keep)
            sessions[label] = _session(path, args.threads)
            per_step = forced_psnr(sessions["fp32"], sessions[label], start, args.steps)
            rows.append(
                {"variant": label, "worst_db": min(per_step), "mean_db": float(np.mean(per_step))}
            )
            print(rows[-1], flush=True)
        for batch in (1, 8):
            t = step_times(sessions, batch, args.repeats)
            for row in rows:
                row[f"speedup_b{batch}"] = t["fp32"] / t[row["variant"]]
                row[f"step_ms_b{batch}"] = 1e3 * t[row["variant"]]
                row[f"fp32_step_ms_b{batch}"] = 1e3 * t["fp32"]
            print(f"batch {batch}: fp32 {1e3 * t['fp32']:.1f} ms", flush=True)
    table = [
        "| variant | worst step PSNR vs FP32 (dB) | mean (dB) | x FP32, batch 1 "
        "| x FP32, batch 8 |",
        "|---|---|---|---|---|",
    ] + [
        f"| {r['variant']} | {r['worst_db']:.1f} | {r['mean_db']:.1f} | {r['speedup_b1']:.2f} | "
        f"{r['speedup_b8']:.2f} |"
        for r in rows
    ]
    model = f"an untrained `{args.preset}` generator" if args.preset else f"`{args.checkpoint}`"
    head = (
        f"INT8 variants of {model} on onnxruntime CPU at 210x160: "
        f"{args.steps} teacher-forced steps on 8 held-out clips, speed against FP32 onnxruntime "
        f"in the same run, with `{command}`.\n\n"
    )
    report = {"environment": environment(), "args": {k: str(v) for k, v in vars(args).items()}}
    save(args.name, report | {"rows": rows}, head + "\n".join(table), args.out)


if __name__ == "__main__":
    run_script(main)
