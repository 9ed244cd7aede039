"""The training loop: one D step then one G step per iteration (G only when not adversarial,
and during the first `adv_start` iterations); the steps themselves are in `train.steps`.

`train(cfg, videos, run_dir)` reads top to bottom: init, data, networks, optimizers, resume,
loop. Summaries, test rollouts and checkpoints run on the intervals of the config (in steps).
A step is one iteration; the checkpoint's `step` counts completed iterations.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from avg_rt.train import distributed
from avg_rt.train.steps import d_accuracy, d_logits, d_step, g_step, split
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from torch import nn

from avg_rt import checkpoint
from avg_rt.config import ConfigError, TrainConfig, network_changes, to_dict
from avg_rt.data.clips import clips_to_float, frames_to_model, test_clips, training_sampler
from avg_rt.data.frames import FrameFormat
from avg_rt.data.live import LiveFeed
from avg_rt.data.sources import Video
from avg_rt.errors import DataError, InputError
from avg_rt.files import atomic_write_text
from avg_rt.model import Discriminator, Generator, widen_noise
from avg_rt.predict import rollout, score, seeded
from avg_rt.runners import resolve_device
from avg_rt.runners.pyt import TorchRunner

CHECKPOINT = "checkpoint.pt"
DEAD_FINEST = (
    "warning: every ReLU unit of the last hidden layer of G's finest scale is dead on the test "
    "clips (log: test/g_live_units_scale*), so that scale's output is a constant (in the delta "
    "form: the last frame plus a constant change) and its layers no longer learn. Train again "
    "with --g-leak 0.2 or another --seed."
)


@contextlib.contextmanager
def eval_mode(net: nn.Module) -> Iterator[None]:
    """`net` in eval mode inside the block, then back in the mode it was in."""
    was_training = net.training
    net.eval()
    try:
        yield
    finally:
        net.train(was_training)


def evaluate(
    G: Generator, clips: Sequence[tuple[str, np.ndarray, np.ndarray]], device: torch.device
) -> dict[str, float]:
    """Recursive predictions on full test frames: mean PSNR and sharp difference at the first
    and the last step, next to the copy-last-frame baseline. G runs in eval mode, as a
    checkpoint is rolled out (its inference deadzone included), then returns to its mode.
    Also `test/g_live_units_scale{k}` (`live_units`) on the clips' histories."""
    scores: dict[str, list[float]] = {}
    histories: list[torch.Tensor] = []  # (1, L * C, H, W), for live_units
    fmt = FrameFormat.of(G.cfg)
    with eval_mode(G):
        with TorchRunner(G, device) as runner:
            for _, hist, truth in clips:
                h = frames_to_model(hist[None], device, fmt)  # (1, L, C, H, W)
                histories.append(h.flatten(1, 2))
                y = frames_to_model(truth[None], device, fmt)  # (1, S, C, H, W)
                m = score(rollout(runner, h, steps=y.shape[1]), y, h[:, -1], fmt)
                for name in ("psnr", "sharp_diff", "baseline_psnr", "baseline_sharp_diff"):
                    scores.setdefault(f"test/{name}_step1", []).append(float(m[name][0, 0]))
                    scores.setdefault(f"test/{name}_last", []).append(float(m[name][0, -1]))
        live = live_units(G, histories)
    means = {k: float(np.mean(v)) for k, v in scores.items()}
    return means | {f"test/g_live_units_scale{k}": f for k, f in live.items()}


@torch.no_grad()
def live_units(G: Generator, histories: Sequence[torch.Tensor]) -> dict[int, float]:
    """{scale (coarsest first): the fraction of the units of its last hidden layer that are
    positive somewhere on these inputs (each (1, C * L, H, W))}, for the scales that have a
    hidden layer. With ReLU (g_leak 0) a scale at 0 is dead: its output is a constant (its
    last convolution's bias) and its own layers get no gradient, so a delta generator whose
    finest scale died adds a constant change to the last frame. With LeakyReLU such units
    still pass their input and their gradient, scaled by g_leak."""
    seen: dict[int, torch.Tensor] = {}

    def hook(k: int) -> Callable[[nn.Module, Any, torch.Tensor], None]:
        def record(_: nn.Module, __: Any, out: torch.Tensor) -> None:
            alive = (out > 0).flatten(2).any(-1).any(0)  # (units,)
            seen[k] = seen[k] | alive if k in seen else alive

        return record

    handles = []
    for k, scale in enumerate(G.scales):
        acts = [m for m in scale.modules() if isinstance(m, (nn.ReLU, nn.LeakyReLU))]
        if acts:
            handles.append(acts[-1].register_forward_hook(hook(k)))
    try:
        for h in histories:
            G.forward_scales(h)
    finally:
        for handle in handles:
            handle.remove()
    return {k: float(alive.float().mean()) for k, alive in sorted(seen.items())}


@torch.no_grad()
def held_out_d_accuracy(
    G: Generator, D: Discriminator, clip: torch.Tensor, cfg: TrainConfig, steps: int
) -> dict[str, float]:
    """D's accuracy on held-out clips (N, history_len + steps, C, crop, crop), on the task it
    trains on: real windows against G's, over `steps` unrolled steps, at a fixed corner (G from
    the true history, also with `d_free_run`, so that runs with and without it compare). D
    runs in eval mode, so that measuring it changes no state of it (spectral normalisation's
    power iteration runs in training mode): a run resumed from a checkpoint written after a
    measurement the uninterrupted run did not make still trains the same D. For the same
    reason the training loop makes every measurement under `seeded`: a stochastic G's noise
    draws there come from a fixed seed (so tests compare) and leave training's stream alone."""
    with eval_mode(D):
        return d_accuracy(*d_logits(G, D, clip, cfg, steps, (0, 0)), "test/d_")


def train(
    cfg: TrainConfig,
    videos: Sequence[Video] | Callable[[], Sequence[Video]] | LiveFeed,
    run_dir: str | Path,
    test_videos: Sequence[Video] = (),
    resume: bool = False,
    progress: bool = True,
    on_log: Callable[[int, dict[str, float]], None] | None = None,
    after_step: Callable[[int, Generator, Discriminator | None], None] | None = None,
    init_from: str | Path | None = None,
) -> Path:
    """Train on clips sampled from `videos`; returns the path of the final checkpoint.

    `videos` may be a callable returning the current sequence (`ClipSampler` reads it for each
    candidate clip), or a started `LiveFeed` (`avg_rt.data.live`): training waits until its
    store can feed it, samples from the store's current segments and tests on its held-out ones, and
    logs frames received, store fill and the sampler's rate. A stream that fails stops
    training after a final checkpoint, with a DataError naming the stream.

    `run_dir` must be new unless `resume` is set, in which case training continues from its
    checkpoint at the saved step (same weights, optimizer state and random streams). SIGINT
    (Ctrl-C) or SIGTERM stops after the step in progress, with its checkpoint, by raising
    TrainingStopped (see StopSignals). `on_log(step, values)` sees every logged scalar (rank 0);
    `after_step(step, G, D)` runs on every rank after each step (tests, custom monitoring).
    `init_from`: a checkpoint whose networks a new run starts from (fine-tuning; `start_from`).

    Under `torchrun` (RANK and WORLD_SIZE set) each process trains one replica with
    DistributedDataParallel on `cfg.batch` clips of its own random stream: the global batch is
    `cfg.batch * world_size`. Only rank 0 writes files.
    """
    # --- init ---------------------------------------------------------------------------
    cfg.validate()
    check_start(resume, init_from)
    run_dir = Path(run_dir)
    ckpt_path = run_dir / CHECKPOINT
    dist = distributed.from_env()
    if dist.is_main:
        check_run_folder(run_dir, resume)
    device = resolve_device(cfg.device)
    if dist.enabled:
        device = distributed.setup(dist, device)
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    # Each rank draws its own clips: no two ranks train on the same ones.
    rng = np.random.default_rng([cfg.seed, dist.rank] if dist.enabled else cfg.seed)

    # --- data ---------------------------------------------------------------------------
    L = cfg.model.history_len
    fmt = FrameFormat.of(cfg.model)
    live = videos if isinstance(videos, LiveFeed) else None
    if live is not None:
        if dist.enabled:
            raise ConfigError("a live stream feeds one process: train it without torchrun")
        if live.fmt != fmt:
            raise ConfigError(
                f"{live.name} sends {live.fmt.describe()} frames, the model reads "
                f"{fmt.describe()} (set --channels / --value-range to match)"
            )
        live.wait_ready()
        if live.opts.holdout:  # else: the test videos given, if any
            test_videos = live.store.test
    sampler = training_sampler(
        live.store.snapshot if live is not None else videos,  # type: ignore[arg-type]
        cfg,
        cfg.clip_frames,
        rng,
        fmt,
    )
    eval_clips = test_clips(test_videos, L, cfg.test_recursions, cfg.test_clips)
    # Held-out clips for D's accuracy: drawn like training clips, the same ones at every test.
    d_clips = None
    if test_videos and cfg.adversarial:
        held_out = training_sampler(
            test_videos, cfg, L + cfg.unroll, np.random.default_rng(cfg.seed + 1), fmt
        )
        d_clips = clips_to_float(held_out.sample(cfg.test_d_clips), device, fmt)

    # --- networks and optimizers --------------------------------------------------------
    G = Generator(cfg.model).to(device)
    D = Discriminator(cfg.model).to(device) if cfg.adversarial else None
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr_g)
    opt_d = d_optimizer(D, cfg) if D is not None else None
    # Mixed precision on CUDA only; FP16 gradients need loss scaling, one scaler per network.
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp)
    amp = amp if device.type == "cuda" else None
    fp16 = amp == torch.float16
    scaler_g = torch.amp.GradScaler("cuda") if fp16 else None
    scaler_d = torch.amp.GradScaler("cuda") if fp16 and D is not None else None

    origin = None  # where a fine-tuning run's networks came from (init_from.json)
    if init_from is not None:
        origin = start_from(G, D, Path(init_from), cfg, device)

    # --- resume -------------------------------------------------------------------------
    step = 0
    if resume:
        state = checkpoint.load(ckpt_path, device)
        check_resumable(state, ckpt_path)
        parts = ("generator", "opt_g", "discriminator", "opt_d")
        checkpoint.require_finite(
            ckpt_path,
            {k: state[k] for k in parts if k in state},
            "values",
            "; resume from an earlier copy or start again",
        )
        G.load_state_dict(state["generator"])
        opt_g.load_state_dict(state["opt_g"])
        if D is not None and opt_d is not None:
            if "discriminator" not in state:
                raise ConfigError(
                    f"--resume: {ckpt_path} holds no discriminator (trained with --no-adversarial)"
                )
            D.load_state_dict(state["discriminator"])
            opt_d.load_state_dict(state["opt_d"])
        streams = json.loads(state["rng"])["numpy"]
        if len(streams) == dist.world_size:
            rng.bit_generator.state = streams[dist.rank]
        else:  # another world size: fresh per-rank streams, still reproducible
            rng = sampler.rng = np.random.default_rng([cfg.seed, dist.rank, state["step"]])
        torch.set_rng_state(state["torch_rng"].cpu())  # loaded onto `device` with the rest
        if device.type == "cuda" and "cuda_rng" in state:  # a stochastic G's noise on the GPU
            torch.cuda.set_rng_state(state["cuda_rng"].cpu(), device)
        for scaler, key in ((scaler_g, "scaler_g"), (scaler_d, "scaler_d")):
            if scaler is not None and key in state:  # FP16 runs keep their loss scale
                scaler.load_state_dict(state[key])
        step = state["step"]
        if step >= cfg.steps:
            raise ConfigError(
                f"--steps {cfg.steps}: {ckpt_path} is already at step {step} (ask for more)"
            )
    # The run folder appears only once the data and the checkpoint have proved usable.
    if dist.is_main:  # (on a resume, the config it continues with)
        run_dir.mkdir(parents=True, exist_ok=True)
        text = json.dumps(to_dict(cfg), indent=2)
        atomic_write_text(run_dir / "config.json", text, overwrite=resume)
        if origin is not None:
            atomic_write_text(run_dir / "init_from.json", json.dumps(origin, indent=2))
    G_train = distributed.wrap(G, dist, device)
    D_train = distributed.wrap(D, dist, device) if D is not None else None

    saved_step = step if resume else None  # of the checkpoint on disk

    def save() -> str | None:
        """Write the checkpoint, or return why not: non-finite weights or optimizer states
        (on any rank: all agree, and none writes)."""
        nonlocal saved_step
        parts = {
            "G's weights": G,
            "D's weights": D,
            "G's optimizer state": opt_g,
            "D's optimizer state": opt_d,
        }
        bad = next(
            (
                k
                for k, v in parts.items()
                if v is not None and checkpoint.non_finite(v.state_dict())
            ),
            None,
        )
        if distributed.max_over_ranks(int(bad is not None), dist, device):
            return f"{bad or 'a network on another rank'} not finite"
        # Every rank's sampler state, so that a resume continues each rank's own stream.
        streams = distributed.gather(rng.bit_generator.state, dist)
        if not dist.is_main:
            return None
        state = {
            "generator": G.state_dict(),
            "opt_g": opt_g.state_dict(),
            "rng": json.dumps({"numpy": streams or [rng.bit_generator.state]}),
            "torch_rng": torch.get_rng_state(),
            **({"cuda_rng": torch.cuda.get_rng_state(device)} if device.type == "cuda" else {}),
        }
        if D is not None and opt_d is not None:
            state |= {"discriminator": D.state_dict(), "opt_d": opt_d.state_dict()}
        if live is not None:  # where a resumed emulator goes on (`resume_episode`)
            episodes = live.episodes_begun
            state["live"] = json.dumps({"stream": live.name, "episodes_begun": episodes})
        for scaler, key in ((scaler_g, "scaler_g"), (scaler_d, "scaler_d")):
            if scaler is not None:
                state[key] = scaler.state_dict()
        checkpoint.save(ckpt_path, cfg, step, state)
        saved_step = step
        return None

    # --- loop ---------------------------------------------------------------------------
    from avg_rt.train.summaries import Summaries

    summaries = Summaries(run_dir, enabled=dist.is_main)
    bar = _progress(progress and dist.is_main, cfg.steps, step)
    t0, s0 = time.perf_counter(), step
    stop = StopSignals()
    stopped_by = 0  # the signal every rank agreed to stop on (0: none)
    failure = None  # why a live stream cannot go on
    diverged = None  # the loss (or gradient norm) that was not finite
    was_dead = False  # G's finest scale dead (DEAD_FINEST) at the last test
    # Clips drawn and the time it took, since the last summary (at `since`).
    sampled, sampling_s, since = 0, 0.0, time.perf_counter()

    def sample() -> torch.Tensor:
        nonlocal sampled, sampling_s
        t = time.perf_counter()
        clips = sampler.sample(cfg.batch)
        sampling_s += time.perf_counter() - t
        sampled += cfg.batch
        return clips_to_float(clips, device, fmt)

    try:
        while step < cfg.steps:
            stopped_by = distributed.max_over_ranks(stop.signal or 0, dist, device)
            if stopped_by:
                break
            if live is not None and (failure := live.problem()) is not None:
                break
            k = unroll_length(cfg, step)
            scale = lr_scale(cfg, step)
            logs: dict[str, float] = {"train/lr_scale": scale}
            for opt, lr in ((opt_g, cfg.lr_g), (opt_d, cfg.lr_d)):
                for group in opt.param_groups if opt is not None else ():
                    group["lr"] = lr * scale
            adversarial = D_train is not None and opt_d is not None and step >= cfg.adv_start
            if adversarial:
                clip = sample()
                corner = _corner(rng, cfg)
                d_ahead = int(rng.integers(cfg.free_run + 1)) if cfg.d_free_run else 0
                logs |= d_step(G, D_train, opt_d, clip, cfg, k, corner, amp, scaler_d, d_ahead)
            clip = sample()
            ahead = int(rng.integers(cfg.free_run + 1)) if cfg.free_run else 0
            summary = (step + 1) % cfg.summary_interval == 0 or step + 1 == cfg.steps
            logs |= g_step(
                G_train,
                D if adversarial else None,
                opt_g,
                clip,
                cfg,
                k,
                _corner(rng, cfg),
                amp,
                scaler_g,
                measure_gradients=summary,
                ahead=ahead,
            )
            step += 1
            # Every rank agrees, so that all stop before the next collective; nothing of a
            # step with a non-finite loss or (--clip-grad) gradient norm is saved (its update
            # may be NaN, or was skipped). With FP16 an overflow is expected: its scaler skips
            # the update, and save() checks.
            losses = [] if fp16 else ["loss/d", "loss/g", "grad/d_norm", "grad/g_norm"]
            bad = next((k for k in losses if not math.isfinite(logs.get(k, 0))), None)
            if distributed.max_over_ranks(int(bad is not None), dist, device):
                diverged = f"{bad} is {logs[bad]}" if bad else "a loss not finite on another rank"
                if dist.is_main:
                    summaries.scalars(step, logs)  # the values that show how
                break
            if after_step:
                after_step(step, G, D)
            if not dist.is_main:
                if step % cfg.save_interval == 0 and (diverged := save()):
                    break
                continue

            if summary:
                now = time.perf_counter()
                logs["speed/steps_per_s"] = (step - s0) / (now - t0)
                # What the sampler could deliver against what training takes from it (since
                # the last summary).
                logs["data/sampler_clips_per_s"] = sampled / max(sampling_s, 1e-9)
                logs["data/consumed_clips_per_s"] = sampled / (now - since)
                sampled, sampling_s, since = 0, 0.0, now
                if live is not None:
                    logs |= live.stats()
                summaries.scalars(step, logs)
                if on_log:
                    on_log(step, logs)
            if step % cfg.image_interval == 0:
                with torch.no_grad(), seeded(0, device):  # (see `held_out_d_accuracy`)
                    pred = G(split(clip[:1, : L + 1], L)[0])
                frames = torch.cat([clip[0, :L], pred, clip[0, L : L + 1]])
                summaries.images(step, "train/history_prediction_target", frames)
            if (eval_clips or d_clips is not None) and (
                step % cfg.test_interval == 0 or step == cfg.steps
            ):
                with seeded(0, device):  # (see `held_out_d_accuracy`)
                    scores = evaluate(G, eval_clips, device) if eval_clips else {}
                    if d_clips is not None and D is not None:
                        scores |= held_out_d_accuracy(G, D, d_clips, cfg, k)
                summaries.scalars(step, scores)
                if on_log:
                    on_log(step, scores)
                finest = f"test/g_live_units_scale{cfg.model.n_scales - 1}"
                dead = not cfg.model.g_leak and scores.get(finest) == 0.0
                # Said when it happens (no run seen recovered: the user may stop it now),
                # and again at the end, where the run's last lines are read.
                if dist.is_main and dead and (not was_dead or step == cfg.steps):
                    print(f"{DEAD_FINEST} (test at iteration {step})", file=sys.stderr)
                was_dead = dead
            if step % cfg.save_interval == 0 and (diverged := save()):
                break
            if bar is not None and (step % cfg.log_interval == 0 or step == cfg.steps):
                bar.update(
                    bar.task_ids[0],
                    completed=step,
                    info=f"loss_g {logs['loss/g']:.4g}  psnr {logs['train/psnr']:.2f}",
                )
        if diverged is None:  # with the handlers in place: a signal now waits for the checkpoint
            diverged = save()
    finally:
        # A second Ctrl-C (KeyboardInterrupt) stops inside a step: saving that state would
        # label a half-done step as whole, so the last checkpoint stays as it was.
        stop.restore()
        summaries.close()
        if bar is not None:
            bar.stop()
    # DDP's reducers hold the process group: free them before destroying it, so that no gloo
    # thread outlives the group and aborts the process at exit ("terminate called without an
    # active exception", seen in about 1 of 20 two-process runs before this).
    del G_train, D_train
    gc.collect()
    distributed.barrier(dist)
    distributed.cleanup(dist)
    if diverged is not None:
        raise TrainingDiverged(ckpt_path, step, diverged, saved_step)
    if stopped_by and step < cfg.steps:
        raise TrainingStopped(stopped_by, step, ckpt_path)
    if failure is not None:
        assert live is not None
        raise DataError(
            live.name, f"{failure}; saved {ckpt_path} at step {step} (continue with --resume)"
        )
    return ckpt_path


class TrainingStopped(Exception):
    """Training stopped on SIGINT or SIGTERM after a whole step, with a checkpoint of it."""

    def __init__(self, signum: int, step: int, checkpoint: Path):
        name = signal.Signals(signum).name
        super().__init__(
            f"stopped by {name} after step {step}: saved {checkpoint} (continue with --resume)"
        )
        self.signum, self.step, self.checkpoint = signum, step, checkpoint


class TrainingDiverged(InputError):
    """Training stopped at a non-finite loss or weights: the checkpoint on disk (if any) is the
    last one saved before it, untouched. One line, like the user errors it is caused by (a
    learning rate too high for the data or the form)."""

    def __init__(self, path: Path, step: int, what: str, saved: int | None):
        if saved is None:
            kept = "no checkpoint was saved (start again in a new --out with --clip-grad, lower"
            kept += " --lr-g/--lr-d or another --seed)"
        else:
            kept = f"kept the checkpoint of step {saved} (--resume it with --clip-grad or lower"
            kept += " --lr-g/--lr-d, or start again with another --seed)"
        super().__init__(path, f"training diverged at step {step} ({what}); {kept}")
        self.step, self.saved = step, saved


class StopSignals:
    """SIGINT (Ctrl-C) and SIGTERM (schedulers, `docker stop`) ask training to stop after the
    step in progress, so that the checkpoint is one of a whole step. A second Ctrl-C stops at
    once (KeyboardInterrupt), a second SIGTERM terminates. Handlers are installed only in the
    main thread (Python allows no other)."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self.signal = signum
        # The next one acts at once (a handler installed outside Python reads as None).
        signal.signal(signum, self._previous[signum] or signal.SIG_DFL)

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler or signal.SIG_DFL)
        self._previous.clear()


def check_run_folder(run_dir: Path, resume: bool) -> None:
    """Raise ConfigError unless `run_dir` can take a new run (absent or empty) or, with
    `resume`, holds a checkpoint to continue."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--out: {run_dir} is a file, not a run folder")
    if resume and not (run_dir / CHECKPOINT).is_file():
        raise ConfigError(f"--resume: {run_dir / CHECKPOINT} does not exist")
    if not resume and run_dir.exists() and any(run_dir.iterdir()):
        raise ConfigError(f"--out: {run_dir} already exists; choose a new run folder or --resume")


def check_start(resume: bool, init_from: str | Path | None) -> None:
    """Raise ConfigError for a run asked both to continue and to start from a checkpoint."""
    if resume and init_from is not None:
        raise ConfigError("--init-from starts a new run and --resume continues one; give one")


def start_from(
    G: Generator, D: Discriminator | None, path: Path, cfg: TrainConfig, device: torch.device
) -> dict[str, Any]:
    """Load checkpoint `path`'s generator into G, and its discriminator into D where both
    exist (a D it lacks starts fresh), for a new run: optimizers, step and random streams
    start anew. ConfigError unless its network is the one `cfg` trains. Returns what the run
    records of its origin: the checkpoint's path, step and the networks taken."""
    state = checkpoint.load(path, device)
    old = state["config"].model
    if changes := network_changes(old, cfg.model, widen=True):
        differ = [f"{name} {a} (checkpoint) vs {b}" for name, a, b in changes]
        raise ConfigError(f"--init-from: {path} holds another network ({', '.join(differ)})")
    if old.noise_channels < cfg.model.noise_channels:
        widen_noise(state["generator"], old, cfg.model)
    nets = {"generator": G} | (
        {"discriminator": D} if D is not None and "discriminator" in state else {}
    )
    checkpoint.require_finite(path, {k: state[k] for k in nets}, "weights")
    for key, net in nets.items():
        net.load_state_dict(state[key])
    return {"checkpoint": str(path.resolve()), "step": int(state["step"]), "networks": [*nets]}


def check_resumable(state: dict[str, Any], path: Path) -> None:
    """Raise ConfigError if checkpoint `state` (from `path`) has no optimizer state."""
    if "opt_g" not in state:
        raise ConfigError(
            f"--resume: {path} holds networks only (a shipped model, not a run's checkpoint); "
            "start a new run"
        )


def unroll_length(cfg: TrainConfig, step: int) -> int:
    """Recursive steps G is trained on at iteration `step` (0-based): 1 at first, growing
    linearly to `cfg.unroll` over `cfg.unroll_ramp` iterations."""
    if cfg.unroll_ramp == 0:
        return cfg.unroll
    return min(cfg.unroll, 1 + (cfg.unroll - 1) * step // cfg.unroll_ramp)


def lr_scale(cfg: TrainConfig, step: int) -> float:
    """Factor on both learning rates at iteration `step` (0-based): 1, then over the last
    `cfg.lr_decay` of the steps falling linearly towards 0 (the last step still learns)."""
    decay = round(cfg.lr_decay * cfg.steps)
    start = cfg.steps - decay
    if decay == 0 or step < start:
        return 1.0
    return (cfg.steps - step) / (decay + 1)


def _corner(rng: np.random.Generator, cfg: TrainConfig) -> tuple[int, int]:
    """A random top-left corner of D's window in the crop, on the coarsest scale's grid."""
    align = 2 ** (cfg.model.n_scales - 1)
    n = (cfg.crop - cfg.model.patch_size) // align + 1
    return int(rng.integers(n)) * align, int(rng.integers(n)) * align


def d_optimizer(D: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD (the TF project's) or Adam with `cfg.d_betas`, at `cfg.lr_d`."""
    if cfg.d_optimizer == "adam":
        return torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=cfg.d_betas)
    return torch.optim.SGD(D.parameters(), lr=cfg.lr_d)


def _progress(enabled: bool, total: int, start: int) -> Progress | None:
    """A started rich progress bar with steps/s and the latest loss, or None."""
    if not enabled:
        return None
    bar = Progress(
        TextColumn("train"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(show_speed=True),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
    )
    bar.add_task("train", total=total, completed=start, info="")
    bar.start()
    return bar
