"""The training loop: one D step then one G step per iteration (G only when not adversarial).

`train(cfg, videos, run_dir)` reads top to bottom: init, data, networks, optimizers, resume,
loop. Summaries, test rollouts and checkpoints run on the intervals of the config (in steps).
A step is one iteration; the checkpoint's `step` counts completed iterations.
"""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from avg_rt.train import distributed
from avg_rt.train.distributed import unwrap
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
from avg_rt.config import ConfigError, TrainConfig, to_dict
from avg_rt.data.clips import ClipSampler, clips_to_model, frames_to_model, test_clips
from avg_rt.data.sources import Video
from avg_rt.files import atomic_write_text
from avg_rt.losses import adversarial_loss, generator_loss
from avg_rt.metrics import frame_metrics
from avg_rt.model import Discriminator, Generator, pyramid
from avg_rt.predict import rollout
from avg_rt.runners import resolve_device
from avg_rt.runners.pyt import TorchRunner

CHECKPOINT = "checkpoint.pt"


def _autocast(x: torch.Tensor, dtype: torch.dtype | None) -> torch.autocast:
    """Autocast to `dtype` on `x`'s device for the forward pass; off when `dtype` is None."""
    return torch.autocast(x.device.type, dtype=dtype, enabled=dtype is not None)


def _update(
    loss: torch.Tensor, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None
) -> None:
    """Backward and optimizer step, outside autocast. With FP16 autocast a GradScaler scales
    the loss so that small gradients do not flush to zero in FP16, and skips steps whose
    gradients overflowed; BF16 has FP32's range and needs none."""
    opt.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        opt.step()
        return
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()


def d_step(
    G: nn.Module,
    D: nn.Module,
    opt_d: torch.optim.Optimizer,
    hist: torch.Tensor,
    target: torch.Tensor,
    cfg: TrainConfig,
    autocast: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> dict[str, float]:
    """One discriminator update on a batch; G's predictions are detached.

    D (which may be a DDP wrapper) sees real and generated frames in one forward pass, so a
    distributed D all-reduces its gradients exactly once per step. `autocast`: the dtype of
    the forward pass under autocast (None: float32); `scaler`: see `_update`.
    """
    n, b = cfg.model.n_scales, hist.shape[0]
    with _autocast(hist, autocast):
        with torch.no_grad():
            fake = unwrap(G).forward_scales(hist)
        real = pyramid(target, n)
        hist_pyr = pyramid(hist, n) if cfg.model.d_conditional else None
        both = [torch.cat([r, f]) for r, f in zip(real, fake)]  # (2B, 3, h, w): real first
        logits = D(both, [torch.cat([h, h]) for h in hist_pyr] if hist_pyr else None)
        logits_real, logits_fake = [z[:b] for z in logits], [z[b:] for z in logits]
        loss = adversarial_loss(logits_real, real=True) + adversarial_loss(logits_fake, real=False)
    _update(loss, opt_d, scaler)
    correct = [(z > 0).float().mean() for z in logits_real]
    correct += [(z < 0).float().mean() for z in logits_fake]
    return {"loss/d": loss.item(), "d/accuracy": torch.stack(correct).mean().item()}


def g_step(
    G: nn.Module,
    D: nn.Module | None,
    opt_g: torch.optim.Optimizer,
    hist: torch.Tensor,
    target: torch.Tensor,
    cfg: TrainConfig,
    autocast: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> dict[str, float]:
    """One generator update. D's parameters are frozen, but the adversarial term is
    back-propagated *through* D into G (the TF project's generator never got this gradient).

    G may be a DDP wrapper (its gradients are all-reduced once); D is used unwrapped, so it
    takes no part in G's gradient synchronisation. `autocast`, `scaler`: as for `d_step`.
    """
    n = cfg.model.n_scales
    with _autocast(hist, autocast):
        preds = G(hist, all_scales=True)
        targets = pyramid(target, n)
        d_logits = None
        if D is not None:
            D = unwrap(D)
            D.requires_grad_(False)
            d_logits = D(preds, pyramid(hist, n) if cfg.model.d_conditional else None)
        loss, terms = generator_loss(preds, targets, cfg, d_logits)
    _update(loss, opt_g, scaler)
    if D is not None:
        D.requires_grad_(True)
    m = frame_metrics(preds[-1].detach(), target)
    return {
        "loss/g": loss.item(),
        **{f"loss/{k}": v.item() for k, v in terms.items()},
        "train/psnr": m["psnr"].mean().item(),
        "train/sharp_diff": m["sharp_diff"].mean().item(),
    }


def evaluate(
    G: Generator, clips: Sequence[tuple[str, np.ndarray, np.ndarray]], device: torch.device
) -> dict[str, float]:
    """Recursive predictions on full test frames: mean PSNR and sharp difference at the first
    and the last step, next to the copy-last-frame baseline."""
    scores: dict[str, list[float]] = {}
    with TorchRunner(G, device) as runner:
        for _, hist, truth in clips:
            h = frames_to_model(hist[None], device)  # (1, L, 3, H, W)
            y = frames_to_model(truth[None], device)  # (1, S, 3, H, W)
            preds = rollout(runner, h, steps=y.shape[1])
            ours = frame_metrics(preds, y)
            base = frame_metrics(h[:, -1:].expand_as(y), y)
            for name in ("psnr", "sharp_diff"):
                for tag, m in (("", ours), ("baseline_", base)):
                    scores.setdefault(f"test/{tag}{name}_step1", []).append(m[name][0, 0].item())
                    scores.setdefault(f"test/{tag}{name}_last", []).append(m[name][0, -1].item())
    return {k: float(np.mean(v)) for k, v in scores.items()}


def train(
    cfg: TrainConfig,
    videos: Sequence[Video],
    run_dir: str | Path,
    test_videos: Sequence[Video] = (),
    resume: bool = False,
    progress: bool = True,
    on_log: Callable[[int, dict[str, float]], None] | None = None,
    after_step: Callable[[int, Generator, Discriminator | None], None] | None = None,
) -> Path:
    """Train on clips sampled from `videos`; returns the path of the final checkpoint.

    `run_dir` must be new unless `resume` is set, in which case training continues from its
    checkpoint at the saved step (same weights, optimizer state and random streams). Ctrl-C
    saves a checkpoint before stopping. `on_log(step, values)` sees every logged scalar (rank 0);
    `after_step(step, G, D)` runs on every rank after each step (tests, custom monitoring).

    Under `torchrun` (RANK and WORLD_SIZE set) each process trains one replica with
    DistributedDataParallel on `cfg.batch` clips of its own random stream: the global batch is
    `cfg.batch * world_size`. Only rank 0 writes files.
    """
    # --- init ---------------------------------------------------------------------------
    cfg.validate()
    run_dir = Path(run_dir)
    ckpt_path = run_dir / CHECKPOINT
    dist = distributed.from_env()
    if resume and not ckpt_path.is_file():
        raise ConfigError(f"--resume: {ckpt_path} does not exist")
    if dist.is_main and not resume and run_dir.exists() and any(run_dir.iterdir()):
        raise ConfigError(f"--out: {run_dir} already exists; choose a new run folder or --resume")
    device = resolve_device(cfg.device)
    if dist.enabled:
        device = distributed.setup(dist, device)
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not resume:
            atomic_write_text(run_dir / "config.json", json.dumps(to_dict(cfg), indent=2))
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    # Each rank draws its own clips: no two ranks train on the same ones.
    rng = np.random.default_rng([cfg.seed, dist.rank] if dist.enabled else cfg.seed)

    # --- data ---------------------------------------------------------------------------
    L = cfg.model.history_len
    sampler = ClipSampler(
        videos,
        L + 1,
        cfg.model.patch_size,
        rng,
        cfg.movement_threshold,
        cfg.movement_tries,
        cfg.unfiltered_prob,
    )
    eval_clips = test_clips(test_videos, L, cfg.test_recursions, cfg.test_clips)

    # --- networks and optimizers --------------------------------------------------------
    G = Generator(cfg.model).to(device)
    D = Discriminator(cfg.model).to(device) if cfg.adversarial else None
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr_g)
    opt_d = torch.optim.SGD(D.parameters(), lr=cfg.lr_d) if D is not None else None
    # Mixed precision on CUDA only; FP16 gradients need loss scaling, one scaler per network.
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp)
    amp = amp if device.type == "cuda" else None
    fp16 = amp == torch.float16
    scaler_g = torch.amp.GradScaler("cuda") if fp16 else None
    scaler_d = torch.amp.GradScaler("cuda") if fp16 and D is not None else None

    # --- resume -------------------------------------------------------------------------
    step = 0
    if resume:
        state = checkpoint.load(ckpt_path, device)
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
        torch.set_rng_state(state["torch_rng"])
        for scaler, key in ((scaler_g, "scaler_g"), (scaler_d, "scaler_d")):
            if scaler is not None and key in state:  # FP16 runs keep their loss scale
                scaler.load_state_dict(state[key])
        step = state["step"]
    G_train = distributed.wrap(G, dist, device)
    D_train = distributed.wrap(D, dist, device) if D is not None else None

    def save(gather: bool = True) -> None:
        # Every rank's sampler state, so that a resume continues each rank's own stream.
        streams = distributed.gather(rng.bit_generator.state, dist) if gather else []
        if not dist.is_main:
            return
        state = {
            "generator": G.state_dict(),
            "opt_g": opt_g.state_dict(),
            "rng": json.dumps({"numpy": streams or [rng.bit_generator.state]}),
            "torch_rng": torch.get_rng_state(),
        }
        if D is not None and opt_d is not None:
            state |= {"discriminator": D.state_dict(), "opt_d": opt_d.state_dict()}
        for scaler, key in ((scaler_g, "scaler_g"), (scaler_d, "scaler_d")):
            if scaler is not None:
                state[key] = scaler.state_dict()
        checkpoint.save(ckpt_path, cfg, step, state)

    # --- loop ---------------------------------------------------------------------------
    from avg_rt.train.summaries import Summaries

    summaries = Summaries(run_dir, enabled=dist.is_main)
    bar = _progress(progress and dist.is_main, cfg.steps, step)
    t0, s0 = time.perf_counter(), step
    try:
        while step < cfg.steps:
            logs: dict[str, float] = {}
            if D_train is not None and opt_d is not None:
                hist, target = clips_to_model(sampler.sample(cfg.batch), device)
                logs |= d_step(G, D_train, opt_d, hist, target, cfg, amp, scaler_d)
            hist, target = clips_to_model(sampler.sample(cfg.batch), device)
            logs |= g_step(G_train, D, opt_g, hist, target, cfg, amp, scaler_g)
            step += 1
            if after_step:
                after_step(step, G, D)
            if not dist.is_main:
                if step % cfg.save_interval == 0:
                    save()
                continue

            if step % cfg.summary_interval == 0 or step == cfg.steps:
                logs["speed/steps_per_s"] = (step - s0) / (time.perf_counter() - t0)
                summaries.scalars(step, logs)
                if on_log:
                    on_log(step, logs)
            if step % cfg.image_interval == 0:
                with torch.no_grad():
                    pred = G(hist[:1])
                frames = torch.cat([hist[:1].view(L, 3, *hist.shape[-2:]), pred, target[:1]])
                summaries.images(step, "train/history_prediction_target", frames)
            if eval_clips and (step % cfg.test_interval == 0 or step == cfg.steps):
                scores = evaluate(G, eval_clips, device)
                summaries.scalars(step, scores)
                if on_log:
                    on_log(step, scores)
            if step % cfg.save_interval == 0:
                save()
            if bar is not None and (step % cfg.log_interval == 0 or step == cfg.steps):
                bar.update(
                    bar.task_ids[0],
                    completed=step,
                    info=f"loss_g {logs['loss/g']:.4g}  psnr {logs['train/psnr']:.2f}",
                )
    except KeyboardInterrupt:
        save(gather=not dist.enabled)  # other ranks may be gone: save what this rank has
        raise
    finally:
        summaries.close()
        if bar is not None:
            bar.stop()
    save()
    # DDP's reducers hold the process group: free them before destroying it, so that no gloo
    # thread outlives the group and aborts the process at exit ("terminate called without an
    # active exception", seen in about 1 of 20 two-process runs before this).
    del G_train, D_train
    gc.collect()
    distributed.barrier(dist)
    distributed.cleanup(dist)
    return ckpt_path


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
