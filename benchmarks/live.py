"""Training from a live stream: memory over a long stream, and the sampler against demand.

    python benchmarks/live.py memory    # small preset on the live emulator until 200,000 frames
    python benchmarks/live.py sampler   # clips/s the sampler delivers vs what training takes
    python benchmarks/live.py compare results/quality-live-vs-recorded.json  # live - recorded
    python benchmarks/live.py compare A.json B.json  # seeds scored in two runs on the same clips
    python benchmarks/live.py compare Q.json --arms rotated recorded  # an A/A control

`memory`: trains the small preset on `atari:ms_pacman` (store 1024 MiB, the default) with the
emulator unpaced, and records the training process's resident memory (and the producer
process's) against the frames received, every 10 steps, until `--frames`. The claim checked:
after 200,000 frames the training process is within 100 MiB of what it was after 20,000.

`sampler`: with the emulator streaming into the store (paced to `--fps`, 500: unpaced it takes
a whole core of a 2-core machine from training), draws clips for each preset's training
shape (history + unrolled steps, crop) for `--seconds`, and sets that rate against the clips
training consumes per second (2 batches per step: D's and G's), measured by training a few
steps of that preset on this machine with the emulator running beside it.

`compare`: from quality reports (`avg-rt bench quality --full`; several, made on the same
clips, are read as one) whose models are labelled `live-sN` and `recorded-sN` (`--tag T`:
`live-T-sN` and `recorded-T-sN`; repeated, the series' pairs are pooled; the same training
seed N, one run on the live emulator and one on a recorded set), the all-pixel PSNR of live
minus recorded on the same clips at steps 1 and 16 (the issue's claim: within 0.3 dB). Per
seed: the mean of the per-clip differences with a paired 95% interval (the clips' spread; one
pair of runs). Over seeds: the mean of the seeds' differences with a t interval over the
seeds (the runs' spread, which a per-clip interval cannot see: a run shifts every clip
alike); with 2 seeds it is wide. `--arms A B` compares models labelled `A[-T]-sN` and
`B[-T]-sN` instead: a control pair in which neither arm is live (an A/A test) reads the same
way.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from avg_rt.train.loop import train
from scipy import stats

from avg_rt.benchmark.common import RESULTS, environment, load_report, mean_ci95, run_script, save
from avg_rt.config import PRESETS, TrainConfig
from avg_rt.data.clips import training_sampler
from avg_rt.data.live import LiveFeed, LiveOptions, parse_stream
from avg_rt.errors import DataError

GAME = "atari:ms_pacman"


def rss_mib(pid: int | str = "self") -> float:
    """Resident memory of a process, MiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class _Enough(Exception):
    pass


def memory(frames: int, out: Path) -> None:
    cfg = dataclasses.replace(
        PRESETS["small"],
        steps=10**9,
        summary_interval=10,
        test_interval=10**9,
        image_interval=10**9,
        save_interval=10**9,
        device="cpu",
    )
    opts = LiveOptions(holdout=0.0)
    rows: list[dict[str, float]] = []
    clip_len = cfg.model.history_len + cfg.unroll
    with (
        tempfile.TemporaryDirectory() as tmp,
        LiveFeed(
            parse_stream(GAME),
            opts,
            clip_len,
            cfg.crop,  # type: ignore[arg-type]
        ) as feed,
    ):

        def on_log(step: int, logs: dict[str, float]) -> None:
            if "live/frames_received" not in logs:
                return
            pid = feed.producer_pid
            row = {
                "step": step,
                "frames": logs["live/frames_received"],
                "store_mib": logs["live/store_mib"],
                "store_frames": logs["live/store_frames"],
                "rss_mib": rss_mib(),
                "producer_rss_mib": rss_mib(pid) if pid else float("nan"),
                "frames_per_s": logs["live/frames_per_s"],
            }
            rows.append(row)
            print({k: round(v, 1) for k, v in row.items()}, flush=True)
            if row["frames"] >= frames:
                raise _Enough

        try:
            train(cfg, feed, Path(tmp) / "run", progress=False, on_log=on_log)
        except _Enough:
            pass
    at = {n: next(r for r in rows if r["frames"] >= n) for n in (20_000, frames)}
    growth = at[frames]["rss_mib"] - at[20_000]["rss_mib"]
    table = "\n".join(
        [
            "| frames received | store (MiB / frames) | training process RSS (MiB) | "
            "producer process RSS (MiB) |",
            "|---|---|---|---|",
            *(
                f"| {r['frames']:,.0f} | {r['store_mib']:.0f} / {r['store_frames']:,.0f} | "
                f"{r['rss_mib']:.0f} | {r['producer_rss_mib']:.0f} |"
                for r in rows
                if r is at[20_000]
                or r is at[frames]
                or r is rows[0]
                or rows.index(r) % max(1, len(rows) // 10) == 0
            ),
            "",
            f"Training process: {at[20_000]['rss_mib']:.0f} MiB after "
            f"{at[20_000]['frames']:,.0f} frames, {at[frames]['rss_mib']:.0f} MiB after "
            f"{at[frames]['frames']:,.0f}: {growth:+.0f} MiB (limit: within 100 MiB). Small "
            f"preset on {GAME}, store limit {opts.max_mib:g} MiB, emulator unpaced "
            f"({np.median([r['frames_per_s'] for r in rows]):.0f} frames/s received).",
        ]
    )
    report = {"environment": environment(), "rows": rows, "growth_mib": growth}
    save("live-memory", report, table, out)
    print(table)


def sampler(seconds: float, steps: int, fps: float, out: Path, device: str = "cpu") -> None:
    rows = []
    for preset in ("small", "paper"):
        cfg: TrainConfig = dataclasses.replace(
            PRESETS[preset],
            steps=steps,
            summary_interval=steps,
            test_interval=10**9,
            image_interval=10**9,
            save_interval=10**9,
            adv_start=0,  # every step a D step and a G step, as in the long run
            unroll_ramp=0,  # the full unrolled length from the start: the most demand
            device=device,
        )
        clip_len = cfg.model.history_len + cfg.unroll
        opts = LiveOptions(holdout=0.0, max_fps=fps)
        with LiveFeed(parse_stream(GAME), opts, clip_len, cfg.crop) as feed:  # type: ignore[arg-type]
            feed.wait_ready()
            s = training_sampler(feed.store.snapshot, cfg, clip_len, np.random.default_rng(0))
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                s.sample(cfg.batch)
                n += cfg.batch
            rate = n / (time.perf_counter() - t0)
            logs: dict[str, float] = {}
            with tempfile.TemporaryDirectory() as tmp:
                t1 = time.perf_counter()
                train(
                    cfg,
                    feed,
                    Path(tmp) / "run",
                    progress=False,
                    on_log=lambda step, values, logs=logs: logs.update(values),
                )
                elapsed = time.perf_counter() - t1
        demand = 2 * cfg.batch * steps / elapsed
        rows.append(
            {
                "preset": preset,
                "clip": f"{clip_len}x{cfg.crop}x{cfg.crop}",
                "sampler_clips_per_s": rate,
                "training_steps_per_s": steps / elapsed,
                "demand_clips_per_s": demand,
                "ratio": rate / demand,
                "in_loop_sampler_clips_per_s": logs.get("data/sampler_clips_per_s"),
            }
        )
        print(rows[-1], flush=True)
    table = "\n".join(
        [
            f"| preset | clip (frames x crop) | sampler, clips/s | training ({device}), steps/s | "
            "training demand, clips/s | sampler / demand |",
            "|---|---|---|---|---|---|",
            *(
                f"| {r['preset']} | {r['clip']} | {r['sampler_clips_per_s']:,.0f} | "
                f"{r['training_steps_per_s']:.3g} | {r['demand_clips_per_s']:.3g} | "
                f"{r['ratio']:,.0f}x |"
                for r in rows
            ),
            "",
            f"With {GAME} streaming into the store (its own process, paced to {fps:g} "
            "frames/s: unpaced, it takes a core from training on 2 cores). Sampler: "
            f"{seconds:g} s of batches drawn from the live store with the movement filter. "
            f"Demand: 2 batches per training step (D's and G's), from {steps} steps of each "
            f"preset trained on this machine ({device}) from the same stream (adversarial, full "
            "unroll, first steps included). A faster trainer consumes more: the ratio for it is "
            "the sampler rate over its steps/s x 16.",
        ]
    )
    save("live-sampler", {"environment": environment(), "rows": rows}, table, out)
    print(table)


def _same_path(a: str | None, b: str | None) -> bool:
    """Whether two checkpoint paths as given name one file: one may be relative (to the
    folder the benchmark ran in), the other absolute."""
    if a is None or b is None:
        return a == b
    pa, pb = Path(a).parts, Path(b).parts
    n = min(len(pa), len(pb))
    return pa[len(pa) - n :] == pb[len(pb) - n :]


def merged_reports(paths: list[Path]) -> dict[str, Any]:
    """One quality report holding the models of several made on the same clips (same options
    but the models and name, same videos); SystemExit naming the file that differs. A model
    in several (same label and checkpoint, per-clip PSNR within 0.01 dB) is read once; a
    relative path and an absolute one ending in it name the same checkpoint."""
    reports = [load_report(p) for p in paths]

    def clips_of(r: dict[str, Any]) -> Any:
        opts = {k: v for k, v in r["options"].items() if k not in ("models", "name", "out")}
        return opts, r["videos"], r["clips"]

    first = reports[0]
    report = {
        **first,
        "options": {**first["options"], "models": dict(first["options"].get("models", {}))},
        "results": dict(first["results"]),
    }
    for path, r in zip(paths[1:], reports[1:]):
        if clips_of(r) != clips_of(reports[0]):
            raise DataError(path, f"scored other clips than {paths[0]} (options or videos)")
        for label, res in r["results"].items():
            if label in report["results"] and label != "copy last frame":
                # The same model scored again (say, a reference in two pairs' reports) reads
                # once; another model under the label, or other scores, is refused.
                mine, theirs = r["options"].get("models", {}), report["options"]["models"]
                a = np.asarray(report["results"][label]["per_clip"]["psnr"], dtype=float)
                b = np.asarray(res["per_clip"]["psnr"], dtype=float)
                same = _same_path(mine.get(label), theirs.get(label))
                if not same or not np.allclose(a, b, atol=0.01):
                    raise DataError(
                        path,
                        f"model {label!r} is in an earlier report too, "
                        "with another checkpoint or other scores",
                    )
                continue
            report["results"][label] = res
            report["options"]["models"][label] = r["options"].get("models", {}).get(label)
    return report


# How the comparison's table names the arms it knows.
ARM_TEXT = {
    "live": "training on the live emulator",
    "recorded": "training on a recorded set",
    "rotated": "training on the recorded set drawn from a list rotated as the live store rotates",
}


def compare(
    report_paths: list[Path],
    out: Path,
    steps: tuple[int, ...] = (1, 16),
    result: str = "live-vs-recorded",
    tags: tuple[str, ...] = ("",),
    arms: tuple[str, str] = ("live", "recorded"),
    looks: int = 1,
) -> None:
    """Per seed (of each series `tags`: models labelled A-T-sN and B-T-sN; "": A-sN), A minus
    B on the same clips, and over the seeds a t interval of their mean differences (the pairs
    of several series with one seed averaged first). `looks`: how many times the over-seeds
    interval has been judged, this one included; its level is widened to 1 - 0.05 / looks
    (Bonferroni), so that a series looked at as it grew is not judged at 95%."""
    from avg_rt.benchmark.quality import paired

    report = merged_reports(report_paths)
    report_path = report_paths[0]
    first = ARM_TEXT.get(arms[0], arms[0])
    res = report["results"]
    rows: dict[str, dict[int, dict[str, float]]] = {}
    by_seed: dict[int, list[str]] = {}  # each seed's rows, one per series
    for tag in dict.fromkeys(tags):  # a series named twice is read once
        live, rec = (f"{arm}-{tag}-s" if tag else f"{arm}-s" for arm in arms)
        seeds = sorted(
            int(m.group(1))
            for label in res
            if (m := re.fullmatch(re.escape(live) + r"(\d+)", label))
            and f"{rec}{m.group(1)}" in res
        )
        if not seeds:
            raise DataError(report_path, f"no pair of models labelled {live}N and {rec}N")
        for n in seeds:
            name = f"{tag} seed {n}".strip() if len(tags) > 1 else f"seed {n}"
            rows[name] = paired(report, f"{live}{n}", f"{rec}{n}", "psnr")
            by_seed.setdefault(n, []).append(name)
    pairs = list(rows)
    missing = [t for t in steps if t not in rows[pairs[0]]]
    if missing:
        raise DataError(report_path, f"no per-clip scores at step(s) {missing}")
    # The seed is the unit: a t interval over the seeds' mean differences. Runs of one seed
    # start from the same weights, and a recorded arm's clip stream depends on the seed alone,
    # so pairs of several series with one seed are not independent: they count once, as the
    # mean of their differences.
    seed_means = {
        n: {step: float(np.mean([rows[x][step]["mean"] for x in names])) for step in steps}
        for n, names in by_seed.items()
    }
    level = 1 - 0.05 / looks
    if len(by_seed) > 1:
        t = float(stats.t.ppf(1 - (1 - level) / 2, len(by_seed) - 1))
        over = f"over {len(by_seed)} seeds"
        if looks > 1:
            over += f" ({100 * level:.2f}%, {looks} looks)"
        rows[over] = {step: mean_ci95([m[step] for m in seed_means.values()], t) for step in steps}
    merged = {n: m for n, m in seed_means.items() if len(by_seed[n]) > 1}
    lines = [
        f"{first[:1].upper()}{first[1:]} minus "
        f"{ARM_TEXT.get(arms[1], arms[1])}: all-pixel PSNR after the same steps, same seed, "
        f"on the same {report['clips']} held-out clips "
        f"({', '.join(f'`{p.name}`' for p in report_paths)}): mean of the per-clip "
        "differences ± paired 95% interval, dB. "
        "A seed's interval is the clips' spread alone (one pair of runs; clips of one episode "
        "are not independent either), so only the interval over seeds, where the run is the "
        "unit, can show the two within 0.3 dB"
        + (
            f"; its interval is {100 * level:.2f}% (Bonferroni for {looks} looks at the "
            "growing series)"
            if looks > 1
            else ""
        )
        + (
            "; pairs of several series with the same seed (the same initial weights; the "
            "recorded arms, the same clip stream) count once, as their mean."
            if merged
            else "."
        ),
        "",
        "| runs | " + " | ".join(f"step {t}" for t in steps) + " | within 0.3 dB |",
        "|---|" + "---|" * len(steps) + "---|",
    ]
    for name, per in rows.items():
        cells = [f"{per[t]['mean']:+.2f} ± {per[t]['ci95']:.2f}" for t in steps]
        within = all(abs(per[t]["mean"]) + per[t]["ci95"] <= 0.3 for t in steps)
        verdict = ("yes" if within else "no") if name.startswith("over") else "-"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {verdict} |")
    if merged:
        lines += [
            "",
            "Seeds of several series, as counted (mean of their pairs): "
            + "; ".join(
                f"seed {n} " + ", ".join(f"{m[t]:+.2f}" for t in steps)
                for n, m in sorted(merged.items())
            )
            + ".",
        ]
    reports = [str(p) for p in report_paths]
    payload = {
        "environment": environment(),
        "reports": reports,
        "differences": rows,
        "seed_means": seed_means,
        "looks": looks,
        "level": level,
    }
    save(result, payload, "\n".join(lines), out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=("memory", "sampler", "compare"))
    p.add_argument("report", nargs="*", type=Path, help="quality reports' JSON (compare)")
    p.add_argument("--frames", type=int, default=200_000)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--steps", type=int, default=20, help="training steps per preset (sampler)")
    p.add_argument("--fps", type=float, default=500, help="emulator pace (sampler)")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--name", help="result name (compare; live-vs-recorded[-TAG])")
    p.add_argument("--device", default="cpu", help="where the presets train (sampler)")
    p.add_argument(
        "--tag",
        action="append",
        default=[],
        help="compare live-TAG-sN with recorded-TAG-sN (repeatable: the series pooled)",
    )
    p.add_argument(
        "--arms",
        nargs=2,
        default=("live", "recorded"),
        metavar=("A", "B"),
        help="compare A-sN minus B-sN (default: live recorded)",
    )
    p.add_argument(
        "--looks",
        type=int,
        default=1,
        help="times the over-seeds interval has been judged, this one included: its level "
        "becomes 1 - 0.05/LOOKS (Bonferroni; default 1, a 95%% interval)",
    )
    args = p.parse_intermixed_args(argv)  # options before or after the reports
    if args.what == "memory":
        memory(args.frames, args.out)
    elif args.what == "compare":
        if not args.report:
            p.error("compare needs the quality reports' JSON")
        tags = tuple(args.tag) or ("",)
        name = args.name or "-vs-".join(args.arms) + "".join(f"-{t}" for t in tags if t)
        if args.looks < 1:
            p.error("--looks must be 1 or more")
        arms = tuple(args.arms)
        compare(args.report, args.out, result=name, tags=tags, arms=arms, looks=args.looks)
    else:
        sampler(args.seconds, args.steps, args.fps, args.out, args.device)


if __name__ == "__main__":
    run_script(main)
