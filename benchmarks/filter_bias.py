"""What the movement filter teaches about still inputs: of the training clips whose history is
still, how many have a target that moved, under each filter and in the data itself.

    python benchmarks/filter_bias.py --data data/mspacman60/Train   # a minute

Draws `--clips` training clips (5 frames, 32x32 crops) with the training loop's own sampler
(`avg_rt.data.clips.training_sampler`) three ways: the TF project's filter over all 5 frames
(`--movement-on clip`, the default), the filter over the 4 inputs only (`--movement-on
history`), and no filter (every clip unfiltered: the data's own rates). A history is still
where its 4 frames are identical in the crop; its target moved where it differs from the last
input in at least one pixel. A generator trained on L2 learns the mean of what followed an
input in its training clips, so the share of still histories followed by movement there is
the chance of movement it learns to hedge for.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path

import numpy as np
from scipy import stats

from avg_rt.benchmark.common import RESULTS, environment, run_script, save
from avg_rt.config import TrainConfig
from avg_rt.data.clips import training_sampler
from avg_rt.data.sources import load_videos, open_source

WAYS = {
    "TF filter, all 5 frames (clip)": {"movement_on": "clip"},
    "filter on the 4 inputs (history)": {"movement_on": "history"},
    "no filter (the data)": {"unfiltered_prob": 1.0},
}


def share(k: int, n: int) -> dict[str, float]:
    """k of n as a share with its 95% (Wilson) interval."""
    if n == 0:
        return {"share": math.nan, "lo": math.nan, "hi": math.nan, "k": k, "n": n}
    ci = stats.binomtest(k, n).proportion_ci(method="wilson")
    return {"share": k / n, "lo": float(ci.low), "hi": float(ci.high), "k": k, "n": n}


def measure(videos: list, clips: int, seed: int, **changes: object) -> dict[str, dict]:
    """Still-history and moved-target counts over `clips` clips drawn with `changes` applied
    to the default training config."""
    cfg = dataclasses.replace(TrainConfig(), **changes)  # type: ignore[arg-type]
    sampler = training_sampler(videos, cfg, 5, np.random.default_rng(seed))
    drawn = sampler.sample(clips)  # (n, 5, C, h, w)
    still = (drawn[:, 1:4] == drawn[:, :1]).all(axis=(1, 2, 3, 4))
    moved = (drawn[:, 4] != drawn[:, 3]).any(axis=(1, 2, 3))
    return {
        "still_history": share(int(still.sum()), clips),
        "moved_after_still": share(int((still & moved).sum()), int(still.sum())),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="the training videos")
    p.add_argument("--clips", type=int, default=20000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default="filter-bias")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    videos = load_videos(open_source(args.data), 5, why="training clips")
    results = {way: measure(videos, args.clips, args.seed, **c) for way, c in WAYS.items()}
    lines = [
        f"Of {args.clips} training clips (5 frames, 32x32 crops) of {args.data}, drawn by the "
        "training sampler: those whose 4 inputs are still, and of those, the ones whose "
        "target moved (95% Wilson intervals).",
        "",
        "| sampler | still inputs | of those, target moved |",
        "|---|---|---|",
    ]
    for way, r in results.items():
        s, m = r["still_history"], r["moved_after_still"]
        lines.append(
            f"| {way} | {s['k']} ({100 * s['share']:.1f}%) | {m['k']} of {m['n']}: "
            f"{100 * m['share']:.1f}% ({100 * m['lo']:.1f} to {100 * m['hi']:.1f}) |"
        )
    payload = {"environment": environment(), "clips": args.clips, "results": results}
    print("\n".join(lines))
    print(save(args.name, payload, "\n".join(lines), args.out))


if __name__ == "__main__":
    run_script(main)
