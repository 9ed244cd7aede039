"""Verify an artefact against PyTorch: single steps at several shapes and a recursive rollout.

Everything goes through the Runner protocol, so ONNX (FP32/FP16) and TensorRT artefacts are
checked by the same code. Inputs are fresh random frames (smooth noise, not zeros, drawn from a
seeded generator), or, for INT8 artefacts, whose ranges were calibrated on real frames, windows
of real frames cropped to each shape. FP32 artefacts are judged by the largest absolute
difference, FP16 and INT8 ones by PSNR against the FP32 PyTorch output, since their rounding
alone gives ~1e-3 (FP16) to ~1e-2 (INT8) differences.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from avg_rt.metrics import DB_CAP, psnr, to_unit
from avg_rt.model import largest_change, levels, nearest_distance, palette_scores
from avg_rt.predict import rollout
from avg_rt.runners import Runner, frame_format


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
        parts = [f"|d|<={self.max_abs:g}"] if self.max_abs is not None else []
        parts += [f">={self.min_psnr:g}dB"] if self.min_psnr is not None else []
        return ", ".join(parts)


# "step": single steps, and every step of a teacher-forced rollout (each step fed PyTorch's own
# window), which catches any backend error at any step: these decide whether an artefact
# passes. "rollout": the free-running rollout, where each backend feeds back its own 8-bit
# frames, is reported, not judged: a kernel rounding difference (1e-6) that puts one value on
# the other side of a level boundary is amplified by the model's recursion, by how much depends
# on the model and the frames, not on the export (the shipped delta model, from random smooth
# frames: max |diff| 1.6e-2 after 8 steps and 1.5 after 64 between torch and onnxruntime FP32,
# whose every teacher-forced step agrees to 5e-6; torch against itself with oneDNN off does
# the same, `benchmarks/parity.py`).
TOLERANCES: dict[tuple[str, str], Tolerance] = {
    ("fp32", "step"): Tolerance(max_abs=1e-4),
    ("fp16", "step"): Tolerance(min_psnr=40.0),
    ("int8", "step"): Tolerance(min_psnr=38.0),
}


# Largest backend error in a raw prediction (before the palette's snap) under which a pixel
# may land on another palette colour and be forgiven (`forgive_palette_flips`): the FP32 step
# tolerance, and about 4x the worst step error measured on the shipped small model for FP16
# (2.4e-3) and INT8.
PALETTE_FLIP_BANDS = {"fp32": 1e-4, "fp16": 1e-2, "int8": 5e-2}
# At most this share of a check's pixels may be forgiven as palette flips: the margin admits
# many pixels where the raw prediction lies between colours (random frames: ~9% at the FP16
# band, ~40% at INT8's), so an artefact that moved them all would otherwise pass. Measured on
# the shipped small model: 0.034% (FP16), see README "Export verification".
PALETTE_MAX_FLIP_SHARE = 0.01


REPORTED = "reported"  # the tolerance of a check that informs and does not judge


@dataclass
class Check:
    """One comparison: a single step at `shape`, or a rollout (worst step reported)."""

    kind: str  # "step", "forced" (teacher-forced rollout) or "rollout" (free-running)
    shape: tuple[int, ...]
    max_abs: float
    psnr: float  # dB, frames mapped to [0, 1]; the worst step for a rollout
    tolerance: str
    passed: bool
    per_step: list[dict[str, float]] = field(default_factory=list)
    # Pixels on the other side of the model's deadzone threshold, forgiven (FP32 only).
    deadzone_flips: int = 0
    # Pixels snapped to another palette colour by a backend error within the band, forgiven.
    palette_flips: int = 0


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


def crops(windows: torch.Tensor) -> Callable[[Sequence[int], int], torch.Tensor]:
    """An input maker like `random_history` that cuts inputs of any (B, C, H, W) from real
    windows (N, C, H', W'): a random crop where the frame is large enough, a bilinear resize
    where it is not (windows reused in turn for larger batches)."""

    def make(shape: Sequence[int], seed: int) -> torch.Tensor:
        b, _, h, w = shape
        g = torch.Generator().manual_seed(seed)
        picks = windows[torch.randint(len(windows), (b,), generator=g)]
        if picks.shape[-2] < h or picks.shape[-1] < w:
            size = (max(h, picks.shape[-2]), max(w, picks.shape[-1]))
            picks = F.interpolate(picks, size=size, mode="bilinear", align_corners=False)
        y = int(torch.randint(picks.shape[-2] - h + 1, (1,), generator=g))
        x = int(torch.randint(picks.shape[-1] - w + 1, (1,), generator=g))
        return picks[..., y : y + h, x : x + w].contiguous()

    return make


def forgive_deadzone_flips(
    out: torch.Tensor, ref: torch.Tensor, last: torch.Tensor, deadzone: float, band: float
) -> tuple[torch.Tensor, int]:
    """`out` with the pixels that fall on the other side of the deadzone threshold than `ref`
    replaced by `ref`'s, and their count. A hard threshold turns a difference of 1e-6 in a
    pixel's change into one of the whole threshold (T levels), so a pixel counts as a flip
    only where one side kept `last` exactly and the other's change is within `band` of the
    threshold: a backend error elsewhere still shows. All (B, C, H, W) on one device."""
    if not deadzone:
        return out, 0
    t = levels(deadzone)

    def kept_and_near(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        near = (largest_change(b, last) - t).abs() <= band
        return (a == last).all(dim=1, keepdim=True) & near

    flips = kept_and_near(out, ref) | kept_and_near(ref, out)
    return torch.where(flips, ref, out), int(flips.sum())


def forgive_palette_flips(
    out: torch.Tensor,
    ref: torch.Tensor,
    raw: torch.Tensor,
    colours: torch.Tensor,
    band: float,
    radius: float = 0.0,
) -> tuple[torch.Tensor, int]:
    """`out` with the pixels that a backend error of at most `band` (max over channels) in
    the raw prediction could have snapped otherwise than `ref` replaced by `ref`'s, and their
    count. `raw`: the reference's prediction before the snap; `colours` (K, C): the palette;
    `radius`: the model's (`ModelConfig.palette_radius`, model units; 0: every pixel snaps).
    Two kinds of flip. Both snapped, to colours a (out) and b (ref): a shift e of `raw` makes
    a the nearer only if |raw - a|^2 - |raw - b|^2 <= 2 e.(a - b) <= 2 band |a - b|_1. One
    snapped to raw's nearest colour and the other not: raw's distance to it is within
    band * sqrt(C) of `radius`. Elsewhere a backend error still shows. All (B, C, H, W) on
    one device."""

    def nearest(x: torch.Tensor) -> torch.Tensor:  # (B, H, W) palette index
        return palette_scores(x, colours).argmin(-1)

    def at(x: torch.Tensor, colour: torch.Tensor) -> torch.Tensor:
        return (x == colour).all(1, keepdim=True)

    a, b = nearest(out), nearest(ref)
    ca, cb = colours[a].movedim(-1, 1), colours[b].movedim(-1, 1)
    scores = palette_scores(raw, colours)
    gap = (scores.gather(-1, a[..., None]) - scores.gather(-1, b[..., None])).movedim(-1, 1)
    margin = 2 * band * (ca - cb).abs().sum(1, keepdim=True)
    flips = at(out, ca) & at(ref, cb) & (gap <= margin)
    if radius:
        c = colours[scores.argmin(-1)].movedim(-1, 1)
        edge = (nearest_distance(raw, scores) - radius).abs() <= band * raw.shape[1] ** 0.5
        flips |= edge & (at(out, c) ^ at(ref, c))
    flips &= (out != ref).any(1, keepdim=True)
    return torch.where(flips, ref, out), int(flips.sum())


def _few(palette_flips: int, shape: Sequence[int], steps: int = 1) -> bool:
    """Whether `palette_flips` over `steps` outputs of (B, C, H, W) `shape` are few enough."""
    b, _, h, w = shape
    return palette_flips <= PALETTE_MAX_FLIP_SHARE * steps * b * h * w


def _diff(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float, float]:
    """Max and mean absolute difference, and PSNR in dB of the batch's worst frame (a mean
    over the frames would be infinite as soon as one frame is exact, whatever the others),
    capped at DB_CAP as everywhere else: identical outputs score DB_CAP, a number in every
    report, not an infinity that strict JSON can only write as null ("no score")."""
    a, b = a.float().cpu(), b.float().cpu()
    d = (a - b).abs()
    return d.max().item(), d.mean().item(), min(psnr(to_unit(a), to_unit(b)).min().item(), DB_CAP)


def verify(
    candidate: Runner,
    reference: Runner,
    shapes: Sequence[tuple[int, int, int, int]],
    rollout_shape: tuple[int, int, int, int],
    steps: int,
    precision: str,
    artefact: str,
    seed: int = 0,
    history: torch.Tensor | None = None,
    inputs: Callable[[Sequence[int], int], torch.Tensor] = random_history,
    deadzone: float = 0.0,
    palette: torch.Tensor | None = None,
    unsnapped: Runner | None = None,
    palette_radius: float = 0.0,
) -> Report:
    """Compare entered runners on single steps at `shapes` ((B, C, H, W) each, made by
    `inputs(shape, seed)`) and on a `steps`-step rollout of `rollout_shape`, teacher-forced and
    free, from a random history or from `history` ((B, T, C, H, W) of that size, e.g. real
    frames). `deadzone`: the model's (`ModelConfig.deadzone`); FP32 checks forgive the pixels
    its threshold splits (`forgive_deadzone_flips`, within the FP32 tolerance of it) and count
    them in `Check.deadzone_flips`. `palette` (K, C), the model's colours in model units, with
    `unsnapped`, the reference without them, and `palette_radius` (model units): every check
    forgives the pixels a backend error within PALETTE_FLIP_BANDS[precision] could snap to
    another colour (`forgive_palette_flips`), counted in `Check.palette_flips`, and fails
    where they are more than PALETTE_MAX_FLIP_SHARE of the check's pixels."""
    fmt = frame_format(reference)
    fc = fmt.channels
    checks = []
    step_tol = TOLERANCES[(precision, "step")]
    band = step_tol.max_abs or 0.0  # FP16 and INT8 are judged by PSNR, flips included

    if (palette is None) != (unsnapped is None):
        raise ValueError("palette and unsnapped go together")

    def compare(out: torch.Tensor, ref: torch.Tensor, window: torch.Tensor) -> tuple[Any, int, int]:
        out, ref = out.float().cpu(), ref.float().cpu()
        out, flips = forgive_deadzone_flips(out, ref, window[:, -fc:].cpu(), deadzone, band)
        snaps = 0
        if palette is not None and unsnapped is not None:
            raw = unsnapped.predict(window.to(unsnapped.device)).float().cpu()
            out, snaps = forgive_palette_flips(
                out, ref, raw, palette.cpu(), PALETTE_FLIP_BANDS[precision], palette_radius
            )
        return _diff(out, ref), flips, snaps

    for i, shape in enumerate(shapes):
        x = inputs(shape, seed + i)
        ref = reference.predict(x.to(reference.device)).clone()
        out = candidate.predict(x.to(candidate.device))
        (max_abs, _, db), flips, snaps = compare(out, ref, x)
        checks.append(
            Check(
                "step",
                tuple(shape),
                max_abs,
                db,
                str(step_tol),
                step_tol.passes(max_abs, db) and _few(snaps, shape),
                deadzone_flips=flips,
                palette_flips=snaps,
            )
        )
    b, c, h, w = rollout_shape
    if history is None:
        hist = random_history((b, c // fc, fc, h, w), seed + len(shapes))
    else:
        hist = history.float().cpu()
    ref_roll = rollout(reference, hist.to(reference.device), steps).cpu()
    out_roll = rollout(candidate, hist.to(candidate.device), steps).cpu()
    # PyTorch's own windows: its predictions fed back as `rollout` does (8-bit levels).
    trajectory = torch.cat([hist, fmt.quantize(ref_roll)], dim=1)
    n = c // fc
    forced: list[dict[str, float]] = []
    free: list[dict[str, float]] = []
    flips = snaps = 0
    for t in range(steps):
        window = trajectory[:, t + hist.shape[1] - n : t + hist.shape[1]].reshape(b, c, h, w)
        (max_abs, mean_abs, db), f, p = compare(
            candidate.predict(window.to(candidate.device)), ref_roll[:, t], window
        )
        flips, snaps = flips + f, snaps + p
        forced.append({"step": t + 1, "max_abs": max_abs, "mean_abs": mean_abs, "psnr": db})
        max_abs, mean_abs, db = _diff(out_roll[:, t], ref_roll[:, t])
        free.append({"step": t + 1, "max_abs": max_abs, "mean_abs": mean_abs, "psnr": db})
    for kind, per_step, tol in (("forced", forced, step_tol), ("rollout", free, None)):
        worst_abs = max(s["max_abs"] for s in per_step)
        worst_db = min(s["psnr"] for s in per_step)
        passed = tol is None or (
            tol.passes(worst_abs, worst_db) and _few(snaps, rollout_shape, steps)
        )
        limit = str(tol) if tol is not None else REPORTED
        checks.append(
            Check(
                kind,
                tuple(rollout_shape),
                worst_abs,
                worst_db,
                limit,
                passed,
                per_step,
                flips if kind == "forced" else 0,
                snaps if kind == "forced" else 0,
            )
        )
    return Report(artefact, candidate.name, precision, checks)


def print_reports(reports: Sequence[Report]) -> None:
    """A rich table: one row per check."""
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title="verification against PyTorch FP32 (forced: teacher-forced rollout; "
        "rollout: free-running; worst step of each; flips: pixels forgiven at the deadzone's "
        "threshold or a palette near-tie)"
    )
    for col in ("artefact", "check", "BxHxW", "max|diff|", "PSNR dB", "flips", "limit", ""):
        table.add_column(col)
    for r in reports:
        for c in r.checks:
            kind = c.kind if c.kind == "step" else f"{c.kind} x{len(c.per_step)}"
            b, _, h, w = c.shape
            name = r.artefact.removeprefix("generator.").removesuffix(".failed")
            table.add_row(
                name,
                kind,
                f"{b}x{h}x{w}",
                f"{c.max_abs:.1e}",
                f"{c.psnr:.1f}",
                str(c.deadzone_flips + c.palette_flips),
                c.tolerance,
                "-" if c.tolerance == REPORTED else "ok" if c.passed else "[red]FAIL[/red]",
            )
    Console(stderr=True).print(table)
