"""Shared fixtures: hardware markers, isolated RNG, and data the tests make themselves."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from avg_rt.config import PRESETS, ModelConfig

HAS_CUDA = torch.cuda.is_available()


def _tensorrt_problem() -> str | None:
    """Why TensorRT tests cannot run here, or None. Installed but failing to import (a CUDA
    mismatch, say) is a reason to skip, said as such, not an error."""
    if importlib.util.find_spec("tensorrt") is None:
        return "the tensorrt package is not installed (pip install 'avg-rt[gpu]')"
    try:
        importlib.import_module("tensorrt")
    except Exception as e:  # any failure of TensorRT's own import
        return f"tensorrt is installed but does not import ({type(e).__name__}: {e})"
    return None


TENSORRT_PROBLEM = _tensorrt_problem()
HAS_TENSORRT = TENSORRT_PROBLEM is None

# Markers (so that `pytest -m needs_cuda` selects the GPU tests); where the hardware or the
# package is missing, `pytest_collection_modifyitems` below skips them with the reason.
needs_cuda = pytest.mark.needs_cuda
needs_tensorrt = pytest.mark.needs_tensorrt


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "needs_cuda" in item.keywords and not HAS_CUDA:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU (none here)"))
        if "needs_tensorrt" in item.keywords and not (HAS_CUDA and HAS_TENSORRT):
            reason = TENSORRT_PROBLEM or "needs a CUDA GPU for TensorRT (none here)"
            item.add_marker(pytest.mark.skip(reason=reason))


# One test body for cpu and, where present, cuda.
DEVICES = ["cpu", pytest.param("cuda", marks=needs_cuda)]

SMALL: ModelConfig = PRESETS["small"].model


@pytest.fixture(autouse=True)
def _isolated_rng() -> None:
    """Every test starts from the same torch and numpy random state."""
    state = torch.get_rng_state(), np.random.get_state()
    torch.manual_seed(0)
    np.random.seed(0)
    yield
    torch.set_rng_state(state[0])
    np.random.set_state(state[1])


def moving_frames(t: int = 12, h: int = 40, w: int = 48, seed: int = 0) -> np.ndarray:
    """uint8 (t, h, w, 3): a bright square moving right over a textured background."""
    rng = np.random.default_rng(seed)
    background = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
    frames = np.repeat(background[None], t, axis=0)
    for i in range(t):
        x = (2 * i) % (w - 8)
        frames[i, h // 3 : h // 3 + 8, x : x + 8] = (250, 200, 40)
    return frames


def write_frames(folder: Path, frames: np.ndarray, suffix: str = ".png", mode: str = "RGB") -> Path:
    """Write frames as images `000.png`, ... in `folder` (created); mode RGB, RGBA or L."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames):
        Image.fromarray(f).convert(mode).save(folder / f"{i:03d}{suffix}")
    return folder


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    """A TF-layout folder: Train/ with 3 videos, Test/ with 1, 12 frames of 40x48 each."""
    root = tmp_path / "data"
    for split, n in (("Train", 3), ("Test", 1)):
        for i in range(n):
            write_frames(
                root / split / f"video{i}", moving_frames(seed=i + (10 if split == "Test" else 0))
            )
    return root


@pytest.fixture(scope="session")
def atari_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real Ms. Pac-Man frames from the emulator: 2 short training and 1 test episode."""
    from avg_rt.data.atari import AtariConfig, record

    out = tmp_path_factory.mktemp("atari") / "mspacman"
    return record(AtariConfig(episodes=2, test_episodes=1, max_frames=40, seed=1), out)


def busy_generator(cfg: ModelConfig) -> torch.nn.Module:
    """An untrained generator in which every layer contributes to the output. (A delta
    generator starts as an exact copier of its last input, its last convolutions being zero,
    which would make any comparison of backends trivially pass.)"""
    from avg_rt.model import Generator

    g = Generator(cfg)
    for scale in g.scales:
        torch.nn.init.normal_(scale.convs[-1].weight, std=0.02)
    return g


@pytest.fixture(scope="session")
def small_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint of the small preset (untrained, fixed seed, every layer contributing)."""
    from avg_rt import checkpoint

    torch.manual_seed(1)
    cfg = PRESETS["small"]
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint.pt"
    checkpoint.save(path, cfg, 0, {"generator": busy_generator(cfg.model).state_dict()})
    return path


@pytest.fixture(scope="session")
def onnx_files(small_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The small checkpoint exported (unverified) to FP32 and FP16 ONNX: {precision: path}."""
    from avg_rt.export.to_onnx import save_onnx, to_onnx

    from avg_rt.checkpoint import load_generator

    gen, _ = load_generator(small_checkpoint)
    out = tmp_path_factory.mktemp("onnx")
    return {
        "fp32": save_onnx(to_onnx(gen), out / "generator.onnx"),
        "fp16": save_onnx(to_onnx(gen, fp16=True), out / "generator.fp16.onnx"),
    }
