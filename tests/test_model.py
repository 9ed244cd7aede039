import dataclasses

import pytest
import torch
from conftest import SMALL

from avg_rt.config import PRESETS, ConfigError, ModelConfig
from avg_rt.model import (
    Discriminator,
    Generator,
    count_params,
    generator_flops,
    pyramid,
    scale_sizes,
)

# upstream.md's generator table: feature maps (input .. output) and kernel sizes per scale.
PAPER_G_TABLE = [
    ((12, 128, 256, 128, 3), (3, 3, 3, 3)),
    ((15, 128, 256, 128, 3), (5, 3, 3, 5)),
    ((15, 128, 256, 512, 256, 128, 3), (5, 3, 3, 3, 3, 5)),
    ((15, 128, 256, 512, 256, 128, 3), (7, 5, 5, 5, 5, 7)),
]


def test_scale_sizes_are_explicit_not_factor_two():
    assert scale_sizes(210, 160, 4) == [(26, 20), (52, 40), (105, 80), (210, 160)]
    assert scale_sizes(97, 131, 4) == [(12, 16), (24, 32), (48, 65), (97, 131)]


def test_paper_parameter_count_matches_reference_table():
    expected = 0
    for maps, kernels in PAPER_G_TABLE:
        for cin, cout, k in zip(maps, maps[1:], kernels):
            expected += k * k * cin * cout + cout  # weights + biases
    g = Generator(PRESETS["paper"].model)
    assert count_params(g) == expected == 12_569_740  # "about 12.57 M" in the reference
    for (maps, kernels), scale in zip(PAPER_G_TABLE, g.scales):
        convs = [m for m in scale.convs if isinstance(m, torch.nn.Conv2d)]
        assert [c.in_channels for c in convs] + [convs[-1].out_channels] == list(maps)
        assert [c.kernel_size[0] for c in convs] == list(kernels)
        assert all(c.padding == (c.kernel_size[0] // 2,) * 2 for c in convs)


def test_paper_flops_match_reference():
    cfg = PRESETS["paper"].model
    assert generator_flops(cfg, 210, 160) / 2e9 == pytest.approx(306, rel=0.01)  # GMAC
    assert generator_flops(cfg, 32, 32) / 2e9 == pytest.approx(9.3, rel=0.01)


@pytest.mark.parametrize("size", [(32, 32), (210, 160), (97, 131), (100, 100)])
def test_generator_shapes_any_size(size):
    g = Generator(SMALL)
    x = torch.rand(3, 12, *size) * 2 - 1
    preds = g.forward_scales(x)
    assert [tuple(p.shape[-2:]) for p in preds] == scale_sizes(*size, 4)
    y = g(x)
    assert y.shape == (3, 3, *size) and y.dtype == torch.float32
    assert y.abs().max() <= 1


@pytest.mark.parametrize("size", [(210, 160), (97, 131)])
def test_paper_generator_full_frame_shapes(size):
    # Shapes only: the meta device runs the graph without the 1.8 TFLOP of arithmetic.
    with torch.device("meta"):
        y = Generator(PRESETS["paper"].model)(torch.empty(3, 12, *size))
    assert y.shape == (3, 3, *size)


def test_generator_runs_down_to_min_frame_size():
    cfg = dataclasses.replace(SMALL, g_maps=((4, 4, 4),) * 2 + ((4, 4, 4, 4, 4),) * 2)
    g = Generator(cfg)
    assert cfg.min_frame_size == 8
    for h, w in [(8, 8), (9, 13), (66, 130)]:
        y = g(torch.rand(1, 12, h, w))
        assert y.shape == (1, 3, h, w) and torch.isfinite(y).all()


def test_residual_form_adds_the_upsampled_coarser_prediction():
    x = torch.rand(2, 12, 32, 32) * 2 - 1
    plain = Generator(dataclasses.replace(SMALL, delta=False, residual=False))
    residual = Generator(dataclasses.replace(SMALL, delta=False, residual=True))
    residual.load_state_dict(plain.state_dict())  # same weights, only the form differs
    a, b = plain.forward_scales(x), residual.forward_scales(x)
    torch.testing.assert_close(a[0], b[0])  # the coarsest scale has nothing to add
    assert not torch.allclose(a[-1], b[-1])


@pytest.mark.parametrize("conditional", [True, False])
def test_discriminator_scales(conditional):
    cfg = dataclasses.replace(PRESETS["paper"].model, d_conditional=conditional)
    d = Discriminator(cfg)
    target = torch.rand(2, 3, 32, 32)
    hist = torch.rand(2, 12, 32, 32)
    first = d.scales[0].convs[0]
    assert first.in_channels == (15 if conditional else 3)
    logits = d(pyramid(target, 4), pyramid(hist, 4) if conditional else None)
    assert [z.shape for z in logits] == [torch.Size([2])] * 4


def test_spectral_norm_normalises_every_weight_of_d_in_training_only():
    cfg = dataclasses.replace(SMALL, d_spectral_norm=True)
    torch.manual_seed(0)
    d = Discriminator(cfg)
    layers = [m for m in d.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert len(layers) == sum(len(m) + len(f) + 1 for m, f in zip(cfg.d_maps, cfg.d_fc))
    with torch.no_grad():  # new weights, as training makes them: the vectors are stale
        for m in layers:
            o = m.parametrizations.weight.original
            o.copy_(torch.randn_like(o) * 10)
    target, hist = pyramid(torch.rand(2, 3, 32, 32), 4), pyramid(torch.rand(2, 12, 32, 32), 4)

    def norms():
        return [
            float(torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2)) for m in layers
        ]

    d.eval()  # measuring D (held-out accuracy) leaves its state alone
    u = [m.parametrizations.weight[0]._u.clone() for m in layers]
    d(target, hist)
    assert all(torch.equal(a, m.parametrizations.weight[0]._u) for a, m in zip(u, layers))
    assert max(abs(n - 1) for n in norms()) > 0.5
    d.train()
    for _ in range(30):  # each training-mode pass is one power iteration
        d(target, hist)
    assert norms() == pytest.approx([1.0] * len(layers), abs=0.05)
    d.eval()
    again = Discriminator(cfg).eval()
    again.load_state_dict(d.state_dict())
    for a, b in zip(d(target, hist), again(target, hist)):
        torch.testing.assert_close(a, b)


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="g_kernels"):
        ModelConfig(g_kernels=((3, 3),) * 4).validate()
    with pytest.raises(ConfigError, match="patch_size"):
        ModelConfig(patch_size=8).validate()


def test_delta_form_starts_as_copying_and_stays_in_range():
    cfg = dataclasses.replace(SMALL, delta=True, residual=False)
    g = Generator(cfg)
    x = torch.rand(2, 12, 40, 48) * 2 - 1
    for p, last in zip(g.forward_scales(x), pyramid(x, 4)):
        assert torch.equal(p, last[:, -3:])  # "nothing changes", exactly, at every scale
    # Trained weights: any change is clamped to [-1, 1], and train/eval forwards agree (the
    # straight-through clamp changes only the gradient).
    for conv in (s.convs[-1] for s in g.scales):
        torch.nn.init.normal_(conv.weight, std=0.5)
    train_out = g.train()(x)
    assert train_out.abs().max() <= 1 and torch.equal(train_out, g.eval()(x))
    with pytest.raises(ConfigError, match="delta replaces residual"):
        dataclasses.replace(SMALL, delta=True, residual=True).validate()


def test_leaky_generator_keeps_a_gradient_through_dead_units():
    """With ReLU, a scale whose last hidden layer is dead (no unit positive: the copier of
    live60-s7) gives its earlier layers no gradient, so it can never leave "nothing changes";
    with g_leak the gradient still reaches them. The weights are the same either way."""
    grads = {}
    for leak in (0.0, 0.2):
        torch.manual_seed(0)
        g = Generator(dataclasses.replace(SMALL, delta=True, residual=False, g_leak=leak))
        finest = g.scales[-1].convs
        torch.nn.init.normal_(finest[-1].weight, std=0.1)
        torch.nn.init.constant_(finest[-3].bias, -100.0)  # every unit of the last hidden layer
        x = torch.rand(2, 12, 32, 32) * 2 - 1
        g(x).square().sum().backward()
        grads[leak] = finest[0].weight.grad.abs().sum().item()
        assert sum(isinstance(m, torch.nn.LeakyReLU) for m in g.modules()) == (4 * 4 if leak else 0)
    assert grads[0.0] == 0 and grads[0.2] > 0
    with pytest.raises(ConfigError, match="g_leak"):
        dataclasses.replace(SMALL, g_leak=1.0).validate()


def test_select_form_starts_near_copying_and_can_pick_an_older_frame():
    from avg_rt.config import with_form
    from avg_rt.model import SELECT_LAST_LOGIT, blend_history

    cfg = with_form(SMALL, "select")
    assert cfg.delta and cfg.select and not cfg.residual
    g = Generator(cfg)
    x = torch.rand(2, 12, 40, 48) * 2 - 1
    # New: every scale blends its history with softmax([0, 0, 0, SELECT_LAST_LOGIT]) weights.
    w = torch.softmax(torch.tensor([0.0, 0.0, 0.0, SELECT_LAST_LOGIT]), 0)
    assert w[-1] > 0.98
    for p, hist in zip(g.forward_scales(x), pyramid(x, 4)):
        want = sum(w[k] * hist[:, 3 * k : 3 * k + 3] for k in range(4))
        torch.testing.assert_close(p, want.clamp(-1, 1))
    # Logits that favour one frame per pixel pick it: a flickering sprite's earlier colour.
    logits = torch.zeros(2, 4, 40, 48)
    logits[:, 1, :, :24] = 60  # left half: the frame 3 steps before the next
    logits[:, 3, :, 24:] = 60  # right half: the last frame
    picked = blend_history(x, logits)
    torch.testing.assert_close(picked[..., :24], x[:, 3:6, :, :24], rtol=0, atol=1e-6)
    torch.testing.assert_close(picked[..., 24:], x[:, 9:12, :, 24:], rtol=0, atol=1e-6)
    # The finest scale's last convolution gives the change (3 channels) and the 4 logits.
    assert g.finest_last_conv().out_channels == cfg.g_out_channels == 3 + 4
    conv_flops = sum(
        2 * m.weight.numel() * (40 >> k) * (48 >> k)
        for k, s in enumerate(reversed(g.scales))
        for m in s.convs
        if isinstance(m, torch.nn.Conv2d)
    )
    assert generator_flops(cfg, 40, 48) == conv_flops  # the logits are counted too
    with pytest.raises(ConfigError, match="select needs the delta form"):
        dataclasses.replace(SMALL, delta=False, select=True).validate()


def test_select_window_starts_as_select_and_picks_a_moved_pixel():
    """--select-window K: a new generator puts on the last frame's own pixel the weight the
    select form does (98%: "nothing changes"), and a logit at an offset picks the frame's
    value there exactly: a sprite that moved, taken from where it was."""
    from avg_rt.config import with_form
    from avg_rt.model import blend_history, shifted

    cfg = dataclasses.replace(with_form(SMALL, "select"), select_window=3)
    assert cfg.blend_sources == 4 * 9 and cfg.g_out_channels == 3 + 36
    torch.manual_seed(0)
    x = torch.rand(2, 12, 40, 48) * 2 - 1
    torch.manual_seed(1)
    plain = Generator(with_form(SMALL, "select"))
    torch.manual_seed(1)
    windowed = Generator(cfg)
    bias = windowed.finest_last_conv().bias.detach()[3:]
    weights = torch.softmax(bias, 0)
    assert weights.argmax() == 3 * 9 + 4  # the last frame, offset (0, 0)
    assert weights.max().item() == pytest.approx(
        torch.softmax(plain.finest_last_conv().bias[3:], 0).max().item()
    )
    # One-hot logits on frame 1 at offset (-1, +1): each pixel takes frame 1's value one row
    # up and one column right (the edge repeated beyond the frame).
    logits = torch.zeros(2, 36, 40, 48)
    logits[:, 1 * 9 + 0 * 3 + 2] = 60
    picked = blend_history(x, logits, window=3)
    frame1 = x[:, 3:6]
    torch.testing.assert_close(picked[..., 1:, :-1], frame1[..., :-1, 1:], rtol=0, atol=1e-6)
    torch.testing.assert_close(picked[..., 0, :-1], frame1[..., 0, 1:], rtol=0, atol=1e-6)
    # select-hard with a window: every pixel is exactly one of its 36 sources.
    hard = blend_history(x, torch.randn(2, 36, 40, 48), hard=True, window=3)
    sources = shifted(x.unflatten(1, (4, 3)), 3)  # (2, 36, 3, 40, 48)
    assert (hard[:, None] == sources).all(2).any(1).all()
    with pytest.raises(ConfigError, match="select_window must be odd"):
        dataclasses.replace(cfg, select_window=2).validate()
    with pytest.raises(ConfigError, match="select_window needs the select form"):
        dataclasses.replace(SMALL, select_window=3).validate()


def test_select_hard_picks_one_history_frame_and_its_logits_still_learn():
    """select-hard: in training and at inference each pixel is exactly one history frame (plus
    the change), the one of largest logit; the gradient reaches the logits (straight-through);
    the form needs select."""
    from avg_rt.config import with_form
    from avg_rt.model import blend_history

    cfg = with_form(SMALL, "select-hard")
    assert cfg.select and cfg.select_hard and cfg.delta
    assert not with_form(cfg, "select").select_hard
    x = torch.rand(2, 12, 8, 8) * 2 - 1
    logits = torch.randn(2, 4, 8, 8, requires_grad=True)
    frames = x.unflatten(1, (4, 3))
    pick = logits.detach().argmax(1)  # (B, h, w)
    want = torch.gather(frames, 1, pick[:, None, None].expand(-1, 1, 3, -1, -1))[:, 0]
    for st in (False, True):
        got = blend_history(x, logits, hard=True, straight_through=st)
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    got.sum().backward()  # straight-through: the softmax's gradient
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    # Tied logits (rounded ones can tie) still pick one frame, the oldest: never a blend.
    tied = torch.zeros(2, 4, 8, 8)
    tied[:, 1:3] = 1.0
    torch.testing.assert_close(blend_history(x, tied, hard=True), frames[:, 1], rtol=0, atol=0)
    # A generator of this form starts as copying, exactly (the last frame's logit is largest).
    g = Generator(cfg)
    for p in g.forward_scales(x):
        assert p.shape[1] == 3
    torch.testing.assert_close(g.eval()(x), x[:, 9:], rtol=0, atol=0)
    g.train()
    out = g(x)
    torch.testing.assert_close(out, x[:, 9:], rtol=0, atol=0)
    out.square().sum().backward()
    last = g.finest_last_conv()
    assert last.weight.grad is not None and last.weight.grad[3:].abs().sum() > 0
    with pytest.raises(ConfigError, match="select_hard needs the select form"):
        dataclasses.replace(SMALL, select_hard=True).validate()


def test_straight_through_clamp_keeps_the_gradient_of_saturated_pixels():
    from avg_rt.model import clip_unit

    x = torch.tensor([-1.5, 0.2, 1.5], requires_grad=True)
    y = clip_unit(x, straight_through=True)
    assert y.tolist() == pytest.approx([-1.0, 0.2, 1.0])
    y.sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 1.0]  # a plain clamp would give 0 at both ends


def test_deadzone_keeps_small_changes_exact_at_inference_only():
    cfg = dataclasses.replace(SMALL, delta=True, residual=False, deadzone=4)
    g = Generator(cfg)
    finest = g.scales[-1].convs[-1]
    x = torch.rand(1, 12, 16, 16) * 1.6 - 0.8  # away from the clamp at +-1
    last = x[:, -3:]
    # A change of 3 levels in channel 0, everywhere: under the deadzone of 4.
    torch.nn.init.constant_(finest.bias, 0)
    finest.bias.data[0] = 3 * 2 / 255
    assert torch.equal(g.eval()(x), last)
    assert torch.allclose(g.train()(x)[:, 0], last[:, 0] + 3 * 2 / 255)  # training: raw
    finest.bias.data[0] = 5 * 2 / 255  # over it: kept, in every channel it has
    assert torch.allclose(g.eval()(x)[:, 0], last[:, 0] + 5 * 2 / 255)
    assert torch.equal(g.eval()(x)[:, 1:], last[:, 1:])
    # One channel's change over the threshold keeps the pixel's change in every channel.
    finest.bias.data[1] = 1 * 2 / 255
    assert torch.allclose(g.eval()(x)[:, 1], last[:, 1] + 2 / 255)
    # Pixel by pixel on a busy generator: kept exactly where the largest channel's change
    # is under the threshold, the raw (training-mode) prediction elsewhere, at every scale list.
    from conftest import busy_generator

    torch.manual_seed(0)
    g = busy_generator(dataclasses.replace(cfg, deadzone=2))
    x = torch.rand(2, 12, 24, 40) * 2 - 1
    raw = g.train()(x)
    change = (raw - x[:, -3:]).abs().amax(dim=1, keepdim=True)
    want = torch.where(change < 2 * 2 / 255, x[:, -3:], raw)
    assert 0.05 < (change < 4 / 255).float().mean() < 0.95
    assert torch.equal(g.eval()(x), want) and torch.equal(g(x, all_scales=True)[-1], want)
    with pytest.raises(ConfigError, match="deadzone needs the delta form"):
        dataclasses.replace(SMALL, delta=False, residual=True, deadzone=4).validate()
    with pytest.raises(ConfigError, match="deadzone must be"):
        dataclasses.replace(SMALL, delta=True, residual=False, deadzone=-1).validate()


PALETTE = ((0, 28, 136), (228, 111, 111), (0, 0, 0), (84, 184, 153))


def test_palette_snaps_every_pixel_to_its_nearest_colour_at_inference_only():
    from conftest import busy_generator

    from avg_rt.model import palette_tensor

    torch.manual_seed(0)
    cfg = dataclasses.replace(SMALL, palette=PALETTE)
    g = busy_generator(cfg)
    x = torch.rand(2, 12, 24, 40) * 2 - 1
    raw = g.train()(x)
    colours = palette_tensor(cfg)
    assert torch.equal(colours[1], torch.tensor([228, 111, 111]) / 127.5 - 1)  # the data's map
    # Brute force: the colour at the least Euclidean distance, pixel by pixel.
    dist = ((raw[:, None] - colours[None, :, :, None, None]) ** 2).sum(2)  # (B, K, H, W)
    want = colours[dist.argmin(1)].permute(0, 3, 1, 2)
    got = g.eval()(x)
    assert torch.equal(got, want) and torch.equal(g(x, all_scales=True)[-1], want)
    assert len(torch.unique(dist.argmin(1))) >= 2  # the test sees more than one colour
    assert not torch.equal(raw, want)  # training: the raw prediction
    # The palette is the config's, not a weight: checkpoints load with or without it.
    assert "palette" not in g.state_dict()
    Generator(SMALL).load_state_dict(g.state_dict())


def test_palette_config_is_validated():
    for palette, message in (
        (((0, 28),), r"palette colour \[0, 28\] is not 3 whole levels in \[0, 255\]"),
        (((0, 28, 256),), "is not 3 whole levels"),
        (((0, 0, 0),) * 257, "palette has 257 colours, at most 256"),
    ):
        with pytest.raises(ConfigError, match=message):
            dataclasses.replace(SMALL, palette=palette).validate()
    with pytest.raises(ConfigError, match=r"\[0, 9.5, 3\] is not 3 whole levels"):
        dataclasses.replace(SMALL, palette=((0, 9.5, 3),)).validate()  # 8-bit frames
    with pytest.raises(ConfigError, match="at most one of palette and deadzone"):
        dataclasses.replace(SMALL, palette=PALETTE, deadzone=4).validate()
    # Float frames: colours in the declared range.
    dataclasses.replace(SMALL, channels=1, value_range=(-1, 2), palette=((-1,), (1.5,))).validate()
    with pytest.raises(ConfigError, match=r"not 1 values in \[-1, 2\]"):
        dataclasses.replace(SMALL, channels=1, value_range=(-1, 2), palette=((3,),)).validate()


def test_palette_snap_runs_in_float32_under_autocast():
    """Half-precision distances would pick other colours: the snap leaves autocast."""
    from avg_rt.model import palette_scores, palette_tensor, snap_to_palette

    torch.manual_seed(0)
    colours = palette_tensor(dataclasses.replace(SMALL, palette=PALETTE + ((90, 100, 110),)))
    pred = torch.rand(2, 3, 64, 64) * 2 - 1
    want = snap_to_palette(pred, colours)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = snap_to_palette(pred, colours)
        unguarded = colours[palette_scores(pred, colours).argmin(-1)].movedim(-1, 1)
    assert got.dtype == torch.float32 and torch.equal(got, want)
    assert not torch.equal(unguarded, want)  # what the guard prevents


def test_palette_radius_snaps_only_pixels_near_a_colour():
    from conftest import busy_generator

    from avg_rt.model import palette_tensor

    torch.manual_seed(0)
    cfg = dataclasses.replace(SMALL, palette=PALETTE, palette_radius=120)
    g = busy_generator(cfg)
    x = torch.rand(2, 12, 24, 40) * 2 - 1
    raw = g.train()(x)
    colours = palette_tensor(cfg)
    dist = ((raw[:, None] - colours[None, :, :, None, None]) ** 2).sum(2).sqrt()  # (B, K, H, W)
    near = dist.amin(1, keepdim=True) < 120 * 2 / 255
    want = torch.where(near, colours[dist.argmin(1)].permute(0, 3, 1, 2), raw)
    assert 0.05 < near.float().mean() < 0.95  # both kinds of pixel are there
    assert torch.allclose(g.eval()(x), want, atol=1e-6)
    assert torch.equal(g.eval()(x)[near.expand_as(raw)], want[near.expand_as(raw)])
    with pytest.raises(ConfigError, match="palette_radius needs a palette"):
        dataclasses.replace(SMALL, palette_radius=4).validate()
    with pytest.raises(ConfigError, match="palette_radius must be >= 0"):
        dataclasses.replace(SMALL, palette=PALETTE, palette_radius=-1).validate()


def test_noise_channels_make_a_generator_whose_draws_differ_and_widening_keeps_it():
    """A stochastic generator predicts differently for different noise maps (same maps: same
    frame) and draws new maps on each call, reproducibly under a seed. A deterministic
    generator widened to it (`widen_noise`) predicts exactly as before, whatever the noise."""
    from conftest import busy_generator

    from avg_rt.config import with_form
    from avg_rt.model import widen_noise

    plain = with_form(dataclasses.replace(SMALL, select_window=3), "select")
    noisy = dataclasses.replace(plain, noise_channels=2)
    assert [noisy.g_in_channels(k) for k in range(4)] == [14, 17, 17, 17]
    g = busy_generator(noisy).eval()
    for s in g.scales:  # the noise maps must reach the output
        torch.nn.init.normal_(s.convs[0].weight, std=0.1)
    x = torch.rand(3, 12, 40, 48) * 2 - 1
    z = g.draw_noise(x)
    assert z is not None and z.shape == (3, 2, 5, 6)  # the coarsest scale's size
    with torch.no_grad():
        a, b = g(x, noise=z), g(x, noise=z)
        other = g(x, noise=torch.randn_like(z))
        torch.manual_seed(5)
        drawn = g(x)
        torch.manual_seed(5)
        again = g(x)
    torch.testing.assert_close(a, b)
    assert (a - other).abs().amax() > 0.01
    torch.testing.assert_close(drawn, again)
    assert not torch.equal(drawn, g(x))
    assert generator_flops(noisy, 40, 48) > generator_flops(plain, 40, 48)
    with pytest.raises(ConfigError, match="noise_channels must be >= 0"):
        dataclasses.replace(SMALL, noise_channels=-1).validate()

    old = busy_generator(plain).eval()
    state = old.state_dict()
    widen_noise(state, plain, noisy)
    new = Generator(noisy).eval()
    new.load_state_dict(state)
    with torch.no_grad():
        torch.testing.assert_close(new(x, noise=z * 10), old(x), rtol=0, atol=1e-6)
