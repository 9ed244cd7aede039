"""Generator and discriminator losses (upstream.md, "Losses").

Every loss takes lists of per-scale tensors (coarsest first) and averages over scales.
Reductions: Lp and GDL sum over the pixels and channels of each clip, then average over the batch;
the adversarial BCE averages over the batch. The TF project summed all three over the batch too,
so dividing each by the batch size keeps its balance between terms (lam_adv, lam_lp, lam_gdl
keep their meaning) while making the loss independent of the batch size. The TF project's BCE
used log base 10; ours uses the natural log (a factor ln 10 = 2.30 on the adversarial term).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from avg_rt.config import TrainConfig


def _per_clip_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum over all but the batch dimension, mean over the batch."""
    return x.flatten(1).sum(1).mean()


def lp_loss(preds: list[torch.Tensor], targets: list[torch.Tensor], l_num: int) -> torch.Tensor:
    """Sum of |G - Y|^l_num per clip, mean over batch and scales."""
    terms = [_per_clip_sum((p - y).abs() ** l_num) for p, y in zip(preds, targets)]
    return torch.stack(terms).mean()


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


def adversarial_loss(logits: list[torch.Tensor], real: bool) -> torch.Tensor:
    """BCE of D's per-scale logits against the label (1 real, 0 generated), mean over scales.

    Computed from logits, so it stays finite when D is confident; the TF project clipped D's
    sigmoid output to [0.1, 0.9] instead, which also zeroes the gradient G would receive.
    """
    terms = [
        F.binary_cross_entropy_with_logits(z, torch.full_like(z, 1.0 if real else 0.0))
        for z in logits
    ]
    return torch.stack(terms).mean()


def generator_loss(
    preds: list[torch.Tensor],
    targets: list[torch.Tensor],
    cfg: TrainConfig,
    d_logits: list[torch.Tensor] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """lam_lp * Lp + lam_gdl * GDL (+ lam_adv * adversarial when `d_logits` are given).

    `d_logits` must be D's output on `preds` computed *with* gradient so that the adversarial
    term reaches the generator through D. Returns the total and each term, detached, by name.
    """
    terms = {
        "lp": lp_loss(preds, targets, cfg.l_num),
        "gdl": gdl_loss(preds, targets, cfg.alpha),
    }
    total = cfg.lam_lp * terms["lp"] + cfg.lam_gdl * terms["gdl"]
    if d_logits is not None:
        terms["adv"] = adversarial_loss(d_logits, real=True)
        total = total + cfg.lam_adv * terms["adv"]
    return total, {name: t.detach() for name, t in terms.items()}
