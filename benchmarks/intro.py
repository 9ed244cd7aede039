"""What the episodes of a recorded game share at their start (Ms. Pac-Man's intro).

    python benchmarks/intro.py --data data/mspacman60/Train   # seconds
    python benchmarks/intro.py --data data/mspacman60/Train \
        --model adversarial=models/small/checkpoint.pt   # + minutes per model

Reads the first `--frames` frames of every episode and reports: how many frames every episode
shares exactly (the intro); within it, the shortest period after which a frame repeats
exactly; and per frame, how many pixels change from the frame before and how many of those
take a value that none of the 4 frames before had (what a generator that picks among its
history frames, the select form, cannot copy). The quality benchmark's steps 16, 32 and 48
fall below copying the last frame on clips of this intro (README, "Prediction quality").

With `--model LABEL=PATH` (repeatable): on the clips of the full quality benchmark (`avg-rt
bench quality --full`: the same held-out episodes and clips) where copying the last frame is
exact at step 16 (waits before play: in the intro, or after a lost life), each distinct clip
once, each model's rollout against the truth per step: the pixels it gets wrong (median over
the clips), how many of them had their true value in one of the 4 true frames before (a pick
among the history would be right), and how many clips are exact; which clips lie inside the
intro. Copying's row is the pixels that change from the last input. What a model must get
right for the benchmark's steps 16, 32 and 48.
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


def _in_intro(clip: np.ndarray, intro: np.ndarray) -> bool:
    """Whether the frames of `clip` are consecutive frames of `intro`."""
    n = len(clip)
    return any(
        np.array_equal(intro[o : o + n], clip)
        for o in range(len(intro) - n + 1)
        if np.array_equal(intro[o], clip[0])
    )


def errors_on_repeats(
    history: np.ndarray,
    truth: np.ndarray,
    predictions: dict[str, np.ndarray],
    steps: int,
    intro: np.ndarray | None = None,
) -> dict[str, object]:
    """On the clips whose true frame at step `steps` equals their last input frame (copying is
    exact there), each distinct clip once (identical clips give identical rollouts): per
    model and step 1..`steps`, the median over those clips of the wrong pixels and of those
    among them whose true value one of the HISTORY true frames before had; their totals; and
    the number of exact frames. `history` (N, HISTORY, H, W, C), `truth` and each prediction
    (N, >= steps, H, W, C); `intro` (T, H, W, C): the frames every episode starts with, to
    tell which clips lie inside it.

    Returns "clips" (indices of the chosen clips), "distinct" (the first index of each
    distinct one), "copies" (how many chosen clips equal it), "in_intro" and "models"."""
    last = history[:, -1]
    chosen = np.flatnonzero((truth[:, steps - 1] == last).all(axis=(1, 2, 3)))
    frames = np.concatenate([history[chosen], truth[chosen, :steps]], axis=1)
    keep: list[int] = []  # positions in `chosen` of the first of each group of equal clips
    copies: list[int] = []
    for i in range(len(chosen)):
        same = next((g for g, j in enumerate(keep) if np.array_equal(frames[j], frames[i])), None)
        if same is None:
            keep.append(i)
            copies.append(1)
        else:
            copies[same] += 1
    frames = frames[keep]
    distinct = chosen[keep]
    out: dict[str, object] = {
        "clips": chosen.tolist(),
        "distinct": distinct.tolist(),
        "copies": copies,
        "in_intro": [bool(intro is not None and _in_intro(f, intro)) for f in frames],
    }
    copying = np.repeat(last[:, None], steps, axis=1)
    models: dict[str, list[dict[str, float]]] = {}
    for label, pred in {"copy last frame": copying, **predictions}.items():
        rows = []
        for k in range(steps):
            target = frames[:, HISTORY + k]
            before = frames[:, k : HISTORY + k]  # the true frames a pick could copy
            wrong = (pred[distinct, k] != target).any(-1)
            pickable = wrong & (before == target[:, None]).all(-1).any(1)
            n_wrong, n_pickable = wrong.sum(axis=(1, 2)), pickable.sum(axis=(1, 2))
            rows.append(
                {
                    "step": k + 1,
                    "wrong": float(np.median(n_wrong)) if len(distinct) else 0.0,
                    "in_history": float(np.median(n_pickable)) if len(distinct) else 0.0,
                    "wrong_total": int(n_wrong.sum()),
                    "in_history_total": int(n_pickable.sum()),
                    "exact": int((n_wrong == 0).sum()),
                }
            )
        models[label] = rows
    out["models"] = models
    return out


def model_rollouts(
    models: dict[str, Path], steps: int, seed: int = 1000
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """The full quality benchmark's clips (history, truth) and each model's `steps`-step
    rollout of all of them, run as the benchmark runs it (`benchmark.quality.rollouts`)."""
    from avg_rt.benchmark.quality import FULL, clips, held_out_videos, rollouts

    videos = held_out_videos(FULL["episodes"], FULL["episode_frames"], seed)
    history, truth = clips(videos, FULL["steps"], FULL["stride"], FULL["max_clips"])
    predictions = {
        label: rollouts(path, history, steps, "cpu", 16) for label, path in models.items()
    }
    return history, truth, predictions


def repeats_table(result: dict[str, object], steps: int) -> list[str]:
    models = result["models"]
    copies, in_intro = result["copies"], result["in_intro"]
    assert isinstance(models, dict) and isinstance(copies, list) and isinstance(in_intro, list)
    outside = sum(c for c, i in zip(copies, in_intro, strict=True) if not i)
    lines = [
        f"On the {sum(copies)} clips of the full quality benchmark where copying the last frame "
        f"is exact at step {steps} ({len(copies)} distinct, counted once each; inside the "
        f"frames every episode starts with: {sum(copies) - outside}, elsewhere: {outside}): "
        "per step, the wrong pixels of each model's rollout (median over "
        f"the distinct clips; in brackets, how many of them had their true value in one of the "
        f"{HISTORY} true frames before), and where any, how many distinct clips are exact. "
        "Copying's wrong pixels are those that change from the last input.",
        "",
        "| step | " + " | ".join(models) + " |",
        "|---|" + "---|" * len(models),
    ]
    for k in range(steps):
        cells = [
            f"{r['wrong']:g} ({r['in_history']:g})"
            + (f", {r['exact']} exact" if r["exact"] else "")
            for r in (rows[k] for rows in models.values())
        ]
        lines.append(f"| {k + 1} | " + " | ".join(cells) + " |")
    share = []
    for rows in models.values():
        wrong = sum(r["wrong_total"] for r in rows)
        share.append(f"{sum(r['in_history_total'] for r in rows) / max(1, wrong):.0%}")
    lines.append("| all steps: wrong pixels a history frame had | " + " | ".join(share) + " |")
    return lines


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="folder of episodes")
    p.add_argument("--frames", type=int, default=120, help="frames read per episode")
    p.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="LABEL=PATH",
        help="also count a model's errors on the benchmark's intro clips (repeatable)",
    )
    p.add_argument("--steps", type=int, default=16, help="rollout steps (--model)")
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
    payload: dict[str, object] = {"environment": environment(), **stats}
    if args.model:
        models = dict(_label_path(spec) for spec in args.model)
        intro = videos[0].frames[: int(stats["shared_frames"])]  # type: ignore[call-overload]
        result = errors_on_repeats(*model_rollouts(models, args.steps), args.steps, intro)
        payload["repeats"] = result
        lines = [*lines[:5], "", *repeats_table(result, args.steps), "", *lines[5:]]
    save(args.name, payload, "\n".join(lines), args.out)
    print("\n".join(lines[:5]))


def _label_path(spec: str) -> tuple[str, Path]:
    label, sep, path = spec.partition("=")
    if not sep or not label or not path:
        raise SystemExit(f"--model: expected LABEL=PATH, got {spec!r}")
    return label, Path(path)


if __name__ == "__main__":
    main()
