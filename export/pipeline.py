"""`avg-rt export`: checkpoint -> verified ONNX (FP32, FP16) and TensorRT artefacts in one folder.

Each artefact is written, run through its backend's runner and compared with the PyTorch
generator (`verify.py`). One that fails keeps a `.failed` suffix instead of its final name.
The whole folder is assembled beside OUT and renamed into place at the end, so an interrupted
export leaves nothing half-written, and an existing OUT is replaced only with `overwrite`.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from avg_rt.export.shapes import Range, ShapeRanges
from avg_rt.export.to_onnx import DEFAULT_OPSET, save_onnx, to_onnx
from avg_rt.export.verify import Report, print_reports, verify

from avg_rt.benchmark.common import environment
from avg_rt.checkpoint import load_generator
from avg_rt.errors import ExportError
from avg_rt.files import atomic_path, atomic_write_text, check_writable
from avg_rt.model import Generator
from avg_rt.runners import Runner
from avg_rt.runners.onnxrt import OnnxRuntimeRunner
from avg_rt.runners.pyt import TorchRunner

REPORT = "verification.json"


@dataclass(frozen=True)
class ExportOptions:
    """Everything `avg-rt export` takes; `engine=None` builds engines when TensorRT and a GPU
    are present."""

    checkpoint: Path
    out: Path
    fp16: bool = False
    engine: bool | None = None
    ranges: ShapeRanges = field(default_factory=ShapeRanges)
    opset: int = DEFAULT_OPSET
    triton: bool = False
    overwrite: bool = False
    verify_steps: int = 64
    workspace_gib: float = 4.0


@dataclass
class ExportResult:
    out: Path
    artefacts: list[Path]
    reports: list[Report]


def verification_shapes(ranges: ShapeRanges, channels: int) -> list[tuple[int, int, int, int]]:
    """Minimum of every range; maximum batch at the optimum size; maximum size at the smallest
    batch; and an odd size (near 97x131, clamped into the ranges) at the optimum batch."""

    def odd(r: Range, want: int) -> int:
        v = min(max(want, r.min), r.max)
        return v if v % 2 or v == r.max else v + 1

    b, h, w = ranges.batch, ranges.height, ranges.width
    shapes = [
        ranges.shape("min", channels),
        (b.max, channels, h.opt, w.opt),
        (b.min, channels, h.max, w.max),
        (b.opt, channels, odd(h, 97), odd(w, 131)),
    ]
    return list(dict.fromkeys(shapes))


def _engine_wanted(flag: bool | None) -> bool:
    import importlib.util

    available = importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available()
    if flag and not available:
        from avg_rt.export.to_trt import import_tensorrt

        import_tensorrt()  # raises the one-line error naming the extra
        raise ExportError("--engine", "TensorRT needs a CUDA GPU and none is available here")
    return available if flag is None else flag


def _check(
    candidate: Runner,
    generator: Generator,
    device: str,
    opts: ExportOptions,
    name: str,
    precision: str,
) -> Report:
    channels = generator.cfg.in_channels
    r = opts.ranges
    rollout_shape = (r.batch.min, channels, r.height.opt, r.width.opt)
    with TorchRunner(generator, device) as reference, candidate:
        return verify(
            candidate,
            reference,
            verification_shapes(r, channels),
            rollout_shape,
            opts.verify_steps,
            precision,
            name,
        )


def export(opts: ExportOptions, on_stage: Callable[[str], None] | None = None) -> ExportResult:
    """Run the export; raises ExportError (after writing the report) if any artefact failed.
    `on_stage(what)` is called as each stage starts (conversion, verification, engine
    builds can take minutes)."""
    say = on_stage or (lambda what: None)
    generator, cfg = load_generator(opts.checkpoint)
    opts.ranges.validate(cfg.model)
    if opts.triton and opts.ranges.batch.min != 1:
        raise ExportError("--batch", "Triton sends any batch from 1 to max_batch_size: use MIN 1")
    if opts.verify_steps < 1:
        raise ExportError("--verify-steps", "must be >= 1")
    engine = _engine_wanted(opts.engine)
    check_writable(opts.out, opts.overwrite, [opts.checkpoint])
    from avg_rt.export.to_trt import sha256

    ckpt_hash = sha256(opts.checkpoint)
    old_cache = opts.out / "timing.cache"  # reuse the previous build's cache when replacing
    precisions = ["fp32", "fp16"] if opts.fp16 else ["fp32"]
    reports: list[Report] = []
    with atomic_path(opts.out, opts.overwrite, [opts.checkpoint]) as tmp:
        tmp.mkdir()
        if engine and old_cache.is_file():
            shutil.copyfile(old_cache, tmp / "timing.cache")
        onnx_files = []
        for precision in precisions:
            path = tmp / ("generator.onnx" if precision == "fp32" else "generator.fp16.onnx")
            say(f"converting to {path.name} ({precision.upper()})")
            proto = to_onnx(
                generator,
                fp16=precision == "fp16",
                opset=opts.opset,
                metadata={"checkpoint_sha256": ckpt_hash},
            )
            save_onnx(proto, path)
            say(f"verifying {path.name} against PyTorch ({opts.verify_steps}-step rollouts)")
            report = _check(OnnxRuntimeRunner(path), generator, "cpu", opts, path.name, precision)
            reports.append(report)
            if report.passed:
                onnx_files.append((path, precision))
        plans = []
        if engine:
            from avg_rt.export.to_trt import build_engine

            from avg_rt.runners.trt import TensorRTRunner

            for path, precision in onnx_files:
                plan = path.with_suffix(".plan")
                say(f"building {plan.name} with TensorRT (minutes; cached for rebuilds)")
                build_engine(
                    path,
                    plan,
                    opts.ranges,
                    cfg.model.in_channels,
                    cfg.model.history_len,
                    precision,
                    tmp / "timing.cache",
                    int(opts.workspace_gib * 2**30),
                    ckpt_hash,
                )
                say(f"verifying {plan.name} against PyTorch")
                report = _check(
                    TensorRTRunner(plan, "cuda"), generator, "cuda", opts, plan.name, precision
                )
                reports.append(report)
                if report.passed:
                    plans.append(plan)
        for report in reports:  # failed artefacts never keep their final name
            if not report.passed:
                failed = tmp / report.artefact
                failed.rename(failed.with_name(failed.name + ".failed"))
        summary = {
            "environment": environment(),
            "checkpoint": str(opts.checkpoint),
            "checkpoint_sha256": ckpt_hash,
            "ranges": {k: str(v) for k, v in vars(opts.ranges).items()},  # MIN:OPT:MAX
            "passed": all(r.passed for r in reports),
            "reports": [r.to_dict() for r in reports],
        }
        atomic_write_text(tmp / REPORT, json.dumps(summary, indent=2))
        if opts.triton:
            from avg_rt.export.triton import write_repository

            say("writing the Triton model repository")

            write_repository(
                tmp / "model_repository",
                [p for p, _ in onnx_files] + plans,
                cfg.model.in_channels,
                opts.ranges,
            )
    print_reports(reports)
    artefacts = [opts.out / p.name for p, _ in onnx_files] + [opts.out / p.name for p in plans]
    failed = [r.artefact for r in reports if not r.passed]
    if failed:
        raise ExportError(
            opts.out,
            f"verification failed for {', '.join(failed)} (renamed *.failed; see {REPORT})",
        )
    return ExportResult(opts.out, artefacts, reports)
