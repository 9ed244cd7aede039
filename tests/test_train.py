import dataclasses
import json
import math
import os
import signal

import numpy as np
import pytest
import torch
from avg_rt.train.loop import TrainingStopped, train
from avg_rt.train.steps import split
from conftest import SMALL, needs_cuda

from avg_rt import checkpoint
from avg_rt.config import PRESETS, ConfigError
from avg_rt.data.clips import ClipSampler, clips_to_float
from avg_rt.data.sources import load_videos, open_source

TINY = dataclasses.replace(
    PRESETS["small"],
    model=SMALL,
    adv_start=0,
    unroll=2,  # multi-step training, D on every unrolled step
    unroll_ramp=0,
    batch=4,
    steps=6,
    summary_interval=1,
    image_interval=3,
    test_interval=3,
    save_interval=3,
    test_recursions=3,
    test_clips=1,
    device="cpu",
)


def _videos(root):
    return (load_videos(open_source(root / "Train"), 5), load_videos(open_source(root / "Test"), 5))


def _weights(path):
    return checkpoint.load(path)


def _assert_same_networks(a_path, b_path):
    a, b = _weights(a_path), _weights(b_path)
    assert a["step"] == b["step"]
    for net in ("generator", "discriminator"):
        for k in a[net]:
            assert torch.equal(a[net][k], b[net][k]), f"{net}.{k} differs after resume"


@pytest.mark.parametrize(
    "spectral_norm, noise, part",
    # With spectral normalisation D has state besides its weights (the power iteration's
    # vectors); a run stopped at 4 measures D there, where the uninterrupted run does not. A
    # stochastic G draws noise there too, which must not move training's random stream.
    [(False, 0, 3), (True, 0, 4), (False, 1, 4)],
)
def test_resume_matches_uninterrupted_run(tiny_dataset, tmp_path, spectral_norm, noise, part):
    train_v, test_v = _videos(tiny_dataset)
    model = dataclasses.replace(TINY.model, d_spectral_norm=spectral_norm, noise_channels=noise)
    cfg = dataclasses.replace(TINY, model=model, lr_decay=0.0, best_of=1 + noise)  # `part`, 6
    full = train(cfg, train_v, tmp_path / "full", test_v, progress=False)
    half = dataclasses.replace(cfg, steps=part)
    train(half, train_v, tmp_path / "part", test_v, progress=False)
    assert checkpoint.load(tmp_path / "part" / "checkpoint.pt")["step"] == part
    resumed = train(cfg, train_v, tmp_path / "part", test_v, resume=True, progress=False)
    _assert_same_networks(full, resumed)


def test_resume_restores_torch_rng_from_a_state_loaded_onto_a_gpu(
    tiny_dataset, tmp_path, monkeypatch
):
    """Review item 2 of issue 13, on CPU: a checkpoint loaded with map_location="cuda" holds
    torch's RNG state on the GPU, which torch.set_rng_state refuses (TypeError: RNG state must
    be a torch.ByteTensor); resume must bring it back to the CPU first. Stand-in for the GPU
    tensor: an object whose only way to a CPU ByteTensor is `.cpu()`."""
    import avg_rt.train.loop as loop

    class OnGpu:
        def __init__(self, cpu):
            self._cpu = cpu

        def cpu(self):
            return self._cpu

    real_load = checkpoint.load

    def load_to_gpu(path, device="cpu"):
        state = real_load(path, device)
        state["torch_rng"] = OnGpu(state["torch_rng"])
        return state

    train_v, test_v = _videos(tiny_dataset)
    cfg = dataclasses.replace(TINY, lr_decay=0.0)
    full = train(cfg, train_v, tmp_path / "full", test_v, progress=False)
    train(dataclasses.replace(cfg, steps=3), train_v, tmp_path / "part", test_v, progress=False)
    monkeypatch.setattr(loop.checkpoint, "load", load_to_gpu)
    resumed = train(cfg, train_v, tmp_path / "part", test_v, resume=True, progress=False)
    monkeypatch.undo()
    _assert_same_networks(full, resumed)


@needs_cuda
def test_resume_on_cuda(tiny_dataset, tmp_path):
    """Review item 2 of issue 13: the checkpoint is loaded onto the GPU, torch's RNG state
    must go back to the CPU before set_rng_state."""
    train_v, test_v = _videos(tiny_dataset)
    cfg = dataclasses.replace(TINY, device="cuda", lr_decay=0.0)
    run = tmp_path / "run"  # tmp_path holds the data
    train(dataclasses.replace(cfg, steps=3), train_v, run, test_v, progress=False)
    train(cfg, train_v, run, test_v, resume=True, progress=False)
    assert checkpoint.load(run / "checkpoint.pt")["step"] == 6


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_after_a_whole_step_and_resume_matches(tiny_dataset, tmp_path, signum):
    # What a scheduler (SIGTERM) or Ctrl-C (SIGINT) does mid-run: the step in progress ends,
    # its checkpoint is written, and resuming gives the uninterrupted run's networks.
    train_v, test_v = _videos(tiny_dataset)
    full = train(TINY, train_v, tmp_path / "full", test_v, progress=False)

    def signal_in_step_3(step, G, D):
        if step == 2:  # two steps done; the signal lands before the third begins
            os.kill(os.getpid(), signum)

    before = signal.getsignal(signum)
    with pytest.raises(TrainingStopped, match=f"{signal.Signals(signum).name} after step 2"):
        train(TINY, train_v, tmp_path / "part", test_v, progress=False, after_step=signal_in_step_3)
    assert checkpoint.load(tmp_path / "part" / "checkpoint.pt")["step"] == 2
    assert signal.getsignal(signum) is before  # the handlers are restored
    resumed = train(TINY, train_v, tmp_path / "part", test_v, resume=True, progress=False)
    _assert_same_networks(full, resumed)


def test_run_folder_contents_and_no_reuse(tiny_dataset, tmp_path):
    train_v, test_v = _videos(tiny_dataset)
    run = tmp_path / "run"
    train(TINY, train_v, run, test_v, progress=False)
    assert json.loads((run / "config.json").read_text())["steps"] == 6
    logs = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    keys = set().union(*logs)
    assert {"loss/g", "loss/lp", "loss/gdl", "loss/adv", "loss/d", "d/accuracy"} <= keys
    assert {"d/accuracy_real", "d/accuracy_fake", "train/unroll"} <= keys
    assert {"grad/lp", "grad/gdl", "grad/adv", "grad/adv_share"} <= keys
    assert {"test/psnr_step1", "test/baseline_psnr_step1", "test/sharp_diff_last"} <= keys
    assert {"test/d_accuracy", "test/d_accuracy_real", "test/d_accuracy_fake"} <= keys
    assert {f"test/g_live_units_scale{k}" for k in range(4)} <= keys
    assert any((run / "tb").iterdir())
    with pytest.raises(ConfigError, match="already exists"):
        train(TINY, train_v, run, test_v, progress=False)


def test_init_from_starts_a_new_run_from_a_checkpoints_networks(tiny_dataset, tmp_path):
    """Fine-tuning: the new run's networks are the checkpoint's at step 0 (no update yet),
    trained with free-run steps; another network is refused, naming what differs."""
    train_v, test_v = _videos(tiny_dataset)
    first = train(dataclasses.replace(TINY, steps=2), train_v, tmp_path / "a", progress=False)
    seen = {}

    def record(step, G, D):
        if step == 1:
            seen["generator"] = {k: v.clone() for k, v in G.state_dict().items()}
            seen["discriminator"] = {k: v.clone() for k, v in D.state_dict().items()}

    cfg = dataclasses.replace(TINY, steps=3, free_run=2, d_free_run=True, lr_g=1e-12, lr_d=1e-12)
    tuned = train(
        cfg, train_v, tmp_path / "b", test_v, progress=False, init_from=first, after_step=record
    )
    start, end = _weights(first), _weights(tuned)
    for net in ("generator", "discriminator"):  # a learning rate of 1e-12 moves nothing visibly
        for k, v in start[net].items():
            torch.testing.assert_close(seen[net][k], v)
    assert end["step"] == 3
    origin = json.loads((tmp_path / "b" / "init_from.json").read_text())
    assert origin == {
        "checkpoint": str(first.resolve()),
        "step": 2,
        "networks": ["generator", "discriminator"],
    }
    logs = [json.loads(line) for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    for key in ("train/free_run", "train/d_free_run"):
        ahead = [log[key] for log in logs if key in log]
        assert len(ahead) == 3 and set(ahead) <= {0, 1, 2} and max(ahead) > 0, ahead
    # A stochastic generator starts from a deterministic one: its noise weights start at 0.
    noisy = dataclasses.replace(
        cfg,
        model=dataclasses.replace(SMALL, noise_channels=2),
        best_of=3,
        free_run=0,
        d_free_run=False,
        steps=1,
    )
    train(noisy, train_v, tmp_path / "d", progress=False, init_from=first, after_step=record)
    for k, v in start["generator"].items():
        got = seen["generator"][k]
        if k.endswith("convs.0.weight"):  # the history, 2 noise maps, the coarser prediction
            assert got[:, 12:14].abs().max() < 1e-11  # zero, moved by one step of 1e-12
            got = torch.cat([got[:, :12], got[:, 14:]], 1)
        torch.testing.assert_close(got, v)
    logs = [json.loads(line) for line in (tmp_path / "d" / "log.jsonl").read_text().splitlines()]
    assert any("train/best_of_gain" in log for log in logs)
    other = dataclasses.replace(cfg, model=dataclasses.replace(SMALL, g_leak=0.2))
    with pytest.raises(ConfigError, match=r"another network \(g_leak 0.0 \(checkpoint\) vs 0.2"):
        train(other, train_v, tmp_path / "c", progress=False, init_from=first)
    with pytest.raises(ConfigError, match="--resume continues one"):
        train(cfg, train_v, tmp_path / "b", progress=False, init_from=first, resume=True)


def test_non_adversarial_has_no_discriminator(tiny_dataset, tmp_path):
    train_v, _ = _videos(tiny_dataset)
    cfg = dataclasses.replace(TINY, adversarial=False, steps=2)
    ckpt = checkpoint.load(train(cfg, train_v, tmp_path / "g", progress=False))
    assert "discriminator" not in ckpt and "generator" in ckpt


def test_short_training_beats_copying_on_emulator_frames(atari_dataset, tmp_path):
    """A few hundred G steps of the small preset on Ms. Pac-Man frames: its next frames of the
    training clips are closer to the truth than the last input frame is (the delta form starts
    as an exact copy; the loss alone could not show that it learned more than copying)."""
    train_v, _ = _videos(atari_dataset)
    cfg = dataclasses.replace(
        TINY, adversarial=False, unroll=1, steps=200, batch=8, test_interval=1000
    )
    cfg = dataclasses.replace(cfg, image_interval=1000, save_interval=1000)
    path = train(cfg, train_v, tmp_path / "run", progress=False)
    G, _ = checkpoint.load_generator(path)
    sampler = ClipSampler(train_v, 5, 32, np.random.default_rng(7))
    history, targets = split(clips_to_float(sampler.sample(64)), 4)
    with torch.no_grad():
        ours = (G(history) - targets[:, 0]).square().mean()
    copy = (history[:, -3:] - targets[:, 0]).square().mean()
    assert ours < 0.9 * copy, (ours, copy)


@needs_cuda
def test_fp16_training_on_cuda_keeps_loss_scales(tiny_dataset, tmp_path):
    train_v, test_v = _videos(tiny_dataset)
    cfg = dataclasses.replace(TINY, device="cuda", amp="fp16")
    path = train(cfg, train_v, tmp_path / "run", test_v, progress=False)
    state = checkpoint.load(path)
    assert {"scaler_g", "scaler_d"} <= set(state)
    assert all(torch.isfinite(p).all() for p in state["generator"].values())
    more = dataclasses.replace(cfg, steps=8)
    train(more, train_v, tmp_path / "run", test_v, resume=True, progress=False)
    assert checkpoint.load(path)["step"] == 8


def test_periodic_tests_roll_out_as_a_checkpoint_does_then_training_resumes():
    """The training loop's test rollouts run G in eval mode (its inference deadzone applied,
    as a saved checkpoint is rolled out) and leave it in training mode."""
    from avg_rt.train.loop import evaluate
    from conftest import busy_generator

    rng = np.random.default_rng(0)
    clips = [
        (
            "v",
            rng.integers(0, 256, (4, 16, 16, 3), np.uint8),
            rng.integers(0, 256, (2, 16, 16, 3), np.uint8),
        )
    ]
    G = busy_generator(dataclasses.replace(SMALL, deadzone=254)).train()  # keeps every pixel
    scores = evaluate(G, clips, torch.device("cpu"))
    assert G.training
    assert scores["test/psnr_step1"] == scores["test/baseline_psnr_step1"]  # = copying
    G = busy_generator(SMALL).train()
    scores = evaluate(G, clips, torch.device("cpu"))
    assert scores["test/psnr_step1"] != scores["test/baseline_psnr_step1"]


def test_a_dead_finest_scale_is_logged_and_named_when_it_dies_and_at_the_end(
    tiny_dataset, tmp_path, capsys
):
    """A generator whose finest scale's last hidden layer has died (no unit positive: with
    ReLU it outputs its bias alone, the copier of issue 14's seed 7 and of issue 11's G-only
    select-window seed 1) shows as 0 in test/g_live_units_scale3 and gets a warning line at
    the first test that sees it and again at the end of training; one line if that test is
    the last."""
    from avg_rt.train.loop import DEAD_FINEST

    train_v, test_v = _videos(tiny_dataset)
    cfg = dataclasses.replace(TINY, model=dataclasses.replace(SMALL, delta=True), adversarial=False)

    def killer(at):
        def kill(step, G, D):
            if step == at:
                torch.nn.init.constant_(G.scales[-1].convs[-3].bias, -100.0)

        return kill

    train(cfg, train_v, tmp_path / "dead", test_v, progress=False, after_step=killer(5))
    logs = [json.loads(line) for line in (tmp_path / "dead" / "log.jsonl").read_text().splitlines()]
    tests = [r for r in logs if "test/g_live_units_scale3" in r]
    assert [r["step"] for r in tests] == [3, 6]
    assert tests[0]["test/g_live_units_scale3"] > 0 and tests[1]["test/g_live_units_scale3"] == 0
    assert tests[1]["test/g_live_units_scale2"] > 0
    assert capsys.readouterr().err.count(f"{DEAD_FINEST} (test at iteration 6)") == 1
    train(cfg, train_v, tmp_path / "early", test_v, progress=False, after_step=killer(2))
    err = capsys.readouterr().err
    assert err.count(DEAD_FINEST) == 2 and "(test at iteration 3)" in err
    assert "(test at iteration 6)" in err
    train(cfg, train_v, tmp_path / "alive", test_v, progress=False)
    assert DEAD_FINEST not in capsys.readouterr().err


def test_a_gradient_norm_that_is_not_finite_stops_training(tiny_dataset, tmp_path, monkeypatch):
    """With --clip-grad, a gradient norm past float32 (issue 11's lam_adv 12 arm: losses finite,
    G's gradient inf, G predicting noise for the rest of the run) stops training as a NaN loss
    does: one line naming it, the last good checkpoint kept."""
    from avg_rt.train.loop import TrainingDiverged

    train_v, test_v = _videos(tiny_dataset)
    cfg = dataclasses.replace(TINY, steps=9, clip_grad=100.0)  # saves at 3, 6, 9
    real, done = torch.nn.utils.clip_grad_norm_, [0]

    def norm(params, max_norm):  # every update of step 5 (the first: D's) overflows
        n = real(params, max_norm)
        return torch.tensor(math.inf) if done[0] == 4 else n

    def after(step, G, D):
        done[0] = step

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", norm)
    run = tmp_path / "run"
    with pytest.raises(TrainingDiverged) as e:
        train(cfg, train_v, run, test_v, progress=False, after_step=after)
    line = str(e.value)
    assert "at step 5 (grad/d_norm is inf); kept the checkpoint of step 3 (--resume it" in line
    assert done[0] == 4 and checkpoint.load(run / "checkpoint.pt")["step"] == 3
    logged = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["grad/g_norm"]) for r in logged if r["step"] < 5 and "loss/g" in r)


@pytest.mark.parametrize("kill_at", [4, 6])
def test_divergence_stops_with_one_line_and_keeps_the_last_good_checkpoint(
    tiny_dataset, tmp_path, kill_at
):
    """A run whose weights turn NaN (issue 14's recorded leaky seed 6 did at iteration ~550,
    then trained 1,450 more steps of NaN and saved them over its last good checkpoint) stops:
    at the next step's loss (NaN at step 4: stops at 5, before the save at 6), or at once
    where the weights break just before a save (step 6). The checkpoint of step 3 stays, and
    resuming from a checkpoint that holds NaN is refused."""
    from avg_rt.train.loop import TrainingDiverged

    from avg_rt.errors import CheckpointError, InputError

    train_v, test_v = _videos(tiny_dataset)
    cfg = dataclasses.replace(TINY, steps=9)  # saves at 3, 6, 9
    seen = []

    def poison(step, G, D):
        seen.append(step)
        if step == kill_at:
            with torch.no_grad():
                G.scales[0].convs[0].weight.fill_(float("nan"))

    run = tmp_path / "run"
    with pytest.raises(TrainingDiverged) as e:
        train(cfg, train_v, run, test_v, progress=False, after_step=poison)
    assert isinstance(e.value, InputError)  # the CLI prints it as one line
    line = str(e.value)
    assert "\n" not in line and line.startswith(f"{run / 'checkpoint.pt'}: training diverged")
    stop, what = (6, "G's weights not finite") if kill_at == 6 else (5, "loss/d is nan")
    assert f"at step {stop} ({what}); kept the checkpoint of step 3 (--resume it" in line, line
    assert max(seen) == kill_at  # nothing ran after the step that broke
    logged = [json.loads(x)["step"] for x in (run / "log.jsonl").read_text().splitlines()]
    assert max(logged) == stop  # the step that diverged is in the log
    kept = checkpoint.load(run / "checkpoint.pt")
    assert kept["step"] == 3 and not checkpoint.non_finite(kept["generator"])

    # A checkpoint written with NaN (as before this check) cannot be resumed.
    kept["generator"]["scales.0.convs.0.weight"].fill_(float("nan"))
    state = {k: v for k, v in kept.items() if k not in ("format", "version", "config", "step")}
    checkpoint.save(run / "checkpoint.pt", cfg, 3, state)
    with pytest.raises(CheckpointError, match="scales.0.convs.0.weight.*diverged"):
        train(cfg, train_v, run, test_v, resume=True, progress=False)
