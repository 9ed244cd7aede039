"""avg-rt: multi-scale adversarial next-frame prediction, exported for fast inference.

`import avg_rt` stays cheap: the API below imports torch and the rest on first call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

    from avg_rt.predict import RolloutResult

__version__ = "0.1.0"


def rollout(model: Any, frames: Any, steps: int = 64, **kwargs: Any) -> RolloutResult:
    """Predict `steps` frames recursively; see `avg_rt.predict.rollout_frames`.

    Example:
        result = avg_rt.rollout("models/small/checkpoint.pt", frames, steps=64, truth=future)
        result.predictions  # uint8 (64, H, W, 3); result.metrics["psnr"]: dB per step
    """
    from avg_rt.predict import rollout_frames

    return rollout_frames(model, frames, steps, **kwargs)


def fit(data: Any, out: Any, preset: str = "small", **kwargs: Any) -> Path:
    """Train a new run in `out` on `data`; see `avg_rt.training.train`.

    Example (a simulator streaming float fields while training runs):
        avg_rt.fit(simulate(), "runs/smoke", channels=3, value_range=(-1, 2), steps=2000)
    """
    from avg_rt.training import train

    return train(data, out, preset, **kwargs)
