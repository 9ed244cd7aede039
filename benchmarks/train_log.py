"""What a training run did, from its log: the numbers to give beside an adversarial result.

    python benchmarks/train_log.py models/small/train_log.jsonl runs/x/log.jsonl

Per log (`log.jsonl` of a run folder, or a shipped model's `train_log.jsonl`), in Markdown:
D's accuracy on held-out clips (`test/d_accuracy`, every test interval) over the last tenth
of the run (the iterations after 90% of the last one), the issue's bar being 0.6 to 0.95; the
adversarial term's share of G's gradient (`grad/adv_share`, every summary step) as medians per
`--every` iterations (each labelled with its iterations) and over the last tenth; the share
of logged steps whose G gradient norm (before clipping) was above the run's `clip_grad` (read
from `config.json` beside the log, else `--clip`); and the last test rollout's PSNR at step 1
and at its last step against copying the last frame. A resumed run's log repeats the
iterations after its checkpoint: the later record of an iteration counts. Values that are not
finite (a diverged step) are left out. Prints; writes nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np


def read_log(path: Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines training log; SystemExit naming `path` and the line where
    it is missing or not JSON (a line cut short by a run still writing is skipped)."""
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise SystemExit(f"error: {path}: cannot read the log ({e.strerror})") from None
    records = []
    for i, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except ValueError:
            if i < len(lines):
                raise SystemExit(f"error: {path}:{i}: not a JSON log line") from None
    if not records:
        raise SystemExit(f"error: {path}: empty log")
    return records


def summarise(records: list[dict[str, Any]], every: int = 1000, clip: float = 100.0) -> dict:
    """The run's summary (see the module docstring); a value never logged is None."""
    latest: dict[tuple[int, str], float] = {}  # (iteration, key) -> the last value logged
    for r in records:
        for k, v in r.items():
            if isinstance(v, (int, float)) and math.isfinite(v):
                latest[r["step"], k] = v

    def series(key: str) -> tuple[np.ndarray, np.ndarray]:
        rows = sorted((s, v) for (s, k), v in latest.items() if k == key)
        a = np.array(rows, dtype=float).reshape(-1, 2)
        return a[:, 0], a[:, 1]

    last = max(r["step"] for r in records)
    tenth = 0.9 * last
    steps, acc = series("test/d_accuracy")
    d_last = acc[steps > tenth]
    s_steps, share = series("grad/adv_share")
    share_per = {}
    for lo in range(0, last, every):
        inside = (s_steps > lo) & (s_steps <= lo + every)
        if inside.any():
            share_per[f"{lo}-{lo + every}"] = float(np.median(share[inside]))
    _, g_norm = series("grad/g_norm")
    t_steps, _ = series("test/psnr_step1")
    out: dict[str, Any] = {
        "iterations": last,
        "d_accuracy_last_tenth": (
            {"min": d_last.min(), "median": float(np.median(d_last)), "max": d_last.max()}
            if d_last.size
            else None
        ),
        "adv_share_median_per": share_per,
        "adv_share_last_tenth": (
            float(np.median(share[s_steps > tenth])) if (s_steps > tenth).any() else None
        ),
        "g_above_clip": float(np.mean(g_norm > clip)) if g_norm.size else None,
        "last_test": None,
    }
    if t_steps.size:
        t = int(t_steps[-1])
        keys = ("psnr_step1", "psnr_last")
        out["last_test"] = {
            "step": t,
            **{k: latest.get((t, f"test/{k}")) for k in keys},
            **{f"copy_{k}": latest.get((t, f"test/baseline_{k}")) for k in keys},
        }
    return out


def run_clip(log: Path, default: float) -> float:
    """The `clip_grad` of the run whose log is `log`, from `config.json` beside it (a run
    folder); `default` where there is none (a shipped model's log)."""
    try:
        return float(json.loads((log.parent / "config.json").read_text())["clip_grad"])
    except (OSError, ValueError, KeyError, TypeError):
        return default


def _fmt(x: float | None, spec: str = ".3f", scale: float = 1.0, unit: str = "") -> str:
    return "-" if x is None or not math.isfinite(x) else format(scale * x, spec) + unit


def table(summaries: dict[str, dict], every: int) -> str:
    """The summaries as one Markdown table, a row per log."""
    lines = [
        "| log | iterations | D held-out, last tenth (min / median / max) | adversarial "
        f"share, median per {every} iterations | share, last tenth | G above the clip "
        "(logged steps) | last test: PSNR step 1 (copy) | last step (copy) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, s in summaries.items():
        d = s["d_accuracy_last_tenth"]
        acc = " / ".join(_fmt(d[k]) for k in ("min", "median", "max")) if d else "-"
        per = s["adv_share_median_per"]
        shares = ", ".join(f"{k}: {_fmt(v, '.1f', 100, '%')}" for k, v in per.items()) or "-"
        t = s["last_test"]
        test = ["-", "-"]
        if t:
            test = [
                f"{_fmt(t[k], '.2f')} ({_fmt(t[f'copy_{k}'], '.2f')}) at {t['step']}"
                for k in ("psnr_step1", "psnr_last")
            ]
        lines.append(
            f"| {name} | {s['iterations']} | {acc} | {shares} | "
            f"{_fmt(s['adv_share_last_tenth'], '.1f', 100, '%')} | "
            f"{_fmt(s['g_above_clip'], '.0f', 100, '%')} | {test[0]} | {test[1]} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("logs", nargs="+", type=Path, help="log.jsonl files")
    parser.add_argument("--every", type=int, default=1000, help="iterations per share median")
    parser.add_argument(
        "--clip", type=float, default=100.0, help="--clip-grad, where no config.json says"
    )
    args = parser.parse_args(argv)
    if args.every < 1:
        raise SystemExit("error: --every must be >= 1")
    rows = {str(p): summarise(read_log(p), args.every, run_clip(p, args.clip)) for p in args.logs}
    print(table(rows, args.every))


if __name__ == "__main__":
    sys.exit(main())
