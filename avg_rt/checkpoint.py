"""Checkpoints: tensors plus JSON, written atomically, loaded without running code.

A checkpoint is a dict saved with `torch.save` holding only tensors, numbers, strings and
containers of them: `format`, `version`, `config` (TrainConfig as a JSON string), `step`,
`generator` and (for training checkpoints) `discriminator`, `opt_g`, `opt_d`, `rng` (JSON).
It is loaded with `torch.load(weights_only=True)`, which refuses pickled objects, so opening a
checkpoint from elsewhere cannot execute code. State dicts are of the unwrapped modules (no
`module.` or `_orig_mod.` prefixes).
"""

from __future__ import annotations

import json
import pickle
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from avg_rt.config import (
    ConfigError,
    TrainConfig,
    to_dict,
    train_config_from_dict,
    with_inference_options,
)
from avg_rt.errors import CheckpointError
from avg_rt.files import atomic_path, check_writable
from avg_rt.model import Generator

FORMAT = "avg-rt-checkpoint"
VERSION = 1


def save(path: str | Path, cfg: TrainConfig, step: int, state: dict[str, Any]) -> None:
    """Write `state` (state dicts, RNG tensors, JSON strings) with the config and step,
    atomically: a crash mid-write leaves the previous checkpoint intact."""
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "config": json.dumps(to_dict(cfg)),
        "step": step,
        **state,
    }
    with atomic_path(path, overwrite=True) as tmp:
        torch.save(payload, tmp)


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and check a checkpoint; `result["config"]` is a TrainConfig.

    Raises CheckpointError for a missing file, a file holding pickled objects, another format
    or a newer version.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "no such checkpoint file")
    if not zipfile.is_zipfile(path):  # torch.save always writes a zip archive
        raise CheckpointError(path, "not a PyTorch checkpoint (expected a torch.save archive)")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(
            path,
            "refused: it holds pickled Python objects, which could run code; avg-rt loads "
            "only checkpoints of tensors and a config",
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(path, f"not a PyTorch checkpoint ({type(e).__name__})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(path, "not an avg-rt checkpoint (no generator weights and config)")
    if data.get("version", 0) > VERSION:
        raise CheckpointError(
            path,
            f"checkpoint version {data['version']} is newer than this "
            f"avg-rt understands ({VERSION}); upgrade avg-rt",
        )
    try:
        data["config"] = train_config_from_dict(json.loads(data["config"]))
    except (ConfigError, TypeError, json.JSONDecodeError) as e:
        raise CheckpointError(path, f"bad config in checkpoint ({e})") from None
    if "generator" not in data:
        raise CheckpointError(path, "checkpoint has no generator weights")
    return data


def non_finite(tree: Any, name: str = "") -> list[str]:
    """The names (dotted paths) of the floating-point tensors holding NaN or inf in `tree`: a
    state dict, an optimizer's (nested dicts and lists), or a tensor."""
    if isinstance(tree, torch.Tensor):
        return [name] if tree.is_floating_point() and not bool(tree.isfinite().all()) else []
    if isinstance(tree, dict):
        items: Any = tree.items()
    elif isinstance(tree, list | tuple):
        items = enumerate(tree)
    else:
        return []
    return [n for k, v in items for n in non_finite(v, f"{name}.{k}" if name else str(k))]


def require_finite(path: str | Path, tree: Any, what: str, advice: str = "") -> None:
    """Raise CheckpointError for `path` if `tree` (`non_finite`) holds NaN or inf, naming
    `what` it is, the first such tensor, and `advice` after it."""
    if bad := non_finite(tree):
        raise CheckpointError(
            path,
            f"non-finite {what} (NaN or inf) in {len(bad)} tensors, first {bad[0]}: the training "
            f"that wrote it diverged{advice}",
        )


def load_generator(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[Generator, TrainConfig]:
    """The generator of a checkpoint, in eval mode, with its TrainConfig: (Generator, cfg)."""
    data = load(path, map_location)
    cfg: TrainConfig = data["config"]
    gen = Generator(cfg.model)
    try:
        gen.load_state_dict(data["generator"])
    except RuntimeError as e:
        raise CheckpointError(
            path, f"generator weights do not match its config ({e})".splitlines()[0]
        ) from None
    require_finite(path, data["generator"], "generator weights")
    return gen.to(map_location).eval(), cfg


def save_networks(
    src: str | Path,
    dst: str | Path,
    discriminator: bool = False,
    overwrite: bool = False,
    deadzone: float | None = None,
    palette: Sequence[Sequence[float]] | None = None,
    palette_radius: float | None = None,
) -> Path:
    """Write the generator (and, with `discriminator`, D), config and step of checkpoint `src`
    to `dst`, for deployment and shipping: no optimizer or RNG state. `dst` is itself a
    checkpoint; one that keeps D lets `avg-rt bench quality` report D's accuracy. `deadzone`,
    `palette`, `palette_radius`: set the generator's inference-only options (`ModelConfig`'s,
    palette () for none; training never applies them, so they are choices made after
    training)."""
    data = load(src)
    try:
        data["config"] = with_inference_options(
            data["config"], deadzone=deadzone, palette=palette, palette_radius=palette_radius
        )
    except ConfigError as e:
        raise CheckpointError(src, f"cannot set the inference options: {e}") from None
    dst = Path(dst)
    check_writable(dst, overwrite, [Path(src)])
    state = {"generator": data["generator"]}
    if discriminator:
        if "discriminator" not in data:
            raise CheckpointError(src, "no discriminator to keep (trained with --no-adversarial)")
        state["discriminator"] = data["discriminator"]
    save(dst, data["config"], data["step"], state)
    return dst
