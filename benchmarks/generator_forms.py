"""What a small generator can learn in a short G-only run, per output form and GDL exponent.

    python benchmarks/generator_forms.py --data data/mspacman60     # 4 arms, ~15 min on 2 cores

Each arm trains the `small` preset without D and without unrolling (one-step objective) for
`--steps` iterations from the same seed and clips, changing only the generator's form (residual:
a refinement of the coarser scale; delta: a change to the last frame) and the exponent alpha of
the gradient difference loss. Scored on next frames of held-out Ms. Pac-Man episodes (emulator
seed 1000, clips as in the quality benchmark): mean PSNR and SSIM over clips of the 8-bit
prediction, next to copying the last frame. This is where the delta form's trap showed: with
alpha 1 a delta generator keeps predicting "nothing changes".
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

import numpy as np
import torch
from avg_rt.train.loop import train

from avg_rt.benchmark.common import RESULTS, environment, mean_ci95, run_script, save
from avg_rt.benchmark.quality import clips, held_out_videos
from avg_rt.checkpoint import load_generator
from avg_rt.config import PRESETS
from avg_rt.data.clips import frames_to_model, round_to_8bit
from avg_rt.data.sources import load_videos, open_source
from avg_rt.metrics import frame_metrics

ARMS = {  # label -> (residual, delta, alpha)
    "residual, alpha 1": (True, False, 1.0),
    "residual, alpha 2": (True, False, 2.0),
    "delta, alpha 1": (False, True, 1.0),
    "delta, alpha 2": (False, True, 2.0),
}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="training data (Train/ inside)")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--clips", type=int, default=200, help="held-out next frames scored")
    p.add_argument("--name", default="generator-forms")
    p.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    args = p.parse_args(argv)

    train_dir = args.data / "Train" if (args.data / "Train").is_dir() else args.data
    videos = load_videos(open_source(train_dir), 5)
    history, truth = clips(held_out_videos(10, 500, 1000), 1, 5, args.clips)
    h, y = frames_to_model(history), frames_to_model(truth[:, 0])
    copy = frame_metrics(h[:, -1], y)
    rows = [_row("copy last frame", copy)]
    for label, (residual, delta, alpha) in ARMS.items():
        small = PRESETS["small"]
        model = dataclasses.replace(small.model, residual=residual, delta=delta)
        cfg = dataclasses.replace(
            small, model=model, alpha=alpha, adversarial=False, unroll=1, steps=args.steps
        )
        with tempfile.TemporaryDirectory() as tmp:
            G, _ = load_generator(train(cfg, videos, Path(tmp) / "run", progress=False))
        with torch.no_grad():
            pred = torch.cat([G(x.flatten(1, 2)) for x in h.split(32)])
        rows.append(_row(label, frame_metrics(round_to_8bit(pred), y)))
    report = {
        "environment": environment(),
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "held_out_clips": len(h),
        "rows": rows,
    }
    lines = [
        f"Next-frame quality after {args.steps} G-only iterations of the small preset (one-step "
        f"objective), on {len(h)} held-out Ms. Pac-Man clips (210x160); mean ± 95% CI over "
        f"clips, PSNR in dB on [0, 1] 8-bit frames.",
        "",
        "| generator | PSNR | SSIM |",
        "|---|---|---|",
        *(
            f"| {r['label']} | {r['psnr']:.2f} ± {r['psnr_ci95']:.2f} | "
            f"{r['ssim']:.4f} ± {r['ssim_ci95']:.4f} |"
            for r in rows
        ),
        "",
    ]
    save(args.name, report, "\n".join(lines), args.out)


def _row(label: str, m: dict[str, torch.Tensor]) -> dict[str, float | str]:
    """Mean and 95% CI over clips of PSNR (capped at 100 dB: identical frames) and SSIM."""
    row: dict[str, float | str] = {"label": label}
    for k in ("psnr", "ssim"):
        stats = mean_ci95(np.minimum(m[k].numpy(), 100.0))
        row[k], row[f"{k}_ci95"] = stats["mean"], stats["ci95"]
    return row


if __name__ == "__main__":
    run_script(main)
