"""Generator and discriminator losses (upstream.md, "Losses").

Every loss takes lists of per-scale tensors (coarsest first) and averages over scales.
Reductions: Lp and GDL sum over the pixels and channels of each clip (of a 32x32 clip: larger
crops are scaled to that area), then average over the batch; the adversarial BCE averages
over the batch and uses the natural log. The TF project summed all three over the batch and
took log10 in the BCE, so its weights translate as: lam_lp and lam_gdl unchanged, lam_adv
divided by ln 10 (its intended 0.05 is 0.0217 here, the 1.0 it really ran is 0.434), and an
SGD learning rate of D multiplied by batch / ln 10 (its 0.02 at batch 8 is 0.0695 here). The
`tf` preset holds those values.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from avg_rt.config import TrainConfig


def _per_clip_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum over all but the batch dimension, mean over the batch."""
    return x.flatten(1).sum(1).mean()


def lp_per_clip(
    preds: list[torch.Tensor],
    targets: list[torch.Tensor],
    l_num: int,
    weights: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """(N,): each clip's sum of |G - Y|^l_num (each pixel times its `weights` (N, 1, h, w)
    per scale, if given), mean over scales."""
    errors = [(p - y).abs() ** l_num for p, y in zip(preds, targets)]
    if weights is not None:
        errors = [e * w for e, w in zip(errors, weights)]
    return torch.stack([e.flatten(1).sum(1) for e in errors]).mean(0)


def lp_loss(
    preds: list[torch.Tensor],
    targets: list[torch.Tensor],
    l_num: int,
    weights: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """`lp_per_clip`, mean over the batch."""
    return lp_per_clip(preds, targets, l_num, weights).mean()


def _abs_grads(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # Absolute neighbour differences along width and height: (B, C, H, W-1), (B, C, H-1, W).
    return (x[..., :, 1:] - x[..., :, :-1]).abs(), (x[..., 1:, :] - x[..., :-1, :]).abs()


def gdl_loss(preds: list[torch.Tensor], targets: list[torch.Tensor], alpha: float) -> torch.Tensor:
    """Gradient difference loss: sum of ||dY| - |dG||^alpha over both directions per clip."""
    terms = []
    for p, y in zip(preds, targets):
        (px, py), (yx, yy) = _abs_grads(p), _abs_grads(y)
        terms.append(
            _per_clip_sum((yx - px).abs() ** alpha) + _per_clip_sum((yy - py).abs() ** alpha)
        )
    return torch.stack(terms).mean()


def adversarial_loss(
    logits: list[torch.Tensor], real: bool, smoothing: float = 0.0
) -> torch.Tensor:
    """BCE of D's per-scale logits against the label (1 real, 0 generated), mean over scales.

    Computed from logits, so it stays finite when D is confident; the TF project clipped D's
    sigmoid output to [0.1, 0.9] instead, which also zeroes the gradient G would receive.
    `smoothing` lowers the real label to 1 - smoothing (one-sided label smoothing, Salimans et
    al. 2016: D's step only; G always aims at 1).
    """
    label = 1.0 - smoothing if real else 0.0
    terms = [F.binary_cross_entropy_with_logits(z, torch.full_like(z, label)) for z in logits]
    return torch.stack(terms).mean()


def generator_loss(
    preds: list[torch.Tensor],
    targets: list[torch.Tensor],
    cfg: TrainConfig,
    d_logits: list[torch.Tensor] | None = None,
    lp_weights: list[torch.Tensor] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """lam_lp * Lp + lam_gdl * GDL (+ lam_adv * adversarial when `d_logits` are given).

    `d_logits` must be D's output on `preds` computed *with* gradient so that the adversarial
    term reaches the generator through D. Lp and GDL are sums over a patch_size x patch_size
    clip: on larger crops they are scaled by patch_size^2 / (H W), so that the balance the
    weights set does not depend on the crop. Returns the total and each unweighted term by
    name (not detached: `train.steps` measures each term's gradient). `lp_weights`: per-pixel
    weights of the Lp term per scale (`still_weights`).
    """
    h, w = targets[-1].shape[-2:]
    area = cfg.model.patch_size**2 / (h * w)
    terms = {
        "lp": area * lp_loss(preds, targets, cfg.l_num, lp_weights),
        "gdl": area * gdl_loss(preds, targets, cfg.alpha),
    }
    total = cfg.lam_lp * terms["lp"] + cfg.lam_gdl * terms["gdl"]
    if d_logits is not None:
        terms["adv"] = adversarial_loss(d_logits, real=True)
        total = total + cfg.lam_adv * terms["adv"]
    return total, terms
