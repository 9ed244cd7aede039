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

With `--successors`: whether the training episodes (`--data`, read whole) determine those
clips' frames. Every window of 4 consecutive training frames, and which frames followed it how
often; for each distinct clip, the steps whose true window training saw, those where the true
next frame is the only one that ever followed it, and those where it is the one that followed
most often. A lookup that answers the most frequent successor stays on the true frames, so
where that holds at every step it is exact at every step. That is an upper bound for a
learned predictor: one trained to the mean of the successors (L2) is not exact where a
window has several. `--tile N` (repeatable) counts on N x N squares, wherever they are,
instead of whole frames: what a lookup that sees only a square can do (a frame is exact
where all its squares are). With `--quality REPORT` too (a full quality report, e.g.
`benchmarks/results/quality-full.json`): each of its models' mean all-pixel PSNR at step
`--steps` as measured and with those clips exact.

    python benchmarks/intro.py --data data/mspacman60/Train --successors --tile 0 --tile 8 \
        --tile 16 --tile 32 --quality benchmarks/results/quality-full.json \
        --name intro-successors   # minutes
"""

from __future__ import annotations

import argparse
import hashlib
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from avg_rt.benchmark.common import RESULTS, environment, load_report, run_script, save
from avg_rt.data.sources import load_videos, open_source
from avg_rt.errors import DataError, InputError

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


def repeat_clips(
    history: np.ndarray, truth: np.ndarray, steps: int, intro: np.ndarray | None = None
) -> tuple[dict[str, object], np.ndarray]:
    """The clips whose true frame at step `steps` equals their last input frame, each distinct
    clip once: ({"clips": their indices, "distinct": the first index of each distinct one,
    "copies": how many clips equal it, "group": each clip's position in "distinct",
    "in_intro": whether it lies inside `intro`}, the distinct clips' frames (n, HISTORY +
    steps, H, W, C), history then truth)."""
    chosen = np.flatnonzero((truth[:, steps - 1] == history[:, -1]).all(axis=(1, 2, 3)))
    frames = np.concatenate([history[chosen], truth[chosen, :steps]], axis=1)
    keep: list[int] = []  # positions in `chosen` of the first of each group of equal clips
    copies: list[int] = []
    group: list[int] = []  # each chosen clip's group
    for i in range(len(chosen)):
        same = next((g for g, j in enumerate(keep) if np.array_equal(frames[j], frames[i])), None)
        if same is None:
            keep.append(i)
            copies.append(1)
        else:
            copies[same] += 1
        group.append(len(keep) - 1 if same is None else same)
    frames = frames[keep]
    info: dict[str, object] = {
        "clips": chosen.tolist(),
        "distinct": chosen[keep].tolist(),
        "copies": copies,
        "group": group,
        "in_intro": [bool(intro is not None and _in_intro(f, intro)) for f in frames],
    }
    return info, frames


def _digest(frame: np.ndarray) -> bytes:
    a = np.ascontiguousarray(frame)
    return hashlib.blake2b(str(a.shape).encode() + a.tobytes(), digest_size=16).digest()


Table = dict[tuple[bytes, ...], Counter[bytes]]


def _streams(frames: np.ndarray, tile: int) -> list[list[bytes]]:
    """Digests per frame of the whole frames of `frames` (T, H, W, C) (`tile` 0), or of each
    `tile` x `tile` square of them (the last row and column of squares smaller)."""
    if not tile:
        return [[_digest(f) for f in frames]]
    h, w = frames.shape[1:3]
    return [
        [_digest(f) for f in frames[:, y : y + tile, x : x + tile]]
        for y in range(0, h, tile)
        for x in range(0, w, tile)
    ]


def successors(episodes: Iterable[np.ndarray], tile: int = 0) -> Table:
    """Every window of HISTORY consecutive frames in `episodes` (each (T, H, W, C)), or of a
    `tile` x `tile` square of them (wherever it is: a convolution does not know where it
    is) -> how often each frame (square) followed it, by digest."""
    table: defaultdict[tuple[bytes, ...], Counter[bytes]] = defaultdict(Counter)
    for frames in episodes:
        for d in _streams(np.asarray(frames), tile):
            for t in range(HISTORY, len(d)):
                table[tuple(d[t - HISTORY : t])][d[t]] += 1
    return dict(table)


def determined(frames: np.ndarray, table: Table, tile: int = 0) -> list[dict]:
    """For each clip of `frames` (n, HISTORY + steps, H, W, C), over its steps (times its
    squares, with `tile` as given to `successors`; "steps"): how many true windows `table`
    holds ("seen"), how many have the true next frame as their only successor ("only") and as
    their most frequent one, strictly ("most"), and "exact": whether that holds at every
    step (a lookup answering the most frequent successor would be exact at every step)."""
    rows = []
    for clip in frames:
        steps = seen = only = most = 0
        for d in _streams(clip, tile):
            for t in range(HISTORY, len(d)):
                steps += 1
                counts = table.get(tuple(d[t - HISTORY : t]))
                if counts is None:
                    continue
                seen += 1
                only += set(counts) == {d[t]}
                top = counts.most_common(2)
                most += top[0][0] == d[t] and (len(top) == 1 or top[1][1] < top[0][1])
        rows.append(
            {"steps": steps, "seen": seen, "only": only, "most": most, "exact": most == steps}
        )
    return rows


def exact_clips(info: dict[str, object], rows: list[dict]) -> list[int]:
    """The indices of the clips (`info` from `repeat_clips`) whose distinct clip's row of
    `determined` is exact."""
    chosen, group = info["clips"], info["group"]
    assert isinstance(chosen, list) and isinstance(group, list)
    return [c for c, g in zip(chosen, group, strict=True) if rows[g]["exact"]]


def successors_table(info: dict[str, object], rows: list[dict], steps: int, tile: int) -> list[str]:
    distinct, copies, in_intro = info["distinct"], info["copies"], info["in_intro"]
    assert isinstance(distinct, list) and isinstance(copies, list) and isinstance(in_intro, list)
    exact = sum(c for c, r in zip(copies, rows, strict=True) if r["exact"])
    unit = f"{tile}x{tile} squares, wherever they are" if tile else "whole frames"
    return [
        f"Can a {HISTORY}-frame predictor get the {sum(copies)} clips of the full quality "
        f"benchmark where copying the last frame is exact at step {steps} ({len(copies)} "
        f"distinct) exact too? Counted on {unit}: per distinct clip, over its {steps} steps"
        + (" times its squares" if tile else "")
        + f", the true {HISTORY}-frame windows the training episodes hold, those whose only "
        "successor there is the true next one, and those where it is the most frequent one. "
        "Where it is the most frequent everywhere, a lookup answering the training data's most "
        f"frequent successor is exact at every step: {exact} of the {sum(copies)} clips.",
        "",
        "| clip | copies | in the intro | steps | windows seen | true next the only one | "
        "true next the most frequent |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {i} | {c} | {'yes' if intro else 'no'} | {r['steps']} | {r['seen']} | "
            f"{r['only']} | {r['most']} |"
            for i, c, intro, r in zip(distinct, copies, in_intro, rows, strict=True)
        ),
    ]


def if_exact(report: dict, exact: dict[str, list[int]], step: int) -> list[str]:
    """From a quality report (`avg-rt bench quality --full`, with per-clip PSNR at `step`, one
    of its table steps), each model's mean all-pixel PSNR at `step` as measured and, for each
    entry of `exact` (a name -> clip indices), with those clips exact (scored at the report's
    cap, as identical frames are)."""
    from avg_rt.benchmark.quality import table_steps

    at = table_steps(report["options"]["steps"]).index(step)
    lines = [
        f"What each model's mean all-pixel PSNR at step {step} in "
        f"`{report['environment']['command']}` would be with the clips above exact (scored "
        f"{report['db_cap']:g} dB, as the benchmark scores identical frames):",
        "",
        "| model | measured | "
        + " | ".join(f"{len(c)} exact ({n})" for n, c in exact.items())
        + " |",
        "|---|---|" + "---|" * len(exact),
    ]
    for label, res in report["results"].items():
        psnr = np.asarray(res["per_clip"]["psnr"][at], dtype=float)
        cells = []
        for clips in exact.values():
            scored = psnr.copy()
            scored[clips] = report["db_cap"]
            cells.append(f"{scored.mean():.2f}")
        lines.append(f"| {label} | {psnr.mean():.2f} | " + " | ".join(cells) + " |")
    return lines


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
    the number of exact frames. `history` (N, HISTORY, H, W, C) and `truth` (N, >= steps, H,
    W, C): all clips; each prediction (n, >= steps, H, W, C): the rollouts of the distinct
    clips only, in the order of `repeat_clips`' "distinct" (`distinct_rollouts`); `intro`
    (T, H, W, C): the frames every episode starts with, to tell which clips lie inside it.

    Returns "clips" (indices of the chosen clips), "distinct" (the first index of each
    distinct one), "copies" (how many chosen clips equal it), "group", "in_intro" (as
    `repeat_clips`) and "models"."""
    last = history[:, -1]
    out, frames = repeat_clips(history, truth, steps, intro)
    distinct = np.asarray(out["distinct"], dtype=int)
    copying = np.repeat(last[distinct, None], steps, axis=1)
    models: dict[str, list[dict[str, float]]] = {}
    for label, pred in {"copy last frame": copying, **predictions}.items():
        if len(pred) != len(distinct):
            raise ValueError(f"{label}: {len(pred)} rollouts for {len(distinct)} clips")
        rows = []
        for k in range(steps):
            target = frames[:, HISTORY + k]
            before = frames[:, k : HISTORY + k]  # the true frames a pick could copy
            wrong = (pred[:, k] != target).any(-1)
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


def benchmark_clips(seed: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """The full quality benchmark's clips: (history, truth)."""
    from avg_rt.benchmark.quality import FULL, clips, held_out_videos

    videos = held_out_videos(FULL["episodes"], FULL["episode_frames"], seed)
    return clips(videos, FULL["steps"], FULL["stride"], FULL["max_clips"])


def distinct_rollouts(
    models: dict[str, Path], steps: int, intro: np.ndarray | None = None, seed: int = 1000
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """The full quality benchmark's clips (history, truth) and each model's `steps`-step
    rollout of the distinct clips `errors_on_repeats` scores (a few of the 100: minutes, not
    the benchmark's half hour), run as the benchmark runs it (`benchmark.quality.rollouts`)."""
    from avg_rt.benchmark.quality import rollouts

    history, truth = benchmark_clips(seed)
    info, _ = repeat_clips(history, truth, steps, intro)
    chosen = history[np.asarray(info["distinct"], dtype=int)]
    predictions = {
        label: rollouts(path, chosen, steps, "cpu", 16) for label, path in models.items()
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
    p.add_argument(
        "--successors",
        action="store_true",
        help="also say whether the training episodes determine those clips' frames",
    )
    p.add_argument(
        "--tile",
        type=int,
        action="append",
        default=[],
        metavar="N",
        help="with --successors: count on N x N squares (0: whole frames, the default; repeatable)",
    )
    p.add_argument(
        "--quality",
        type=Path,
        help="with --successors: a full quality report, to score the determined clips exact",
    )
    p.add_argument("--steps", type=int, default=16, help="rollout steps (--model, --successors)")
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
    intro = videos[0].frames[: int(stats["shared_frames"])]  # type: ignore[call-overload]
    head, tail = lines[:4], lines[4:]  # each section below starts with a blank line
    if args.model:
        models = dict(_label_path(spec) for spec in args.model)
        rolled = distinct_rollouts(models, args.steps, intro)
        result = errors_on_repeats(*rolled, args.steps, intro)
        payload["repeats"] = result
        head += ["", *repeats_table(result, args.steps)]
    if args.successors:
        report = load_report(args.quality) if args.quality else None
        if report is not None:
            from avg_rt.benchmark.quality import table_steps

            if args.steps not in table_steps(report["options"]["steps"]):
                raise DataError(
                    args.quality,
                    f"no per-clip PSNR at step {args.steps} (it has steps "
                    f"{table_steps(report['options']['steps'])})",
                )
        history, truth = benchmark_clips()
        info, frames = repeat_clips(history, truth, args.steps, intro)
        episodes = [np.asarray(v.frames) for v in videos]
        exact: dict[str, list[int]] = {}
        payload["successors"] = {**info, "sizes": {}}
        for tile in args.tile or [0]:
            rows = determined(frames, successors(episodes, tile), tile)
            payload["successors"]["sizes"][tile] = rows  # type: ignore[index]
            head += ["", *successors_table(info, rows, args.steps, tile)]
            exact[f"{tile}x{tile} squares" if tile else "whole frames"] = exact_clips(info, rows)
        if report is not None:
            head += ["", *if_exact(report, exact, args.steps)]
    lines = [*head, *tail]
    save(args.name, payload, "\n".join(lines), args.out)
    print("\n".join(lines[:5]))


def _label_path(spec: str) -> tuple[str, Path]:
    label, sep, path = spec.partition("=")
    if not sep or not label or not path:
        raise InputError("--model", f"expected LABEL=PATH, got {spec!r}")
    return label, Path(path)


if __name__ == "__main__":
    run_script(main)
