"""What the episodes of a recorded game share at their start (Ms. Pac-Man's intro).

    python benchmarks/intro.py --data data/mspacman60/Train   # seconds

Reads the first `--frames` frames of every episode and reports: how many frames every episode
shares exactly (the intro); within it, the shortest period after which a frame repeats
exactly; and per frame, how many pixels change from the frame before and how many of those
take a value that none of the 4 frames before had (what a generator that picks among its
history frames, the select form, cannot copy). The quality benchmark's steps 16, 32 and 48
fall below copying the last frame on clips of this intro (README, "Prediction quality").
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from avg_rt.benchmark.common import RESULTS, environment, save
from avg_rt.data.sources import load_videos, open_source

HISTORY = 4  # the generator's history_len


def intro_stats(episodes: list[np.ndarray]) -> dict[str, object]:
    """`episodes`: (T, H, W, C) arrays of one size. The shared prefix and, per frame t of it
    from 1 on, pixels changed from t - 1, pixels whose value is in none of the HISTORY frames
    before t, and the shortest exact period p (frame t == frame t - p; None if none)."""
    first = episodes[0]
    length = min(len(e) for e in episodes)
    shared = next(
        (t for t in range(length) if any(not np.array_equal(e[t], first[t]) for e in episodes)),
        length,
    )
    rows = []
    for t in range(1, shared):
        changed = (first[t] != first[t - 1]).any(-1)
        history = first[max(0, t - HISTORY) : t]
        in_history = (history == first[t]).all(-1).any(0)
        period = next((p for p in range(1, t + 1) if np.array_equal(first[t], first[t - p])), None)
        rows.append(
            {
                "frame": t,
                "changed": int(changed.sum()),
                "new": int((changed & ~in_history).sum()),
                "period": period,
            }
        )
    return {"episodes": len(episodes), "shared_frames": shared, "frames": rows}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="folder of episodes")
    p.add_argument("--frames", type=int, default=120, help="frames read per episode")
    p.add_argument("--name", default="intro")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    videos = load_videos(open_source(args.data), why="the intro statistics")
    stats = intro_stats([v.frames[: args.frames] for v in videos])
    rows = stats["frames"]
    assert isinstance(rows, list)
    periodic = [r for r in rows if r["period"] is not None]
    changing = [r for r in rows if r["changed"]]
    full = [r["new"] for r in changing if r["frame"] >= HISTORY]  # with a whole history
    lines = [
        f"The first {stats['shared_frames']} frames are identical in all {stats['episodes']} "
        f"episodes of `{args.data}` (read: the first {args.frames} of each).",
        "",
        f"- Frames of it that repeat an earlier one exactly: {len(periodic)}"
        + (
            f", from frame {periodic[0]['frame']} on, periods "
            f"{sorted({r['period'] for r in periodic})}"
            if periodic
            else ""
        ),
        f"- Frames that change something: {len(changing)}; pixels changed per frame "
        f"{min((r['changed'] for r in changing), default=0)} to "
        f"{max((r['changed'] for r in changing), default=0)}, of which in none of the "
        f"{HISTORY} frames before (from frame {HISTORY} on): {min(full, default=0)} to "
        f"{max(full, default=0)}",
        "",
        "| frame | pixels changed | in none of the 4 before | repeats frame t - p, p = |",
        "|---|---|---|---|",
        *(f"| {r['frame']} | {r['changed']} | {r['new']} | {r['period'] or '-'} |" for r in rows),
    ]
    save(args.name, {"environment": environment(), **stats}, "\n".join(lines), args.out)
    print("\n".join(lines[:5]))


if __name__ == "__main__":
    main()
