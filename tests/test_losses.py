import dataclasses

import pytest
import torch
from avg_rt.train.loop import d_step, g_step
from conftest import SMALL

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


def _batch(cfg, b=2):
    side = cfg.model.patch_size
    return torch.rand(b, cfg.model.in_channels, side, side) * 2 - 1, torch.rand(
        b, 3, side, side
    ) * 2 - 1


def test_adversarial_term_alone_reaches_generator():
    """The TF project's defect (its issue #2): no adversarial gradient reached G. Ours does."""
    cfg = TrainConfig(model=SMALL, lam_lp=1e-9, lam_gdl=1e-9)
    G, D = Generator(cfg.model), Discriminator(cfg.model)
    hist, target = _batch(cfg)
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
    g_step(G, D, opt_g, *_batch(cfg), cfg)
    assert all(torch.equal(a, b) for a, b in zip(d_before, D.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(g_before, G.parameters()))
    assert all(p.requires_grad for p in D.parameters())  # unfrozen again for its own step
    g_now = [p.clone() for p in G.parameters()]
    logs = d_step(G, D, opt_d, *_batch(cfg), cfg)
    assert all(torch.equal(a, b) for a, b in zip(g_now, G.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(d_before, D.parameters()))
    assert 0 <= logs["d/accuracy"] <= 1


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
