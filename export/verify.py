"""Verify an artefact against PyTorch: single steps at several shapes and a recursive rollout.

Everything goes through the Runner protocol, so ONNX (FP32/FP16) and TensorRT artefacts are
checked by the same code. Inputs are fresh random frames (smooth noise, not zeros, drawn from a
seeded generator). FP32 artefacts are judged by the largest absolute difference, FP16 ones by
PSNR against the FP32 PyTorch output, since FP16 rounding alone gives ~1e-3 differences.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from avg_rt.metrics import psnr, to_unit
from avg_rt.rollout import rollout
from avg_rt.runners import Runner


@dataclass(frozen=True)
class Tolerance:
    """Pass if max |a - b| <= max_abs (when set) and PSNR(a, b) >= min_psnr (when set)."""

    max_abs: float | None = None
    min_psnr: float | None = None

    def passes(self, max_abs: float, psnr_db: float) -> bool:
        return (self.max_abs is None or max_abs <= self.max_abs) and (
            self.min_psnr is None or psnr_db >= self.min_psnr
        )

    def __str__(self) -> str:
        parts = [f"max|d| <= {self.max_abs:g}"] if self.max_abs is not None else []
        parts += [f"PSNR >= {self.min_psnr:g} dB"] if self.min_psnr is not None else []
        return ", ".join(parts)


# Single steps and every step of a rollout. A rollout feeds differences back, so FP32 gets a
# looser bound there; FP16 rollouts drift visibly only after many steps, hence 30 dB.
TOLERANCES: dict[tuple[str, str], Tolerance] = {
    ("fp32", "step"): Tolerance(max_abs=1e-4),
    ("fp32", "rollout"): Tolerance(max_abs=1e-3),
    ("fp16", "step"): Tolerance(min_psnr=40.0),
    ("fp16", "rollout"): Tolerance(min_psnr=30.0),
}


@dataclass
class Check:
    """One comparison: a single step at `shape`, or a rollout (worst step reported)."""

    kind: str  # "step" or "rollout"
    shape: tuple[int, ...]
    max_abs: float
    psnr: float  # dB, frames mapped to [0, 1]; the worst step for a rollout
    tolerance: str
    passed: bool
    per_step: list[dict[str, float]] = field(default_factory=list)


@dataclass
class Report:
    """All checks of one artefact."""

    artefact: str
    runner: str
    precision: str
    checks: list[Check]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["passed"] = self.passed
        return data


def random_history(
    shape: Sequence[int], seed: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Smooth random frames in [-1, 1] of `shape` (..., H, W): coarse noise upsampled plus a
    little fine noise, closer to video than white noise is."""
    g = torch.Generator().manual_seed(seed)
    *lead, h, w = shape
    coarse = torch.rand(math.prod(lead), 1, max(2, h // 8), max(2, w // 8), generator=g)
    smooth = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    fine = 0.1 * torch.rand(math.prod(lead), 1, h, w, generator=g)
    return ((smooth + fine) * 2 / 1.1 - 1).clamp(-1, 1).reshape(*shape).to(device)


def _diff(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    a, b = a.float().cpu(), b.float().cpu()
    return (a - b).abs().max().item(), psnr(to_unit(a), to_unit(b)).mean().item()


def verify(
    candidate: Runner,
    reference: Runner,
    shapes: Sequence[tuple[int, int, int, int]],
    rollout_shape: tuple[int, int, int, int],
    steps: int,
    precision: str,
    artefact: str,
    seed: int = 0,
) -> Report:
    """Compare entered runners on single steps at `shapes` ((B, C, H, W) each) and on a
    `steps`-step rollout from a random history of `rollout_shape`."""
    checks = []
    step_tol = TOLERANCES[(precision, "step")]
    for i, shape in enumerate(shapes):
        x = random_history(shape, seed + i)
        ref = reference.predict(x.to(reference.device)).clone()
        out = candidate.predict(x.to(candidate.device))
        max_abs, db = _diff(out, ref)
        checks.append(
            Check("step", tuple(shape), max_abs, db, str(step_tol), step_tol.passes(max_abs, db))
        )
    b, c, h, w = rollout_shape
    hist = random_history((b, c // 3, 3, h, w), seed + len(shapes))
    ref_roll = rollout(reference, hist.to(reference.device), steps).cpu()
    out_roll = rollout(candidate, hist.to(candidate.device), steps).cpu()
    per_step = []
    for t in range(steps):
        max_abs, db = _diff(out_roll[:, t], ref_roll[:, t])
        per_step.append({"step": t + 1, "max_abs": max_abs, "psnr": db})
    roll_tol = TOLERANCES[(precision, "rollout")]
    worst_abs = max(s["max_abs"] for s in per_step)
    worst_db = min(s["psnr"] for s in per_step)
    checks.append(
        Check(
            "rollout",
            tuple(rollout_shape),
            worst_abs,
            worst_db,
            str(roll_tol),
            roll_tol.passes(worst_abs, worst_db),
            per_step,
        )
    )
    return Report(artefact, candidate.name, precision, checks)


def print_reports(reports: Sequence[Report]) -> None:
    """A rich table: one row per check."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="verification against PyTorch (FP32)")
    for col in ("artefact", "check", "shape (B,C,H,W)", "max |diff|", "PSNR dB", "tolerance", ""):
        table.add_column(col)
    for r in reports:
        for c in r.checks:
            kind = c.kind if c.kind == "step" else f"rollout x{len(c.per_step)} (worst step)"
            table.add_row(
                r.artefact,
                kind,
                "x".join(map(str, c.shape)),
                f"{c.max_abs:.2e}",
                f"{c.psnr:.1f}",
                c.tolerance,
                "ok" if c.passed else "[red]FAIL[/red]",
            )
    Console(stderr=True).print(table)
