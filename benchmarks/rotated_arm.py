"""Issue 14's A/A control: a recorded training run again, sampling from a rotating list.

    python benchmarks/rotated_arm.py --reference runs/rec-clip-s0 --data data/mspacman60 \\
        --out runs/rot-rec-clip-s0

Trains the config and seed of the finished run `--reference` (its `config.json`) on the same
recorded episodes, but hands the clip sampler the episode list rotated by one every `--shift`
reads, as the live store rotates while the emulator loops over the same episodes. The clip
distribution is the same as the reference's; only the realised sequence of clips differs,
and nothing live runs. With `--shift 0` (no rotation) and the reference's thread count
(`OMP_NUM_THREADS=1` for the README's runs; another count changes float sums) it repeats the
reference run exactly: checked at iteration 50 against `runs/rec-leak-s0`, and over all
2,000 iterations (every logged value, the final weights) against `runs/rec-clip-s0`.
`--shift 0 --reverse`: another fixed order, the control for whether a fixed order itself
matters.
Score it beside the reference and the live run with `avg-rt bench quality --full --steps 16`
and compare with `python benchmarks/live.py compare ... --arms rotated recorded` (README,
"Live and recorded").
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from avg_rt.train.loop import train

from avg_rt.benchmark.common import run_script
from avg_rt.config import train_config_from_dict
from avg_rt.data.sources import Video
from avg_rt.training import open_training_data


class Rotating:
    """The list `videos`, rotated by one more place every `shift` calls (0: never)."""

    def __init__(self, videos: Sequence[Video], shift: int):
        self.videos, self.shift, self.calls = list(videos), shift, 0

    def __call__(self) -> list[Video]:
        self.calls += 1
        k = (self.calls // self.shift) % len(self.videos) if self.shift else 0
        return self.videos[k:] + self.videos[:k]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reference", type=Path, required=True, help="finished run folder")
    p.add_argument("--data", type=Path, required=True, help="the recorded episodes")
    p.add_argument("--out", type=Path, required=True, help="new run folder")
    p.add_argument("--shift", type=int, default=50, help="list reads per rotation (0: none)")
    p.add_argument(
        "--reverse", action="store_true", help="the list in reverse order (another fixed order)"
    )
    args = p.parse_args(argv)
    cfg = train_config_from_dict(json.loads((args.reference / "config.json").read_text()))
    with open_training_data(args.data, cfg) as d:
        rotating = Rotating(d.train[::-1] if args.reverse else d.train, args.shift)
        train(cfg, rotating, args.out, d.test, progress=False)
    print(f"{args.out}: {rotating.calls} list reads, seed {cfg.seed}")


if __name__ == "__main__":
    run_script(main)
