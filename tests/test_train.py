import dataclasses
import json

import numpy as np
import pytest
import torch
from avg_rt.train.loop import train
from conftest import SMALL, needs_cuda

from avg_rt import checkpoint
from avg_rt.config import PRESETS, ConfigError
from avg_rt.data.sources import load_videos, open_source

TINY = dataclasses.replace(
    PRESETS["small"],
    model=SMALL,
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


def test_resume_matches_uninterrupted_run(tiny_dataset, tmp_path):
    train_v, test_v = _videos(tiny_dataset)
    full = train(TINY, train_v, tmp_path / "full", test_v, progress=False)
    half = dataclasses.replace(TINY, steps=3)
    train(half, train_v, tmp_path / "part", test_v, progress=False)
    assert checkpoint.load(tmp_path / "part" / "checkpoint.pt")["step"] == 3
    resumed = train(TINY, train_v, tmp_path / "part", test_v, resume=True, progress=False)
    a, b = _weights(full), _weights(resumed)
    assert a["step"] == b["step"] == 6
    for net in ("generator", "discriminator"):
        for k in a[net]:
            assert torch.equal(a[net][k], b[net][k]), f"{net}.{k} differs after resume"


def test_run_folder_contents_and_no_reuse(tiny_dataset, tmp_path):
    train_v, test_v = _videos(tiny_dataset)
    run = tmp_path / "run"
    train(TINY, train_v, run, test_v, progress=False)
    assert json.loads((run / "config.json").read_text())["steps"] == 6
    logs = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    keys = set().union(*logs)
    assert {"loss/g", "loss/lp", "loss/gdl", "loss/adv", "loss/d", "d/accuracy"} <= keys
    assert {"test/psnr_step1", "test/baseline_psnr_step1", "test/sharp_diff_last"} <= keys
    assert any((run / "tb").iterdir())
    with pytest.raises(ConfigError, match="already exists"):
        train(TINY, train_v, run, test_v, progress=False)


def test_non_adversarial_has_no_discriminator(tiny_dataset, tmp_path):
    train_v, _ = _videos(tiny_dataset)
    cfg = dataclasses.replace(TINY, adversarial=False, steps=2)
    ckpt = checkpoint.load(train(cfg, train_v, tmp_path / "g", progress=False))
    assert "discriminator" not in ckpt and "generator" in ckpt


def test_short_training_on_emulator_lowers_loss(atari_dataset, tmp_path):
    train_v, _ = _videos(atari_dataset)
    cfg = dataclasses.replace(
        TINY,
        steps=60,
        batch=8,
        summary_interval=1,
        test_interval=1000,
        image_interval=1000,
        save_interval=1000,
    )
    losses: list[float] = []
    train(
        cfg,
        train_v,
        tmp_path / "run",
        progress=False,
        on_log=lambda step, logs: losses.append(logs["loss/g"]) if "loss/g" in logs else None,
    )
    assert len(losses) == 60
    assert np.mean(losses[-10:]) < 0.7 * np.mean(losses[:10])


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
