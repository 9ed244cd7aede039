"""Record Atari episodes from the emulator bundled with ale-py into the TF project's layout.

`ale-py` ships the ROMs (Ms. Pac-Man included), so the original Ms. Pac-Man experiment can be
reproduced offline: `<out>/Train/<episode>/<frame>.png` and `<out>/Test/...`, 210x160 RGB.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from avg_rt.config import ConfigError
from avg_rt.errors import DataError
from avg_rt.files import atomic_path

Policy = Literal["random", "sticky"]


@dataclass(frozen=True)
class AtariConfig:
    """What to record. `frame_skip` emulator frames pass per recorded frame (the same action
    repeated, as Atari agents act); `sticky`: an action is held with probability `stickiness`
    at each step, giving smoother paths than uniform `random` actions."""

    game: str = "ms_pacman"
    episodes: int = 10
    test_episodes: int = 2
    max_frames: int = 500
    frame_skip: int = 4
    policy: Policy = "sticky"
    stickiness: float = 0.9
    seed: int = 0

    def validate(self) -> None:
        """Raise ConfigError naming the first option that cannot work."""
        for name, low in (("episodes", 1), ("test_episodes", 0), ("frame_skip", 1)):
            if getattr(self, name) < low:
                option = "--" + name.replace("_", "-")
                raise ConfigError(f"{option} must be >= {low}, got {getattr(self, name)}")
        if self.max_frames < MIN_EPISODE_FRAMES:
            raise ConfigError(
                f"--max-frames must be >= {MIN_EPISODE_FRAMES} (a 4-frame history and a frame "
                f"to predict; training wants hundreds), got {self.max_frames}"
            )


# The shortest episode anything can train on: avg-rt's default history and one target.
MIN_EPISODE_FRAMES = 5


def check_game(game: str) -> None:
    """Raise DataError unless ale-py is installed and ships a ROM named `game`."""
    try:
        import ale_py.roms
    except ImportError:
        raise DataError("ale-py", "not installed (pip install ale-py)") from None
    if game not in ale_py.roms.get_all_rom_ids():
        raise DataError(
            game,
            f"no such game in ale-py {ale_py.__version__} (try ms_pacman, "
            f"breakout, pong, space_invaders)",
        )


def _ale(game: str, seed: int) -> Any:  # an ale_py.ALEInterface
    import ale_py
    import ale_py.roms

    check_game(game)
    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)
    ale = ale_py.ALEInterface()
    ale.setInt("random_seed", seed)
    ale.setFloat("repeat_action_probability", 0.0)  # our policy decides; deterministic replay
    rom = ale_py.roms.get_rom_path(game)
    assert rom is not None  # check_game() above refused unknown games
    ale.loadROM(rom)
    return ale


def play(cfg: AtariConfig, episode: int) -> Iterator[np.ndarray]:
    """Frames (210, 160, 3) uint8 of one episode, up to `cfg.max_frames`, fully determined by
    `cfg.seed` and `episode`."""
    rng = np.random.default_rng([cfg.seed, episode])
    ale = _ale(cfg.game, int(rng.integers(2**31)))
    actions = ale.getMinimalActionSet()
    action = actions[rng.integers(len(actions))]
    for _ in range(cfg.max_frames):
        if ale.game_over():
            return
        yield ale.getScreenRGB()
        if cfg.policy == "random" or rng.random() > cfg.stickiness:
            action = actions[rng.integers(len(actions))]
        for _ in range(cfg.frame_skip):
            ale.act(action)


def record(
    cfg: AtariConfig,
    out: str | Path,
    overwrite: bool = False,
    on_frame: Callable[[], None] | None = None,
) -> Path:
    """Write `cfg.episodes` training and `cfg.test_episodes` test episodes under `out`.

    The folder appears only when complete (written beside it, then renamed); an existing `out`
    is replaced only with `overwrite`. `on_frame` is called after each saved frame (progress).
    """
    from PIL import Image

    cfg.validate()
    check_game(cfg.game)
    out = Path(out)
    with atomic_path(out, overwrite) as tmp:
        for i in range(cfg.episodes + cfg.test_episodes):
            split = "Train" if i < cfg.episodes else "Test"
            folder = tmp / split / f"{cfg.game}_{i:04d}"
            folder.mkdir(parents=True)
            for t, frame in enumerate(play(cfg, i)):
                Image.fromarray(frame).save(folder / f"{t:06d}.png", compress_level=1)
                if on_frame:
                    on_frame()
    return out
