"""Prediction quality per rollout step: models against the copy-last-frame baseline.

Data: held-out Ms. Pac-Man episodes played in memory from the emulator with a seed no training
set uses (training data comes from seed 0), or any folder of videos (`data`). Clips start every
`stride` frames; from 4 real frames each model predicts `steps` frames recursively. Every step
is scored on the 8-bit frames a user gets, on all pixels and on moving pixels: those that
change, relative to the last input frame, in the truth or in any compared model's prediction
(a symmetric mask: a model's damage to still pixels counts; one mask for every row, the copy
baseline's included, so that rows are compared on the same pixels), with the mean and a 95%
confidence interval (1.96 standard errors) over clips. PSNR and sharp difference are capped
at 100 dB (identical frames make them infinite; 98.2 dB is one level of one channel of one
pixel off at 210x160) before averaging. Clips whose first target frame equals the last input
(a paused game) are left out: there is nothing to predict. For a checkpoint that keeps its
discriminator, D's accuracy on 32x32 windows of these clips (real next frames against the
model's) is reported too. Optional reference rows (`late`) show the truth itself a few frames
late: sharp sprites, almost in place, scored beside the models on the same pixels.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avg_rt.benchmark.common import RESULTS, environment, mean_ci95, save
from avg_rt.data.clips import frames_to_model, model_to_frames
from avg_rt.data.frames import RGB8
from avg_rt.data.sources import Video, load_videos, open_source
from avg_rt.errors import RunnerError
from avg_rt.metrics import DB_CAP, cap_db, frame_metrics
from avg_rt.predict import rollout
from avg_rt.runners import frame_format, open_runner

TABLE_STEPS = (1, 2, 4, 8, 16, 32, 64)


def table_steps(steps: int) -> list[int]:
    """The steps of TABLE_STEPS that a rollout of `steps` steps has."""
    return [t for t in TABLE_STEPS if t <= steps]


BASELINE = "copy last frame"

# The foreground scores (`foreground_scores`); their tables lead with the median over clips.
FOREGROUND = ("foreground_kept", "foreground_hit")
FOREGROUND_NOTE = (
    " (median over clips, then mean ± 95% CI: a clip whose truth draws little foreground makes "
    "a large ratio, which the mean follows)"
)

# Metrics kept per clip at the table's steps (for paired comparisons on the same clips).
PER_CLIP = ("psnr", "ssim", "psnr_moving", "sharp_diff_moving", "exact_frames", *FOREGROUND)

# A pixel is foreground (a sprite, in a game) where some channel is more than this many 8-bit
# levels from the clip's background: a quarter of the range, so faint smears and a sprite
# faded to less than a quarter of its contrast do not count as drawn.
FOREGROUND_LEVELS = 64
# Pixels that show their background colour in fewer than this fraction of a clip's frames
# (blinking pills, the pen's cycling ghosts, a scene that changes) are left out of the
# foreground scores: no background can be said for them.
STABLE_FRACTION = 0.75

# The benchmark's two modes (`avg-rt bench quality [--full]`): which held-out clips it scores.
FULL = dict(episodes=10, episode_frames=500, steps=64, stride=20, max_clips=100)
QUICK = dict(episodes=2, episode_frames=300, steps=16, stride=10, max_clips=16)


@dataclass(frozen=True)
class QualityOptions:
    models: dict[str, Path]  # label -> checkpoint, ONNX file or TensorRT plan
    data: Path | None = None  # None: held-out emulator episodes
    episodes: int = 2
    episode_frames: int = 300
    steps: int = 16
    stride: int = 10
    max_clips: int = 16
    batch: int = 16
    device: str = "cpu"
    seed: int = 1000
    name: str = "quality-quick"
    out: Path = RESULTS
    late: tuple[int, ...] = ()  # reference rows: the truth d steps late (`late_truth`)
    judge: bool = False  # a fresh classifier's accuracy per row and table step (`judge`)
    extra: dict[str, Any] = field(default_factory=dict)


def held_out_videos(episodes: int, frames: int, seed: int) -> list[Video]:
    """Ms. Pac-Man episodes played in memory (default policy), never written to disk."""
    from avg_rt.data.atari import AtariConfig, play

    cfg = AtariConfig(max_frames=frames, seed=seed)
    return [
        Video(f"ms_pacman seed {seed} episode {i}", np.stack(list(play(cfg, i))))
        for i in range(episodes)
    ]


def clip_starts(
    videos: list[Video], steps: int, stride: int, max_clips: int
) -> list[tuple[int, int]]:
    """(video index, first frame) of each clip `clips` cuts, evenly spread over the start
    positions whose first target differs from the last input (a paused game asks for no
    prediction)."""
    starts = [
        (i, s)
        for i, v in enumerate(videos)
        for s in range(0, len(v.frames) - 4 - steps + 1, stride)
        if not np.array_equal(v.frames[s + 3], v.frames[s + 4])
    ]
    if not starts:
        raise ValueError(f"no video has {4 + steps} frames with motion after the history")
    pick = np.linspace(0, len(starts) - 1, min(max_clips, len(starts))).round().astype(int)
    return [starts[i] for i in pick]


def clips(
    videos: list[Video], steps: int, stride: int, max_clips: int
) -> tuple[np.ndarray, np.ndarray]:
    """(history (N, 4, H, W, 3), truth (N, steps, H, W, 3)) uint8 of the clips at
    `clip_starts`; videos must share one frame size."""
    return cut_clips(videos, clip_starts(videos, steps, stride, max_clips), steps)


def cut_clips(
    videos: list[Video], starts: list[tuple[int, int]], steps: int
) -> tuple[np.ndarray, np.ndarray]:
    """(history, truth) of the clips at `starts` (video index, first frame), as `clips`."""
    arr = np.stack([np.asarray(videos[v].frames[s : s + 4 + steps]) for v, s in starts])
    return arr[:, :4], arr[:, 4:]


# `late` may reach back at most the history's length: every step has a frame d steps before it.
LATE_MAX = 4


def late_label(d: int) -> str:
    return f"truth {d} step{'s' if d > 1 else ''} late"


def late_truth(history: np.ndarray, truth: np.ndarray, d: int) -> np.ndarray:
    """A reference predictor (N, S, H, W, 3): at step t, the true frame of step t - d (the
    history's frames for t <= d). It draws every sprite as sharp as the truth, d frames
    behind, so it says what the sharpness and foreground scores give a prediction that keeps
    the sprites and places them almost right, beside a model that fades them. d = 1 at step 1,
    and d at step d, is copying the last frame."""
    if not 1 <= d <= LATE_MAX:
        raise ValueError(f"late: {d} steps is outside 1 to {LATE_MAX} (the history's frames)")
    frames = np.concatenate([history, truth], axis=1)
    return frames[:, history.shape[1] - d : history.shape[1] - d + truth.shape[1]]


def backgrounds(history: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each clip's background (N, H, W, C) uint8, the colour each pixel shows most often over
    its history and true frames (sprites move on; in Ms. Pac-Man the maze, dots and score
    stay), and where it is stable (N, H, W) bool: that colour in at least STABLE_FRACTION of
    the frames."""
    frames = np.concatenate([history, truth], axis=1)  # (N, T, H, W, C)
    n, t, h, w, c = frames.shape
    background = np.empty((n, h, w, c), np.uint8)
    stable = np.empty((n, h, w), bool)
    for i, clip in enumerate(frames):  # one clip at a time: (T, H, W) int64 keys are large
        keys = np.zeros((t, h, w), np.int64)
        for ch in range(c):
            keys = keys * 256 + clip[..., ch]
        ordered = np.sort(keys, axis=0)
        run = np.ones((t, h, w), np.int32)  # length of the run of equal keys ending at each
        for k in range(1, t):
            run[k] = np.where(ordered[k] == ordered[k - 1], run[k - 1] + 1, 1)
        end = run.argmax(axis=0)  # the most frequent key ends its run there
        mode = np.take_along_axis(ordered, end[None], axis=0)[0]
        at = (keys == mode).argmax(axis=0)  # a frame showing that colour
        background[i] = np.take_along_axis(clip, at[None, ..., None], axis=0)[0]
        stable[i] = run.max(axis=0) >= STABLE_FRACTION * t
    return background, stable


def foreground(frames: np.ndarray, background: np.ndarray, stable: np.ndarray) -> np.ndarray:
    """(N, S, H, W) bool: the stable pixels of frames (N, S, H, W, C) more than
    FOREGROUND_LEVELS from their clip's background (N, H, W, C) in some channel."""
    diff = np.abs(frames.astype(np.int16) - background[:, None].astype(np.int16))
    return np.asarray((diff > FOREGROUND_LEVELS).any(-1) & stable[:, None])


def foreground_scores(
    frames: np.ndarray, truth: np.ndarray, background: np.ndarray, stable: np.ndarray
) -> dict[str, np.ndarray]:
    """Whether a prediction still draws the moving objects, as % of the truth's foreground
    pixels (`foreground`), per clip and step (N, S); NaN where the truth has none.
    `foreground_hit`: the prediction's foreground pixels on the truth's (in the right place;
    at most 100). `foreground_kept`: all of the prediction's foreground pixels, wherever they
    are (a model that fades its sprites falls towards 0, copying keeps about 100; blotches
    and misplaced sprites raise it too, so it says that something is drawn, not what)."""
    pred, true = foreground(frames, background, stable), foreground(truth, background, stable)
    n = true.sum(axis=(2, 3)).astype(np.float64)
    n[n == 0] = np.nan
    return {
        "foreground_kept": 100 * pred.sum(axis=(2, 3)) / n,
        "foreground_hit": 100 * (pred & true).sum(axis=(2, 3)) / n,
    }


def _scores(
    frames: np.ndarray,
    truth: np.ndarray,
    moving: np.ndarray,
    last: np.ndarray,
    background: tuple[np.ndarray, np.ndarray],
) -> dict[str, np.ndarray]:
    """{metric or metric_moving: (N, S)} of uint8 frames (N, S, H, W, 3) against the truth, on
    all pixels and on the pixels of `moving` (N, S, H, W) bool; and `still_damaged`, the
    percentage of the frame's pixels that stay exactly as in the last input frame `last`
    (N, H, W, 3) in the truth but not in the prediction; `exact_frames`, 100 where the
    predicted frame is the true one to the last pixel, else 0 (its mean: % of clips); and
    `foreground_scores` against each clip's `background` (colours, stable pixels: see
    `backgrounds`)."""
    scores = frame_metrics(
        frames_to_model(frames, "cpu"),
        frames_to_model(truth, "cpu"),
        {"": None, "_moving": torch.from_numpy(moving)},
    )
    out = {k: v.numpy() for k, v in scores.items()}
    still = (truth == last[:, None]).all(-1)
    out["still_damaged"] = 100 * ((frames != truth).any(-1) & still).mean(axis=(2, 3))
    out["exact_frames"] = 100 * (frames == truth).all(axis=(2, 3, 4)).astype(np.float64)
    return out | foreground_scores(frames, truth, *background)


# Steps scored at once: the float copies and SSIM maps of a piece of clips x steps are what
# the benchmark's memory peaks on (16 clips x 64 steps at 210x160: ~5 GB; x 8 steps: ~0.6).
SCORE_STEPS = 8


def _scores_in_pieces(
    frames: np.ndarray,
    truth: np.ndarray,
    moving: np.ndarray,
    last: np.ndarray,
    background: tuple[np.ndarray, np.ndarray],
    batch: int,
) -> dict[str, np.ndarray]:
    """`_scores` of (N, S, ...) frames, computed `batch` clips x SCORE_STEPS steps at a time."""
    rows = []
    for j in range(0, len(frames), batch):
        c = slice(j, j + batch)
        pieces = [
            _scores(
                frames[c, t : t + SCORE_STEPS],
                truth[c, t : t + SCORE_STEPS],
                moving[c, t : t + SCORE_STEPS],
                last[c],
                (background[0][c], background[1][c]),
            )
            for t in range(0, frames.shape[1], SCORE_STEPS)
        ]
        rows.append({k: np.concatenate([p[k] for p in pieces], axis=1) for k in pieces[0]})
    return {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}


def _aggregate(scores: dict[str, np.ndarray]) -> dict[str, dict[str, list[float]]]:
    """Mean, 95% CI and count over clips at each step (NaN: no moving pixels, left out)."""
    agg = {}
    for k, v in scores.items():
        v = cap_db(k, v)
        n = np.sum(~np.isnan(v), axis=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN steps give NaN, rightly
            mean = np.nanmean(v, axis=0)
            ci = 1.96 * np.nanstd(v, axis=0, ddof=1) / np.sqrt(np.maximum(n, 1))
        agg[k] = {"mean": mean.tolist(), "ci95": ci.tolist(), "n": n.tolist()}
    return agg


def rollouts(path: Path, history: np.ndarray, steps: int, device: str, batch: int) -> np.ndarray:
    """The `steps`-step rollouts (N, steps, H, W, 3) uint8 of the model at `path` from
    `history` (N, 4, H, W, 3), `batch` clips at a time; RGB 8-bit models only."""
    with open_runner(path, device=device) as runner:
        if (fmt := frame_format(runner)) != RGB8:
            raise RunnerError(
                path, f"reads {fmt.describe()} frames; this benchmark scores RGB 8-bit models"
            )
        batches = []
        for i in range(0, len(history), batch):
            h = frames_to_model(history[i : i + batch], runner.device)
            batches.append(model_to_frames(rollout(runner, h, steps)))
    return np.concatenate(batches)


def run(opts: QualityOptions) -> dict[str, Any]:
    """Score every model and the baseline; write JSON, Markdown, plots and a GIF."""
    if opts.data is not None:
        why = f"4 history frames and {opts.steps} steps"
        videos = load_videos(open_source(opts.data), 4 + opts.steps, why=why)
    else:
        videos = held_out_videos(opts.episodes, opts.episode_frames, opts.seed)
    starts = clip_starts(videos, opts.steps, opts.stride, opts.max_clips)
    history, truth = cut_clips(videos, starts, opts.steps)
    episodes = np.array([v for v, _ in starts])  # the judge splits its clips by episode
    late = {late_label(d): late_truth(history, truth, d) for d in opts.late}  # before models
    # The GIF shows the clip whose truth moves most (chosen before any model runs).
    moved = (truth != history[:, -1:]).any(-1).mean(axis=(1, 2, 3))
    shown = int(np.argmax(moved))
    results: dict[str, dict[str, Any]] = {}
    last = history[:, -1]
    # Every row is scored on the same moving pixels: those the truth or any model changes.
    moving = (truth != last[:, None]).any(-1)
    predictions: dict[str, np.ndarray] = {}
    for label, path in opts.models.items():
        predictions[label] = rollouts(path, history, opts.steps, opts.device, opts.batch)
        moving |= (predictions[label] != last[:, None]).any(-1)
    predictions[BASELINE] = np.repeat(last[:, None], opts.steps, axis=1)
    for label, frames in late.items():  # compared rows: their changes join the mask too
        predictions[label] = frames
        moving |= (frames != last[:, None]).any(-1)
    background = backgrounds(history, truth)
    scores = {}
    for label, frames in predictions.items():
        scores[label] = _scores_in_pieces(frames, truth, moving, last, background, opts.batch)
        results[label] = _aggregate(scores[label])
        # Per clip at the table's steps, for paired comparisons of models on the same clips.
        at = [t - 1 for t in table_steps(opts.steps)]
        results[label]["per_clip"] = {
            m: np.round(cap_db(m, scores[label][m][:, at]), 4).T.tolist() for m in PER_CLIP
        }
        if opts.judge:  # the same windows, split and seed for every row, at the table's steps
            results[label]["judge"] = [
                judge(frames[:, i], truth[:, i], moving[:, i], episodes, opts.seed) for i in at
            ]
        if label in opts.models:
            accuracy = discriminator_accuracy(opts.models[label], history, truth)
            if accuracy is not None:
                results[label]["d_accuracy"] = accuracy
    samples = {label: predictions[label][shown] for label in opts.models}
    report = {
        "environment": environment(),
        "options": _jsonable(opts),
        "clips": len(history),
        "videos": [v.name for v in videos],
        "frame_size": list(videos[0].size),
        "db_cap": DB_CAP,
        "gif_clip": shown,
        "results": results,
        "versus_copy": versus_copy(results, scores),
    }
    save(opts.name, report, _table(report), opts.out)
    _plots(report, opts.out / opts.name)
    _gif(samples, truth[shown], opts.out / f"{opts.name}.gif")
    return report


# The judge (`judge`): a fresh classifier of 32x32 windows, trained JUDGE_ITERATIONS steps on
# half the clips and tested on the other half.
JUDGE_WINDOW = 32
JUDGE_WINDOWS_PER_CLIP = 16
JUDGE_ITERATIONS = 1500


def _judge_windows(
    frames: np.ndarray, centres: list[np.ndarray], clips: np.ndarray
) -> torch.Tensor:
    """(sum of windows, 3, 32, 32) in [-1, 1]: the windows of frames (N, H, W, 3) at each
    clip's `centres` (k, 2), moved inside the frame where they would cross its edge."""
    h, w = frames.shape[1:3]
    out = []
    for c in clips:
        for y, x in centres[c]:
            top = int(np.clip(y - JUDGE_WINDOW // 2, 0, h - JUDGE_WINDOW))
            left = int(np.clip(x - JUDGE_WINDOW // 2, 0, w - JUDGE_WINDOW))
            out.append(frames[c, top : top + JUDGE_WINDOW, left : left + JUDGE_WINDOW])
    return frames_to_model(np.stack(out), "cpu")


def judge(
    frames: np.ndarray,
    truth: np.ndarray,
    moving: np.ndarray,
    groups: np.ndarray | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """Can a classifier that has never seen the model tell its frames from the true ones? A
    classifier two-sample test on one step. A small CNN is trained from scratch (fixed seed)
    on 32x32 windows of the true frames (N, H, W, 3) against the same windows of the
    predicted ones, centred on random pixels of `moving` (N, H, W) (both at the same places,
    so where a window is tells nothing), from the clips of the even `groups` (episodes; clip
    numbers where there is one group). On each window place of the other clips it then
    picks the one of the two windows it rates more real: "accuracy" is the share of right
    picks (a tie, as on an exact frame, counts a half), so a bias towards either answer does
    not move it. Test clips whose true frame is also a training clip's are left out (every
    episode starts with the same intro). About 0.5: the predictions look like real frames
    there; 1: they are told apart every time. It judges what the windows look like, not
    whether the sprites are in the right place. With a 95% interval over the test clips
    (`n`), and the same over the test clips the prediction does not get exact ("inexact",
    `n_inexact`). NaN where fewer than 2 clips are left on a side."""
    rng = np.random.default_rng(seed)
    n = len(frames)
    if min(frames.shape[1:3]) < JUDGE_WINDOW:
        raise ValueError(f"the judge needs frames of at least {JUDGE_WINDOW}x{JUDGE_WINDOW}")
    groups = np.arange(n) if groups is None or len(np.unique(groups)) < 2 else groups
    centres = []
    for m in moving:
        where = np.argwhere(m)  # (k, 2); no moving pixel: (0, 2), no window
        centres.append(
            where[rng.integers(0, len(where), JUDGE_WINDOWS_PER_CLIP)] if len(where) else where
        )
    used = np.array([i for i in range(n) if len(centres[i])], dtype=int)
    train = used[groups[used] % 2 == 0]
    seen = {truth[i].tobytes() for i in train}
    test = np.array([i for i in used[groups[used] % 2 == 1] if truth[i].tobytes() not in seen])
    none = {"mean": float("nan"), "ci95": float("nan"), "n": 0}
    if len(train) < 2 or len(test) < 2:
        return _judge_scores({"": none, "_inexact": none})
    real, fake = (_judge_windows(x, centres, train) for x in (truth, frames))
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1),
        torch.nn.LeakyReLU(0.2),
        torch.nn.Conv2d(16, 32, 3, stride=2, padding=1),
        torch.nn.LeakyReLU(0.2),
        torch.nn.Conv2d(32, 32, 3, stride=2, padding=1),
        torch.nn.LeakyReLU(0.2),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(32, 1),
    )
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    labels = torch.cat([torch.ones(32), torch.zeros(32)])
    for _ in range(JUDGE_ITERATIONS):
        i, j = rng.integers(0, len(real), 32), rng.integers(0, len(fake), 32)
        logits = net(torch.cat([real[i], fake[j]])).squeeze(1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        a, b = (net(_judge_windows(x, centres, test)).view(len(test), -1) for x in (truth, frames))
    # Per test clip, the share of its window places where the true window is rated the more
    # real; the interval over clips, as a clip's windows are alike.
    per_clip = ((a > b).double() + 0.5 * (a == b).double()).mean(dim=1).numpy()
    exact = (frames[test] == truth[test]).all(axis=(1, 2, 3))
    kept = {"": np.ones(len(test), bool), "_inexact": ~exact}
    return _judge_scores(
        {k: mean_ci95(per_clip[m]) if m.sum() >= 2 else none for k, m in kept.items()}
    )


def _judge_scores(stats: dict[str, dict[str, float]]) -> dict[str, float]:
    """{"accuracy", "ci95", "n"} + suffix, from `mean_ci95`'s stats per suffix."""
    return {
        f"{name}{suffix}": s[key]
        for suffix, s in stats.items()
        for name, key in (("accuracy", "mean"), ("ci95", "ci95"), ("n", "n"))
    }


def discriminator_accuracy(
    path: Path, history: np.ndarray, truth: np.ndarray, windows: int = 512, seed: int = 0
) -> dict[str, float] | None:
    """D's accuracy on its own task over `windows` crops of the clips: real frames against the
    model's over the checkpoint's unrolled training length, drawn as training draws its clips
    (movement filter included; G without its inference-only options). None unless `path` is a
    checkpoint that keeps D."""
    from avg_rt import checkpoint
    from avg_rt.config import training_form
    from avg_rt.data.clips import clips_to_float, training_sampler
    from avg_rt.errors import CheckpointError
    from avg_rt.model import Discriminator, Generator
    from avg_rt.train.loop import held_out_d_accuracy

    try:
        state = checkpoint.load(path)
    except CheckpointError:
        return None  # an ONNX file or an engine
    if "discriminator" not in state:
        return None
    cfg = state["config"]
    # D's task as it trained: G's own predictions, without the inference-only options.
    G = Generator(training_form(cfg.model))
    D = Discriminator(cfg.model)
    G.load_state_dict(state["generator"])
    D.load_state_dict(state["discriminator"])
    k = cfg.unroll
    videos = [
        Video(f"clip {i}", np.concatenate([h, y[:k]]))
        for i, (h, y) in enumerate(zip(history, truth))
    ]
    sampler = training_sampler(videos, cfg, len(history[0]) + k, np.random.default_rng(seed))
    clip = clips_to_float(sampler.sample(windows))
    scores = held_out_d_accuracy(G.eval(), D.eval(), clip, cfg, k)
    return {k.removeprefix("test/"): v for k, v in scores.items()}


def versus_copy(
    results: dict[str, dict[str, Any]], scores: dict[str, dict[str, np.ndarray]]
) -> dict[str, dict[str, Any]]:
    """Per model, where its mean falls below copying's (PSNR and SSIM, all pixels), and its
    margin over copying on moving pixels (PSNR, dB) per step, three ways: of the means; the
    median of the per-clip differences; and the mean difference over the clips where neither
    frame is exact (`n` of them), which the capped scores of exact frames cannot lift (it
    leaves out the model's exact predictions, against it, but also clips copying gets exact
    and the model does not, for it)."""
    base = results[BASELINE]
    out = {}
    for label, res in results.items():
        if label == BASELINE:
            continue
        below = {
            m: [s + 1 for s, (a, b) in enumerate(zip(res[m]["mean"], base[m]["mean"])) if a < b]
            for m in ("psnr", "ssim")
        }
        margin = np.subtract(res["psnr_moving"]["mean"], base["psnr_moving"]["mean"])
        diff = cap_db("psnr", scores[label]["psnr_moving"]) - cap_db(
            "psnr", scores[BASELINE]["psnr_moving"]
        )
        inexact = (scores[label]["exact_frames"] == 0) & (scores[BASELINE]["exact_frames"] == 0)
        inexact &= ~np.isnan(diff)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # no clip at a step: NaN, rightly
            median = np.nanmedian(diff, axis=0)
            on_inexact = np.nanmean(np.where(inexact, diff, np.nan), axis=0)
        out[label] = {
            "psnr_steps_below_copy": below["psnr"],
            "ssim_steps_below_copy": below["ssim"],
            "psnr_moving_margin": margin.tolist(),
            "psnr_moving_margin_median": median.tolist(),
            "psnr_moving_margin_inexact": on_inexact.tolist(),
            "inexact_clips": inexact.sum(axis=0).tolist(),
        }
    return out


def paired(report: dict[str, Any], a: str, b: str, metric: str) -> dict[int, dict[str, float]]:
    """Model `a` minus model `b` on the same clips, per table step: the mean of the per-clip
    differences and its 95% interval (a paired comparison: the clips' own spread cancels),
    over the clips where both have a score (moving-pixel metrics have none on a clip where
    nothing moves in the truth or in any model's prediction)."""
    res = report["results"]
    out = {}
    steps = table_steps(report["options"]["steps"])
    for step, x, y in zip(steps, res[a]["per_clip"][metric], res[b]["per_clip"][metric]):
        d = np.subtract(np.asarray(x, float), np.asarray(y, float))
        out[step] = mean_ci95(d[~np.isnan(d)])
    return out


def _jsonable(opts: QualityOptions) -> dict[str, Any]:
    d = {k: str(v) if isinstance(v, Path) else v for k, v in vars(opts).items()}
    d["models"] = {k: str(v) for k, v in opts.models.items()}
    return d


def _table(report: dict[str, Any]) -> str:
    steps = table_steps(report["options"]["steps"])
    lines = [
        f"Quality per rollout step on {report['clips']} clips of held-out video "
        f"({'x'.join(map(str, report['frame_size']))}), mean ± 95% CI. PSNR and sharp "
        f"difference in dB on [0, 1] 8-bit frames (TF project's PSNR + 6.02 dB); 'moving': "
        f"pixels that change, relative to the last input frame, in the truth or in any "
        f"model's prediction (one mask for every row, copying included); 'still pixels "
        f"damaged': % of the frame that the truth keeps exactly as in the last input frame "
        f"and the prediction does not (0 for copying); 'exact frames': % of clips whose "
        f"predicted frame is the true one to the last pixel (copying: where nothing moved; "
        f"these score {DB_CAP:g} dB, and dominate a PSNR mean); 'foreground kept': the "
        f"prediction's pixels more than {FOREGROUND_LEVELS} levels from the clip's background "
        f"(each pixel's most frequent colour over the clip: sprites move on; pixels showing it "
        f"in less than {STABLE_FRACTION:.0%} of the frames are left out), as % of the truth's, "
        f"wherever they are (a model that fades the sprites falls towards 0, copying keeps "
        f"about 100; blotches raise it too); 'foreground hit': those on the truth's "
        f"foreground pixels."
        + (
            " 'truth d steps late': a reference, not a model: at step t the true frame of "
            "step t - d (sharp sprites, d frames behind); its changes join the moving mask as "
            "a model's do."
            if report["options"].get("late")
            else ""
        ),
        "",
        "| model | PSNR below copying at steps | SSIM below copying at steps | "
        "D accuracy (real / generated) |",
        "|---|---|---|---|",
    ]
    for label, v in report["versus_copy"].items():
        d = report["results"][label].get("d_accuracy")
        acc = "-"
        if d:
            acc = f"{d['d_accuracy']:.2f} ({d['d_accuracy_real']:.2f} / {d['d_accuracy_fake']:.2f})"
        lines.append(
            f"| {label} | {_steps(v['psnr_steps_below_copy'])} | "
            f"{_steps(v['ssim_steps_below_copy'])} | {acc} |"
        )
    lines += [
        "",
        "**Moving-pixel PSNR margin over copying** (dB; exact frames score "
        f"{DB_CAP:g} and lift a mean: the median of the per-clip differences, and their mean "
        "over the clips where neither frame is exact, say how far ahead a model is without "
        "them)",
        "",
        "| model | margin | " + " | ".join(f"step {s}" for s in steps) + " |",
        "|---|---|" + "---|" * len(steps),
    ]
    for label, v in report["versus_copy"].items():
        for key, what in (
            ("psnr_moving_margin", "of the means"),
            ("psnr_moving_margin_median", "median per clip"),
            ("psnr_moving_margin_inexact", "mean, neither exact (clips)"),
        ):
            cells = [f"{v[key][s - 1]:.2f}" for s in steps]
            if key == "psnr_moving_margin_inexact":
                cells = [f"{c} ({v['inexact_clips'][s - 1]})" for c, s in zip(cells, steps)]
            lines.append(f"| {label} | {what} | " + " | ".join(cells) + " |")
    lines.append("")
    metrics = ("psnr", "psnr_moving", "sharp_diff", "sharp_diff_moving", "ssim", "ssim_moving")
    for metric in (*metrics, "still_damaged", "exact_frames", *FOREGROUND):
        lines += [
            f"**{metric}**" + (FOREGROUND_NOTE if metric in FOREGROUND else ""),
            "",
            "| model | " + " | ".join(f"step {s}" for s in steps) + " |",
            "|---|" + "---|" * len(steps),
        ]
        for label, res in report["results"].items():
            if metric not in res:
                continue
            m, ci = res[metric]["mean"], res[metric]["ci95"]
            cells = [
                f"{m[s - 1]:.3f} ± {ci[s - 1]:.3f}"
                if metric.startswith("ssim")
                else f"{m[s - 1]:.2f} ± {ci[s - 1]:.2f}"
                for s in steps
            ]
            if metric in FOREGROUND:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # no clip: NaN, rightly
                    median = np.nanmedian(np.asarray(res["per_clip"][metric], float), axis=1)
                cells = [f"{md:.1f} ({c})" for md, c in zip(median, cells)]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    judged = {k: v["judge"] for k, v in report["results"].items() if "judge" in v}
    if judged:
        lines += [
            f"**judge accuracy** (a classifier trained from scratch on the even episodes' "
            f"{JUDGE_WINDOW}x{JUDGE_WINDOW} windows, centred on moving pixels, of the true "
            f"frames against the row's at the same places; on the odd episodes' clips "
            f"(those whose true frame no training clip has), the share of places where it "
            f"rates the true window the more real, ± 95% over those clips, and in brackets "
            f"the same over the clips the row does not get exact (their number): about 0.5, "
            f"the row's windows look like real ones; 1, they are told apart every time; "
            f"placement is not judged)",
            "",
            "| model | " + " | ".join(f"step {s}" for s in steps) + " |",
            "|---|" + "---|" * len(steps),
        ]
        for label, cells in judged.items():
            row = [
                f"{c['accuracy']:.2f} ± {c['ci95']:.2f} "
                f"({c['accuracy_inexact']:.2f} ± {c['ci95_inexact']:.2f}, {c['n_inexact']})"
                for c in cells
            ]
            lines.append(f"| {label} | " + " | ".join(row) + " |")
        lines.append("")
    return "\n".join(lines)


def _steps(steps: list[int]) -> str:
    """[1, 2, 3, 7] -> '1-3, 7 (4)'; [] -> 'none'."""
    if not steps:
        return "none"
    runs: list[list[int]] = []
    for s in steps:
        if runs and s == runs[-1][-1] + 1:
            runs[-1].append(s)
        else:
            runs.append([s])
    text = ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs)
    return f"{text} ({len(steps)})"


def _plots(report: dict[str, Any], stem: Path) -> None:
    from avg_rt.visual import plot_per_step

    for metric, label in (
        ("psnr", "PSNR (dB)"),
        ("sharp_diff", "sharp difference (dB)"),
        ("ssim", "SSIM"),
    ):
        curves = {}
        for variant, title in ((metric, "all pixels"), (f"{metric}_moving", "moving pixels")):
            curves[f"{label}, {title}"] = {  # capped means: finite, or NaN (a gap)
                name: res[variant]["mean"]
                for name, res in report["results"].items()
                if variant in res
            }
        plot_per_step(f"{stem}-{metric}.png", curves, overwrite=True)
    hit = {  # bounded by 100, unlike 'kept', whose mean a few clips can carry
        name: res["foreground_hit"]["mean"]
        for name, res in report["results"].items()
        if "foreground_hit" in res
    }
    plot_per_step(
        f"{stem}-foreground.png",
        {"foreground hit (% of the truth's foreground pixels)": hit},
        overwrite=True,
    )


def _gif(samples: dict[str, np.ndarray], truth: np.ndarray, path: Path) -> None:
    from avg_rt.visual import side_by_side, write_animation

    columns = [
        (f"{label}" + (", step {t}" if i == 0 else ""), frames)
        for i, (label, frames) in enumerate(samples.items())
    ]
    write_animation(path, side_by_side([*columns, ("ground truth", truth)]), overwrite=True)
