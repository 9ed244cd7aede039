"""The two phases of a training iteration: a discriminator step, then a generator step.

Both take a clip batch `clip` (N, history_len + k, C, c, c) float in [-1, 1]: the history, then
k true future frames. G predicts each of the k frames from the last history_len frames, real
at first and then its own predictions (`unroll`; with gradients through the recursion in the G
step, the multi-step objective of Oh et al. 2015). D judges patch_size x patch_size windows
(one `corner` per batch) of every step: the window of frames G saw followed by its prediction,
against the true frames followed by the true next frame. Each phase steps one network: the D
step detaches G's predictions; the G step freezes D's parameters but back-propagates through D.
"""

from __future__ import annotations

import math
from typing import cast

import torch
from avg_rt.train.distributed import unwrap
from torch import nn

from avg_rt.config import TrainConfig
from avg_rt.data.clips import round_to_8bit
from avg_rt.losses import adversarial_loss, generator_loss, lp_per_clip
from avg_rt.metrics import frame_metrics
from avg_rt.model import Generator, pyramid

Corner = tuple[int, int]  # top-left (y, x) of D's window in the crop; multiples of 2^(n-1)


def split(clip: torch.Tensor, history_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, T, C, h, w) -> history (N, C * history_len, h, w), targets (N, T - history_len, C,
    h, w)."""
    n, _, c, h, w = clip.shape
    return clip[:, :history_len].reshape(n, history_len * c, h, w), clip[:, history_len:]


def still_weights(
    targets: torch.Tensor, before: torch.Tensor, weight: float, n_scales: int
) -> list[torch.Tensor]:
    """Per-pixel Lp weights for targets (N, S, C, h, w) whose preceding true frames are
    `before` (same shape): `weight` where a target pixel equals the one before it in every
    channel, 1 elsewhere; in the step-major order of the unrolled predictions, resized to
    every scale (coarsest first)."""
    still = (targets == before).all(dim=2, keepdim=True).float()  # (N, S, 1, h, w)
    w = 1 + (weight - 1) * still
    return pyramid(w.transpose(0, 1).flatten(0, 1), n_scales)


def feeds_back_8bit(cfg: TrainConfig) -> bool:
    """Whether unrolled steps see 8-bit frames: asked for, and the frames are 8-bit."""
    return cfg.feedback_8bit and cfg.model.value_range is None


def unroll(
    G: nn.Module,
    history: torch.Tensor,
    steps: int,
    feedback_8bit: bool = False,
    noises: list[torch.Tensor] | None = None,
) -> tuple[list[list[torch.Tensor]], list[torch.Tensor]]:
    """G's predictions for `steps` recursive steps, each a list of scales (coarsest first), and
    the input window (N, C * history_len, h, w) of each step. Gradients flow through the
    recursion unless called under no_grad; with `feedback_8bit` the fed-back frame is rounded
    to 8-bit levels, as in `avg_rt.predict.rollout`, with a straight-through gradient.
    `noises`: a stochastic G's noise maps for each step (None: G draws its own)."""
    preds, windows = [], []
    window = history
    for i in range(steps):
        p = G(window, all_scales=True, noise=noises[i] if noises else None)
        preds.append(p)
        windows.append(window)
        new = p[-1] + (round_to_8bit(p[-1]) - p[-1]).detach() if feedback_8bit else p[-1]
        window = torch.cat([window[:, new.shape[1] :], new], dim=1)  # drop the oldest, add new
    return preds, windows


def free_run(
    G: nn.Module, clip: torch.Tensor, history_len: int, steps: int, feedback_8bit: bool
) -> torch.Tensor:
    """`clip` (N, T, C, h, w) as G meets it `steps` steps into a rollout: the last
    `history_len` frames of its history followed by G's own `steps` predictions, then the true
    frames after those steps: (N, T - steps, C, h, w). G predicts as `avg_rt.predict.rollout`
    runs it (eval mode, so with its deadzone and palette, where set; no gradient), and its
    frames are rounded to 8-bit levels with `feedback_8bit`, as the rollout feeds them back."""
    frames = list(clip[:, :history_len].unbind(1))
    net = unwrap(G)
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            for _ in range(steps):
                new = net(torch.cat(frames[-history_len:], dim=1))
                frames.append(round_to_8bit(new) if feedback_8bit else new)
    finally:
        net.train(was_training)
    seen = torch.stack(frames[-history_len:], dim=1)
    return torch.cat([seen, clip[:, history_len + steps :]], dim=1)


def best_noises(
    G: nn.Module,
    history: torch.Tensor,
    targets: torch.Tensor,
    steps: int,
    cfg: TrainConfig,
    lp_weights: list[torch.Tensor] | None = None,
) -> tuple[list[torch.Tensor], float]:
    """Of `cfg.best_of` noise sequences drawn for each clip (one map per unrolled step), the
    one whose rollout from `history` has the least Lp error (the G step's Lp term: with its
    `lp_weights`, `still_weights`) over `steps` steps against `targets` (N, S, C, h, w), as a
    noise map per step; and the gain of picking, 1 - (least error) / (mean error over the
    draws), averaged over the clips: 0 where G ignores its noise. Runs without gradients (the
    G step then trains on the picked draw)."""
    net = cast(Generator, unwrap(G))
    k, n, scales = cfg.best_of, history.shape[0], cfg.model.n_scales
    tiled = history.repeat(k, 1, 1, 1)  # draw-major: rows d * n .. d * n + n - 1
    noises = [cast(torch.Tensor, net.draw_noise(tiled)) for _ in range(steps)]

    def weights(j: int) -> list[torch.Tensor] | None:  # step j's, from the step-major pyramid
        if lp_weights is None:
            return None
        return [w[j * n : (j + 1) * n].repeat(k, 1, 1, 1) for w in lp_weights]

    with torch.no_grad():
        preds, _ = unroll(net, tiled, steps, feeds_back_8bit(cfg), noises)
        truth = [pyramid(targets[:, j].repeat(k, 1, 1, 1), scales) for j in range(steps)]
        error = sum(
            lp_per_clip(p, y, cfg.l_num, weights(j)) for j, (p, y) in enumerate(zip(preds, truth))
        )
        error = cast(torch.Tensor, error).float().view(k, n)
    least, pick = error.min(0)
    gain = (1 - least / error.mean(0).clamp(min=1e-12)).mean().item()
    rows = pick * n + torch.arange(n, device=pick.device)
    return [z[rows] for z in noises], gain


def d_window(pyr: list[torch.Tensor], corner: Corner, patch: int) -> list[torch.Tensor]:
    """The patch x patch window at `corner` of a finest-scale crop, cut from every scale of its
    pyramid (coarsest first). With corners on multiples of 2^(n-1), each scale's cut equals the
    pyramid of the window (bilinear halving only mixes pixels within aligned blocks)."""
    n = len(pyr)
    out = []
    for k, x in enumerate(pyr):
        f = 2 ** (n - 1 - k)
        y, x0, s = corner[0] // f, corner[1] // f, patch // f
        out.append(x[..., y : y + s, x0 : x0 + s])
    return out


def _d_inputs(
    frames: list[list[torch.Tensor]],
    windows: list[torch.Tensor],
    cfg: TrainConfig,
    corner: Corner,
) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
    """D's inputs for every step, concatenated along the batch: the frames' windows per scale
    and, for a conditional D, the windows of the pyramids of the frames it saw before."""
    n, patch = cfg.model.n_scales, cfg.model.patch_size
    cut = [d_window(f, corner, patch) for f in frames]
    joined = [torch.cat(scale) for scale in zip(*cut)]
    if not cfg.model.d_conditional:
        return joined, None
    hist = [d_window(pyramid(w, n), corner, patch) for w in windows]
    return joined, [torch.cat(scale) for scale in zip(*hist)]


def _autocast(x: torch.Tensor, dtype: torch.dtype | None) -> torch.autocast:
    """Autocast to `dtype` on `x`'s device for the forward pass; off when `dtype` is None."""
    return torch.autocast(x.device.type, dtype=dtype, enabled=dtype is not None)


def _update(
    loss: torch.Tensor,
    opt: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    clip: float = 0.0,
) -> dict[str, float]:
    """Backward and optimizer step, outside autocast, the gradient clipped to L2 norm `clip`
    over all of `opt`'s parameters (0: not). With FP16 autocast a GradScaler scales the loss
    so that small gradients do not flush to zero in FP16 (and unscales them before clipping),
    and skips steps whose gradients overflowed; BF16 has FP32's range and needs none.

    With `clip`, returns {"norm": the gradient's norm before clipping}. Without a scaler a norm
    that is not finite skips the update: clip_grad_norm_ would multiply the gradient by
    clip / inf = 0, which zeroes a gradient too large for float32's norm (a run then trains on
    nothing, its losses finite) and turns an infinite one into NaN; training stops on it."""
    opt.zero_grad(set_to_none=True)
    params = [p for group in opt.param_groups for p in group["params"]]
    if scaler is None:
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, clip).item() if clip else 0.0
        if math.isfinite(norm):
            opt.step()
        return {"norm": norm} if clip else {}
    scaler.scale(loss).backward()
    if clip:
        scaler.unscale_(opt)
        norm = torch.nn.utils.clip_grad_norm_(params, clip).item()
    scaler.step(opt)
    scaler.update()
    return {"norm": norm} if clip else {}


def d_step(
    G: nn.Module,
    D: nn.Module,
    opt_d: torch.optim.Optimizer,
    clip: torch.Tensor,
    cfg: TrainConfig,
    steps: int = 1,
    corner: Corner = (0, 0),
    autocast: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
    ahead: int = 0,
) -> dict[str, float]:
    """One discriminator update on `clip` unrolled `steps` steps; G's predictions are detached.

    D (which may be a DDP wrapper) sees real and generated windows in one forward pass, so a
    distributed D all-reduces its gradients exactly once per step. `autocast`: the dtype of
    the forward pass under autocast (None: float32); `scaler`: see `_update`; `ahead`: see
    `d_logits`.
    """
    with _autocast(clip, autocast):
        logits_real, logits_fake = d_logits(G, D, clip, cfg, steps, corner, ahead)
        loss = adversarial_loss(logits_real, real=True, smoothing=cfg.d_label_smoothing)
        loss = loss + adversarial_loss(logits_fake, real=False)
    norm = _update(loss, opt_d, scaler, cfg.clip_grad)
    return {
        "loss/d": loss.item(),
        **{f"grad/d_{k}": v for k, v in norm.items()},
        **d_accuracy(logits_real, logits_fake, "d/"),
        **({"train/d_free_run": float(ahead)} if cfg.d_free_run else {}),
    }


def d_logits(
    G: nn.Module,
    D: nn.Module,
    clip: torch.Tensor,
    cfg: TrainConfig,
    steps: int,
    corner: Corner,
    ahead: int = 0,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """D's per-scale logits on the real and on G's windows of `clip` unrolled `steps` steps
    (G under no_grad), from one forward pass of D.

    With `ahead`, G's steps start after `ahead` free-run steps (`free_run`: from a history
    ending in G's own frames), and the real windows are the true frames at the same times, with
    their true histories (`clip` holds history_len + ahead + steps frames at least)."""
    L, n = cfg.model.history_len, cfg.model.n_scales
    real_clip = clip[:, ahead:]
    with torch.no_grad():
        fed = clip
        if ahead:  # in float32, as g_step runs it (outside autocast)
            with torch.autocast(clip.device.type, enabled=False):
                fed = free_run(G, clip, L, ahead, feeds_back_8bit(cfg))
        history, targets = split(fed[:, : L + steps], L)
        fake, fake_windows = unroll(unwrap(G), history, steps, feeds_back_8bit(cfg))
    real = [pyramid(targets[:, j], n) for j in range(steps)]
    real_windows = [split(real_clip[:, j : j + L + 1], L)[0] for j in range(steps)]
    real_in, real_hist = _d_inputs(real, real_windows, cfg, corner)
    fake_in, fake_hist = _d_inputs(fake, fake_windows, cfg, corner)
    b = real_in[0].shape[0]
    both = [torch.cat([r, f]) for r, f in zip(real_in, fake_in)]  # real first
    hist = None
    if real_hist is not None and fake_hist is not None:
        hist = [torch.cat([r, f]) for r, f in zip(real_hist, fake_hist)]
    logits = D(both, hist)
    return [z[:b] for z in logits], [z[b:] for z in logits]


def d_accuracy(
    logits_real: list[torch.Tensor], logits_fake: list[torch.Tensor], prefix: str
) -> dict[str, float]:
    """Fraction of D's per-scale decisions that are right on real and on generated windows,
    and their mean, as `{prefix}accuracy`, `{prefix}accuracy_real`, `{prefix}accuracy_fake`."""
    real = torch.stack([(z > 0).float().mean() for z in logits_real]).mean().item()
    fake = torch.stack([(z < 0).float().mean() for z in logits_fake]).mean().item()
    return {
        f"{prefix}accuracy": (real + fake) / 2,
        f"{prefix}accuracy_real": real,
        f"{prefix}accuracy_fake": fake,
    }


def g_step(
    G: nn.Module,
    D: nn.Module | None,
    opt_g: torch.optim.Optimizer,
    clip: torch.Tensor,
    cfg: TrainConfig,
    steps: int = 1,
    corner: Corner = (0, 0),
    autocast: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
    measure_gradients: bool = False,
    ahead: int = 0,
) -> dict[str, float]:
    """One generator update on `clip` unrolled `steps` steps (the loss is the mean over steps),
    after `ahead` free-run steps (`free_run`: the unrolled steps start from a history ending in
    G's own frames; `clip` holds history_len + ahead + steps frames at least).

    D's parameters are frozen, but the adversarial term is back-propagated *through* D into G
    (the TF project's generator never got this gradient). G may be a DDP wrapper (its gradients
    are all-reduced once); D is used unwrapped, so it takes no part in G's synchronisation.
    `measure_gradients` adds the norm of each weighted term's gradient with respect to G's
    parameters (three extra backward passes: for summary steps). `autocast`, `scaler`: as for
    `d_step`.
    """
    L, n = cfg.model.history_len, cfg.model.n_scales
    before = clip[:, L + ahead - 1 : L + ahead]  # the true frame before the first target
    if ahead:
        clip = free_run(G, clip, L, ahead, feeds_back_8bit(cfg))
    history, targets = split(clip[:, : L + steps], L)
    lp_weights = None
    if cfg.still_weight != 1:
        before = torch.cat([before, targets[:, : steps - 1]], dim=1)
        lp_weights = still_weights(targets[:, :steps], before, cfg.still_weight, n)
    with _autocast(clip, autocast):
        noises: list[torch.Tensor] | None = None
        logs: dict[str, float] = {}
        if cfg.best_of > 1:
            noises, gain = best_noises(G, history, targets, steps, cfg, lp_weights)
            logs["train/best_of_gain"] = gain
        fed = history
        if noises is not None and cfg.adv_fresh_draw and D is not None:
            # rows N..2N-1: a fresh draw per clip, which only D judges
            net = cast(Generator, unwrap(G))
            noises = [torch.cat([z, cast(torch.Tensor, net.draw_noise(history))]) for z in noises]
            fed = history.repeat(2, 1, 1, 1)
        preds, windows = unroll(G, fed, steps, feeds_back_8bit(cfg), noises)
        b = history.shape[0]  # Lp and GDL score the first N rows: the picked draws
        joined = [torch.cat([x[:b] for x in scale]) for scale in zip(*preds)]  # (steps * N, ...)
        truth = pyramid(targets[:, :steps].transpose(0, 1).flatten(0, 1), n)
        d_logits = None
        if D is not None:
            D = unwrap(D)
            D.requires_grad_(False)
            d_logits = D(*_d_inputs(preds, windows, cfg, corner))
        loss, terms = generator_loss(joined, truth, cfg, d_logits, lp_weights)
    if "adv" in terms and cfg.adv_share_cap > 0:
        scale, share = _adv_cap(terms, cfg, unwrap(G))
        loss = loss - (1 - scale) * cfg.lam_adv * terms["adv"]
        logs |= {"train/adv_scale": scale, "train/adv_share_last_layer": share}
    if measure_gradients:
        weights = {
            "lp": cfg.lam_lp,
            "gdl": cfg.lam_gdl,
            "adv": cfg.lam_adv * logs.get("train/adv_scale", 1.0),
        }
        logs |= _gradient_norms({k: weights[k] * t for k, t in terms.items()}, unwrap(G))
    logs |= {f"grad/g_{k}": v for k, v in _update(loss, opt_g, scaler, cfg.clip_grad).items()}
    if D is not None:
        D.requires_grad_(True)
    m = frame_metrics(joined[-1][-targets.shape[0] :].detach(), targets[:, steps - 1])
    return {
        "loss/g": loss.item(),
        **{f"loss/{k}": v.item() for k, v in terms.items()},
        **logs,
        "train/unroll": float(steps),
        **({"train/free_run": float(ahead)} if cfg.free_run else {}),
        "train/psnr": m["psnr"].mean().item(),  # of the last unrolled step
        "train/sharp_diff": m["sharp_diff"].mean().item(),
    }


def _adv_cap(terms: dict[str, torch.Tensor], cfg: TrainConfig, G: nn.Module) -> tuple[float, float]:
    """The factor (<= 1) on this step's adversarial term that keeps its share of the gradient
    of the finest scale's last convolution at most `cfg.adv_share_cap`, and the share before
    it. Two extra backward passes into that layer only: through D and, with unrolled steps,
    through the later steps that the first predictions fed."""
    last = cast(Generator, G).finest_last_conv().weight
    pixel = cfg.lam_lp * terms["lp"] + cfg.lam_gdl * terms["gdl"]
    (g_pix,) = torch.autograd.grad(pixel, last, retain_graph=True)
    (g_adv,) = torch.autograd.grad(cfg.lam_adv * terms["adv"], last, retain_graph=True)
    pix, adv = g_pix.float().norm().item(), g_adv.float().norm().item()
    if adv == 0 or pix == 0:  # nothing to balance (or an FP16 gradient that underflowed)
        return 1.0, float(adv > 0)
    share = adv / (adv + pix)
    if share <= cfg.adv_share_cap:
        return 1.0, share
    # Scaling adv by f gives the share f adv / (f adv + pix) = cap.
    cap = cfg.adv_share_cap
    return cap * pix / ((1 - cap) * adv), share


def _gradient_norms(terms: dict[str, torch.Tensor], G: nn.Module) -> dict[str, float]:
    """L2 norm of each (weighted) loss term's gradient over G's parameters, and the share of
    the adversarial term: |grad adv| / (|grad adv| + |grad (Lp + GDL)|)."""
    params = [p for p in G.parameters() if p.requires_grad]
    grads = {}
    for name, t in terms.items():
        g = torch.autograd.grad(t, params, retain_graph=True, allow_unused=True)
        grads[name] = [x if x is not None else torch.zeros_like(p) for x, p in zip(g, params)]

    def norm(gs: list[torch.Tensor]) -> float:
        return torch.sqrt(sum((x.float() ** 2).sum() for x in gs)).item()  # type: ignore[arg-type]

    out = {f"grad/{name}": norm(gs) for name, gs in grads.items()}
    if "adv" in grads:
        pixel = norm([a + b for a, b in zip(grads["lp"], grads["gdl"])])
        out["grad/adv_share"] = out["grad/adv"] / max(out["grad/adv"] + pixel, 1e-30)
    return out
