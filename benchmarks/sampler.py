"""Does on-the-fly clip sampling keep up with training? Clips/s of the sampler against the clips
a training step consumes per second.

    python benchmarks/sampler.py --data data/mspacman   # or without --data: records a small set

Training consumes 2 x batch clips per adversarial step (one batch for D, one for G).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from avg_rt.train.loop import d_step, g_step
from common import environment, median, save, timed

from avg_rt.config import PRESETS
from avg_rt.data.atari import AtariConfig, record
from avg_rt.data.clips import ClipSampler, clips_to_model
from avg_rt.data.sources import load_videos, open_source
from avg_rt.model import Discriminator, Generator


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, help="TF-layout folder (default: record 4 episodes)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seconds", type=float, default=5.0, help="sampling time per measurement")
    p.add_argument("--name", default="sampler")
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or record(AtariConfig(episodes=4, test_episodes=0), Path(tmp) / "d")
        videos = load_videos(open_source(data / "Train" if (data / "Train").is_dir() else data), 5)
    frames = sum(len(v.frames) for v in videos)
    sampler = ClipSampler(videos, 5, 32, np.random.default_rng(0))
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < args.seconds:
        sampler.sample(args.batch)
        n += args.batch
    clips_per_s = n / (time.perf_counter() - t0)
    rows = [{"what": "sampler (movement filter on)", "clips_per_s": clips_per_s}]
    print(f"sampler: {clips_per_s:.0f} clips/s from {len(videos)} videos ({frames} frames)")
    for preset in ("small", "paper"):
        cfg = dataclasses.replace(PRESETS[preset], batch=args.batch)
        G, D = Generator(cfg.model), Discriminator(cfg.model)
        opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr_g)
        opt_d = torch.optim.SGD(D.parameters(), lr=cfg.lr_d)
        batch = clips_to_model(sampler.sample(args.batch))

        def step(G=G, D=D, opt_g=opt_g, opt_d=opt_d, batch=batch, cfg=cfg) -> None:
            d_step(G, D, opt_d, *batch, cfg)
            g_step(G, D, opt_g, *batch, cfg)

        sec = median(timed(step, torch.device("cpu"), repeats=5))
        need = 2 * args.batch / sec
        rows.append(
            {
                "what": f"training, {preset} preset (adversarial, CPU)",
                "steps_per_s": 1 / sec,
                "clips_per_s_needed": need,
                "sampler_headroom": clips_per_s / need,
            }
        )
        print(
            f"{preset}: {1 / sec:.2f} steps/s needs {need:.0f} clips/s; sampler headroom "
            f"x{clips_per_s / need:.1f}"
        )
    table = ["| what | steps/s | clips/s | sampler / need |", "|---|---|---|---|"]
    table.append(f"| {rows[0]['what']} | | {clips_per_s:.0f} | |")
    for r in rows[1:]:
        table.append(
            f"| {r['what']} | {r['steps_per_s']:.2f} | {r['clips_per_s_needed']:.0f} "
            f"needed | x{r['sampler_headroom']:.1f} |"
        )
    header = (
        f"Clip sampling (32x32 crops of 5 frames, one process) against training at batch "
        f"{args.batch}, {len(videos)} Ms. Pac-Man videos.\n\n"
    )
    save(
        args.name,
        {
            "environment": environment(),
            "args": {k: str(v) for k, v in vars(args).items()},
            "rows": rows,
        },
        header + "\n".join(table),
    )


if __name__ == "__main__":
    main()
