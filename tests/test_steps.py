"""The GAN phases: multi-step unrolling, D's windows, and a discriminator that learns."""

import copy
import dataclasses

import numpy as np
import pytest
import torch
from avg_rt.train.loop import d_optimizer, held_out_d_accuracy, lr_scale, unroll_length
from avg_rt.train.steps import (
    d_logits,
    d_step,
    d_window,
    free_run,
    g_step,
    split,
    unroll,
)
from conftest import SMALL, busy_generator

from avg_rt.config import PRESETS, ConfigError, TrainConfig
from avg_rt.data.clips import ClipSampler, clips_to_float, round_to_8bit
from avg_rt.data.sources import Video
from avg_rt.model import Discriminator, Generator, pyramid


def test_multistep_gradient_reaches_the_first_step():
    """A loss on the last of 3 unrolled steps back-propagates through the recursion: into the
    first step's prediction and into the real history it started from."""
    G = busy_generator(SMALL)  # a fresh delta G's zero last layers would pass no gradient
    history = (torch.rand(2, 12, 32, 32) * 2 - 1).requires_grad_()
    preds, windows = unroll(G, history, 3)
    assert len(preds) == len(windows) == 3
    first = preds[0][-1]
    first.retain_grad()
    preds[2][-1].square().sum().backward()
    assert first.grad is not None and first.grad.abs().sum() > 0
    assert history.grad is not None and history.grad[:, :3].abs().sum() > 0  # oldest frame too
    # Each step's window drops the oldest frame and appends the newest prediction.
    torch.testing.assert_close(windows[1][:, -3:], preds[0][-1])
    torch.testing.assert_close(windows[2][:, :6], history[:, 6:])


def test_free_run_gives_the_history_g_meets_inside_a_rollout():
    """After 2 free-run steps the history ends in G's own 8-bit predictions, made as a
    rollout makes them, and the targets are the true frames after those steps."""
    G = busy_generator(SMALL).train()
    clip = round_to_8bit(torch.rand(2, 4 + 2 + 3, 3, 32, 32) * 2 - 1)
    out = free_run(G, clip, 4, 2, feedback_8bit=True)
    assert out.shape == (2, 4 + 3, 3, 32, 32) and not out.requires_grad
    with torch.no_grad():
        first = round_to_8bit(G(split(clip[:, :4], 4)[0]))
        window = torch.cat([clip[:, 1:4], first[:, None]], dim=1)
        second = round_to_8bit(G(split(window, 4)[0]))
    torch.testing.assert_close(out[:, :2], clip[:, 2:4])  # the newest real frames
    torch.testing.assert_close(out[:, 2], first)
    torch.testing.assert_close(out[:, 3], second)
    assert not torch.equal(second, clip[:, 5])  # G's frame, not the true one
    torch.testing.assert_close(out[:, 4:], clip[:, 6:])  # the true frames after them
    torch.testing.assert_close(free_run(G, clip, 4, 0, True), clip)


def test_g_step_trains_from_the_free_run_history():
    """With `ahead`, G's loss is the one on the clip `free_run` makes, not on the raw clip."""
    cfg = dataclasses.replace(PRESETS["small"], model=SMALL, free_run=2, unroll=2)
    G = busy_generator(SMALL)
    clip = round_to_8bit(torch.rand(2, 4 + 2 + 2, 3, 32, 32) * 2 - 1)

    def loss(c: torch.Tensor, ahead: int) -> float:
        g = copy.deepcopy(G)
        opt = torch.optim.SGD(g.parameters(), lr=0.0)
        return g_step(g, None, opt, c, cfg, steps=2, ahead=ahead)["loss/g"]

    expected = loss(free_run(G, clip, 4, 2, feedback_8bit=True), 0)
    assert loss(clip, 2) == pytest.approx(expected)
    assert loss(clip, 0) != pytest.approx(expected, rel=1e-6)


def test_d_judges_g_frames_from_the_free_run_history_against_the_true_frames_then():
    """With `ahead`, D's generated windows are G's predictions from the history `free_run`
    makes, and its real windows the true frames at the same times."""
    cfg = dataclasses.replace(PRESETS["small"], model=SMALL, free_run=2, unroll=2)
    G, D = busy_generator(SMALL), Discriminator(SMALL)
    clip = round_to_8bit(torch.rand(2, 4 + 2 + 2, 3, 32, 32) * 2 - 1)
    real, fake = d_logits(G, D, clip, cfg, 2, (0, 0), ahead=2)
    drifted = d_logits(G, D, free_run(G, clip, 4, 2, feedback_8bit=True), cfg, 2, (0, 0))[1]
    later = d_logits(G, D, clip[:, 2:], cfg, 2, (0, 0))[0]
    for got, want in zip(fake + real, drifted + later):
        torch.testing.assert_close(got, want)
    from_truth = d_logits(G, D, clip[:, 2:], cfg, 2, (0, 0))[1]  # G fed the true history
    assert not all(torch.allclose(a, b) for a, b in zip(fake, from_truth))
    logs = d_step(G, D, torch.optim.SGD(D.parameters(), lr=0.0), clip, cfg, 2, ahead=2)
    assert "train/d_free_run" not in logs
    cfg = dataclasses.replace(cfg, d_free_run=True)
    logs = d_step(G, D, torch.optim.SGD(D.parameters(), lr=0.0), clip, cfg, 2, ahead=2)
    assert logs["train/d_free_run"] == 2
    with pytest.raises(ConfigError, match="d_free_run needs free_run"):
        dataclasses.replace(cfg, free_run=0).validate()


def test_g_step_unrolled_uses_every_step():
    cfg = dataclasses.replace(PRESETS["small"], model=SMALL, crop=48, unroll=3)
    G, D = Generator(cfg.model), Discriminator(cfg.model)
    opt = torch.optim.Adam(G.parameters(), lr=1e-3)
    clip = torch.rand(2, 4 + 3, 3, 48, 48) * 2 - 1
    logs = g_step(G, D, opt, clip, cfg, steps=3, corner=(8, 16), measure_gradients=True)
    assert logs["train/unroll"] == 3
    assert logs["grad/adv"] > 0 and 0 < logs["grad/adv_share"] < 1
    logs = d_step(G, D, torch.optim.SGD(D.parameters(), lr=0.01), clip, cfg, 3, (16, 0))
    assert 0 <= logs["d/accuracy_real"] <= 1 and 0 <= logs["d/accuracy_fake"] <= 1


def test_discriminator_window_equals_the_pyramid_of_the_window():
    x = torch.rand(2, 3, 64, 64)
    cut = d_window(pyramid(x, 4), (16, 24), 32)
    direct = pyramid(x[..., 16:48, 24:56], 4)
    for a, b in zip(cut, direct):
        torch.testing.assert_close(a, b)


def test_learning_rates_decay_linearly_over_the_last_fraction():
    cfg = dataclasses.replace(TrainConfig(model=SMALL), steps=10, lr_decay=0.5)
    scales = [lr_scale(cfg, s) for s in range(10)]
    assert scales[:5] == [1.0] * 5
    assert scales[5:] == pytest.approx([5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6])  # never a dead step
    assert lr_scale(dataclasses.replace(cfg, lr_decay=0.0), 9) == 1.0
    with pytest.raises(ConfigError, match="lr_decay"):
        dataclasses.replace(cfg, lr_decay=1.5).validate()


def test_unroll_curriculum_and_crop_checks():
    cfg = dataclasses.replace(TrainConfig(model=SMALL), unroll=4, unroll_ramp=300, crop=64)
    assert [unroll_length(cfg, s) for s in (0, 99, 100, 200, 299, 300, 10_000)] == [
        1,
        1,
        2,
        3,
        3,
        4,
        4,
    ]
    assert unroll_length(dataclasses.replace(cfg, unroll_ramp=0), 0) == 4
    with pytest.raises(ConfigError, match="crop"):
        dataclasses.replace(cfg, crop=60).validate()
    with pytest.raises(ConfigError, match="crop"):
        dataclasses.replace(cfg, crop=16).validate()


def random_walk_frames(t: int, seed: int) -> np.ndarray:
    """uint8 (t, 40, 48, 3): a bright square that jumps 4 pixels in a random direction every
    frame over a textured background. Its next position cannot be predicted, so a generator
    trained on squared errors spreads it out, and a discriminator can learn to tell."""
    rng = np.random.default_rng(seed)
    frames = np.repeat(rng.integers(0, 60, (1, 40, 48, 3), dtype=np.uint8), t, axis=0)
    y, x = 16, 20
    for i in range(t):
        dy, dx = ((0, 4), (0, -4), (4, 0), (-4, 0))[rng.integers(4)]
        y, x = int(np.clip(y + dy, 0, 32)), int(np.clip(x + dx, 0, 40))
        frames[i, y : y + 8, x : x + 8] = (250, 200, 40)
    return frames


def test_discriminator_leaves_chance_in_a_short_run():
    """Adam for D (the loop's own steps, fixed seed, CPU): within 150 iterations D tells the
    real next frames of held-out clips from the generator's clearly better than chance."""
    torch.manual_seed(0)
    cfg = dataclasses.replace(
        PRESETS["small"], model=SMALL, lr_d=1e-3, lam_adv=0.05, unroll=1, feedback_8bit=False
    )
    assert cfg.d_optimizer == "adam"
    videos = [Video(f"v{i}", random_walk_frames(32, seed=i)) for i in range(4)]
    held_out = [Video("held out", random_walk_frames(32, seed=99))]
    sampler = ClipSampler(videos, 5, 32, np.random.default_rng(0), movement_threshold=1.0)
    test = clips_to_float(
        ClipSampler(held_out, 5, 32, np.random.default_rng(1), movement_threshold=1.0).sample(64)
    )
    G, D = Generator(cfg.model), Discriminator(cfg.model)
    opt_g, opt_d = torch.optim.Adam(G.parameters(), lr=cfg.lr_g), d_optimizer(D, cfg)
    before = held_out_d_accuracy(G, D, test, cfg, 1)["test/d_accuracy"]
    for _ in range(150):
        d_step(G, D, opt_d, clips_to_float(sampler.sample(8)), cfg)
        g_step(G, D, opt_g, clips_to_float(sampler.sample(8)), cfg)
    after = held_out_d_accuracy(G, D, test, cfg, 1)
    assert 0.4 <= before <= 0.6
    assert after["test/d_accuracy"] > 0.7, after


def test_split_layout():
    clip = torch.arange(2 * 6 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 6, 3, 2, 2)
    history, targets = split(clip, 4)
    assert history.shape == (2, 12, 2, 2) and targets.shape == (2, 2, 3, 2, 2)
    torch.testing.assert_close(history[:, 3:6], clip[:, 1])  # oldest first, RGB within
    torch.testing.assert_close(targets[:, 1], clip[:, 5])


def test_still_weights_mark_pixels_the_target_keeps_from_the_frame_before():
    from avg_rt.train.steps import still_weights

    from avg_rt.losses import lp_loss

    # 2 clips, 2 unrolled steps, 8x8 frames: step 1's target keeps the left half of the frame
    # before it; step 2's target keeps all of step 1's target except one pixel in one channel.
    before1 = torch.zeros(2, 1, 3, 8, 8)
    target1 = before1.clone()
    target1[..., 4:] = 0.5
    target2 = target1.clone()
    target2[:, :, 1, 0, 0] = -0.5
    targets = torch.cat([target1, target2], dim=1)
    before = torch.cat([before1, target1], dim=1)
    w = still_weights(targets, before, 10.0, 2)
    fine = w[-1]  # (steps * clips, 1, 8, 8), step-major like the unrolled predictions
    assert fine.shape == (4, 1, 8, 8)
    assert torch.equal(fine[0, 0, :, :4], torch.full((8, 4), 10.0))
    assert torch.equal(fine[0, 0, :, 4:], torch.ones(8, 4))
    assert fine[2, 0, 0, 0] == 1 and (fine[2, 0].flatten()[1:] == 10).all()
    assert w[0].shape == (4, 1, 4, 4)
    # An error on a still pixel costs `weight` times what it costs on a moving one.
    pred, truth = torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2)
    pred[0, 0, 0, 0] = pred[0, 0, 1, 1] = 1.0
    weights = torch.tensor([[[[10.0, 1.0], [1.0, 1.0]]]])
    assert lp_loss([pred], [truth], 2, [weights]).item() == 11.0
    assert lp_loss([pred], [truth], 2).item() == 2.0


def test_adversarial_share_cap_lowers_this_steps_adversarial_weight_to_the_cap():
    """With the cap, a G step equals one with lam_adv scaled to give the adversarial term
    exactly the capped share of the last layer's gradient; under the cap nothing changes."""
    import copy

    from avg_rt.train.steps import _adv_cap

    torch.manual_seed(0)
    base = dataclasses.replace(PRESETS["small"], model=SMALL, lam_adv=1e6)  # a fresh D is weak
    G, D = busy_generator(SMALL), Discriminator(SMALL)
    clip = torch.rand(2, 5, 3, 32, 32) * 2 - 1
    capped = dataclasses.replace(base, adv_share_cap=0.2)
    G1, G2 = copy.deepcopy(G), copy.deepcopy(G)
    logs = g_step(G1, D, torch.optim.SGD(G1.parameters(), lr=1e-3), clip, capped)
    s = logs["train/adv_scale"]
    assert 0 < s < 1 and logs["train/adv_share_last_layer"] > 0.2
    manual = dataclasses.replace(base, lam_adv=1e6 * s)
    g_step(G2, D, torch.optim.SGD(G2.parameters(), lr=1e-3), clip, manual)
    for a, b in zip(G1.parameters(), G2.parameters()):
        torch.testing.assert_close(a, b)
    # At the scaled weight the share is the cap; a weight under the cap is left alone.
    from avg_rt.train.steps import _d_inputs

    from avg_rt.losses import generator_loss

    preds, windows = unroll(G, split(clip, 4)[0], 1)
    truth = pyramid(clip[:, 4], 4)
    _, terms = generator_loss(
        preds[0], truth, manual, D(*_d_inputs(preds, windows, manual, (0, 0)))
    )
    scale, share = _adv_cap(terms, dataclasses.replace(manual, adv_share_cap=0.2), G)
    assert share == pytest.approx(0.2, rel=1e-3) and scale == pytest.approx(1.0, rel=1e-3)
    assert _adv_cap(terms, dataclasses.replace(manual, adv_share_cap=0.5), G)[0] == 1.0
    with pytest.raises(ConfigError, match="adv_share_cap"):
        dataclasses.replace(base, adv_share_cap=1.0).validate()


def test_best_of_trains_on_each_clips_draw_nearest_its_truth():
    """`best_noises` returns, per clip, the noise sequence of the draw whose unrolled steps
    are nearest the truth (Lp over scales and steps): each draw rolled out alone agrees; the
    gain is positive where the noise matters. g_step trains on those draws and logs the gain;
    best_of without noise channels is refused."""
    from avg_rt.train.steps import best_noises

    from avg_rt.losses import lp_per_clip

    model = dataclasses.replace(SMALL, noise_channels=1)
    cfg = dataclasses.replace(PRESETS["small"], model=model, best_of=5, unroll=2)
    G = busy_generator(model).train()
    with torch.no_grad():
        for s in G.scales:  # noise that matters: errors far apart, no near ties
            s.convs[0].weight[:, 12].normal_(std=1.0)
    clip = torch.rand(3, 4 + 2, 3, 32, 32) * 2 - 1
    history, targets = split(clip, 4)
    torch.manual_seed(1)
    picked, gain = best_noises(G, history, targets, 2, cfg)
    assert len(picked) == 2 and picked[0].shape == (3, 1, 4, 4) and gain > 0
    torch.manual_seed(1)  # the same draws, one at a time: draw d is rows d*3 .. d*3+2
    draws = [G.draw_noise(history.repeat(5, 1, 1, 1)) for _ in range(2)]

    def error(noises):
        with torch.no_grad():
            preds, _ = unroll(G, history, 2, noises=noises)
        return sum(lp_per_clip(p, pyramid(targets[:, j], 4), 2) for j, p in enumerate(preds))

    errors = torch.stack([error([z[d * 3 : d * 3 + 3] for z in draws]) for d in range(5)])
    rows = errors.argmin(0) * 3 + torch.arange(3)
    for z, chosen in zip(draws, picked):
        assert torch.equal(chosen, z[rows])
    # (a batch of 15 rounds otherwise than one of 3)
    torch.testing.assert_close(error(picked), errors.min(0).values, rtol=1e-3, atol=0)
    assert errors.min(0).values.lt(errors.mean(0)).all()
    # The G step trains on those draws: its Lp term is theirs (mean over clips and steps).
    opt = torch.optim.Adam(G.parameters(), lr=0.0)
    torch.manual_seed(1)
    logs = g_step(G, None, opt, clip, dataclasses.replace(cfg, adversarial=False), steps=2)
    assert logs["train/best_of_gain"] > 0
    least = errors.min(0).values.mean().item() / 2  # (draws differ by ~1% here)
    assert logs["loss/lp"] == pytest.approx(least, rel=2e-4)
    with pytest.raises(ConfigError, match="best_of needs a stochastic generator"):
        dataclasses.replace(cfg, model=SMALL).validate()


def test_adv_fresh_draw_has_d_judge_a_fresh_draw_beside_the_picked_one():
    """With adv_fresh_draw the G step's adversarial term is D's on the picked draws and on a
    fresh draw per clip (the mean of the two halves), back-propagated into G through both,
    and its Lp and GDL terms are the picked draws' alone. With the Lp and GDL weights near 0, G's
    gradient is that of lam_adv * (adv (picked) + adv (fresh)) / 2, not the one without the
    fresh draw. Refused without best_of or without adversarial training."""
    from avg_rt.train.steps import _d_inputs, best_noises, feeds_back_8bit

    from avg_rt.losses import adversarial_loss, lp_loss

    model = dataclasses.replace(SMALL, noise_channels=1)
    cfg = dataclasses.replace(
        PRESETS["small"], model=model, best_of=3, unroll=2, adv_fresh_draw=True, clip_grad=0.0
    )
    cfg = dataclasses.replace(
        cfg, lam_lp=1e-9, lam_gdl=1e-9
    )  # G's gradient: the adversarial term's
    cfg.validate()
    G, D = busy_generator(model).train(), Discriminator(model)
    with torch.no_grad():
        for s in G.scales:  # noise that matters
            s.convs[0].weight[:, 12].normal_(std=1.0)
        for p in D.parameters():  # a D whose scores vary between draws
            p.mul_(2.0)
    clip = round_to_8bit(torch.rand(3, 4 + 2, 3, 32, 32) * 2 - 1)
    history, targets = split(clip, 4)
    torch.manual_seed(1)
    picked, _ = best_noises(G, history, targets, 2, cfg)
    fresh = [G.draw_noise(history) for _ in range(2)]
    params = list(G.parameters())
    D.requires_grad_(False)

    def terms(noises):  # with gradients into G: the adversarial term, Lp
        preds, windows = unroll(G, history, 2, feeds_back_8bit(cfg), noises)
        truth = pyramid(targets.transpose(0, 1).flatten(0, 1), 4)
        adv = adversarial_loss(D(*_d_inputs(preds, windows, cfg, (0, 0))), real=True)
        return adv, lp_loss([torch.cat(s) for s in zip(*preds)], truth, 2)

    def gradient(loss):
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        return torch.cat(
            [(torch.zeros_like(p) if g is None else g).flatten() for g, p in zip(grads, params)]
        )

    (adv_picked, lp_picked), (adv_fresh, lp_fresh) = terms(picked), terms(fresh)
    # Tell the mutants apart: D scores the draws apart, and their Lp differs.
    assert abs(adv_picked - adv_fresh).item() > 1e-4  # 5x the tolerance on loss/adv below
    assert abs(lp_picked - lp_fresh).item() / 2 > 4e-4 * lp_picked.item()  # 2x loss/lp's
    expected = gradient(cfg.lam_adv * (adv_picked + adv_fresh) / 2)
    without_fresh = gradient(cfg.lam_adv * adv_picked)
    opt = torch.optim.Adam(G.parameters(), lr=0.0)
    torch.manual_seed(1)
    logs = g_step(G, D, opt, clip, cfg, steps=2)
    got = torch.cat([p.grad.flatten() for p in params])
    assert logs["loss/adv"] == pytest.approx(((adv_picked + adv_fresh) / 2).item(), abs=1e-5)
    assert logs["loss/lp"] == pytest.approx(lp_picked.item(), rel=2e-4)
    assert (got - expected).norm() < 1e-4 * expected.norm()
    assert (without_fresh - expected).norm() > 1e-2 * expected.norm()
    for bad in (dict(best_of=1), dict(adversarial=False)):
        with pytest.raises(ConfigError, match="adv_fresh_draw needs"):
            dataclasses.replace(cfg, **bad).validate()
