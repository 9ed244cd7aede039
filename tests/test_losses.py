import dataclasses
import math

import pytest
import torch
from avg_rt.train.steps import _update, d_step, g_step, split
from conftest import SMALL
from torch import nn

from avg_rt.config import TrainConfig
from avg_rt.losses import adversarial_loss, gdl_loss, generator_loss, lp_loss
from avg_rt.model import Discriminator, Generator, pyramid


def test_lp_known_value():
    p = [torch.zeros(2, 3, 4, 4)]
    y = [torch.full((2, 3, 4, 4), 0.5)]
    # Per clip: 48 pixels * 0.5^2 = 12; mean over batch and scales.
    assert lp_loss(p, y, 2).item() == pytest.approx(12.0)
    assert lp_loss(p, y, 1).item() == pytest.approx(24.0)
    assert lp_loss(p + p, y + [torch.zeros(2, 3, 4, 4)], 2).item() == pytest.approx(6.0)


def test_gdl_known_value():
    y = torch.zeros(1, 1, 2, 2)
    y[..., 0, 1] = 1.0  # one bright pixel: |dx| = 1 on row 0, |dy| = 1 on column 1
    p = torch.zeros(1, 1, 2, 2)
    assert gdl_loss([p], [y], 1.0).item() == pytest.approx(2.0)
    assert gdl_loss([y], [y], 1.0).item() == 0.0
    # A constant offset has the same gradients: no GDL.
    assert gdl_loss([y + 0.3], [y], 2.0).item() == pytest.approx(0.0, abs=1e-12)


def test_adversarial_loss_labels():
    confident_real = [torch.full((4,), 10.0)]
    assert adversarial_loss(confident_real, real=True).item() < 1e-3
    assert adversarial_loss(confident_real, real=False).item() > 9
    assert torch.isfinite(adversarial_loss([torch.full((4,), 1e4)], real=False))


def _batch(cfg, b=2, steps=1):
    """A random clip batch (b, history_len + steps, 3, crop, crop) in [-1, 1]."""
    side = cfg.crop
    return torch.rand(b, cfg.model.history_len + steps, 3, side, side) * 2 - 1


def test_adversarial_term_alone_reaches_generator():
    """The TF project's defect (its issue #2): no adversarial gradient reached G. Ours does."""
    cfg = TrainConfig(model=SMALL, lam_lp=1e-9, lam_gdl=1e-9)
    G, D = Generator(cfg.model), Discriminator(cfg.model)
    hist, _ = split(_batch(cfg), cfg.model.history_len)
    preds = G.forward_scales(hist)
    D.requires_grad_(False)
    logits = D(preds, pyramid(hist, cfg.model.n_scales))
    loss = adversarial_loss(logits, real=True)
    loss.backward()
    grads = [p.grad for p in G.parameters()]
    assert all(g is not None for g in grads)
    assert sum(g.abs().sum().item() for g in grads) > 0
    assert all(p.grad is None for p in D.parameters())  # D frozen: no gradient accumulated


def test_g_step_leaves_discriminator_unchanged_and_d_step_leaves_generator_unchanged():
    cfg = TrainConfig(model=SMALL)
    G, D = Generator(cfg.model), Discriminator(cfg.model)
    opt_g = torch.optim.Adam(G.parameters(), lr=1e-3)
    opt_d = torch.optim.SGD(D.parameters(), lr=0.02)
    d_before = [p.clone() for p in D.parameters()]
    g_before = [p.clone() for p in G.parameters()]
    g_step(G, D, opt_g, _batch(cfg), cfg)
    assert all(torch.equal(a, b) for a, b in zip(d_before, D.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(g_before, G.parameters()))
    assert all(p.requires_grad for p in D.parameters())  # unfrozen again for its own step
    g_now = [p.clone() for p in G.parameters()]
    logs = d_step(G, D, opt_d, _batch(cfg), cfg)
    assert all(torch.equal(a, b) for a, b in zip(g_now, G.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(d_before, D.parameters()))
    assert 0 <= logs["d/accuracy"] <= 1


def test_loss_scaling_gives_the_same_updates():
    """FP16 training scales each loss by a power of two before backward and unscales the
    gradients before the step: the updates equal the unscaled ones (GradScaler on CPU here;
    training uses it on CUDA with FP16 autocast)."""
    cfg = TrainConfig(model=SMALL)
    batch = _batch(cfg)
    nets = []
    for scaled in (False, True):
        torch.manual_seed(0)
        G, D = Generator(cfg.model), Discriminator(cfg.model)
        opt_g = torch.optim.Adam(G.parameters(), lr=1e-3)
        opt_d = torch.optim.SGD(D.parameters(), lr=0.02)
        scalers = [torch.amp.GradScaler("cpu") if scaled else None for _ in range(2)]
        for _ in range(2):
            d_step(G, D, opt_d, batch, cfg, scaler=scalers[0])
            g_step(G, D, opt_g, batch, cfg, scaler=scalers[1])
        nets.append([p.detach() for p in [*G.parameters(), *D.parameters()]])
        if scaled:  # both scalers took part in both steps, without overflow or backoff
            assert all(s.state_dict()["_growth_tracker"] == 2 for s in scalers)
            assert all(s.get_scale() == 2.0**16 for s in scalers)
    for a, b in zip(*nets):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


@pytest.mark.parametrize("scaled", [False, True])
def test_clip_grad_bounds_each_networks_update(scaled):
    """--clip-grad: with SGD at lr 1 the update is the gradient itself, so a step moves each
    network's weights by at most the clip norm (and, clipped, by exactly it: these gradients
    are far larger); with FP16's loss scaling the gradient is unscaled first, not clipped at
    2^16 times its size. 0 leaves the update as it was."""
    cfg = TrainConfig(model=SMALL)
    batch = _batch(cfg)
    moved = {}
    for clip in (0.0, 0.01):
        torch.manual_seed(0)
        G, D = Generator(cfg.model), Discriminator(cfg.model)
        opt_g, opt_d = (torch.optim.SGD(n.parameters(), lr=1.0) for n in (G, D))
        run = dataclasses.replace(cfg, clip_grad=clip)
        scaler = (lambda: torch.amp.GradScaler("cpu")) if scaled else (lambda: None)
        before = [[p.detach().clone() for p in n.parameters()] for n in (G, D)]
        logs = d_step(G, D, opt_d, batch, run, scaler=scaler())
        logs |= g_step(G, D, opt_g, batch, run, scaler=scaler())
        # The norm before clipping is logged (with clipping on), what it was clipped from.
        norms = [logs.get(f"grad/{n}_norm") for n in "gd"]
        assert norms == [None, None] if not clip else all(n > 0.05 for n in norms)
        moved[clip] = [
            math.sqrt(sum(((p.detach() - b) ** 2).sum().item() for p, b in zip(n.parameters(), bs)))
            for n, bs in zip((G, D), before)
        ]
    assert all(m > 0.05 for m in moved[0.0])  # unclipped, both moved far more than 0.01
    assert moved[0.01] == pytest.approx([0.01, 0.01], rel=1e-3)


def test_a_gradient_norm_past_float32_skips_the_update():
    """clip_grad_norm_ of a gradient whose norm overflows float32 returns inf and multiplies
    the gradient by 0: a blown-up run (issue 11's lam_adv 12 arm) then went on updating from
    Adam's momentum alone, its losses finite and G predicting noise. The update is skipped
    instead, and the norm reported, on which training stops."""
    torch.manual_seed(0)
    lin = nn.Linear(3, 1)
    opt = torch.optim.Adam(lin.parameters(), lr=0.1)
    x = torch.rand(4, 3)
    assert _update(lin(x).sum(), opt, None, clip=1.0)["norm"] > 0  # a step: Adam has momentum
    before = [p.detach().clone() for p in lin.parameters()]
    assert _update(1e30 * lin(x).sum(), opt, None, clip=1.0) == {"norm": math.inf}
    for p, b in zip(lin.parameters(), before):
        assert torch.equal(p.detach(), b)
    assert _update(lin(x).sum(), opt, None) == {}  # without clipping no norm is computed


def test_steps_under_bf16_autocast():
    cfg = TrainConfig(model=SMALL)
    G, D = Generator(cfg.model), Discriminator(cfg.model)
    opt_g = torch.optim.Adam(G.parameters(), lr=1e-3)
    opt_d = torch.optim.SGD(D.parameters(), lr=0.02)
    logs = d_step(G, D, opt_d, _batch(cfg), cfg, autocast=torch.bfloat16)
    logs |= g_step(G, D, opt_g, _batch(cfg), cfg, autocast=torch.bfloat16)
    assert all(math.isfinite(v) for v in logs.values())
    assert all(p.dtype == torch.float32 for p in G.parameters())  # weights stay FP32


def test_generator_loss_weights_and_terms():
    cfg = TrainConfig(model=SMALL, lam_lp=2.0, lam_gdl=3.0, lam_adv=0.5)
    p = [torch.rand(2, 3, 8, 8)]
    y = [torch.rand(2, 3, 8, 8)]
    z = [torch.zeros(2)]
    total, terms = generator_loss(p, y, cfg, z)
    assert set(terms) == {"lp", "gdl", "adv"}
    expected = 2 * terms["lp"] + 3 * terms["gdl"] + 0.5 * terms["adv"]
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    no_adv = dataclasses.replace(cfg, adversarial=False)
    _, terms = generator_loss(p, y, no_adv)
    assert set(terms) == {"lp", "gdl"}
