"""Backend parity on real frames: every backend's rollout against torch on CPU, step by step.

    python benchmarks/parity.py   # the shipped small model, 3 Ms. Pac-Man starts, 64 steps

Each candidate is compared with eager torch FP32 on CPU (`avg_rt.export.verify.verify`) in two
ways: teacher-forced (each step fed torch's own window, so a step's error is the backend's
alone) and free-running (each backend feeds back its own output, as a rollout does). For scale,
one candidate is torch itself with its oneDNN convolutions switched off: two correct float32
implementations in one library, whose free-running difference shows how far the model's
recursion amplifies rounding, independent of any export. With a GPU, every CUDA backend of the
speed benchmark is compared too.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from avg_rt.export.verify import verify

from avg_rt.benchmark.common import RESULTS, environment, run_script, save
from avg_rt.benchmark.speed import DEVICE_CHOICES, all_runners, check_devices
from avg_rt.data.atari import AtariConfig, play
from avg_rt.data.clips import frames_to_model
from avg_rt.errors import DataError
from avg_rt.metrics import finite_or_none
from avg_rt.runners import Runner
from avg_rt.runners.pyt import TorchRunner
from avg_rt.visual import plot_per_step

SHIPPED = Path(__file__).resolve().parents[1] / "models" / "small" / "checkpoint.pt"
REPORT_STEPS = (1, 8, 16, 32, 64)
KINDS = ("forced", "rollout")  # teacher-forced, free-running: the verification's check kinds


class TorchWithoutOneDNN(TorchRunner):
    """Eager torch on CPU with oneDNN (mkldnn) convolutions off: torch's other float32 kernels."""

    def __init__(self, checkpoint: Path):
        super().__init__(checkpoint)
        self.name = "torch-cpu-no-onednn"

    def predict(self, history: torch.Tensor) -> torch.Tensor:
        before = torch.backends.mkldnn.enabled
        torch.backends.mkldnn.enabled = False  # (its flags() context also sets TF32, warning)
        try:
            return super().predict(history)
        finally:
            torch.backends.mkldnn.enabled = before


def label(runner: Runner) -> str:
    """The runner's name, "+graph" added for one that replays its own CUDA graph."""
    return runner.name + (" +graph" if getattr(runner, "cuda_graph", False) else "")


def candidates(
    checkpoint: Path, onnx_dir: Path, h: int, w: int, devices: str = "all"
) -> Iterator[Runner]:
    """torch without oneDNN (unless `devices` is "cuda"), then the speed benchmark's runners on
    `devices` except the reference itself, each once: the speed benchmark also runs torch
    runners a second time with the rollout capturing CUDA graphs, which `verify` (step by
    step) does not use; an onnxruntime runner with its own CUDA graph is another path and
    stays."""
    seen = {"torch-cpu"}
    if devices != "cuda":
        yield TorchWithoutOneDNN(checkpoint)
    for runner, _ in all_runners(checkpoint, onnx_dir, 1, h, w, devices):
        key = label(runner)
        if key not in seen:
            seen.add(key)
            yield runner


def histories(episodes: int, start: int, seed: int) -> list[torch.Tensor]:
    """4 real frames from each of `episodes` emulator episodes, from frame `start`."""
    out = []
    for episode in range(episodes):
        cfg = AtariConfig(max_frames=start + 4, seed=seed)
        frames = np.stack(list(play(cfg, episode)))[start : start + 4]
        if len(frames) < 4:
            raise DataError("--start", f"episode {episode} ended before frame {start + 4}")
        out.append(frames_to_model(frames[None], "cpu"))  # (1, 4, 3, H, W)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, default=SHIPPED, help="(default: %(default)s)")
    p.add_argument("--episodes", type=int, default=3, help="emulator episodes, one start each")
    p.add_argument("--start", type=int, default=72, help="first history frame of each episode")
    p.add_argument("--seed", type=int, default=1000, help="emulator seed (held-out games)")
    p.add_argument("--steps", type=int, default=64)
    p.add_argument(
        "--device", choices=DEVICE_CHOICES, default="all", help="candidates on (the reference: CPU)"
    )
    p.add_argument("--name", default="parity")
    p.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    args = p.parse_args(argv)
    check_devices(args.device)

    hists = histories(args.episodes, args.start, args.seed)
    _, _, _, h, w = hists[0].shape
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp, TorchRunner(args.checkpoint) as reference:
        for candidate in candidates(args.checkpoint, Path(tmp), h, w, args.device):
            precision = (
                "int8"
                if "int8" in candidate.name
                else "fp16"
                if any(p in candidate.name for p in ("fp16", "bf16"))
                else "fp32"
            )
            with candidate:
                reports = [
                    verify(
                        candidate,
                        reference,
                        [],
                        (1, 3 * candidate.history_len, h, w),
                        args.steps,
                        precision,
                        candidate.name,
                        history=hist,
                    )
                    for hist in hists
                ]
            # Over the starts, per step: the largest max |diff|, the mean of the mean |diff|,
            # the lowest PSNR.
            per_kind: dict[str, dict[str, list[float]]] = {}
            for kind in KINDS:
                steps = [[c for c in r.checks if c.kind == kind][0].per_step for r in reports]
                per_kind[kind] = {
                    "max_abs": [max(s[t]["max_abs"] for s in steps) for t in range(args.steps)],
                    "mean_abs": [
                        float(np.mean([s[t]["mean_abs"] for s in steps])) for t in range(args.steps)
                    ],
                    "psnr": [min(s[t]["psnr"] for s in steps) for t in range(args.steps)],
                }
            rows.append({"runner": label(candidate), "precision": precision, **per_kind})
            forced, free = per_kind["forced"], per_kind["rollout"]
            print(
                f"{label(candidate):24s} teacher-forced worst {max(forced['max_abs']):.1e}, "
                f"free-running step {args.steps}: max {free['max_abs'][-1]:.1e}, "
                f"mean {free['mean_abs'][-1]:.1e}, {free['psnr'][-1]:.1f} dB"
            )
            write(args, len(hists), h, w, rows, complete=False)  # a run cut short keeps it
    write(args, len(hists), h, w, rows, complete=True)


def write(
    args: argparse.Namespace,
    starts: int,
    h: int,
    w: int,
    rows: list[dict[str, Any]],
    complete: bool,
) -> None:
    """The table, plot and JSON of the candidates compared so far (`complete`: all of them)."""
    shown = [s for s in REPORT_STEPS if s <= args.steps]
    table = [
        "| runner | teacher-forced worst max abs | "
        + " | ".join(f"free max abs, step {s}" for s in shown)
        + f" | free mean abs, step {args.steps} | free PSNR, step {args.steps} (dB) |",
        "|---|---|" + "---|" * len(shown) + "---|---|",
    ]
    for r in rows:
        free = r["rollout"]
        table.append(
            f"| {r['runner']} | {max(r['forced']['max_abs']):.1e} | "
            + " | ".join(f"{free['max_abs'][s - 1]:.1e}" for s in shown)
            + f" | {free['mean_abs'][-1]:.1e} | {free['psnr'][-1]:.1f} |"
        )
    header = (
        f"Parity against eager torch FP32 on CPU: the shipped model's {args.steps}-step rollouts "
        f"from {starts} Ms. Pac-Man starts at {h}x{w} (emulator seed {args.seed}, frames "
        f"{args.start}..{args.start + 3}); per step, the worst over the starts.\n\n"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    plot_per_step(
        args.out / f"{args.name}.png",
        {
            "free-running PSNR vs torch-cpu (dB)": {
                r["runner"]: finite_or_none(r["rollout"]["psnr"]) for r in rows
            },
            "teacher-forced PSNR vs torch-cpu (dB)": {
                r["runner"]: finite_or_none(r["forced"]["psnr"]) for r in rows
            },
        },
        title=f"Backend parity, {h}x{w}, worst of {starts} starts",
        overwrite=True,
    )
    save(
        args.name,
        {
            "environment": environment(),
            "args": vars(args) | {"checkpoint": str(args.checkpoint), "out": str(args.out)},
            "rows": [  # identical frames (infinite PSNR) as null
                r | {k: r[k] | {"psnr": finite_or_none(r[k]["psnr"])} for k in KINDS} for r in rows
            ],
        },
        header + "\n".join(table),
        args.out,
        complete,
    )


if __name__ == "__main__":
    run_script(main)
