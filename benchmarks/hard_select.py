"""The select form with a hard choice at inference: each pixel takes the one history frame of
highest logit (argmax) instead of the softmax blend, at every scale, plus the change.

    python benchmarks/hard_select.py --data data/mspacman60/Test   # ~15 min alone on 2 cores

Scores the shipped select-form models both ways on the validation episodes (40 clips, 64
steps; the benchmark's held-out episodes stay untouched) with the quality benchmark's own code,
as `<name>-soft` and `<name>-hard` reports. A question to settle before making it an inference
option: a blend of two flickering colours is a smudge, a hard pick is one of them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import avg_rt.model
from avg_rt import checkpoint
from avg_rt.benchmark.common import RESULTS, run_script
from avg_rt.benchmark.quality import QualityOptions, run
from avg_rt.errors import CheckpointError
from avg_rt.model import blend_history  # bound here: main() patches the module's name


def hard_blend(
    history: torch.Tensor, logits: torch.Tensor, *_: bool, window: int = 1, **__: bool
) -> torch.Tensor:
    """`blend_history`'s hard pick (the select-hard form's, at inference) in place of the
    blend these weights were trained for."""
    return blend_history(history, logits, hard=True, window=window)


def not_select_checkpoint(path: Path) -> str | None:
    """Why the hard pick cannot apply to this model (None: it can). It patches the PyTorch
    generator's blend, so an exported model, or a form without the blend, would be scored
    twice unchanged."""
    if path.suffix.lower() not in (".pt", ".pth"):
        return "not a checkpoint (.pt, .pth): the hard pick patches the PyTorch generator"
    try:
        cfg = checkpoint.load(path)["config"]
    except CheckpointError as e:
        return e.problem
    if cfg.model.select_hard:  # its "soft" report would be its own hard pick again
        return "a select-hard model: it picks already (no blend to compare the pick with)"
    return None if cfg.model.select else "not a select-form model (no blend to pick from)"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="folder of validation videos")
    p.add_argument("--model", action="append", default=[], help="label=checkpoint")
    p.add_argument("--clips", type=int, default=40)
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--name", default="hard-select")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    pairs = args.model or [
        "adv=models/small/checkpoint.pt",
        "noadv=models/small-noadv/checkpoint.pt",
    ]
    models = {k: Path(v) for k, v in (m.split("=", 1) for m in pairs)}
    for path in models.values():
        if problem := not_select_checkpoint(path):
            p.error(f"{path}: {problem}")
    for variant, blend in (("soft", blend_history), ("hard", hard_blend)):
        avg_rt.model.blend_history = blend  # Generator.forward_scales looks it up per call
        try:
            run(
                QualityOptions(
                    models=models,
                    data=args.data,
                    steps=args.steps,
                    max_clips=args.clips,
                    name=f"{args.name}-{variant}",
                    out=args.out,
                )
            )
        finally:
            avg_rt.model.blend_history = blend_history


if __name__ == "__main__":
    run_script(main)
